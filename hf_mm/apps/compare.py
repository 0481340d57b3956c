"""`hf-mm compare`: every bridge between the same two pretrained towers, trained on the same tasks with the same
budget, the way its paper trains it, and scored with a confidence interval and an image-ablation control.

    hf-mm compare [--quick] [--vision PATH --text PATH] [--families llava blip2 flamingo] [--bridges linear ...]
                  [--tasks digits shapes_vqa ...] [--seeds 0 1 2]

`--families` and `--bridges` are separate, as in recipes: the bridges are family llava's prefix bridges, and every
other family brings its own. The LM is frozen where the paper freezes it (`SCHEDULES`): LLaVA trains the bridge
alone (stage 1, `align`) and then the bridge and the LM (stage 2, `instruct`); BLIP-2's stage 2 and Flamingo train
their bridge into a frozen LM throughout. The tower is frozen everywhere. Bridges:
- prefix bridges in `hf_mm_llava`: `linear`, `mlp2x_gelu`, `pixel_shuffle`, `perceiver`, `qwen_adapter`;
- `qformer`: BLIP-2's Q-Former as its stage-2 prefix bridge (no stage-1 pretraining: the same budget as the others);
- `qformer_stage1`: the same after BLIP-2's stage 1 (ITC + ITM + ITG on the task's images and their descriptions,
  `--qformer-stage1-steps`, tower frozen), reported separately: its stage-1 steps and seconds are extra, in
  `stage1_steps` / `stage1_seconds`;
- `gated_cross_attn`: Flamingo's resampler + gated cross-attention blocks (its tokens are read by cross-attention,
  not placed in the sequence).
The Qwen2.5-VL merger needs its own native-resolution ViT as the tower, so it is not in a shared-tower comparison.

For each task, bridge and seed: compose a fresh model, train it for `--steps` steps, score the held-out split with
hf_mm's scorers at `curve_points` points along the way (the learning curve, against steps and against training
seconds), then score the same checkpoint with the images shuffled across the held-out samples
(`score_shuffled_images`: a bridge whose score does not drop has not learned to look). Rows average the seeds, with a
95% confidence interval (Student's t over seeds), and carry trainable parameters, visual tokens per image, train step
seconds and training memory (`training_memory`: exact on CPU, where no allocator statistics exist). `pairwise`
compares every two bridges of a task on the seeds they share, with the CI of the difference.

Without `--vision/--text`, the towers are built here, as the papers assume them pretrained: a small CLIP-style tower
taught the scenes' objects (random with `--quick`), and a small Llama pretrained on the tasks' text with a
description where the image will be ("the digit seven. What digit is this?" -> "7"), which a frozen-LM bridge must
learn to stand in for. Writes `results.json`, `table.md` and `plot.png` under `--output-dir`.
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
from transformers import Blip2QFormerConfig, TrainerCallback
from trl import SFTConfig

from ..data import synthetic
from ..data.captions import TRAIN_TEMPLATES, caption
from ..eval import evaluate, predict
from ..modeling.bridges import BRIDGES

# The families whose bridge sits between any tower and any LM (Qwen2.5-VL's merger needs its own ViT), and the
# name each family's bridge has in the table; `llava`'s bridge is chosen with --bridges (hf_mm.BRIDGES).
FAMILY_BRIDGES = {"llava": None, "blip2": "qformer", "flamingo": "gated_cross_attn"}
QFORMER_STAGE1 = "qformer_stage1"  # BLIP-2's Q-Former after its own stage 1, then stage 2 like `qformer`
TASKS = ("shapes_vqa", "grounding", "ocr", "digits")
FULL_TASKS, QUICK_TASKS = ("digits", "shapes_vqa"), ("digits",)
# How each family's paper trains its bridge: (stage, share of the steps). The LM is frozen in `align`.
SCHEDULES = {
    "llava": (("align", 0.25), ("instruct", 0.75)),  # LLaVA: projector pre-training, then instruction tuning
    "blip2": (("align", 1.0),),  # BLIP-2 stage 2: Q-Former and projection into a frozen LM (after stage 1, or not)
    "flamingo": (("align", 1.0),),  # Flamingo: resampler and gated cross-attention; the LM stays frozen
}
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom; the normal 1.96 beyond.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip
MAX_NEW_TOKENS = {"grounding": 24, "ocr": 12, "shapes_vqa": 8, "digits": 8}


@dataclasses.dataclass
class Budget:
    steps: int
    train_samples: int
    eval_samples: int
    batch_size: int = 16
    learning_rate: float = 1e-3
    image_size: int = 64
    curve_points: int = 4
    text_pretrain_steps: int = 300
    tower_digit_steps: int = 300
    qformer_stage1_steps: int = 200  # 0: no `qformer_stage1` row (--quick: only with --qformer-stage1-steps)


BUDGETS = {
    "full": Budget(steps=200, train_samples=2000, eval_samples=100),
    "quick": Budget(steps=24, train_samples=200, eval_samples=32, curve_points=2, text_pretrain_steps=60,
                    qformer_stage1_steps=0),
}  # fmt: skip


def ci95(values: list[float]) -> float:
    """Half-width of the 95% confidence interval of the mean of `values` (Student's t; 0 for a single value)."""
    if len(values) < 2:
        return 0.0
    t = T_975[len(values) - 2] if len(values) - 1 <= len(T_975) else 1.96
    return t * statistics.stdev(values) / len(values) ** 0.5


# ---------------------------------------------------------------- one run


def arms(families: list[str], bridges: list[str], qformer_stage1: bool = False) -> list[tuple[str, str]]:
    """(family, bridge) pairs to run: every LLaVA prefix bridge asked for, then each other family's own bridge, and
    BLIP-2's Q-Former after its stage 1 when `qformer_stage1`."""
    pairs = [("llava", bridge) for bridge in bridges] if "llava" in families else []
    pairs += [(family, FAMILY_BRIDGES[family]) for family in families if family != "llava"]
    return pairs + ([("blip2", QFORMER_STAGE1)] if qformer_stage1 and "blip2" in families else [])


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


def qformer_stage1(vision: str, text: str, samples: list[dict], budget: Budget, seed: int, folder: Path) -> float:
    """BLIP-2 stage 1 into `folder`: a new Q-Former (the `qformer` arm's size) on the frozen tower learns ITC, ITM
    and ITG on the task's train images and their descriptions (`describe`); rows showing the same thing (a
    digit's class, or the same description) are positives, never hard negatives. Returns the training seconds."""
    import random

    from datasets import Dataset
    from transformers import AutoTokenizer, TrainingArguments

    from ..modeling.blip2 import HfMmBlip2ForImageTextRetrieval
    from ..processing import HfMmBlip2Processor
    from ..training.contrastive import HfMmContrastiveTrainer
    from ..training.qformer import QFormerCollator
    from ..training.setup import prepare_model

    hidden, tokenizer = _tower_width(vision), AutoTokenizer.from_pretrained(text)
    config = Blip2QFormerConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2,
                                num_attention_heads=4, encoder_hidden_size=hidden, vocab_size=len(tokenizer))  # fmt: skip
    model = HfMmBlip2ForImageTextRetrieval.from_vision_pretrained(vision, qformer_config=config, num_query_tokens=16)
    processor = HfMmBlip2Processor.from_vision_pretrained(vision, tokenizer, qformer_config=model.config.qformer_config,
                                                          num_query_tokens=16)  # fmt: skip
    rng = random.Random(seed)
    captions = [describe(sample, rng) for sample in samples]
    keys = [sample["meta"].get("label", caption) for sample, caption in zip(samples, captions)]
    ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    rows = [{"image": s["images"][0], "text": c, "label": ids[k]} for s, c, k in zip(samples, captions, keys)]
    args = TrainingArguments(
        output_dir=str(folder / "run"), max_steps=budget.qformer_stage1_steps, seed=seed,
        per_device_train_batch_size=budget.batch_size, learning_rate=budget.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0.05, save_strategy="no", report_to="none", disable_tqdm=True,
        logging_steps=10**6, use_cpu=not torch.cuda.is_available(),
    )  # fmt: skip
    trainer = HfMmContrastiveTrainer(model=prepare_model(model, "align"), args=args, processing_class=processor,
                                     train_dataset=Dataset.from_list(rows), stage="align",
                                     data_collator=QFormerCollator(processor))  # fmt: skip
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return seconds


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


