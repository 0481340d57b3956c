"""Never lose work: a non-finite loss stops training and keeps the last good checkpoint; two runs cannot write
one output folder at once (the second fails naming the first's pid), and a killed run leaves no stale lock."""

import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from trl import SFTConfig

import hf_mm
from hf_mm import testing as T
from hf_mm.data import synthetic
from hf_mm.training.guards import lock_output_dir
from hf_mm.training.setup import prepare_model
from hf_mm.training.sft import HfMmSFTTrainer


def _trainer(output_dir, max_steps=5, save_steps=1):
    config = T.tiny_llava_config()
    model = prepare_model(hf_mm.HfMmLlavaForConditionalGeneration(config), "instruct")
    args = SFTConfig(output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=2, use_cpu=True,
                     save_strategy="steps", save_steps=save_steps, report_to="none", disable_tqdm=True, bf16=False,
                     learning_rate=1e-3, logging_steps=1)  # fmt: skip
    data = synthetic.to_dataset(synthetic.shapes_vqa(16, image_size=32))
    return HfMmSFTTrainer(model=model, args=args, processing_class=T.tiny_llava_processor(config), train_dataset=data)


def test_a_nan_loss_stops_training_naming_the_step_and_keeps_the_good_checkpoints(tmp_path):
    trainer = _trainer(tmp_path)
    calls = []

    def poison(module, args, output):  # from the 3rd forward on, the embeddings (hence the loss) are NaN
        calls.append(1)
        return output * float("nan") if len(calls) >= 3 else output

    trainer.model.get_input_embeddings().register_forward_hook(poison)
    last_good = str(tmp_path / "checkpoint-2")
    with pytest.raises(FloatingPointError, match=rf"loss is nan at step 3; .* last good checkpoint is {last_good}"):
        trainer.train()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    weights = load_file(tmp_path / "checkpoint-2" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


HOLD = "import sys, time; from hf_mm.training.guards import lock_output_dir; lock_output_dir(sys.argv[1]); " \
       "print('locked', flush=True); time.sleep(120)"  # fmt: skip


def test_a_second_run_on_the_same_output_dir_fails_loudly_and_a_killed_run_leaves_no_lock(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RuntimeError, match=rf"being written by another process \(pid {holder.pid}\)"):
            _trainer(tmp_path, max_steps=1).train()
        assert not list(tmp_path.glob("checkpoint-*"))  # refused before writing anything
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    lock_output_dir(tmp_path)  # the kernel dropped the dead run's lock: resuming is never blocked
    _trainer(tmp_path, max_steps=1).train()
    assert (tmp_path / "checkpoint-1").is_dir()
