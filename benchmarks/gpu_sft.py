"""Packed SFT on a ~1B composed model, built from configs: tokens/s and MFU. For `benchmarks/gpu.sh`.

    python -m benchmarks.gpu_sft [--steps 20] [--out PATH] [--smoke]
    python -m torch.distributed.run --nproc_per_node N -m benchmarks.gpu_sft --fsdp     (FSDP2, N GPUs)

The model: a SigLIP-base-sized tower (768 wide, 12 layers, 224 px, 16 px patches: 196 tokens per image), the
`mlp2x_gelu` bridge and a Qwen2.5-0.5B-sized LM (896 wide, 24 layers, 151,936-token vocabulary), trained as LLaVA's
`instruct` stage (tower frozen) in bf16 on packed rows of an SFT mix with 1-4 images per sample
(`measures.skewed_samples`). MFU counts the LM's FLOPs (6 x LM parameters x tokens per step, forward and backward)
against the GPU's dense bf16 peak; the tower's FLOPs (2 x tower parameters x patches: forward only, it is frozen)
are reported separately, not in the MFU. `--smoke` shrinks everything to run on a CPU in seconds.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import Qwen2Config, SiglipVisionConfig

from hf_mm import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, HfMmLlavaProcessor
from hf_mm import testing as T
from hf_mm.processing import prepare_tokenizer
from hf_mm.training.packing import VisionPackingCollator
from hf_mm.training.setup import prepare_model

from .measures import PEAK_BF16, skewed_samples

FULL = dict(vision=(768, 3072, 12, 12, 224, 16), text=(896, 4864, 24, 14, 2), vocab=151_936, rows=4096, samples=64)
SMOKE = dict(vision=(32, 64, 2, 2, 32, 8), text=(32, 64, 2, 2, 1), vocab=2_048, rows=512, samples=8)


def build(size: dict, device):
    width, inner, layers, heads, image, patch = size["vision"]
    vision = SiglipVisionConfig(hidden_size=width, intermediate_size=inner, num_hidden_layers=layers,
                                num_attention_heads=heads, image_size=image, patch_size=patch)  # fmt: skip
    width, inner, layers, heads, kv = size["text"]
    text = Qwen2Config(hidden_size=width, intermediate_size=inner, num_hidden_layers=layers, num_attention_heads=heads,
                       num_key_value_heads=kv, vocab_size=size["vocab"], tie_word_embeddings=True)  # fmt: skip
    tokenizer = prepare_tokenizer(T.tiny_tokenizer())
    config = HfMmLlavaConfig(vision_config=vision, text_config=text, bridge_type="mlp2x_gelu", vision_feature_layer=-1,
                             image_token_id=tokenizer.convert_tokens_to_ids("<image>"))  # fmt: skip
    torch.manual_seed(0)
    model = prepare_model(HfMmLlavaForConditionalGeneration(config), "instruct").to(device)
    image_processor = T.tiny_image_processor("siglip")
    image_processor.size = {"height": size["vision"][4], "width": size["vision"][4]}
    return model, HfMmLlavaProcessor.from_llava_config(config, image_processor, tokenizer)


def parameters(module: torch.nn.Module, skip_embeddings: bool = False) -> int:
    seen = {id(p): p for name, p in module.named_parameters() if not (skip_embeddings and "embed_tokens" in name)}
    return sum(p.numel() for p in seen.values())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--fsdp", action="store_true", help="FSDP2 over the processes of torch.distributed.run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    rank, world = 0, 1
    if args.fsdp:
        import torch.distributed as dist
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device(f"cuda:{rank % max(torch.cuda.device_count(), 1)}" if torch.cuda.is_available() else "cpu")
    model, processor = build(size, device)
    if args.fsdp:
        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for module in model.modules():
            if type(module).__name__ in set(model._no_split_modules):
                fully_shard(module, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
    batch = VisionPackingCollator(processor, max_length=size["rows"])(skewed_samples(size["samples"], seed=rank))
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and not args.fsdp)
    times = []
    for index in range(args.steps + 2):  # two warm-up steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= 2:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel()
    patches = int(batch["pixel_values"].shape[0]) * (size["vision"][4] // size["vision"][5]) ** 2
    lm_params = parameters(model.model.language_model, skip_embeddings=True)
    tower_params = parameters(model.model.vision_tower)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak = next((value for key, value in PEAK_BF16.items() if key in name), None)
    lm_flops = 6 * lm_params * tokens / seconds
    result = {
        "device": name, "processes": world, "fsdp": args.fsdp, "parameters": parameters(model),
        "lm_parameters": lm_params, "tower_parameters": tower_params, "tokens_per_step": tokens * world,
        "step_seconds": seconds, "tokens_per_s": tokens * world / seconds, "lm_tflops_per_gpu": lm_flops / 1e12,
        "mfu": lm_flops / peak if peak else None, "tower_tflops_per_gpu": 2 * tower_params * patches / seconds / 1e12,
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "loss": float(loss),
    }  # fmt: skip
    if rank == 0:
        print(json.dumps(result, indent=2))
        mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "n/a"
        print(f"| packed SFT, {result['parameters'] / 1e9:.2f}B | {world} x {name} | {result['tokens_per_s']:,.0f} "
              f"tokens/s | MFU (LM) {mfu} | tower {result['tower_tflops_per_gpu']:.1f} TFLOP/s |")  # fmt: skip
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
