"""`make demo` / `hf-mm demo`: a small VLM learns to answer questions about shapes, on a CPU, in a few minutes.

1. Build a small vision tower and a small causal LM from configs (random weights, a tokenizer trained in code), save
   them, and compose them with `from_vision_text_pretrained`, as a user would with two Hub checkpoints.
2. Train LLaVA's two stages with TRL's SFTTrainer: `align` (the bridge only), then `instruct` (bridge + LLM), on
   the synthetic shapes VQA task (colour and shape questions).
3. Measure exact-match accuracy on a held-out split before and after; save to `outputs/demo/`; reload through
   `AutoModelForImageTextToText` / `AutoProcessor`; answer a question about a held-out scene and a scikit-image photo.

The towers start from random weights, so everything the model knows it learns here. The vision tower stays frozen
(as in LLaVA), so the bridge and the LLM learn to read a random tower's features.
"""

import argparse
import dataclasses
import time
from pathlib import Path

import PIL.Image
import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlamaForCausalLM,
)
from trl import SFTConfig

from .. import HfMmLlavaForConditionalGeneration, HfMmLlavaProcessor
from ..data import synthetic
from ..data.tokenizers import tiny_tokenizer
from ..eval import evaluate, score
from ..training.setup import prepare_model
from ..training.sft import HfMmSFTTrainer

QUESTION_TYPES = ("colour", "shape")


@dataclasses.dataclass(frozen=True)
class DemoPreset:
    """Sizes and budgets of one demo run. `full` is `make demo`; `quick` is the test suite's shortened run."""

    pretrain_samples: int = 6000
    pretrain_steps: int = 900
    pretrain_batch: int = 64
    pretrain_lr: float = 2e-3
    train_samples: int = 4000
    eval_samples: int = 200
    image_size: int = 64
    patch_size: int = 8
    vision_hidden: int = 64
    vision_layers: int = 2
    vision_feature_layer: int = -1  # the pretrained last layer
    text_hidden: int = 128
    text_layers: int = 2
    align_steps: int = 150
    instruct_steps: int = 500
    batch_size: int = 32
    align_lr: float = 2e-3
    instruct_lr: float = 1e-3


PRESETS = {
    "full": DemoPreset(),
    # The same recipe for longer: the model needs ~2000 instruct steps to learn which of several objects a question
    # names (about 8 minutes on 2 CPU cores).
    "long": DemoPreset(train_samples=8000, align_steps=100, instruct_steps=2000),
    # The test suite's run: a random (not pretrained) tower, read one layer before its last, as LLaVA does.
    "quick": DemoPreset(
        pretrain_steps=0,
        vision_feature_layer=-2,
        train_samples=1500,
        eval_samples=96,
        align_steps=40,
        instruct_steps=160,
    ),  # fmt: skip
}


def build_towers(root: Path, preset: DemoPreset) -> tuple[str, str]:
    """Save a CLIP-style vision tower and a Llama-style LM (with a BPE trained on the task's words) under `root`."""
    vision_config = CLIPVisionConfig(
        hidden_size=preset.vision_hidden, intermediate_size=4 * preset.vision_hidden,
        num_hidden_layers=preset.vision_layers, num_attention_heads=4, image_size=preset.image_size,
        patch_size=preset.patch_size,
    )  # fmt: skip
    side = preset.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    tower = pretrain_vision_tower(CLIPVisionModel(vision_config), image_processor, preset)
    tower.save_pretrained(root / "vision")
    image_processor.save_pretrained(root / "vision")
    corpus = [turn["content"][-1]["text"] for s in synthetic.shapes_vqa(400, seed=99) for turn in s["messages"]]
    tokenizer = tiny_tokenizer(corpus, vocab_size=400)
    text_config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=preset.text_hidden, intermediate_size=4 * preset.text_hidden,
        num_hidden_layers=preset.text_layers, num_attention_heads=4, num_key_value_heads=4,
        max_position_embeddings=512, bos_token_id=0, eos_token_id=0, pad_token_id=1, tie_word_embeddings=True,
    )  # fmt: skip
    LlamaForCausalLM(text_config).save_pretrained(root / "text")
    tokenizer.save_pretrained(root / "text")
    return str(root / "vision"), str(root / "text")