class CurveCallback(TrainerCallback):
    """Scores the held-out split at the given global steps of a run that spans several trainers (stages); the
    seconds are training seconds, without the time spent scoring."""

    def __init__(self, score_fn, points: set[int], offset: int, curve: list[dict], clock: dict):
        self.score_fn, self.points, self.offset, self.curve, self.clock = score_fn, points, offset, curve, clock

    def on_step_end(self, args, state, control, **kwargs):
        step = self.offset + state.global_step
        if step in self.points:
            paused = time.perf_counter()
            self.curve.append({"step": step, "seconds": paused - self.clock["start"] - self.clock["scoring"],
                               "score": self.score_fn()})  # fmt: skip
            self.clock["scoring"] += time.perf_counter() - paused


def stage_steps(family: str, steps: int) -> list[tuple[str, int]]:
    """`SCHEDULES[family]` in steps; every stage gets at least one step, and the shares add up to `steps`."""
    schedule = SCHEDULES[family]
    counts = [max(1, round(share * steps)) for _, share in schedule[:-1]]
    return [(stage, n) for (stage, _), n in zip(schedule, [*counts, max(1, steps - sum(counts))])]


def run_one(
    arm: tuple[str, str], task: str, seed: int, towers: tuple[str, str], budget: Budget, workdir: Path
) -> dict:
    from ..eval.reliance import shuffled_images
    from ..roles import role_parameters
    from ..training.setup import prepare_model
    from ..training.sft import HfMmSFTTrainer

    torch.manual_seed(seed)
    family, bridge = arm
    generate = synthetic.TASKS[task]
    train_samples = generate(budget.train_samples, seed=seed, image_size=budget.image_size)
    stage1_seconds = 0.0
    if bridge == QFORMER_STAGE1:
        from ..families import get_family

        folder = workdir / f"{bridge}-{task}-{seed}-stage1"
        stage1_seconds = qformer_stage1(*towers, train_samples, budget, seed, folder)
        entry = get_family("blip2")
        model = entry.generation_class.from_stage1(str(folder), towers[1])
        processor = entry.processor_class.from_stage1(str(folder), towers[1])
    else:
        model, processor = compose(family, bridge, *towers, _tower_width(towers[0]))
    processor.tokenizer.padding_side = "right"
    lm_before = [p.detach().clone() for _, p in role_parameters(model)["llm"]]
    train = synthetic.to_dataset(train_samples)
    held_out = generate(budget.eval_samples, seed=seed, image_size=budget.image_size, split="test")

    def score(samples=held_out) -> float:
        return evaluate(predict(model, processor, samples, max_new_tokens=MAX_NEW_TOKENS[task]), samples)["overall"]

    stages = stage_steps(family, budget.steps)
    points = {round(budget.steps * (i + 1) / budget.curve_points) for i in range(budget.curve_points)}
    curve, clock, offset, trainable = [{"step": 0, "seconds": 0.0, "score": score()}], {"scoring": 0.0}, 0, {}
    clock["start"] = time.perf_counter()
    for stage, steps in stages:
        model = prepare_model(model, stage)
        trainable[stage] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        args = SFTConfig(
            output_dir=str(workdir / f"{bridge}-{task}-{seed}-{stage}"), max_steps=steps, seed=seed,
            per_device_train_batch_size=budget.batch_size, learning_rate=budget.learning_rate,
            lr_scheduler_type="cosine", warmup_steps=0.05, bf16=False, save_strategy="no", report_to="none",
            disable_tqdm=True, logging_steps=10**6, max_length=1024, use_cpu=not torch.cuda.is_available(),
        )  # fmt: skip
        trainer = HfMmSFTTrainer(model=model, args=args, processing_class=processor, train_dataset=train, stage=stage,
                                 callbacks=[CurveCallback(score, points, offset, curve, clock)])  # fmt: skip
        trainer.train()
        offset += steps
    seconds = time.perf_counter() - clock["start"] - clock["scoring"]
    memory = training_memory(model.train(), trainer.collator([train[i] for i in range(budget.batch_size)]))
    lm_after = [p.detach() for _, p in role_parameters(model)["llm"]]
    return {
        "family": family, "bridge": bridge, "task": task, "seed": seed, "stages": stages,
        "score": curve[-1]["score"], "score_shuffled_images": score(shuffled_images(held_out)),
        "trainable_params": trainable[stages[-1][0]], "trainable_params_per_stage": trainable,
        "lm_trained": any(not torch.equal(a, b) for a, b in zip(lm_before, lm_after)),
        "visual_tokens_per_image": visual_tokens(model, processor, budget.image_size),
        "step_seconds": seconds / budget.steps, "train_memory_mb": memory / 2**20, "curve": curve,
        "dropped_overlong": trainer.collator.dropped,
        "stage1_steps": budget.qformer_stage1_steps if bridge == QFORMER_STAGE1 else 0, "stage1_seconds": stage1_seconds,
    }  # fmt: skip


