"""`hf-mm sft` under accelerate's own DeepSpeed ZeRO-3, launched with `recipes/accelerate/deepspeed_zero3.yaml` on 2 CPU
processes (gloo, `DS_ACCELERATOR=cpu`). Run by `make test-zero3`, which installs deepspeed (skipped without it).

accelerate runs DeepSpeed only on an accelerator; `cpu_launch.py` gives the launched ranks the process group accelerate
would build for one, and the rest is the real path: `accelerate launch --config_file
recipes/accelerate/deepspeed_zero3.yaml`, the training CLI, the Trainer's DeepSpeed engine from the recipe (ZeRO stage
3, parameters partitioned across the ranks), its checkpoints and resume, and the final save gathered from the
partitions. Each run is checked against the same CLI in one process on the same global batch (2 x 2 against 1 x 4).
"""

import json
import pathlib
import shutil

import pytest
from safetensors.torch import load_file

from hf_mm.cli import main
from tests.training.test_accelerate_fsdp import (
    STEPS,
    assert_same_tensors,
    assert_trains_like_one_process,
    history,
    launch,
    save_base,
    sft_args,
)

pytest.importorskip("deepspeed")

RECIPE = "recipes/accelerate/deepspeed_zero3.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("accelerate_zero3")
    save_base(root / "base")
    paths = {name: root / name for name in ("base", "zero3", "resumed", "alone")}
    saving = ["--save_strategy", "steps", "--save_steps", "2"]
    launch(sft_args(paths["base"], paths["zero3"], 2, *saving, use_cpu=False), RECIPE)
    shutil.copytree(paths["zero3"] / "checkpoint-2", paths["resumed"] / "checkpoint-2")
    # The resumed run is also scored with hf_mm's scorers at its last step and at the end, on both ranks.
    scoring = ["--synthetic_eval_samples", "4", "--eval_strategy", "steps", "--eval_steps", str(STEPS)]
    scoring += ["--score_eval", "true"]
    resume = ["--resume_from_checkpoint", "latest", *scoring]
    launch(sft_args(paths["base"], paths["resumed"], 2, *resume, use_cpu=False), RECIPE)
    main(["sft", *sft_args(paths["base"], paths["alone"], 4)])
    return paths


def test_zero3_through_accelerate_trains_like_one_process_and_saves_a_loadable_model(runs):
    assert_trains_like_one_process(runs["zero3"], runs["alone"], runs["base"])


def test_partitioned_checkpoints_resume_with_latest_and_consolidate(runs):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    checkpoint = runs["zero3"] / f"checkpoint-{STEPS}"
    step = checkpoint / f"global_step{STEPS}"
    partitions = sorted(p.name for p in step.glob("zero_pp_rank_*_model_states.pt"))
    assert partitions == ["zero_pp_rank_0_mp_rank_00_model_states.pt", "zero_pp_rank_1_mp_rank_00_model_states.pt"]
    marker = json.loads((checkpoint / "hf_mm_checkpoint_complete.json").read_text())["files"]
    assert f"global_step{STEPS}/zero_pp_rank_1_mp_rank_00_model_states.pt" in marker

    resumed, uninterrupted = history(runs["resumed"], "loss"), history(runs["zero3"], "loss")
    assert max(abs(resumed[s] - uninterrupted[s]) for s in range(3, STEPS + 1)) <= 1e-6, (resumed, uninterrupted)
    final = load_file(runs["zero3"] / "model.safetensors")
    assert_same_tensors(load_file(runs["resumed"] / "model.safetensors"), final, atol=1e-6)

    record = json.loads((runs["resumed"] / "hf_mm_training.json").read_text())
    assert record["eval"] and all(0.0 <= row["value"] <= 1.0 for row in record["eval"])  # scored while partitioned

    # DeepSpeed's own consolidation of the partitions equals the model the run saved.
    consolidated = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    assert_same_tensors({k: v for k, v in consolidated.items() if k in final}, final, atol=0.0)
