"""Contrastive training of dual encoders (CLIP / SigLIP) on transformers' Trainer: TRL has no contrastive trainer.

Launch:
    hf-mm contrastive --config recipes/clip_digits.yaml [--any_field value ...]
    accelerate launch --multi_gpu -m hf_mm.training.contrastive --config ...   (negatives from every process)

Data: rows with an image (`image`, or the first of `images`) and a caption (`text`). The loss is the model's own
(`loss_type` in its config: InfoNCE or SigLIP's sigmoid), computed over the global batch when distributed; set
`dataloader_drop_last` so every process holds the same number of pairs. Stages come from the roles (`lit` locks the
image tower, as in LiT); `use_peft` puts LoRA on the text tower, and `lora_vision` on the image tower too.
"""

import dataclasses
from pathlib import Path

from datasets import Dataset, load_dataset, load_from_disk
from transformers import AutoModel, AutoProcessor, Trainer, TrainingArguments, set_seed
from trl import ModelConfig, TrlParser

from ..data.captions import digit_pairs
from ..modeling.clip import HfMmClipModel
from ..processing import HfMmClipProcessor
from .grad_cache import ContrastiveAccumulationMixin
from .guards import TrainingGuardsMixin
from .publish import finish, hub_callbacks, hub_plan, training_record
from .setup import RoleOptimizerMixin, prepare_model, resolve_stage
from .stages import RoleSettings, get_stage


@dataclasses.dataclass
class ContrastiveCollator:
    """Rows of (image, caption) -> processor outputs with `return_loss=True`."""

    processor: object
    max_length: int | None = 64

    def __call__(self, examples: list[dict]) -> dict:
        images = [example["image"] if "image" in example else example["images"][0] for example in examples]
        texts = [example["text"] for example in examples]
        kwargs = {"truncation": True, "max_length": self.max_length} if self.max_length else {}
        batch = self.processor(images=images, text=texts, padding=True, return_tensors="pt", **kwargs)
        return {**batch, "return_loss": True}


class HfMmContrastiveTrainer(ContrastiveAccumulationMixin, TrainingGuardsMixin, RoleOptimizerMixin, Trainer):
    """Trainer with the contrastive collator (or the `data_collator` given), the model's own loss and per-role
    optimizer groups. Also trains BLIP-2's stage 1, whose model computes its ITC/ITM/ITG loss itself. Gradient
    accumulation equals the global batch for dual encoders (`grad_cache.py`)."""

    def __init__(self, model, args: TrainingArguments, processing_class, train_dataset, eval_dataset=None,
                 stage: str | dict[str, RoleSettings] = "full", max_length: int | None = 64, **kwargs):  # fmt: skip
        self.stage = get_stage(stage)
        args.remove_unused_columns = False  # the collator needs the raw image and text columns
        super().__init__(
            model=model,
            args=args,
            data_collator=kwargs.pop("data_collator", None) or ContrastiveCollator(processing_class, max_length),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )
        # The loss is a per-batch mean over the global batch; Trainer must not rescale it for token counts.
        self.model_accepts_loss_kwargs = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        self.check_finite_loss(outputs.loss)
        return (outputs.loss, outputs) if return_outputs else outputs.loss


@dataclasses.dataclass
class ContrastiveArguments:
    """The composition, the stage and the data of a contrastive run."""

    vision_model_name_or_path: str | None = dataclasses.field(default=None, metadata={"help": "Image tower."})
    text_model_name_or_path: str | None = dataclasses.field(default=None, metadata={"help": "Text tower."})
    projection_dim: int = dataclasses.field(default=512, metadata={"help": "Width of the shared space."})
    loss_type: str = dataclasses.field(default="infonce", metadata={"help": "infonce (CLIP) or sigmoid (SigLIP)."})
    stage: str = dataclasses.field(default="full", metadata={"help": "full | lit | align (projections only)."})
    lora_vision: bool = dataclasses.field(default=False, metadata={"help": "With use_peft, LoRA on the image tower."})
    vision_lr: float | None = dataclasses.field(default=None, metadata={"help": "Image tower LR (else base LR)."})
    text_lr: float | None = dataclasses.field(default=None, metadata={"help": "Text tower LR (else base LR)."})
    bridge_lr: float | None = dataclasses.field(default=None, metadata={"help": "Projections LR (else base LR)."})
    dataset_format: str = dataclasses.field(default="digits", metadata={"help": "digits | disk | hub."})
    dataset_name: str | None = dataclasses.field(default=None, metadata={"help": "Saved folder or Hub id."})
    digits_train_pairs: int = dataclasses.field(default=20000, metadata={"help": "Pairs for dataset_format=digits."})
    max_length: int = dataclasses.field(default=64, metadata={"help": "Caption length limit (tokens)."})


def load_model_and_processor(args: ContrastiveArguments, model_args: ModelConfig):
    if model_args.model_name_or_path:
        path = model_args.model_name_or_path
        return AutoModel.from_pretrained(path), AutoProcessor.from_pretrained(path)
    towers = (args.vision_model_name_or_path, args.text_model_name_or_path)
    if not all(towers):
        raise ValueError("Give model_name_or_path (a saved hf_mm_clip), or vision_ and text_model_name_or_path.")
    model = HfMmClipModel.from_vision_text_pretrained(
        *towers, projection_dim=args.projection_dim, loss_type=args.loss_type
    )
    return model, HfMmClipProcessor.from_vision_text_pretrained(*towers)


def load_dataset_for(args: ContrastiveArguments):
    if args.dataset_format == "digits":
        return Dataset.from_list(digit_pairs(args.digits_train_pairs))
    if args.dataset_format == "disk":
        return load_from_disk(args.dataset_name)
    if args.dataset_format == "hub":
        return load_dataset(args.dataset_name, split="train")
    raise ValueError(f"dataset_format={args.dataset_format!r} is not one of ('digits', 'disk', 'hub').")


def main(argv: list[str] | None = None) -> None:
    parser = TrlParser((ContrastiveArguments, TrainingArguments, ModelConfig))
    args, training_args, model_args = parser.parse_args_and_config(argv)
    set_seed(training_args.seed)  # new weights (a bridge, LoRA) are drawn after it: one seed, one run
    plan = hub_plan(training_args)

    # Model
    model, processor = load_model_and_processor(args, model_args)
    stage = resolve_stage(args, model_args.use_peft)
    model = prepare_model(model, stage, model_args)

    # Dataset
    train_dataset = load_dataset_for(args)

    # Training
    trainer = HfMmContrastiveTrainer(
        model=model,
        args=training_args,
        processing_class=processor,
        train_dataset=train_dataset,
        stage=stage,
        max_length=args.max_length,
        callbacks=hub_callbacks(plan),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # Save, record, card (and push)
    trainer.save_model(training_args.output_dir)
    bases = {"vision": args.vision_model_name_or_path, "text": args.text_model_name_or_path}
    if model_args.model_name_or_path:
        bases = {"model": model_args.model_name_or_path}
    data = "hf_mm-digit-captions" if args.dataset_format == "digits" else Path(args.dataset_name or "").name
    record = training_record(trainer, "contrastive", args.stage, stage, bases, [data])
    finish(trainer, processor, record, plan)
    print(
        f"[rank {training_args.process_index}/{training_args.world_size}] finished {trainer.state.global_step} steps"
    )
    if trainer.is_world_process_zero():
        out = training_args.output_dir
        print(f"Saved to {out}. Load it with: import hf_mm; AutoModel.from_pretrained({out!r}), or "
              f"pipeline('zero-shot-image-classification', model={out!r})")  # fmt: skip


if __name__ == "__main__":
    main()
