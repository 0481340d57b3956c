"""SFT on TRL's SFTTrainer: LoRA adapters that keep the bridge, QLoRA on the LLM only, and exact resume."""

import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from peft import PeftModel
from transformers import AutoModelForImageTextToText, BitsAndBytesConfig, TrainerCallback

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm.roles import role_parameters
from hf_mm.testing import (
    save_tiny_causal_lm,
    save_tiny_vision_tower,
    tiny_llava_processor,
)
from hf_mm.training.collators import VisionSFTCollator
from hf_mm.training.setup import HfMmArguments, prepare_model, resolve_stage
from hf_mm.training.sft import HfMmSFTTrainer
from tests.training.helpers import CONFIG, LORA, colour_dataset, sft_args


def train(model, tmp_path, stage, steps=4, **kwargs):
    processor = tiny_llava_processor(CONFIG)
    args = sft_args(tmp_path, max_steps=steps, **kwargs)
    trainer = HfMmSFTTrainer(
        model=model, args=args, processing_class=processor, train_dataset=colour_dataset(), stage=stage
    )
    trainer.train()
    return trainer


def eval_inputs():
    processor = tiny_llava_processor(CONFIG)
    return VisionSFTCollator(processor)(list(colour_dataset(2)))


def logits_of(model, inputs) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


def test_lora_adapter_reloads_and_merges_keeping_the_trained_bridge(tmp_path):
    base = HfMmLlavaForConditionalGeneration(CONFIG)
    base.save_pretrained(tmp_path / "base")
    base_bridge = {k: v.clone() for k, v in base.model.bridge.state_dict().items()}
    stage = resolve_stage(HfMmArguments(stage="instruct"), use_peft=True)
    model = prepare_model(base, stage, LORA)
    assert isinstance(model, PeftModel)
    train(model, tmp_path, stage)
    inputs = eval_inputs()
    trained = logits_of(model, inputs)
    model.save_pretrained(tmp_path / "adapter")

    fresh = AutoModelForImageTextToText.from_pretrained(tmp_path / "base")
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter")
    assert torch.equal(logits_of(reloaded, inputs), trained)

    merged = reloaded.merge_and_unload()
    trained_bridge = merged.model.bridge.state_dict()
    assert all(not torch.equal(trained_bridge[k], base_bridge[k]) for k in base_bridge), "the bridge did not train"
    torch.testing.assert_close(logits_of(merged, inputs), trained, atol=1e-5, rtol=0)
    merged.save_pretrained(tmp_path / "merged")
    again = AutoModelForImageTextToText.from_pretrained(tmp_path / "merged")
    torch.testing.assert_close(logits_of(again, inputs), trained, atol=1e-5, rtol=0)
    assert all(torch.equal(again.model.bridge.state_dict()[k], v) for k, v in trained_bridge.items())


def test_lora_on_the_vision_tower_is_opt_in(tmp_path):
    stage = resolve_stage(HfMmArguments(stage="instruct", lora_vision=True), use_peft=True)
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), stage, LORA)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any("vision_tower" in n and "lora_" in n for n in trainable)
    plain = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), resolve_stage(HfMmArguments(), True), LORA)
    assert not any("vision_tower" in n for n, p in plain.named_parameters() if p.requires_grad)


def test_qlora_quantizes_the_llm_only_and_trains_bridge_and_adapters(tmp_path):
    vision = save_tiny_vision_tower(tmp_path / "vision")
    text = save_tiny_causal_lm(tmp_path / "text")
    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(
        vision, text, quantization_config=quantization
    )
    quantized = {n for n, m in model.named_modules() if type(m).__name__ == "Linear4bit"}
    assert quantized and all(n.startswith("model.language_model.") for n in quantized)
    stage = resolve_stage(HfMmArguments(stage="instruct"), use_peft=True)
    model = prepare_model(model, stage, LORA)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, tmp_path, stage, steps=2)
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}
    assert any("lora_" in n and "language_model" in n for n in changed)
    assert any("bridge" in n and "modules_to_save" in n for n in changed)
    assert not any("vision_tower" in n for n in changed)


