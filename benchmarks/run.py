"""hf_mm against transformers' reference classes, in one process, on identical configs and weights.

    python -m benchmarks.run [--preset small|gpu|smoke] [--repeats N]      (or: hf-mm bench ...)

Measures (targets are goals; the table reports what was reached):
- P1 train step (forward + backward) time, hf_mm / reference, for Llava, Qwen2.5-VL, CLIP and BLIP-2 (<= 0.95);
- P2 padding-free packing against padded batches on a length-skewed SFT mix (1-4 images, 20-400 text tokens),
  real tokens per second (>= 1.8x);
- P3 the native-resolution ViT with window attention: time(4x pixels) / time(1x) (<= 4.6; full attention's
  growth is shown next to it);
- P4 the LM weights' memory under QLoRA (bitsandbytes 4-bit) against 16-bit LoRA (<= 0.35x);
- P5 greedy decode tokens/s against transformers' Llava (>= 1.0), with the vision tower called once per generate();
- P8 one LLaVA train step at Qwen's 151,936-token vocabulary, 2,048 tokens x batch 2: peak memory (<= 0.5x; each
  model alone in a fresh process) and tokens/s (>= 1.0x). hf_mm never builds the full-vocabulary logits.

Each pair is checked to compute the same outputs before it is timed. Timed runs alternate between the two models
(warm-up first) so drift hits both; a ratio is the median of the per-repeat ratios, with their min-max spread.
Writes `benchmarks/results/<date>-<host>.json` (a list of rows) and prints a markdown table.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

PRESETS = {
    # 2 CPU cores, a few minutes in all.
    "small": dict(hidden=128, layers=2, image_size=112, batch=4, repeats=5, new_tokens=24, pack_samples=16,
                  long_vocab=151_936, long_tokens=2_048),
    # A 0.5B-class LM (Qwen2.5-0.5B's widths) behind a ViT-B-class tower, for a CUDA machine.
    "gpu": dict(hidden=896, layers=24, image_size=224, batch=8, repeats=10, new_tokens=64, pack_samples=64,
                long_vocab=151_936, long_tokens=2_048),
    # The test suite's check that the harness runs end to end.
    "smoke": dict(hidden=64, layers=1, image_size=56, batch=2, repeats=1, new_tokens=4, pack_samples=4,
                  long_vocab=4_096, long_tokens=256),
}  # fmt: skip


def alternate(run_ours, run_reference, repeats: int) -> dict:
    """Median seconds of each, interleaved after a warm-up, and the per-repeat ratio ours / reference."""
    run_ours(), run_reference()
    ours, reference = [], []
    for _ in range(repeats):
        for run, times in ((run_ours, ours), (run_reference, reference)):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
    ratios = [o / r for o, r in zip(ours, reference)]
    return {"hf_mm": statistics.median(ours), "reference": statistics.median(reference),
            "ratio": statistics.median(ratios), "spread": [min(ratios), max(ratios)]}  # fmt: skip


def train_step(model, inputs: dict, loss_key: str = "labels"):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(**inputs, **({"return_loss": True} if loss_key == "return_loss" else {}))
        out.loss.backward()

    return run


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: list[str] | None = None) -> list[dict]:
    from . import measures

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="gpu" if torch.cuda.is_available() else "small")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="ids to run, e.g. P1 P5")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/<date>-<host>.json)")
    args = parser.parse_args(argv)
    size = dict(PRESETS[args.preset], **({"repeats": args.repeats} if args.repeats else {}))
    device = torch.device("cuda" if torch.cuda.is_available() and args.preset == "gpu" else "cpu")
    rows = []
    for measure in measures.ALL:
        if args.only and measure.__name__.split("_")[0].upper() not in args.only:
            continue
        torch.manual_seed(0)
        for row in measure(size, device):
            rows.append({**row, "device": device_name() if device.type == "cpu" else torch.cuda.get_device_name()})
            print(f"  {row['id']}: ratio {row['ratio']:.2f} (target {row['target']})", flush=True)
    print(markdown(rows, args.preset))
    out = Path(args.out) if args.out else default_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"wrote {out}")
    return rows


def default_path() -> Path:
    name = f"{time.strftime('%Y-%m-%d')}-{platform.node() or 'host'}.json"
    return Path(__file__).parent / "results" / name


def markdown(rows: list[dict], preset: str) -> str:
    lines = [f"preset `{preset}` on {rows[0]['device'] if rows else '-'}", "",
             "| id | measure | hf_mm | reference | ratio (spread) | target |", "|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        spread = f" ({row['spread'][0]:.2f}-{row['spread'][1]:.2f})" if row.get("spread") else ""
        lines.append(f"| {row['id']} | {row['measure']} | {row['hf_mm']:.4g} | {row['reference']:.4g} | "
                     f"{row['ratio']:.2f}{spread} | {row['target']} |")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
