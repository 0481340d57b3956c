"""The measures of `benchmarks/run.py`; each returns rows {id, measure, hf_mm, reference, ratio, target}."""

import random
import tempfile

import torch
from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    Blip2QFormerConfig,
    Blip2VisionConfig,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

import hf_mm
from hf_mm import testing as T
from hf_mm.processing import prepare_tokenizer
from hf_mm.training.collators import VisionSFTCollator
from hf_mm.training.packing import VisionPackingCollator

from .bench_llava import build as build_llava
from .run import alternate, train_step


def _widths(size: dict) -> dict:
    hidden = size["hidden"]
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=max(hidden // 64, 1))


def _check(ours, reference, what: str, tolerance: float = 1e-4) -> None:
    delta = (ours - reference).abs().max().item()
    if delta > tolerance:
        raise AssertionError(f"{what}: hf_mm and the reference disagree by {delta:.2e}; timing them is meaningless.")


def _labels(inputs: dict, image_token_id: int) -> torch.Tensor:
    """Text tokens only: hf_mm never scores image placeholders, so the reference must not either for equal losses."""
    ids = inputs["input_ids"]
    return ids.masked_fill((inputs["attention_mask"] == 0) | (ids == image_token_id), -100)


# ---------------------------------------------------------------- builders: reference, hf_mm, shared inputs


def llava(size: dict, device):
    reference, ours, our_processor = build_llava(size["hidden"], size["layers"], size["image_size"])
    our_processor.tokenizer.padding_side = "left"
    texts = ["<image>" + " describe the picture in words" * (1 + i % 3) for i in range(size["batch"])]
    inputs = our_processor(images=T.random_images(size["batch"]), text=texts, padding=True, return_tensors="pt")
    inputs = dict(inputs.to(device))
    inputs["labels"] = _labels(inputs, ours.config.image_token_id)
    return reference.to(device), ours.eval().to(device), inputs, our_processor


def qwen2_5_vl(size: dict, device):
    heads = max(size["hidden"] // 64, 1)
    vision = dict(depth=2 * size["layers"], hidden_size=size["hidden"], intermediate_size=2 * size["hidden"],
                  num_heads=heads, out_hidden_size=size["hidden"], fullatt_block_indexes=[2 * size["layers"] - 1])  # fmt: skip
    half = size["hidden"] // heads // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    text = dict(**_widths(size), num_hidden_layers=size["layers"], num_key_value_heads=heads, vocab_size=512,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section})  # fmt: skip
    config = Qwen2_5_VLConfig(vision_config=vision, text_config=text, image_token_id=100, video_token_id=101,
                              vision_start_token_id=102)  # fmt: skip
    reference = Qwen2_5_VLForConditionalGeneration(config).eval()
    ours = hf_mm.convert.from_transformers_qwen2_5_vl(reference)[0].eval()
    grid = [1, size["image_size"] // 14, size["image_size"] // 14]
    image_tokens = grid[1] * grid[2] // 4
    rows = [[5, 102, *[100] * image_tokens, 103, *range(10, 10 + 8 * (1 + i % 3))] for i in range(size["batch"])]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(r) for r in rows])[:, None]).long()
    inputs = {"input_ids": ids, "attention_mask": mask, "mm_token_type_ids": (ids == 100).long(),
              "pixel_values": torch.randn(size["batch"] * grid[1] * grid[2], 1176),
              "image_grid_thw": torch.tensor([grid] * size["batch"])}  # fmt: skip
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["labels"] = _labels(inputs, 100)
    return reference.to(device), ours.to(device), inputs, None


def clip(size: dict, device):
    vision = CLIPVisionConfig(**_widths(size), num_hidden_layers=size["layers"], image_size=size["image_size"],
                              patch_size=14)  # fmt: skip
    text = dict(**_widths(size), num_hidden_layers=size["layers"], vocab_size=T.TEXT_VOCAB_SIZE)
    reference = CLIPModel(CLIPConfig(vision_config=vision.to_dict(), text_config=text, projection_dim=64)).eval()
    ours = hf_mm.convert.from_transformers_clip(reference)[0].eval()
    batch = 4 * size["batch"]
    inputs = {"input_ids": torch.randint(1, T.TEXT_VOCAB_SIZE, (batch, 16)),
              "attention_mask": torch.ones(batch, 16, dtype=torch.long),
              "pixel_values": torch.randn(batch, 3, size["image_size"], size["image_size"])}  # fmt: skip
    return reference.to(device), ours.to(device), {k: v.to(device) for k, v in inputs.items()}, None


