"""Shared by the frozen-LM learning checks (BLIP-2 stage 2, Flamingo): a short CPU `align` run on TRL's SFTTrainer."""

from trl import SFTConfig

from hf_mm.data import synthetic
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
