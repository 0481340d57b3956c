"""Greedy answers for samples in hf_mm's format (`images` + `messages`), to score with `hf_mm.eval.evaluate`."""

import torch


def predict(
    model, processor, samples, max_new_tokens: int = 16, batch_size: int = 32, turns: int = 1, **generate_kwargs
) -> list[str]:
    """One greedy answer per sample: its first `turns` messages (by default the first user turn; any number of
    images) with the generation prompt, decoded without special tokens. Batches are left-padded, as decoder-only
    generation needs; the tokenizer's padding side is restored afterwards. `generate_kwargs` go to `generate`
    (`synced_gpus=True` for a model sharded across ranks)."""
    tokenizer = processor.tokenizer
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    was_training = model.training
    model.eval()
    answers = []
    try:
        for start in range(0, len(samples), batch_size):
            chunk = [samples[i] for i in range(start, min(start + batch_size, len(samples)))]
            prompts = [processor.apply_chat_template(s["messages"][:turns], add_generation_prompt=True) for s in chunk]
            images = [s["images"] for s in chunk]
            batch = processor(images=images, text=prompts, padding=True, return_tensors="pt").to(model.device)
            with torch.no_grad():
                out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, **generate_kwargs)
            answers += processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
        model.train(was_training)
    return answers