def _tower_width(vision: str) -> int:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(vision).hidden_size


# ---------------------------------------------------------------- towers, aggregation, outputs


def describe(sample: dict, rng) -> str:
    """What the image shows, in words: the text the LM is pretrained with where the image will be."""
    meta = sample["meta"]
    if sample["task"] == "digits":
        return caption(meta["label"], rng.choice(TRAIN_TEMPLATES))
    if sample["task"] == "ocr":
        return f"the text {meta['text']}"
    shapes = sorted(meta["shapes"], key=lambda shape: shape["box"][0])  # left to right, for "left of" questions
    if sample["task"] == "grounding":
        return ", ".join(f"a {s['colour']} {s['shape']} at {synthetic.format_box(s['box'])}" for s in shapes)
    return ", ".join(f"a {s['colour']} {s['shape']}" for s in shapes)


def text_chats(tasks: list[str], n: int, seed: int) -> list[list[dict]]:
    """Each task's train samples with a description in place of the image, as text-only chats."""
    import random

    rng, chats = random.Random(seed), []
    for task in tasks:
        for sample in synthetic.TASKS[task](n, seed=seed + 1000):
            question = sample["messages"][0]["content"][-1]["text"]
            chats.append([{"role": "user", "content": f"{describe(sample, rng)}. {question}"},
                          sample["messages"][1]])  # fmt: skip
    rng.shuffle(chats)
    return chats