def blip2(size: dict, device):
    tokenizer = prepare_tokenizer(T.tiny_tokenizer())
    vision = Blip2VisionConfig(**_widths(size), num_hidden_layers=size["layers"], image_size=size["image_size"],
                               patch_size=14)  # fmt: skip
    qformer = Blip2QFormerConfig(**_widths(size), num_hidden_layers=size["layers"], encoder_hidden_size=size["hidden"])
    text = LlamaConfig(**_widths(size), vocab_size=len(tokenizer), num_hidden_layers=size["layers"], pad_token_id=T.PAD_ID)  # fmt: skip
    config = Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                         num_query_tokens=8, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    reference = Blip2ForConditionalGeneration(config).eval()
    image_processor = T.tiny_image_processor("clip")
    side = size["image_size"]
    image_processor.size, image_processor.crop_size = {"shortest_edge": side}, {"height": side, "width": side}
    ours, processor = hf_mm.convert.from_transformers_blip2(reference, Blip2Processor(image_processor, tokenizer, num_query_tokens=8))  # fmt: skip
    processor.tokenizer.padding_side = "right"
    texts = ["<image>question: what is it? answer:" + " a shape" * (1 + i % 3) for i in range(size["batch"])]
    inputs = dict(processor(images=T.random_images(size["batch"]), text=texts, padding=True, return_tensors="pt"))
    # Under right padding transformers' Blip2 reads the same expanded query placeholders: one input dict for both.
    inputs["labels"] = _labels(inputs, ours.config.image_token_id)
    return reference.to(device), ours.eval().to(device), {k: v.to(device) for k, v in inputs.items()}, None


FAMILIES = {"llava": llava, "qwen2_5_vl": qwen2_5_vl, "clip": clip, "blip2": blip2}


# ---------------------------------------------------------------- P1: train step

# Dense bf16 tensor-core peaks (FLOP/s) for MFU; a GPU not listed reports no MFU rather than a guessed one.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10G": 125e12}


def throughput(model, inputs: dict, seconds: float, device_name: str) -> dict:
    """Tokens/s of one train step and its MFU: 6 x parameters x tokens FLOPs (forward + backward) over the GPU's
    peak. The count ignores attention's quadratic term, so MFU is slightly understated at long sequences."""
    tokens = int(inputs["attention_mask"].sum()) if "attention_mask" in inputs else inputs["input_ids"].numel()
    flops = 6 * sum(p.numel() for p in model.parameters()) * tokens
    peak = next((value for name, value in PEAK_BF16.items() if name in device_name), None)
    return {"tokens_per_s": tokens / seconds, "mfu": flops / seconds / peak if peak else None}


def p1_train_step(size: dict, device) -> list[dict]:
    rows = []
    for name, build in FAMILIES.items():
        torch.manual_seed(0)
        reference, ours, inputs, _ = build(size, device)
        loss_key = "return_loss" if name == "clip" else "labels"
        with torch.no_grad():
            kwargs = {"return_loss": True} if name == "clip" else {}
            _check(ours(**inputs, **kwargs).loss, reference(**inputs, **kwargs).loss, f"{name} loss")
        result = alternate(train_step(ours.train(), inputs, loss_key), train_step(reference.train(), inputs, loss_key), size["repeats"])  # fmt: skip
        if device.type == "cuda":
            result.update(throughput(ours, inputs, result["hf_mm"], torch.cuda.get_device_name()))
        rows.append({"id": f"P1-{name}", "measure": "train step s (fwd+bwd), median", **result, "target": "<= 0.95"})
    return rows


# ---------------------------------------------------------------- P2: packing


