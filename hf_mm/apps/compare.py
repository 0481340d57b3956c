"""`hf-mm compare`: every bridge between the same two towers, trained on the same tasks with the same budget.

    hf-mm compare [--quick] [--vision PATH --text PATH] [--families llava blip2 flamingo] [--bridges linear ...]
                  [--tasks shapes_vqa digits ...] [--seeds 0 1]

`--families` and `--bridges` are separate, as in recipes: the bridges are family llava's prefix bridges, and
every other family brings its own. For each task, bridge and seed: compose a fresh model, train the bridge and the LM (`instruct` stage; the tower
stays frozen) for `--steps` steps on the synthetic task, score the held-out split with hf_mm's scorers, and
record trainable parameters, visual tokens per image, train step time and training memory (`training_memory`:
exact on CPU, where no allocator statistics exist). Bridges:
- prefix bridges in `hf_mm_llava`: `linear`, `mlp2x_gelu`, `pixel_shuffle`, `perceiver`, `qwen_adapter`;
- `qformer`: BLIP-2's Q-Former as a stage-2 prefix bridge (no stage-1 pretraining: the same budget as the others);
- `gated_cross_attn`: Flamingo's resampler + gated cross-attention blocks (its tokens are read by cross-attention,
  not placed in the sequence).
The Qwen2.5-VL merger needs its own native-resolution ViT as the tower, so it is not in a shared-tower comparison.

Without `--vision/--text`, the towers are the demo's: a small CLIP-style tower (pretrained here on scene objects
unless `--quick`) and a small Llama. Writes `results.json`, `table.md` and `plot.png` under `--output-dir`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import Blip2QFormerConfig
from trl import SFTConfig

from ..data import synthetic
from ..eval import evaluate, predict
from ..modeling.bridges import BRIDGES

# The families whose bridge sits between any tower and any LM (Qwen2.5-VL's merger needs its own ViT), and the
# name each family's bridge has in the table; `llava`'s bridge is chosen with --bridges (hf_mm.BRIDGES).
FAMILY_BRIDGES = {"llava": None, "blip2": "qformer", "flamingo": "gated_cross_attn"}
TASKS = ("shapes_vqa", "grounding", "ocr", "digits")


@dataclasses.dataclass
class Budget:
    steps: int
    train_samples: int
    eval_samples: int
    batch_size: int = 16
    learning_rate: float = 1e-3
    image_size: int = 64


BUDGETS = {
    "full": Budget(steps=200, train_samples=2000, eval_samples=100),
    "quick": Budget(steps=40, train_samples=400, eval_samples=48),
}


# ---------------------------------------------------------------- one run


def arms(families: list[str], bridges: list[str]) -> list[tuple[str, str]]:
    """(family, bridge) pairs to run: every LLaVA prefix bridge asked for, then each other family's own bridge."""
    pairs = [("llava", bridge) for bridge in bridges] if "llava" in families else []
    return pairs + [(family, FAMILY_BRIDGES[family]) for family in families if family != "llava"]


