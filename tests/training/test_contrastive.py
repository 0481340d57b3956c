"""Contrastive training of hf_mm_clip on the Trainer: the CLI recipe, LiT (locked image tower) and LoRA on a tower."""

import pytest
import torch
from datasets import Dataset
from transformers import AutoModel, TrainingArguments
from trl import ModelConfig

from hf_mm import HfMmClipModel, HfMmClipProcessor
from hf_mm.apps.demo_clip import ClipDemoPreset, build_towers
from hf_mm.cli import main
from hf_mm.data.captions import digit_pairs
from hf_mm.roles import role_parameters
from hf_mm.training.contrastive import HfMmContrastiveTrainer
from hf_mm.training.setup import prepare_model
from hf_mm.training.stages import RoleSettings, get_stage

PRESET = ClipDemoPreset(hidden=32, layers=1)


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    return build_towers(tmp_path_factory.mktemp("clip_towers"), PRESET)


def compose(towers, **kwargs):
    model = HfMmClipModel.from_vision_text_pretrained(*towers, projection_dim=16, text_pooling="mean", **kwargs)
    return model, HfMmClipProcessor.from_vision_text_pretrained(*towers)


def train_steps(model, processor, stage, tmp_path, steps=3):
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-2,
        report_to="none", save_strategy="no", disable_tqdm=True, dataloader_drop_last=True,
    )  # fmt: skip
    dataset = Dataset.from_list(digit_pairs(32))
    trainer = HfMmContrastiveTrainer(
        model=model, args=args, processing_class=processor, train_dataset=dataset, stage=stage
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    return {n for n, p in model.named_parameters() if not torch.equal(before[n], p)}, trainer


@pytest.mark.parametrize("loss_type", ["infonce", "sigmoid"])
def test_lit_locks_the_image_tower_and_trains_the_rest(towers, tmp_path, loss_type):
    model, processor = compose(towers, loss_type=loss_type)
    stage = get_stage("lit")
    model = prepare_model(model, stage)
    changed, trainer = train_steps(model, processor, stage, tmp_path)
    roles = {role: {n for n, _ in named} for role, named in role_parameters(model).items()}
    assert not changed & roles["vision"]
    assert roles["text"] <= changed | {n for n in roles["text"] if "pooler" in n or "position" in n}
    assert {"visual_projection.weight", "text_projection.weight", "logit_scale"} <= changed
    assert ("logit_bias" in changed) == (loss_type == "sigmoid")
    assert trainer.state.log_history[-1]["train_loss"] > 0


def test_lora_on_the_text_tower_and_optionally_the_image_tower(towers, tmp_path):
    model, processor = compose(towers)
    stage = {**get_stage("full"), "text": RoleSettings(True, lora=True), "vision": RoleSettings(True, lora=True)}
    model = prepare_model(model, stage, ModelConfig(use_peft=True, lora_r=4, lora_alpha=8))
    changed, _ = train_steps(model, processor, stage, tmp_path)
    assert any("text_tower" in n and "lora_" in n for n in changed)
    assert any("vision_tower" in n and "lora_" in n for n in changed)
    assert any("visual_projection.modules_to_save" in n for n in changed)
    assert not any("lora_" not in n and "modules_to_save" not in n for n in changed)


def test_contrastive_cli_runs_the_recipe_on_local_towers(towers, tmp_path, capsys):
    out = tmp_path / "run"
    main(
        ["contrastive", "--config", "recipes/clip_digits.yaml", "--output_dir", str(out), "--max_steps", "3"]
        + ["--vision_model_name_or_path", towers[0], "--text_model_name_or_path", towers[1], "--projection_dim", "16"]
        + ["--digits_train_pairs", "64", "--per_device_train_batch_size", "16", "--disable_tqdm", "true"]
    )
    assert "[rank 0/1] finished 3 steps" in capsys.readouterr().out
    reloaded = AutoModel.from_pretrained(out)
    assert type(reloaded) is HfMmClipModel and reloaded.config.projection_dim == 16