def skewed_samples(n: int, seed: int = 0) -> list[dict]:
    """An SFT mix skewed the way real ones are: mostly short answers, a few long ones; 1-4 images each."""
    rng = random.Random(seed)
    words = "the red square sits left of a blue circle while two green triangles wait above it".split()
    samples = []
    for _ in range(n):
        images = rng.choice([1, 1, 1, 2, 2, 3, 4])
        length = min(400, max(20, int(rng.lognormvariate(4.0, 0.8))))  # text tokens, median ~55
        text = " ".join(rng.choice(words) for _ in range(length))
        question, answer = text[: len(text) // 3], text[len(text) // 3 :]
        content = [{"type": "image"}] * images + [{"type": "text", "text": question}]
        samples.append({"images": T.random_images(images, seed=rng.randrange(10**6)),
                        "messages": [{"role": "user", "content": content},
                                     {"role": "assistant", "content": [{"type": "text", "text": answer}]}]})  # fmt: skip
    return samples


def p2_packing(size: dict, device) -> list[dict]:
    _, model, _, processor = llava(size, device)
    model.train()
    samples = skewed_samples(size["pack_samples"])
    padded = VisionSFTCollator(processor)
    padded_batch = padded(samples)
    # Rows as wide as the padded batch's: the same longest sample fits, the short ones share rows.
    packed = VisionPackingCollator(processor, max_length=padded_batch["input_ids"].shape[1])
    batches = {"padded": padded_batch, "packed": packed(samples)}
    tokens = packed.tokens
    for key, batch in batches.items():
        batches[key] = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    padded_tokens = batches["padded"]["input_ids"].numel()
    result = alternate(train_step(model, batches["packed"]), train_step(model, batches["padded"]), size["repeats"])
    # tokens per second: the same real tokens in both, so the throughput ratio is the inverse of the time ratio.
    speedup = [1 / result["spread"][1], 1 / result["spread"][0]]
    rows = tuple(batches[key]["input_ids"].shape for key in ("packed", "padded"))
    return [{"id": "P2-llava", "measure": f"real tokens/s, packed vs padded: {tokens} real tokens in {rows[0][0]} x "
             f"{rows[0][1]} packed vs {rows[1][0]} x {rows[1][1]} padded ({padded_tokens} slots)",
             "hf_mm": tokens / result["hf_mm"], "reference": tokens / result["reference"],
             "ratio": 1 / result["ratio"], "spread": speedup, "target": ">= 1.8"}]  # fmt: skip


# ---------------------------------------------------------------- P3: window attention


def p3_window_attention(size: dict, device) -> list[dict]:
    from .bench_qwen2_5_vit import main as vit_bench

    side = 2 * size["image_size"]
    rows = vit_bench(["--hidden", str(size["hidden"]), "--depth", str(4 * size["layers"]),
                      "--sides", str(side), str(2 * side), "--repeats", str(size["repeats"]), "--out", "-"])  # fmt: skip
    small, large = rows
    return [{"id": "P3-qwen2_5_vit", "measure": f"time(4x pixels) / time(1x), {small['side']} -> {large['side']} px; "
             "hf_mm = window attention, reference = full attention in every block",
             "hf_mm": large["windowed_s"] / small["windowed_s"], "reference": large["full_s"] / small["full_s"],
             "ratio": large["windowed_s"] / small["windowed_s"], "target": "<= 4.6"}]  # fmt: skip


# ---------------------------------------------------------------- P4: QLoRA memory


def _weight_bytes(model) -> int:
    storages = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    for module in model.modules():  # bitsandbytes keeps 4-bit scales in a quant state beside the packed weight
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None:
            for tensor in (state.absmax, state.code):
                storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    return sum(storages.values())


def p4_qlora_memory(size: dict, device) -> list[dict]:
    from transformers import BitsAndBytesConfig

    # An LM whose linear layers outweigh its embeddings, as in real LMs (bitsandbytes keeps embeddings in 16 bits).
    hidden, layers = max(4 * size["hidden"], 256), 4 * size["layers"]
    config = LlamaConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=hidden // 64,
                         num_key_value_heads=hidden // 64, num_hidden_layers=layers, vocab_size=1024)  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        LlamaForCausalLM(config).save_pretrained(folder)
        sixteen = LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
        four = LlamaForCausalLM.from_pretrained(folder, quantization_config=BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16))  # fmt: skip
    qlora, lora = _weight_bytes(four), _weight_bytes(sixteen)
    return [{"id": "P4-qlora", "measure": "LM weight bytes, 4-bit nf4 (QLoRA) vs bf16 (16-bit LoRA), embeddings kept",
             "hf_mm": qlora, "reference": lora, "ratio": qlora / lora, "target": "<= 0.35"}]  # fmt: skip


# ---------------------------------------------------------------- P5: decode