def compose(family: str, bridge: str, vision: str, text: str, hidden: int):
    """A fresh model + processor of `family` (with `bridge`, for llava) between the two towers; sizes suit small
    towers."""
    from ..families import get_family

    generation, processor = get_family(family).generation_class, get_family(family).processor_class
    if family == "blip2":
        qformer = Blip2QFormerConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                                     num_attention_heads=4, encoder_hidden_size=hidden)  # fmt: skip
        model = generation.from_vision_text_pretrained(vision, text, qformer_config=qformer, num_query_tokens=16)
        return model, processor.from_vision_text_pretrained(vision, text, num_query_tokens=16)
    if family == "flamingo":
        settings = dict(num_latents=16, perceiver_depth=2, perceiver_heads=4, perceiver_head_dim=hidden // 4,
                        cross_attn_every_n_layers=1, cross_attn_heads=4, cross_attn_head_dim=hidden // 4)  # fmt: skip
        return generation.from_vision_text_pretrained(vision, text, **settings), processor.from_vision_text_pretrained(vision, text)  # fmt: skip
    settings = dict(bridge_type=bridge, vision_feature_layer=-1, perceiver_num_latents=16, perceiver_depth=2,
                    perceiver_heads=4, perceiver_head_dim=hidden // 4, adapter_num_queries=16, adapter_heads=4)  # fmt: skip
    return generation.from_vision_text_pretrained(vision, text, **settings), processor.from_vision_text_pretrained(vision, text, **settings)  # fmt: skip


def visual_tokens(model, processor, image_size: int) -> int:
    """Tokens each image contributes: placed in the sequence, or (Flamingo) read through cross-attention."""
    config = model.config
    if config.model_type == "hf_mm_flamingo":
        return config.num_latents
    if config.model_type == "hf_mm_blip2":
        return config.num_query_tokens
    return processor.num_image_tokens(image_size, image_size)


def training_memory(model, batch: dict) -> int:
    """Bytes a training step holds at its peak, counted exactly rather than sampled: every weight, plus gradients
    and AdamW's two moments for the trainable ones, plus the activations autograd saves for backward in one step
    (each storage once). On CUDA, `torch.cuda.max_memory_allocated` of the same step instead."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    saved: dict[int, int] = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(**batch).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return weights + 3 * trainable + sum(saved.values())


def run_one(
    arm: tuple[str, str], task: str, seed: int, towers: tuple[str, str], budget: Budget, workdir: Path
) -> dict:
    from ..training.setup import prepare_model
    from ..training.sft import HfMmSFTTrainer

    torch.manual_seed(seed)
    hidden = _tower_width(towers[0])
    family, bridge = arm
    model, processor = compose(family, bridge, *towers, hidden)
    model = prepare_model(model, "instruct")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    generate = synthetic.TASKS[task]
    train = synthetic.to_dataset(generate(budget.train_samples, seed=seed, image_size=budget.image_size))
    held_out = generate(budget.eval_samples, seed=seed, image_size=budget.image_size, split="test")
    args = SFTConfig(
        output_dir=str(workdir / f"{bridge}-{task}-{seed}"), max_steps=budget.steps, seed=seed,
        per_device_train_batch_size=budget.batch_size, learning_rate=budget.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=0.05, bf16=False, save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=10**6,
        max_length=1024, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    processor.tokenizer.padding_side = "right"
    trainer = HfMmSFTTrainer(model=model, args=args, processing_class=processor, train_dataset=train, stage="instruct")
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    memory = training_memory(model.train(), trainer.collator([train[i] for i in range(budget.batch_size)]))
    scores = evaluate(predict(model, processor, held_out, max_new_tokens=24), held_out)
    return {
        "family": family, "bridge": bridge, "task": task, "seed": seed, "score": scores["overall"],
        "trainable_params": trainable,
        "visual_tokens": visual_tokens(model, processor, budget.image_size), "step_s": seconds / budget.steps,
        "memory_mb": memory / 2**20, "dropped_overlong": trainer.collator.dropped,
    }  # fmt: skip


def _tower_width(vision: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(vision).hidden_size


# ---------------------------------------------------------------- towers, aggregation, outputs


def default_towers(root: Path, pretrain: bool) -> tuple[str, str]:
    """The demo's towers: a CLIP-style tower (taught scene objects first when `pretrain`) and a small Llama."""
    from .demo import PRESETS, build_towers

    preset = PRESETS["full"] if pretrain else dataclasses.replace(PRESETS["quick"], vision_feature_layer=-1)
    return build_towers(root, preset)


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (bridge, task): the mean score over seeds and its min-max spread, and the cost columns."""
    rows = []
    for bridge in dict.fromkeys(run["bridge"] for run in runs):
        for task in dict.fromkeys(run["task"] for run in runs):
            group = [run for run in runs if run["bridge"] == bridge and run["task"] == task]
            if not group:
                continue
            scores = [run["score"] for run in group]
            rows.append({
                "family": group[0]["family"], "bridge": bridge, "task": task, "seeds": len(group), "score": statistics.mean(scores),
                "score_min": min(scores), "score_max": max(scores),
                "trainable_params": group[0]["trainable_params"], "visual_tokens": group[0]["visual_tokens"],
                "step_s": statistics.median(run["step_s"] for run in group),
                "memory_mb": max(run["memory_mb"] for run in group),
            })  # fmt: skip
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| bridge | task | score (min-max over seeds) | trainable params | visual tokens / image | step s | train memory MB |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        lines.append(
            f"| `{row['bridge']}` | {row['task']} | {row['score']:.3f} ({row['score_min']:.3f}-{row['score_max']:.3f}) "
            f"| {row['trainable_params']:,} | {row['visual_tokens']} | {row['step_s']:.3f} | {row['memory_mb']:.1f} |"
        )  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Score against trainable parameters, one panel per task; marker area by visual tokens, bars = seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    bridges = list(dict.fromkeys(row["bridge"] for row in rows))
    colours = {bridge: plt.get_cmap("tab10")(i) for i, bridge in enumerate(bridges)}
    figure, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4.2), squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for row in (r for r in rows if r["task"] == task):
            x, y = row["trainable_params"], row["score"]
            axis.errorbar(x, y, yerr=[[y - row["score_min"]], [row["score_max"] - y]], fmt="none",
                          ecolor=colours[row["bridge"]], alpha=0.6)  # fmt: skip
            axis.scatter(x, y, s=20 + 3 * row["visual_tokens"], color=colours[row["bridge"]], alpha=0.8,
                         edgecolors="black", label=row["bridge"])  # fmt: skip
        axis.set_xscale("log")
        axis.set_title(task)
        axis.set_xlabel("trainable parameters")
        axis.set_ylabel("held-out score")
        axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(bridges), fontsize=8, markerscale=0.5)
    figure.suptitle("Bridges on the same towers and budget (marker area: visual tokens per image)")
    figure.tight_layout(rect=(0, 0.08, 1, 0.95))
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="hf-mm compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="one task, a short budget, random tower: CPU minutes")
    parser.add_argument("--vision", default=None, help="a vision tower (folder or Hub id); default: the demo's")
    parser.add_argument("--text", default=None, help="a causal LM (folder or Hub id); default: the demo's")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--families", nargs="+", choices=list(FAMILY_BRIDGES), default=list(FAMILY_BRIDGES))
    parser.add_argument("--bridges", nargs="+", choices=sorted(BRIDGES), default=sorted(BRIDGES),
                        help="family llava's prefix bridges")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--eval-samples", type=int, default=None)
    parser.add_argument("--output-dir", default="outputs/compare")
    args = parser.parse_args(argv)
    if (args.vision is None) != (args.text is None):
        parser.error("give both --vision and --text, or neither")
    overrides = {"steps": args.steps, "train_samples": args.train_samples, "eval_samples": args.eval_samples}
    budget = dataclasses.replace(
        BUDGETS["quick" if args.quick else "full"], **{k: v for k, v in overrides.items() if v}
    )
    tasks = args.tasks or (["shapes_vqa"] if args.quick else list(TASKS))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        towers = (args.vision, args.text) if args.vision else default_towers(Path(workdir), pretrain=not args.quick)
        jobs = [
            (arm, task, seed) for task in tasks for arm in arms(args.families, args.bridges) for seed in args.seeds
        ]
        runs = [run_one(*job, towers, budget, Path(workdir)) for job in tqdm(jobs, desc="bridges x tasks x seeds")]
    rows = aggregate(runs)
    result = {"budget": dataclasses.asdict(budget), "tasks": tasks, "seeds": args.seeds, "runs": runs, "rows": rows,
              "towers": "demo" if args.vision is None else [args.vision, args.text]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(table(rows) + "\n")
    plot(rows, out / "plot.png")
    print(table(rows))
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'plot.png'}")
    return result
