"""hf_mm_llava vs transformers' LlavaForConditionalGeneration on identical configs and weights, in one process.

    .venv/bin/python benchmarks/bench_llava.py [--hidden 256 --layers 4 --batch 4 --repeats 10]

Prints a table of median wall times and the ratio hf_mm / reference (1.00 = parity; below is faster), and writes
JSON under benchmarks/results/. The two models are checked to give the same logits before anything is timed.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

import hf_mm
from hf_mm import testing as T
from hf_mm.processing import prepare_tokenizer


def build(hidden: int, layers: int, image_size: int):
    tokenizer = prepare_tokenizer(T.tiny_tokenizer())
    vision = CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, num_attention_heads=hidden // 64,
        image_size=image_size, patch_size=14,
    )  # fmt: skip
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, num_key_value_heads=hidden // 64, pad_token_id=T.PAD_ID,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    reference = LlavaForConditionalGeneration(config).eval()
    image_processor = T.tiny_image_processor("clip")
    image_processor.size, image_processor.crop_size = (
        {"shortest_edge": image_size},
        {"height": image_size, "width": image_size},
    )
    processor = LlavaProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=14,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1)  # fmt: skip
    model, ours = hf_mm.convert.from_transformers_llava(reference, processor)
    return reference, model, ours


def median_seconds(run, model, repeats: int) -> float:
    run(model)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(model)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.manual_seed(0)
    reference, model, processor = build(args.hidden, args.layers, args.image_size)
    processor.tokenizer.padding_side = "left"
    texts = ["<image>" + f" question number {i}" * (1 + i % 2) for i in range(args.batch)]
    inputs = processor(images=T.random_images(args.batch), text=texts, padding=True, return_tensors="pt")

    with torch.no_grad():
        delta = (reference(**inputs).logits - model(**inputs).logits).abs().max().item()
        generate = dict(max_new_tokens=args.new_tokens, do_sample=False, pad_token_id=T.PAD_ID)
        rows = {}
        for name, run in {
            "forward": lambda m: m(**inputs),
            f"generate {args.new_tokens} tokens": lambda m: m.generate(**inputs, **generate),
        }.items():
            ref_s = median_seconds(run, reference, args.repeats)
            ours_s = median_seconds(run, model, args.repeats)
            rows[name] = {"reference_s": ref_s, "hf_mm_s": ours_s, "ratio": ours_s / ref_s}

    print(f"max |delta logits| = {delta:.2e}; batch {args.batch}, {inputs['input_ids'].shape[1]} tokens, "
          f"hidden {args.hidden}, {args.layers} layers, {torch.get_num_threads()} threads")  # fmt: skip
    print(f"{'case':<22}{'reference (ms)':>16}{'hf_mm (ms)':>12}{'ratio':>8}")
    for name, row in rows.items():
        print(f"{name:<22}{row['reference_s'] * 1e3:>16.1f}{row['hf_mm_s'] * 1e3:>12.1f}{row['ratio']:>8.2f}")
    out = Path(__file__).parent / "results" / "llava.json"
    out.parent.mkdir(exist_ok=True)
    meta = {
        "args": vars(args),
        "max_abs_logit_delta": delta,
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