def p5_decode(size: dict, device) -> list[dict]:
    reference, ours, inputs, _ = llava(size, device)
    inputs = {k: v[:1] for k, v in inputs.items() if k != "labels"}
    calls = []
    handle = ours.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    options = dict(max_new_tokens=size["new_tokens"], min_new_tokens=size["new_tokens"], do_sample=False,
                   pad_token_id=T.PAD_ID)  # fmt: skip
    with torch.no_grad():
        _check(ours.generate(**inputs, **options).float(), reference.generate(**inputs, **options).float(), "tokens")
        calls.clear()
        ours.generate(**inputs, **options)
        tower_calls = len(calls)
        handle.remove()
        result = alternate(lambda: ours.generate(**inputs, **options), lambda: reference.generate(**inputs, **options),
                           size["repeats"])  # fmt: skip
    n = size["new_tokens"]
    return [{"id": "P5-llava", "measure": f"decode tokens/s, batch 1, {n} new tokens; vision tower calls per "
             f"generate(): {tower_calls}", "hf_mm": n / result["hf_mm"], "reference": n / result["reference"],
             "ratio": 1 / result["ratio"], "spread": [1 / result["spread"][1], 1 / result["spread"][0]],
             "target": ">= 1.0", "tower_calls": tower_calls}]  # fmt: skip


ALL = [p1_train_step, p2_packing, p3_window_attention, p4_qlora_memory, p5_decode]


# ---------------------------------------------------------------- P8: long context at a large vocabulary


def long_context_llava(size: dict):
    """(reference, hf_mm, inputs): LLaVA at a small width with `size["long_vocab"]` tokens (Qwen2.5's 151,936 in
    the small and gpu presets), batch 2 of `size["long_tokens"]` tokens (an image's 64 placeholders, then text),
    every text token a label."""
    vocab, length = size["long_vocab"], size["long_tokens"]
    reference, _, _ = build_llava(size["hidden"], size["layers"], 112)
    text = reference.config.text_config
    text.vocab_size = vocab
    reference = type(reference)(reference.config).eval()
    ours = hf_mm.convert.from_transformers_llava(reference, None)[0]
    image_id, pad_id = reference.config.image_token_id, text.pad_token_id
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (2, length), generator=generator)
    ids[:, :64] = image_id  # (112 / 14)^2 patches; the CLS token is dropped ("default" strategy)
    assert pad_id not in ids[:, 64:]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.rand(2, 3, 112, 112)}
    inputs["labels"] = ids.masked_fill(ids == image_id, -100)
    return reference, ours, inputs


def p8_long_context(size: dict, device) -> list[dict]:
    """One train step at a large vocabulary and a long context (vocab 151,936, 2,048 tokens x batch 2): peak memory, each model alone in a fresh
    process (`benchmarks.step_memory`), and tokens/s, alternated in this one."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    reference, ours, inputs = long_context_llava(size)
    reference, ours = reference.to(device).train(), ours.to(device).train()
    on_device = {key: value.to(device) for key, value in inputs.items()}
    _check(ours(**on_device).loss.detach(), reference(**on_device).loss.detach(), "long-context loss")
    peaks = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind, model in (("hf_mm", ours), ("reference", reference)):
            model.save_pretrained(Path(folder) / kind)
        save_file(inputs, Path(folder) / "inputs.safetensors")
        for kind in ("hf_mm", "reference"):
            done = subprocess.run([sys.executable, "-m", "benchmarks.step_memory", str(Path(folder) / kind), kind,
                                   str(Path(folder) / "inputs.safetensors")], capture_output=True, text=True,
                                  check=True, cwd=Path(__file__).parent.parent)  # fmt: skip
            peaks[kind] = json.loads(done.stdout.strip().splitlines()[-1])["peak_bytes"] / 2**20
    result = alternate(train_step(ours, on_device), train_step(reference, on_device), size["repeats"])
    tokens = inputs["input_ids"].numel()
    shape = f"vocab {size['long_vocab']:,}, batch 2 x {size['long_tokens']:,} tokens"
    return [
        {"id": "P8-memory", "measure": f"train step peak memory MB, {shape}", "hf_mm": peaks["hf_mm"],
         "reference": peaks["reference"], "ratio": peaks["hf_mm"] / peaks["reference"], "target": "<= 0.5"},
        {"id": "P8-speed", "measure": f"train step tokens/s, {shape}", "hf_mm": tokens / result["hf_mm"],
         "reference": tokens / result["reference"], "ratio": 1 / result["ratio"],
         "spread": [1 / result["spread"][1], 1 / result["spread"][0]], "target": ">= 1.0"},
    ]  # fmt: skip


ALL.append(p8_long_context)