def test_qlora_without_peft_is_refused(tmp_path):
    vision, text = save_tiny_vision_tower(tmp_path / "v"), save_tiny_causal_lm(tmp_path / "t")
    model = HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(
        vision, text, quantization_config=BitsAndBytesConfig(load_in_4bit=True)
    )
    with pytest.raises(ValueError, match="use_peft=True"):
        prepare_model(model, resolve_stage(HfMmArguments(), use_peft=False))


def test_per_role_learning_rates_become_optimizer_groups(tmp_path):
    stage = resolve_stage(HfMmArguments(stage="full", bridge_lr=1e-3, vision_lr=1e-5), use_peft=False)
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), stage)
    trainer = HfMmSFTTrainer(
        model=model,
        args=sft_args(tmp_path, max_steps=1, weight_decay=0.1),
        processing_class=tiny_llava_processor(CONFIG),
        train_dataset=colour_dataset(),
        stage=stage,
    )
    groups = trainer.create_optimizer().param_groups
    lrs = {(g["role"], g["weight_decay"]): g["lr"] for g in groups}
    assert lrs == {(r, wd): lr for r, lr in (("vision", 1e-5), ("bridge", 1e-3), ("llm", 1e-2)) for wd in (0.1, 0.0)}
    in_groups = sum(len(g["params"]) for g in groups)
    assert in_groups == sum(len(v) for v in role_parameters(model).values())


class KillAfter(TrainerCallback):
    """SIGKILL the process as step `step + 1` begins: checkpoint-`step` is on disk, nothing is cleaned up."""

    def __init__(self, step):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


def resume_run(out: str, resume: str | None = None, kill_after: int | None = None) -> list[float]:
    """6 SFT steps (checkpoints every 3) from a fixed seed; the logged losses."""
    torch.manual_seed(0)
    stage = resolve_stage(HfMmArguments(stage="instruct"), use_peft=False)
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), stage)
    args = sft_args(pathlib.Path(out), output_dir=out, max_steps=6, per_device_train_batch_size=2)
    args.save_strategy, args.save_steps = "steps", 3
    trainer = HfMmSFTTrainer(
        model=model,
        args=args,
        processing_class=tiny_llava_processor(CONFIG),
        train_dataset=colour_dataset(),
        stage=stage,
        callbacks=[KillAfter(kill_after)] if kill_after else [],
    )
    trainer.train(resume_from_checkpoint=resume)
    return [log["loss"] for log in trainer.state.log_history if "loss" in log]


def test_resume_after_a_kill_continues_the_same_loss_curve(tmp_path):
    straight = resume_run(str(tmp_path / "straight"))
    killed = str(tmp_path / "killed")
    code = f"from tests.training.test_sft import resume_run; resume_run({killed!r}, kill_after=3)"
    root = pathlib.Path(__file__).parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    resumed = resume_run(killed, resume=os.path.join(killed, "checkpoint-3"))
    assert len(straight) == 6 and straight[0] > straight[-1]
    # The resumed run's history holds the first 3 losses (from the checkpoint's trainer state) and 3 new ones.
    assert len(resumed) == 6
    assert max(abs(a - b) for a, b in zip(straight, resumed)) < 1e-6


def test_the_dropped_count_reaches_every_log_line_and_the_log_history(tmp_path):
    """Each over-long sample dropped by the collator is counted in the trainer's logs (history and reporters),
    not only in a warning."""
    dataset = colour_dataset(8)
    rows = [dataset[i] for i in range(len(dataset))]  # decoded: PIL images
    rows[0]["messages"][1]["content"][0]["text"] = "red " * 200  # far over max_length=128
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), "instruct")
    processor = tiny_llava_processor(CONFIG)
    trainer = HfMmSFTTrainer(model=model, args=sft_args(tmp_path, max_steps=2), processing_class=processor,
                             train_dataset=Dataset.from_list(rows), stage="instruct")  # fmt: skip
    trainer.train()
    counts = [row["dropped_overlong"] for row in trainer.state.log_history if "loss" in row]
    assert counts and counts[-1] == trainer.collator.dropped >= 1
