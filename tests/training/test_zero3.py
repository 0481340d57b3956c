"""DeepSpeed ZeRO-3 on 2 CPU processes (gloo, `DS_ACCELERATOR=cpu`), with `recipes/accelerate/deepspeed_zero3.yaml`'s
ZeRO settings. Run by `make test-zero3`, which installs deepspeed first: deepspeed ships only as an sdist whose build
imports torch, so an isolated pip build would fetch a CUDA torch of several GB; `make test-zero3` builds it against
the venv's CPU torch (`--no-build-isolation`). Without deepspeed, this module is skipped.

Shown, for the composed LLaVA of test_fsdp.py (frozen tower, trained bridge and LM): the per-step loss on 2 ranks
(2 samples each) equals one process on the 4-sample batch to 1e-5, the tower stays frozen, and the ZeRO-3 checkpoint
consolidates (deepspeed's `zero_to_fp32`) into safetensors that AutoModelForImageTextToText loads with the
one-process model's logits.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

from tests.training.test_fsdp import LR, STEPS, batch, build, single_process

pytest.importorskip("deepspeed")

ROOT = pathlib.Path(__file__).parents[2]
RECIPE = yaml.safe_load((ROOT / "recipes/accelerate/deepspeed_zero3.yaml").read_text())["deepspeed_config"]


def worker(out: str) -> None:
    import deepspeed
    import torch.distributed as dist
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    deepspeed.init_distributed(dist_backend="gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    out = pathlib.Path(out)
    model = build()
    tower = {k: v.clone() for k, v in model.model.vision_tower.state_dict().items()}
    config = {
        "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1, "zero_allow_untested_optimizer": True,
        "gradient_clipping": 0.0,
        "zero_optimization": {"stage": RECIPE["zero_stage"], "offload_param": {"device": RECIPE["offload_param_device"]},
                              "offload_optimizer": {"device": RECIPE["offload_optimizer_device"]}},
    }  # fmt: skip
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    full = batch()
    count = int((full["labels"] != -100).sum())
    mine = {key: value[2 * rank : 2 * rank + 2] for key, value in full.items()}
    losses = []
    for _ in range(STEPS):
        loss = engine(**mine, num_items_in_batch=torch.tensor(count)).loss
        # DeepSpeed averages gradients over ranks: scale by the world size so they sum, as the full batch's do.
        engine.backward(loss * world)
        engine.step()
        loss = loss.detach()
        dist.all_reduce(loss)
        losses.append(float(loss))
    engine.save_checkpoint(str(out / "zero3"))  # each rank writes its partition
    dist.barrier()
    if rank == 0:
        consolidated = get_fp32_state_dict_from_zero_checkpoint(str(out / "zero3"))
        plain = build()
        missing, unexpected = plain.load_state_dict(consolidated, strict=False)
        assert not unexpected and all("lm_head" in key for key in missing), (missing, unexpected)  # tied head
        frozen = all(torch.equal(plain.model.vision_tower.state_dict()[k], v) for k, v in tower.items())
        plain.save_pretrained(out / "consolidated")
        (out / "record.json").write_text(json.dumps({"losses": losses, "frozen": frozen}))
    dist.barrier()


def test_zero3_matches_one_process_and_consolidates(tmp_path):
    from transformers import AutoModelForImageTextToText

    script = tmp_path / "worker.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom tests.training.test_zero3 import worker\n"
                      f"worker({str(tmp_path)!r})\n")  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "record.json").read_text())
    expected, reference = single_process(STEPS)
    print(f"ZeRO-3 losses {record['losses']}, one process {expected}")
    assert max(abs(a - b) for a, b in zip(record["losses"], expected)) < 1e-5 and record["frozen"]
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "consolidated").eval()
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, reference.eval()(**inputs).logits, atol=1e-5, rtol=1e-5)