def pretrain_vision_tower(tower, image_processor, preset: DemoPreset):
    """Stand-in for CLIP pretraining, which LLaVA assumes and we cannot download: teach the tower which
    (colour, shape) objects a scene holds, from the train split's scene descriptions. Each patch token scores every
    pair and the scene takes the max over patches, so the tower learns object detectors, not the VQA answers.
    A random tower does not work: a linear probe on its patches tells circles from squares at chance (~37%)."""
    if not preset.pretrain_steps:
        return tower
    pairs = [(colour, shape) for colour in synthetic.PALETTE for shape in synthetic.SHAPES]
    scenes = synthetic.shapes_vqa(
        preset.pretrain_samples, seed=1, image_size=preset.image_size, question_types=("count",)
    )
    head = torch.nn.Linear(tower.config.hidden_size, len(pairs))
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=preset.pretrain_lr)
    order = torch.randperm(len(scenes), generator=torch.Generator().manual_seed(0)).tolist()
    tower.train()
    for step in range(preset.pretrain_steps):
        batch = [scenes[order[(step * preset.pretrain_batch + i) % len(scenes)]] for i in range(preset.pretrain_batch)]
        pixels = image_processor([s["images"][0] for s in batch], return_tensors="pt")["pixel_values"]
        labels = torch.zeros(len(batch), len(pairs))
        for row, scene in enumerate(batch):
            for obj in scene["meta"]["shapes"]:
                labels[row, pairs.index((obj["colour"], obj["shape"]))] = 1.0
        scores = head(tower(pixel_values=pixels).last_hidden_state[:, 1:]).amax(1)  # (B, pairs): max over patches
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(
        f"0. pretrained the vision tower for {preset.pretrain_steps} steps (object-detection loss {loss.item():.3f})"
    )
    return tower.eval()


def user_turn(question: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}


def answer(model, processor, images: list, questions: list[str], batch_size: int = 32) -> list[str]:
    """Greedy answers, one per (image, question), batched with left padding."""
    processor.tokenizer.padding_side = "left"
    answers = []
    for start in range(0, len(images), batch_size):
        chats = [[user_turn(question)] for question in questions[start : start + batch_size]]
        prompts = [processor.apply_chat_template(chat, add_generation_prompt=True) for chat in chats]
        batch = processor(images=images[start : start + batch_size], text=prompts, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        answers += processor.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)
    return answers


def accuracy(model, processor, samples: list[dict]) -> dict:
    """`hf_mm.eval.evaluate`'s scores, plus exact match by the number of shapes in the scene."""
    questions = [s["messages"][0]["content"][-1]["text"] for s in samples]
    predictions = answer(model.eval(), processor, [s["images"][0] for s in samples], questions)
    scores = evaluate(predictions, samples)
    by_count: dict[int, list[float]] = {}
    for prediction, sample in zip(predictions, samples):
        by_count.setdefault(len(sample["meta"]["shapes"]), []).append(
            score("shapes_vqa", prediction, sample["answer"])
        )
    scores["per_shape_count"] = {n: sum(v) / len(v) for n, v in sorted(by_count.items())}
    return scores