def pretrain_text_tower(folder: Path, tasks: list[str], steps: int, batch_size: int = 32) -> None:
    """Teach the LM saved in `folder` the tasks' language (full-sequence LM loss on `text_chats`), in place: the
    frozen-LM recipes assume an LM that already answers from a description."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..tokens import prepare_tokenizer

    lm, tokenizer = (
        AutoModelForCausalLM.from_pretrained(folder),
        prepare_tokenizer(AutoTokenizer.from_pretrained(folder)),
    )
    tokenizer.padding_side = "right"
    lm.resize_token_embeddings(len(tokenizer))  # the chat template's special tokens, as the processor will add them
    chats = text_chats(tasks, n=max(1, steps * batch_size // len(tasks)), seed=0)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=3e-3)
    torch.manual_seed(0)
    lm.train()
    for step in range(steps):
        texts = [
            tokenizer.apply_chat_template(chat, tokenize=False) for chat in chats[step * batch_size :][:batch_size]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        lm(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def pretrain_tower_on_digits(folder: Path, steps: int, image_size: int, batch_size: int = 64) -> None:
    """Teach the tower saved in `folder` the digits' classes (a linear head on its mean patch token), in place: the
    demo's tower knows scene objects, and CLIP's pretraining would have shown it handwriting too."""
    from transformers import AutoImageProcessor, CLIPVisionModel

    tower, image_processor = CLIPVisionModel.from_pretrained(folder), AutoImageProcessor.from_pretrained(folder)
    samples = synthetic.digits(steps * batch_size, seed=1, image_size=image_size)
    head = torch.nn.Linear(tower.config.hidden_size, 10)
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=2e-3)
    torch.manual_seed(0)
    tower.train()
    for step in range(steps):
        batch = samples[step * batch_size :][:batch_size]
        pixels = image_processor([s["images"][0] for s in batch], return_tensors="pt")["pixel_values"]
        logits = head(tower(pixel_values=pixels).last_hidden_state[:, 1:].mean(1))
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor([s["meta"]["label"] for s in batch]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"pretrained the vision tower on digits for {steps} steps (loss {loss.item():.3f})")
    tower.save_pretrained(folder)


def default_towers(root: Path, pretrain: bool, tasks: list[str], budget: Budget) -> tuple[str, str]:
    """The demo's towers, pretrained as the papers assume (only when `pretrain`, for the tower): the CLIP-style
    tower taught scene objects (and digits, when a task needs them), and the small Llama taught the tasks'
    language."""
    from .demo import PRESETS, build_towers

    # The LM's own stage 0 here is `pretrain_text_tower` (every task's text), not the demo's shapes-only one.
    preset = PRESETS["full"] if pretrain else dataclasses.replace(PRESETS["quick"], pretrain_steps=0)
    vision, text = build_towers(root, dataclasses.replace(preset, lm_pretrain_steps=0, vision_feature_layer=-1))
    if pretrain and "digits" in tasks:
        pretrain_tower_on_digits(Path(vision), budget.tower_digit_steps, budget.image_size)
    pretrain_text_tower(Path(text), tasks, budget.text_pretrain_steps)
    return vision, text


def aggregate(runs: list[dict]) -> list[dict]:
    """One row per (bridge, task): the mean over seeds with its 95% confidence interval, the shuffled-image
    control, the cost columns, and the mean learning curve (score and seconds at each step, CI over seeds)."""
    rows = []
    for bridge in dict.fromkeys(run["bridge"] for run in runs):
        for task in dict.fromkeys(run["task"] for run in runs):
            group = [run for run in runs if run["bridge"] == bridge and run["task"] == task]
            if not group:
                continue
            scores = [run["score"] for run in group]
            shuffled = [run["score_shuffled_images"] for run in group]
            curve = [
                {"step": point["step"],
                 "seconds": statistics.mean(run["curve"][i]["seconds"] for run in group),
                 "score": statistics.mean(values := [run["curve"][i]["score"] for run in group]),
                 "score_ci95": ci95(values)}
                for i, point in enumerate(group[0]["curve"])
            ]  # fmt: skip
            rows.append({
                "family": group[0]["family"], "bridge": bridge, "task": task, "seeds": len(group),
                "score": statistics.mean(scores), "score_ci95": ci95(scores),
                "score_shuffled_images": statistics.mean(shuffled), "score_shuffled_images_ci95": ci95(shuffled),
                "image_effect_ci95": ci95([a - b for a, b in zip(scores, shuffled)]),
                "lm_trained": group[0]["lm_trained"], "trainable_params": group[0]["trainable_params"],
                "visual_tokens_per_image": group[0]["visual_tokens_per_image"],
                "step_seconds": statistics.median(run["step_seconds"] for run in group),
                "train_memory_mb": max(run["train_memory_mb"] for run in group), "curve": curve,
                "stage1_steps": group[0]["stage1_steps"],
                "stage1_seconds": statistics.mean(run["stage1_seconds"] for run in group),
            })  # fmt: skip
    return rows


def pairwise(runs: list[dict]) -> list[dict]:
    """Per task, every pair of bridges: the mean score difference over the seeds both ran (paired: a seed is the
    same data and held-out split for every bridge) and its 95% CI; `significant` when the interval excludes 0."""
    pairs = []
    for task in dict.fromkeys(run["task"] for run in runs):
        scores: dict[str, dict[int, float]] = {}
        for run in (r for r in runs if r["task"] == task):
            scores.setdefault(run["bridge"], {})[run["seed"]] = run["score"]
        for i, a in enumerate(scores):
            for b in list(scores)[i + 1 :]:
                differences = [scores[a][seed] - scores[b][seed] for seed in scores[a] if seed in scores[b]]
                mean, interval = statistics.mean(differences), ci95(differences)
                pairs.append({"task": task, "a": a, "b": b, "difference": mean, "ci95": interval,
                              "significant": len(differences) > 1 and abs(mean) > interval})  # fmt: skip
    return pairs


def table(rows: list[dict]) -> str:
    lines = ["| bridge | task | score ± 95% CI | images shuffled | LM | trainable params | visual tokens / image "
             "| step s | train memory MB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        extra = f" (+{row['stage1_steps']} stage-1 steps)" if row["stage1_steps"] else ""
        lines.append(
            f"| `{row['bridge']}`{extra} | {row['task']} | {row['score']:.3f} ± {row['score_ci95']:.3f} "
            f"| {row['score_shuffled_images']:.3f} | {'trained' if row['lm_trained'] else 'frozen'} "
            f"| {row['trainable_params']:,} | {row['visual_tokens_per_image']} | {row['step_seconds']:.3f} "
            f"| {row['train_memory_mb']:.1f} |"
        )  # fmt: skip
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> dict:
    """Learning curves, one column per task: held-out score against steps (top) and against training seconds
    (bottom), mean over seeds with the 95% CI shaded; dotted: the final checkpoint with its images shuffled.
    Returns what was drawn, read back from the axes: {task: {bridge: {"steps", "seconds", "score"}}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    bridges = list(dict.fromkeys(row["bridge"] for row in rows))
    colours = {bridge: plt.get_cmap("tab10")(i) for i, bridge in enumerate(bridges)}
    figure, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7.5), squeeze=False)
    for column, task in enumerate(tasks):
        for row in (r for r in rows if r["task"] == task):
            mean = [point["score"] for point in row["curve"]]
            low = [point["score"] - point["score_ci95"] for point in row["curve"]]
            high = [point["score"] + point["score_ci95"] for point in row["curve"]]
            for axis, key in ((axes[0][column], "step"), (axes[1][column], "seconds")):
                x = [point[key] for point in row["curve"]]
                axis.plot(x, mean, color=colours[row["bridge"]], marker="o", markersize=3, label=row["bridge"],
                          gid=f"{task}/{row['bridge']}")  # fmt: skip
                axis.fill_between(x, low, high, color=colours[row["bridge"]], alpha=0.15)
                axis.hlines(row["score_shuffled_images"], x[0], x[-1], colors=[colours[row["bridge"]]],
                            linestyles="dotted", alpha=0.7)  # fmt: skip
        axes[0][column].set_title(task)
        axes[0][column].set_xlabel("training steps")
        axes[1][column].set_xlabel("training seconds")
        for axis in axes[:, column]:
            axis.set_ylabel("held-out score")
            axis.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(bridges), fontsize=8)
    figure.suptitle("Bridges on the same towers and budget (shaded: 95% CI over seeds; dotted: images shuffled)")
    figure.tight_layout(rect=(0, 0.05, 1, 0.96))
    figure.savefig(path, dpi=120)
    drawn: dict = {}
    for axis, key in ((axes[0], "steps"), (axes[1], "seconds")):
        for column_axis in axis:
            for line in column_axis.get_lines():
                if line.get_gid():
                    task, bridge = line.get_gid().split("/")
                    entry = drawn.setdefault(task, {}).setdefault(bridge, {})
                    entry[key], entry["score"] = (
                        [float(v) for v in line.get_xdata()],
                        [float(v) for v in line.get_ydata()],
                    )
    plt.close(figure)
    return drawn


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="hf-mm compare", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="digits only, a short budget, random tower: CPU minutes")
    parser.add_argument("--vision", default=None, help="a vision tower (folder or Hub id); default: the demo's")
    parser.add_argument("--text", default=None, help="a causal LM (folder or Hub id); default: the demo's")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--families", nargs="+", choices=list(FAMILY_BRIDGES), default=list(FAMILY_BRIDGES))
    parser.add_argument("--bridges", nargs="+", choices=sorted(BRIDGES), default=sorted(BRIDGES),
                        help="family llava's prefix bridges")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--train-samples", type=int, default=None)
    parser.add_argument("--eval-samples", type=int, default=None)
    parser.add_argument("--qformer-stage1-steps", type=int, default=None,
                        help="BLIP-2 stage-1 steps of the qformer_stage1 row (0: no such row)")  # fmt: skip
    parser.add_argument("--output-dir", default="outputs/compare")
    args = parser.parse_args(argv)
    if (args.vision is None) != (args.text is None):
        parser.error("give both --vision and --text, or neither")
    for name in ("steps", "train_samples", "eval_samples", "qformer_stage1_steps"):
        value, least = getattr(args, name), 0 if name == "qformer_stage1_steps" else 1
        if value is not None and value < least:
            parser.error(f"--{name.replace('_', '-')}={value}: give at least {least}")
    overrides = {"steps": args.steps, "train_samples": args.train_samples, "eval_samples": args.eval_samples,
                 "qformer_stage1_steps": args.qformer_stage1_steps}  # fmt: skip
    budget = dataclasses.replace(
        BUDGETS["quick" if args.quick else "full"], **{k: v for k, v in overrides.items() if v is not None}
    )
    tasks = args.tasks or list(QUICK_TASKS if args.quick else FULL_TASKS)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as workdir:
        towers = (args.vision, args.text)
        if args.vision is None:
            towers = default_towers(Path(workdir), not args.quick, tasks, budget)
        jobs = [
            (arm, task, seed)
            for task in tasks
            for arm in arms(args.families, args.bridges, budget.qformer_stage1_steps > 0)
            for seed in args.seeds
        ]
        runs = [run_one(*job, towers, budget, Path(workdir)) for job in tqdm(jobs, desc="bridges x tasks x seeds")]
    rows = aggregate(runs)
    result = {"budget": dataclasses.asdict(budget), "tasks": tasks, "seeds": args.seeds, "runs": runs, "rows": rows,
              "pairwise": pairwise(runs),
              "towers": "demo" if args.vision is None else [args.vision, args.text]}  # fmt: skip
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "table.md").write_text(table(rows) + "\n")
    plotted = plot(rows, out / "plot.png")
    print(table(rows))
    print(f"wrote {out / 'results.json'}, {out / 'table.md'} and {out / 'plot.png'}")
    return {**result, "plotted": plotted}
