"""Preference tuning (DPO) of any hf_mm VLM on TRL's DPOTrainer (Qwen2.5-VL's post-training: SFT, then DPO).

Launch:
    hf-mm dpo --config recipes/dpo.yaml [--any_field value ...]

Data: `prompt` / `chosen` / `rejected` (message lists or strings) + `images`. TRL's vision preference collator puts
the loss on the completions only; hf_mm's subclass adds the never-truncate rule: a pair longer than `max_length` is
dropped and counted (`overlong="drop"`) or raises (`"error"`), instead of being cut, possibly through an image.

The reference model: with LoRA, TRL keeps a frozen copy of the adapter (the bridge in `modules_to_save` included);
without LoRA, a frozen deep copy of the starting model, so a composed model needs no path to reload from.
"""

import copy
import dataclasses
import logging

import torch
from transformers import set_seed
from trl import DPOConfig, DPOTrainer, ModelConfig, TrlParser
from trl.trainer.dpo_trainer import DataCollatorForVisionPreference

from .collators import DroppedCountLogMixin, check_overlong
from .data_args import DataArguments, load_train_eval
from .guards import TrainingGuardsMixin
from .publish import hub_callbacks, hub_plan
from .setup import (
    HfMmArguments,
    RoleOptimizerMixin,
    load_model_and_processor,
    prepare_model,
    resolve_stage,
    save_composed_base,
)
from .sft import train_and_save
from .stages import RoleSettings, get_stage

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class VisionPreferenceCollator(DataCollatorForVisionPreference):
    """TRL's vision preference collator that drops (and counts) or refuses over-long pairs instead of cutting them."""

    overlong: str = "drop"
    dropped: int = 0

    def __post_init__(self):
        check_overlong(self.overlong)

    def torch_call(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        limit, self.max_length = self.max_length, None  # collate uncut, then judge each pair's full length
        try:
            batch = super().torch_call([dict(example) for example in examples])
            if limit is None:
                return batch
            lengths = batch["attention_mask"].sum(1).view(2, -1).max(0).values  # rows: chosen..., rejected...
            too_long = [i for i, n in enumerate(lengths.tolist()) if n > limit]
            if not too_long:
                return batch
            message = f"Pairs {too_long} of the batch are longer than max_length={limit} (image tokens are never cut)"
            if self.overlong == "error":
                raise ValueError(f"{message}: raise max_length, shorten them, or use overlong='drop'.")
            kept = [example for i, example in enumerate(examples) if i not in too_long]
            self.dropped += len(too_long)
            logger.warning("%s; dropped (%d over-long pairs dropped so far).", message, self.dropped)
            if not kept:
                raise ValueError(f"Every pair of this batch is longer than max_length={limit}; raise max_length.")
            return super().torch_call([dict(example) for example in kept])
        finally:
            self.max_length = limit


class HfMmDPOTrainer(DroppedCountLogMixin, TrainingGuardsMixin, RoleOptimizerMixin, DPOTrainer):
    """DPOTrainer with hf_mm's never-truncate collator, per-role optimizer groups and a deep-copied reference."""

    def __init__(
        self,
        model,
        args: DPOConfig,
        processing_class,
        train_dataset,
        eval_dataset=None,
        ref_model=None,
        stage: str | dict[str, RoleSettings] = "instruct",
        overlong: str = "drop",
        callbacks=None,
        **kwargs,
    ):
        self.stage = get_stage(stage)
        self.collator = VisionPreferenceCollator(processing_class, max_length=args.max_length, overlong=overlong)
        if ref_model is None and not hasattr(model, "peft_config"):
            ref_model = copy.deepcopy(model).eval().requires_grad_(False)
        args.remove_unused_columns = False
        super().__init__(
            model=model,
            ref_model=ref_model,
            args=args,
            data_collator=self.collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )


def main(argv: list[str] | None = None) -> None:
    parser = TrlParser((HfMmArguments, DataArguments, DPOConfig, ModelConfig))
    hf_args, data_args, training_args, model_args = parser.parse_args_and_config(argv)
    set_seed(training_args.seed)  # new weights (a bridge, LoRA) are drawn after it: one seed, one run
    data_args.preference = True
    plan = hub_plan(training_args)

    # Model
    model, processor = load_model_and_processor(hf_args, model_args)
    if model_args.use_peft:
        save_composed_base(model, processor, training_args)
    stage = resolve_stage(hf_args, model_args.use_peft)
    model = prepare_model(model, stage, model_args)

    # Dataset
    train_dataset, eval_dataset = load_train_eval(data_args)

    # Training
    trainer = HfMmDPOTrainer(
        model=model,
        args=training_args,
        processing_class=processor,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        stage=stage,
        overlong=data_args.overlong,
        callbacks=hub_callbacks(plan),
    )
    train_and_save(trainer, "dpo", processor, hf_args, model_args, data_args, stage, plan)


if __name__ == "__main__":
    main()