def train_stage(model, processor, dataset, stage: str, steps: int, lr: float, preset: DemoPreset, out: Path):
    model = prepare_model(model, stage)
    args = SFTConfig(
        output_dir=str(out / f"stage-{stage}"), max_steps=steps, per_device_train_batch_size=preset.batch_size,
        learning_rate=lr, lr_scheduler_type="cosine", warmup_steps=0.05, weight_decay=0.0, logging_steps=25,
        bf16=False, gradient_checkpointing=False, save_strategy="no", report_to="none", seed=0, max_length=256,
        disable_tqdm=False, dataloader_num_workers=0,
    )  # fmt: skip
    processor.tokenizer.padding_side = "right"
    trainer = HfMmSFTTrainer(model=model, args=args, processing_class=processor, train_dataset=dataset, stage=stage)
    result = trainer.train()
    return result.training_loss


def describe(scores: dict) -> str:
    per_type = ", ".join(f"{k.split('/')[-1]} {v:.0%}" for k, v in sorted(scores["per_question_type"].items()))
    per_count = ", ".join(f"{n} shape{'s' * (n > 1)} {v:.0%}" for n, v in scores["per_shape_count"].items())
    return f"{scores['overall']:.1%} ({per_type}; {per_count})"


def sample_photo(size: int) -> PIL.Image.Image:
    """scikit-image's coffee-cup photo, resized to the tower's input size."""
    from skimage import data  # lazy: the `data` extra

    return PIL.Image.fromarray(data.coffee()).resize((size, size))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="hf-mm demo", description=__doc__)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--quick", action="store_const", const="quick", dest="preset", help="--preset quick")
    parser.add_argument("--output-dir", default="outputs/demo")
    args = parser.parse_args(argv)
    preset, out, start = PRESETS[args.preset], Path(args.output_dir), time.perf_counter()
    torch.manual_seed(0)

    vision, text = build_towers(out / "towers", preset)
    model = HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(
        vision, text, bridge_type="mlp2x_gelu", vision_feature_layer=preset.vision_feature_layer
    )
    processor = HfMmLlavaProcessor.from_vision_text_pretrained(
        vision, text, bridge_type="mlp2x_gelu", vision_feature_layer=preset.vision_feature_layer
    )
    print(f"1. composed {model.num_parameters():,} parameters from {vision} + {text}")

    make = synthetic.shapes_vqa
    train = make(preset.train_samples, image_size=preset.image_size, question_types=QUESTION_TYPES)
    train = synthetic.to_dataset(train)
    held_out = make(preset.eval_samples, image_size=preset.image_size, question_types=QUESTION_TYPES, split="test")
    before = accuracy(model, processor, held_out)
    print(f"2. held-out accuracy before training: {describe(before)} (chance: colour 1/6, shape 1/3)")

    align_loss = train_stage(model, processor, train, "align", preset.align_steps, preset.align_lr, preset, out)
    instruct_loss = train_stage(
        model, processor, train, "instruct", preset.instruct_steps, preset.instruct_lr, preset, out
    )
    after = accuracy(model, processor, held_out)
    print(f"3. trained: align loss {align_loss:.3f}, instruct loss {instruct_loss:.3f}")
    print(f"4. held-out accuracy after training: {describe(after)}")

    model.save_pretrained(out)
    processor.save_pretrained(out)
    model = AutoModelForImageTextToText.from_pretrained(out)
    processor = AutoProcessor.from_pretrained(out)
    print(f"5. saved to {out} and reloaded as {type(model).__name__} through AutoModelForImageTextToText")

    scene = held_out[0]
    question = scene["messages"][0]["content"][-1]["text"]
    photo = sample_photo(preset.image_size)
    replies = answer(model.eval(), processor, [scene["images"][0], photo], [question, "What colour is the shape?"])
    print(f"6. held-out scene: {question!r} -> {replies[0]!r} (truth {scene['answer']!r})")
    print(f"   scikit-image coffee photo: 'What colour is the shape?' -> {replies[1]!r}")
    seconds = time.perf_counter() - start
    print(
        f"Done in {seconds:.0f} s. Load it with: import hf_mm; AutoModelForImageTextToText.from_pretrained({str(out)!r})"
    )
    return {"before": before, "after": after, "seconds": seconds}


if __name__ == "__main__":
    main()
