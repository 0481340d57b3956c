"""`hf-mm sft` under accelerate's own FSDP2, launched with `recipes/accelerate/fsdp.yaml` on 2 CPU processes (gloo).

accelerate turns FSDP on only for an accelerator's process group; `cpu_launch.py` lifts that one gate as
accelerate does for GPUs, and the rest is the real path: `accelerate launch --config_file
recipes/accelerate/fsdp.yaml`, the training CLI, the Trainer's FSDP2 preparation from the recipe (wrap units from
`_no_split_modules`, SHARDED_STATE_DICT checkpoints), its resume, and hf_mm's final save. Each run is checked against
the same CLI in one process on the same global batch (2 ranks x 2 samples against 1 x 4).

Shown: the per-step loss and gradient norm equal one process; the tower stays frozen; checkpoints are sharded
(one `.distcp` per rank) and marked complete; `--resume_from_checkpoint latest` continues from a sharded checkpoint
onto the uninterrupted run's losses and weights; accelerate's `merge_fsdp_weights` consolidates a checkpoint into
safetensors equal to the final model; the final model is saved whole and loads through AutoModelForImageTextToText
with the one-process model's logits; LoRA on the LM trains like one process too, and
`--score_eval` scores the sharded model on every rank (scored on rank 0 alone, it waited forever).
"""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm.cli import main
from hf_mm.testing import tiny_llava_config, tiny_llava_processor

ROOT = pathlib.Path(__file__).parents[2]
STEPS = 4


def sft_args(model: pathlib.Path, out: pathlib.Path, per_device: int, *extra: str, use_cpu: bool = True) -> list[str]:
    """The `instruct` stage (frozen tower) on 16 synthetic samples, fp32, a loss logged every step. DeepSpeed runs
    without `--use_cpu` (accelerate refuses DeepSpeed with it)."""
    return [
        "--model_name_or_path", str(model), "--stage", "instruct", "--output_dir", str(out),
        "--dataset_format", "synthetic", "--synthetic_train_samples", "16", "--synthetic_eval_samples", "0",
        "--synthetic_image_size", "32", "--max_steps", str(STEPS), "--per_device_train_batch_size", str(per_device),
        "--learning_rate", "1e-3", "--logging_steps", "1", "--bf16", "false", "--dtype", "float32",
        "--report_to", "none", "--disable_tqdm", "true", "--gradient_checkpointing", "false", "--seed", "0",
        *(["--use_cpu", "true"] if use_cpu else []), "--save_strategy", "no", *extra,
    ]  # fmt: skip


