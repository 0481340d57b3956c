"""The cost of Qwen2.5-VL's window attention against full attention in the native-resolution ViT, as images grow.

    .venv/bin/python benchmarks/bench_qwen2_5_vit.py [--hidden 256 --depth 8 --sides 224 448 896 --repeats 3]

Times one forward of hf_mm's `hf_mm_qwen2_5_vit` twice per image size on identical weights: with the paper's layout
(full attention in every 4th block, 112 px windows elsewhere) and with full attention in every block. Prints the
median times, the ratio windowed / full, and how each grows when the image gets 4x more pixels (2x the side).
Full attention grows ~quadratically in the patches; windows keep all but the full blocks linear.
"""

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig, HfMmQwen2_5_ViTModel


def median_time(model, pixels, grid, repeats: int) -> float:
    with torch.no_grad():
        model(pixels, grid)  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(pixels, grid)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--sides", type=int, nargs="+", default=[224, 448, 896])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None, help="JSON path; '-' writes none (the harness keeps its own rows)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    common = dict(
        depth=args.depth, hidden_size=args.hidden, intermediate_size=2 * args.hidden, num_heads=args.hidden // 64
    )
    windowed = HfMmQwen2_5_ViTModel(
        HfMmQwen2_5_ViTConfig(**common, fullatt_block_indexes=list(range(3, args.depth, 4)))
    )
    full = HfMmQwen2_5_ViTModel(HfMmQwen2_5_ViTConfig(**common, fullatt_block_indexes=list(range(args.depth))))
    full.load_state_dict(windowed.state_dict())
    rows = []
    for side in args.sides:
        grid = torch.tensor([[1, side // 14, side // 14]])
        pixels = torch.randn(int(grid.prod()), 3 * 2 * 14 * 14)
        w, f = (
            median_time(windowed.eval(), pixels, grid, args.repeats),
            median_time(full.eval(), pixels, grid, args.repeats),
        )
        rows.append({"side": side, "patches": int(grid.prod()), "windowed_s": w, "full_s": f, "ratio": w / f})
    print(
        "| side px | patches | windowed ms | full ms | windowed / full | windowed growth x4 px | full growth x4 px |"
    )
    print("|---|---|---|---|---|---|---|")
    for i, row in enumerate(rows):
        growth = ("", "")
        if i and rows[i - 1]["side"] * 2 == row["side"]:
            growth = (
                f"{row['windowed_s'] / rows[i - 1]['windowed_s']:.2f}x",
                f"{row['full_s'] / rows[i - 1]['full_s']:.2f}x",
            )
        print(f"| {row['side']} | {row['patches']} | {row['windowed_s'] * 1e3:.0f} | {row['full_s'] * 1e3:.0f} | "
              f"{row['ratio']:.2f} | {growth[0]} | {growth[1]} |")  # fmt: skip
    if args.out == "-":
        return rows
    default = Path(__file__).parent / "results" / f"{time.strftime('%Y-%m-%d')}-{platform.node()}-qwen2_5_vit.json"
    out = Path(args.out) if args.out else default
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps({"device": f"cpu x{torch.get_num_threads()} threads", "args": vars(args), "rows": rows}, indent=2)
    )
    return rows


if __name__ == "__main__":
    main()
