"""The recipes through the `hf-mm` CLI: every YAML parses, and the QLoRA / DPO recipes run end to end on tiny towers."""

import os
import pathlib
import subprocess
import sys

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForImageTextToText, AutoProcessor, TrainingArguments
from trl import DPOConfig, GRPOConfig, ModelConfig, SFTConfig, TrlParser

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm.cli import main
from hf_mm.testing import save_tiny_causal_lm, save_tiny_vision_tower, tiny_llava_config, tiny_llava_processor
from hf_mm.training.contrastive import ContrastiveArguments
from hf_mm.training.data_args import DataArguments
from hf_mm.training.qformer import QFormerArguments
from hf_mm.training.setup import HfMmArguments
from hf_mm.training.stages import STAGES
from tests.training.helpers import CPU, TINY_DATA

RECIPES = sorted(pathlib.Path(__file__).parents[2].joinpath("recipes").glob("*.yaml"))
# CPU overrides for the GPU recipes, and a few steps on the synthetic suite.


def parse(recipe: pathlib.Path):
    """(composition and stage, trainer config, model config) of a recipe, with the recipe's own parser."""
    if recipe.name.startswith(("clip", "blip2_stage1")):
        arguments = QFormerArguments if recipe.name.startswith("blip2") else ContrastiveArguments
        parser = TrlParser((arguments, TrainingArguments, ModelConfig))
        hf_args, training_args, model_args = parser.parse_args_and_config(["--config", str(recipe), "--bf16", "false"])
        return hf_args, training_args, model_args
    config = {"dpo": DPOConfig, "grpo": GRPOConfig}.get(recipe.name.split("_")[0].split(".")[0], SFTConfig)
    parser = TrlParser((HfMmArguments, DataArguments, config, ModelConfig))
    hf_args, _, training_args, model_args = parser.parse_args_and_config(["--config", str(recipe), "--bf16", "false"])
    return hf_args, training_args, model_args


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.stem for r in RECIPES])
def test_every_recipe_parses_and_states_its_composition(recipe):
    hf_args, training_args, model_args = parse(recipe)
    assert hf_args.stage in STAGES
    towers = [getattr(hf_args, f"{role}_name_or_path", None) for role in ("vision_model", "text_model", "stage1")]
    if recipe.stem == "blip2_stage1":  # a tower and a new Q-Former
        composition = towers[0] and (hf_args.qformer_name_or_path or hf_args.qformer_tokenizer_name_or_path)
    elif recipe.stem == "blip2_stage2":  # the stage-1 checkpoint holds the tower
        composition = towers[2] and towers[1] and not towers[0]
    else:
        composition = towers[0] and towers[1]
    assert model_args.model_name_or_path or composition
    assert training_args.output_dir.startswith("outputs/")
    assert not model_args.load_in_4bit or model_args.use_peft


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return save_tiny_vision_tower(root / "vision"), save_tiny_causal_lm(root / "text")


def test_qlora_recipe_runs_saves_an_adapter_and_its_base(towers, tmp_path, capsys):
    out = tmp_path / "qlora"
    main(
        ["sft", "--config", "recipes/qlora_instruct.yaml", *CPU, *TINY_DATA, "--output_dir", str(out)]
        + ["--vision_model_name_or_path", towers[0], "--text_model_name_or_path", towers[1], "--lora_r", "4"]
        + ["--use_bnb_nested_quant", "false", "--gradient_checkpointing", "true"]
    )
    printed = capsys.readouterr().out
    assert "[rank 0/1] finished 2 steps" in printed and f"Saved to {out}" in printed
    assert (out / "adapter_model.safetensors").exists() and (out / "base" / "model.safetensors").exists()
    base = AutoModelForImageTextToText.from_pretrained(out / "base")
    assert any(type(m).__name__ == "Linear4bit" for m in base.modules())
    # bitsandbytes 0.50's CPU inference kernel cannot take layers narrower than its 64-wide quantization block
    # (ours are 32 wide), so run the forward through the autograd path: adapters loaded as trainable.
    model = PeftModel.from_pretrained(base, out, is_trainable=True)
    processor = AutoProcessor.from_pretrained(out)
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour is the shape?"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    inputs = processor(images=[image], text=[prompt], return_tensors="pt")
    logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


def test_dpo_recipe_runs_from_a_saved_model(tmp_path, capsys):
    config = tiny_llava_config()
    HfMmLlavaForConditionalGeneration(config).save_pretrained(tmp_path / "sft")
    tiny_llava_processor(config).save_pretrained(tmp_path / "sft")
    out = tmp_path / "dpo"
    main(
        ["dpo", "--config", "recipes/dpo.yaml", *CPU, *TINY_DATA, "--output_dir", str(out)]
        + ["--model_name_or_path", str(tmp_path / "sft"), "--lora_r", "4", "--gradient_checkpointing", "false"]
    )
    assert "[rank 0/1] finished 2 steps" in capsys.readouterr().out
    assert (out / "adapter_model.safetensors").exists() and not (out / "base").exists()


def test_sft_on_two_cpu_processes_with_accelerate(towers, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += ["-m", "hf_mm.training.sft", *CPU, *TINY_DATA, "--use_cpu", "true", "--output_dir", str(out)]
    command += ["--vision_model_name_or_path", towers[0], "--text_model_name_or_path", towers[1], "--stage", "align"]
    command += ["--gradient_checkpointing", "false"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 0/2] finished 2 steps" in result.stdout and "[rank 1/2] finished 2 steps" in result.stdout
    assert (out / "model.safetensors").exists()
    AutoModelForImageTextToText.from_pretrained(out)