def launch(args: list[str], recipe: str = "recipes/accelerate/fsdp.yaml") -> None:
    """`accelerate launch` with a recipe's config (FSDP by default) on 2 CPU processes."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", recipe]
    command += ["--num_processes", "2", "--mixed_precision", "no"]
    command += ["tests/training/cpu_launch.py", "-m", "hf_mm.training.sft", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "[rank 0/2] finished" in result.stdout and "[rank 1/2] finished" in result.stdout


def history(out: pathlib.Path, key: str) -> dict[int, float]:
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return {entry["step"]: entry[key] for entry in log if key in entry}


def save_base(folder: pathlib.Path) -> None:
    """The tiny composed LLaVA every launch starts from, seeded."""
    config = tiny_llava_config(vision_feature_layer=-1)
    torch.manual_seed(0)
    HfMmLlavaForConditionalGeneration(config).save_pretrained(folder)
    tiny_llava_processor(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("accelerate_fsdp")
    save_base(root / "base")
    lora = ["--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0.0"]
    # Scored with hf_mm's scorers at the last step and at the end: every rank generates when the model is sharded.
    lora += ["--synthetic_eval_samples", "4", "--eval_strategy", "steps", "--eval_steps", str(STEPS)]
    lora += ["--score_eval", "true"]
    paths = {name: root / name for name in ("base", "fsdp", "resumed", "alone", "lora", "lora_alone")}

    launch(sft_args(paths["base"], paths["fsdp"], 2, "--save_strategy", "steps", "--save_steps", "2"))
    shutil.copytree(paths["fsdp"] / "checkpoint-2", paths["resumed"] / "checkpoint-2")
    launch(sft_args(paths["base"], paths["resumed"], 2, "--resume_from_checkpoint", "latest"))
    launch(sft_args(paths["base"], paths["lora"], 2, *lora))
    main(["sft", *sft_args(paths["base"], paths["alone"], 4)])
    main(["sft", *sft_args(paths["base"], paths["lora_alone"], 4, *lora)])
    return paths


def assert_same_tensors(a: dict, b: dict, atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, worst


def assert_trains_like_one_process(run: pathlib.Path, alone: pathlib.Path, base: pathlib.Path) -> None:
    """Per-step loss and gradient norm, the final weights and the Auto-loaded logits of a distributed `run` equal the
    one-process run `alone` on the same global batch; the tower of `base` stays frozen and the LM moves."""
    losses, alone_losses = history(run, "loss"), history(alone, "loss")
    assert sorted(losses) == list(range(1, STEPS + 1)) and losses[STEPS] != losses[1]
    assert max(abs(losses[s] - alone_losses[s]) for s in alone_losses) <= 1e-5, (losses, alone_losses)
    norms, alone_norms = history(run, "grad_norm"), history(alone, "grad_norm")
    assert max(abs(norms[s] - alone_norms[s]) for s in alone_norms) <= 1e-4

    final, initial = load_file(run / "model.safetensors"), load_file(base / "model.safetensors")
    assert_same_tensors(final, load_file(alone / "model.safetensors"))
    tower = [k for k in initial if ".vision_tower." in k]
    assert tower and all(torch.equal(final[k], initial[k]) for k in tower)  # frozen when sharded
    assert any(not torch.equal(final[k], initial[k]) for k in initial if ".language_model." in k)

    model = AutoModelForImageTextToText.from_pretrained(run).eval()
    reference = AutoModelForImageTextToText.from_pretrained(alone).eval()
    ids = torch.tensor([[model.config.image_token_id] * 16 + list(range(5, 13))])
    pixels = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits, expected = (m(input_ids=ids, pixel_values=pixels).logits for m in (model, reference))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)


def test_fsdp2_through_accelerate_trains_like_one_process_and_saves_a_loadable_model(runs):
    assert_trains_like_one_process(runs["fsdp"], runs["alone"], runs["base"])


def test_sharded_checkpoints_resume_with_latest_and_consolidate(runs, tmp_path):
    from accelerate.utils import merge_fsdp_weights

    checkpoint = runs["fsdp"] / f"checkpoint-{STEPS}"
    shards = sorted(p.name for p in (checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"] and not (checkpoint / "model.safetensors").exists()
    assert (
        "pytorch_model_fsdp_0/__1_0.distcp"
        in json.loads((checkpoint / "hf_mm_checkpoint_complete.json").read_text())["files"]
    )

    resumed, uninterrupted = history(runs["resumed"], "loss"), history(runs["fsdp"], "loss")
    assert max(abs(resumed[s] - uninterrupted[s]) for s in range(3, STEPS + 1)) <= 1e-6, (resumed, uninterrupted)
    final = load_file(runs["fsdp"] / "model.safetensors")
    assert_same_tensors(load_file(runs["resumed"] / "model.safetensors"), final, atol=1e-6)

    merge_fsdp_weights(str(checkpoint / "pytorch_model_fsdp_0"), str(tmp_path), safe_serialization=True)
    assert_same_tensors(load_file(tmp_path / "model.safetensors"), final, atol=0.0)


def test_lora_under_fsdp2_through_accelerate_trains_like_one_process(runs):
    losses, alone = history(runs["lora"], "loss"), history(runs["lora_alone"], "loss")
    assert max(abs(losses[s] - alone[s]) for s in alone) <= 1e-5, (losses, alone)
    scores, alone_scores = (
        [{k: v for k, v in entry.items() if k.startswith("score/")} for entry in json.loads(
            (run / "trainer_state.json").read_text())["log_history"] if any(k.startswith("score/") for k in entry)]
        for run in (runs["lora"], runs["lora_alone"])
    )  # fmt: skip
    assert len(scores) == 1 and scores == alone_scores  # the same greedy answers, scored while sharded
    record, alone_record = (json.loads((runs[r] / "hf_mm_training.json").read_text()) for r in ("lora", "lora_alone"))
    assert record["eval"] and record["eval"] == alone_record["eval"]
    adapter = load_file(runs["lora"] / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items())  # trained: B starts at zero
    assert_same_tensors(adapter, load_file(runs["lora_alone"] / "adapter_model.safetensors"))
