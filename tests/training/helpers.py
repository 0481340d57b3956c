"""Builders the training tests share (test modules import no fixtures from each other): a short CPU `align` run
on TRL's SFTTrainer for the frozen-LM learning checks, CPU flags for the CLI, tiny SFT / DPO data and configs."""

import PIL.Image
from datasets import Dataset
from trl import DPOConfig, ModelConfig, SFTConfig

from hf_mm.apps import demo
from hf_mm.data import synthetic
from hf_mm.testing import random_images, tiny_llava_config
from hf_mm.training.setup import prepare_model
from hf_mm.training.sft import HfMmSFTTrainer


def train_align(model, processor, samples: list[dict], output_dir, steps: int = 300, learning_rate: float = 1e-3):
    """Train the bridge role only (`align`) for `steps` steps of batch 32 with a cosine schedule; returns the model."""
    model = prepare_model(model, "align")
    args = SFTConfig(
        output_dir=str(output_dir), max_steps=steps, per_device_train_batch_size=32, learning_rate=learning_rate,
        lr_scheduler_type="cosine", warmup_steps=0.05, bf16=False, save_strategy="no", report_to="none",
        max_length=256, disable_tqdm=True, use_cpu=True, logging_steps=100,
    )  # fmt: skip
    processor.tokenizer.padding_side = "right"
    train = synthetic.to_dataset(samples)
    HfMmSFTTrainer(model=model, args=args, processing_class=processor, train_dataset=train, stage="align").train()
    return model


CPU = [
    "--bf16",
    "false",
    "--dtype",
    "float32",
    "--report_to",
    "none",
    "--save_strategy",
    "no",
    "--disable_tqdm",
    "true",
]


TINY_DATA = ["--dataset_format", "synthetic", "--synthetic_train_samples", "8", "--synthetic_eval_samples", "0"]


TINY_DATA += ["--synthetic_image_size", "32", "--max_steps", "2", "--per_device_train_batch_size", "2"]


CONFIG = tiny_llava_config(vision_feature_layer=-1)


LORA = ModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0)


def colour_dataset(n: int = 8) -> Dataset:
    images = random_images(n, seed=1)
    rows = []
    for i, image in enumerate(images):
        question = [{"type": "image"}, {"type": "text", "text": "what colour?"}]
        answer = [{"type": "text", "text": ["red", "blue"][i % 2]}]
        rows.append(
            {
                "images": [image],
                "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
            }
        )
    return Dataset.from_list(rows)


# CPU settings the SFT and DPO tests share.
TRAINER_DEFAULTS = dict(
    per_device_train_batch_size=4, logging_steps=1, report_to=[], bf16=False, gradient_checkpointing=False,
    save_strategy="no", max_length=128, seed=0, disable_tqdm=True,
)  # fmt: skip


def sft_args(tmp_path, **kwargs) -> SFTConfig:
    defaults = dict(TRAINER_DEFAULTS, output_dir=str(tmp_path / "out"), learning_rate=1e-2)
    return SFTConfig(**{**defaults, **kwargs})


def preference_dataset(n: int = 8) -> Dataset:
    # Solid red or blue images; the preferred answer names the image's colour, so the preference needs the image.
    rows = []
    for i in range(n):
        good, bad = ("red", "blue") if i % 2 else ("blue", "red")
        image = PIL.Image.new("RGB", (32, 32), good)
        rows.append(
            {
                "images": [image],
                "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]}],
                "chosen": [{"role": "assistant", "content": [{"type": "text", "text": good}]}],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": bad}]}],
            }
        )
    return Dataset.from_list(rows)


def dpo_args(tmp_path, **kwargs) -> DPOConfig:
    defaults = dict(TRAINER_DEFAULTS, output_dir=str(tmp_path / "dpo"), learning_rate=5e-3, beta=0.1)
    return DPOConfig(**{**defaults, **kwargs})


def quick_demo_held_out(n: int, seed: int = 0) -> list[dict]:
    """Held-out shapes-VQA samples in the quick demo's format."""
    size = demo.PRESETS["quick"].image_size
    return synthetic.shapes_vqa(n, seed=seed, image_size=size, question_types=demo.QUESTION_TYPES, split="test")
