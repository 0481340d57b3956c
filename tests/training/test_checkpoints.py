"""Checkpoints that survive faults (hf_mm.training.guards):
- a run SIGKILLed while it writes checkpoint-4 resumes with `latest` from checkpoint-2, reports checkpoint-4 as
  incomplete (never loads it, never deletes it), and ends on the same losses as a run that was never killed;
- a save that fails with a full disk raises naming the incomplete folder and the intact previous checkpoint;
- an explicit incomplete path is refused; rotation (`save_total_limit`) keeps the newest complete checkpoint.
"""

import errno
import logging
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from transformers import Trainer

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm.testing import tiny_llava_processor
from hf_mm.training.guards import COMPLETE_NAME, is_complete, resolve_resume
from hf_mm.training.setup import prepare_model
from hf_mm.training.sft import HfMmSFTTrainer
from tests.training.helpers import CONFIG, colour_dataset, sft_args

ROOT = pathlib.Path(__file__).parents[2]


def run(out: str, resume=None, kill_while_saving: int | None = None, save_total_limit=None) -> list[float]:
    """6 SFT steps from a fixed seed, a checkpoint every 2; the logged losses. With `kill_while_saving=N`, the
    process SIGKILLs itself after checkpoint-N's weights are written and before its optimizer state is."""
    if kill_while_saving is not None:
        save = Trainer._save_optimizer_and_scheduler

        def killing_save(self, output_dir):
            if output_dir.endswith(f"checkpoint-{kill_while_saving}"):
                os.kill(os.getpid(), signal.SIGKILL)
            return save(self, output_dir)

        Trainer._save_optimizer_and_scheduler = killing_save
    torch.manual_seed(0)
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), "instruct")
    args = sft_args(pathlib.Path(out), output_dir=out, max_steps=6, per_device_train_batch_size=2,
                    save_strategy="steps", save_steps=2, save_total_limit=save_total_limit)  # fmt: skip
    trainer = HfMmSFTTrainer(model=model, args=args, processing_class=tiny_llava_processor(CONFIG),
                             train_dataset=colour_dataset(), stage="instruct")  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_a_kill_while_saving_resumes_from_the_last_complete_checkpoint(tmp_path, caplog):
    straight = run(str(tmp_path / "straight"))
    killed = str(tmp_path / "killed")
    code = f"from tests.training.test_checkpoints import run; run({killed!r}, kill_while_saving=4)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    partial = pathlib.Path(killed) / "checkpoint-4"
    assert any(partial.glob("*.safetensors")) and not is_complete(partial)  # it looks like a checkpoint
    assert is_complete(pathlib.Path(killed) / "checkpoint-2")
    with caplog.at_level(logging.WARNING, logger="hf_mm.training.guards"):
        resumed = run(killed, resume="latest")
    assert "checkpoint-4" in caplog.text and "not loaded" in caplog.text
    assert len(resumed) == len(straight) == 6
    assert max(abs(a - b) for a, b in zip(straight, resumed)) < 1e-6
    assert is_complete(partial)  # saved again, whole, by the resumed run


def test_a_full_disk_fails_loudly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save = torch.save

    def full_disk(obj, path, *args, **kwargs):
        if "checkpoint-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="checkpoint-4 failed.*checkpoint-2, is intact") as raised:
        run(str(out), save_total_limit=1)
    assert raised.value.errno == errno.ENOSPC
    assert is_complete(out / "checkpoint-2") and not is_complete(out / "checkpoint-4")
    assert resolve_resume(out, "latest") == str(out / "checkpoint-2")
    with pytest.raises(ValueError, match="checkpoint-4.*not a complete hf_mm checkpoint"):
        resolve_resume(out, str(out / "checkpoint-4"))


def test_rotation_keeps_the_newest_complete_checkpoint_and_latest_finds_it(tmp_path):
    out = tmp_path / "out"
    run(str(out), save_total_limit=1)
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-6"]
    assert (out / "checkpoint-6" / COMPLETE_NAME).is_file() and is_complete(out / "checkpoint-6")
    assert resolve_resume(out, "latest") == resolve_resume(out, True) == str(out / "checkpoint-6")
    (out / "checkpoint-6" / "trainer_state.json").write_text("{")  # damaged after it was marked
    assert not is_complete(out / "checkpoint-6") and resolve_resume(out, "latest") is None
    assert resolve_resume(tmp_path / "empty", "latest") is None and resolve_resume(out, None) is None


def test_a_model_holding_every_key_conversion_still_saves_hf_mm_keys(tmp_path):
    # transformers 5.25's ZeRO-3 loader leaves every conversion it knows on the model, matched or not, and
    # save_pretrained reverses them all; every hf_mm class's from_pretrained keeps only the matched ones.
    from safetensors.torch import load_file
    from transformers.conversion_mapping import get_model_conversion_mapping

    from hf_mm.modeling.compat import keep_matched_weight_conversions

    model = HfMmLlavaForConditionalGeneration(CONFIG)
    model.save_pretrained(tmp_path / "plain")
    expected = set(load_file(tmp_path / "plain" / "model.safetensors"))
    model._weight_conversions = get_model_conversion_mapping(model)
    model.save_pretrained(tmp_path / "every")
    assert set(load_file(tmp_path / "every" / "model.safetensors")) != expected  # legacy prefixes
    keep_matched_weight_conversions(model)
    model.save_pretrained(tmp_path / "kept")
    assert set(load_file(tmp_path / "kept" / "model.safetensors")) == expected
