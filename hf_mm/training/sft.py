"""Supervised fine-tuning of any hf_mm VLM on TRL's SFTTrainer, stage by stage.

Launch:
    hf-mm sft --config recipes/llava15_instruct.yaml [--any_field value ...]
    accelerate launch --config_file recipes/accelerate/fsdp.yaml -m hf_mm.training.sft --config ...

What hf_mm adds to TRL's SFTTrainer: `VisionSFTCollator` (loss on assistant tokens only; over-long samples dropped
and counted, never truncated through an image), padding-free packing for VLMs (`packing: true`,
`VisionPackingCollator`), optimizer groups per role, and stage / LoRA set-up from the roles.
"""

from transformers import set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, TrlParser

from .collators import DroppedCountLogMixin, VisionSFTCollator
from .data_args import DataArguments, dataset_names, load_train_eval
from .guards import TrainingGuardsMixin
from .packing import VisionPackingCollator
from .publish import TaskScoreCallback, finish, hub_callbacks, hub_plan, score_on_ranks, training_record
from .setup import (
    HfMmArguments,
    RoleOptimizerMixin,
    load_model_and_processor,
    prepare_model,
    resolve_stage,
    save_composed_base,
)
from .stages import RoleSettings, get_stage


class HfMmSFTTrainer(DroppedCountLogMixin, TrainingGuardsMixin, RoleOptimizerMixin, SFTTrainer):
    """SFTTrainer with hf_mm's collator and per-role optimizer groups.

    `model` should already have its stage applied (`prepare_model`); `stage` gives the per-role learning rates.
    `overlong`: "drop" over-long samples with a logged count (default) or "error" (strict mode).
    """

    def __init__(
        self,
        model,
        args: SFTConfig,
        processing_class,
        train_dataset,
        eval_dataset=None,
        stage: str | dict[str, RoleSettings] = "instruct",
        overlong: str = "drop",
        callbacks=None,
        **kwargs,
    ):
        self.stage = get_stage(stage)
        # `packing: true` is hf_mm's padding-free VLM packing (TRL refuses packing for vision data): our collator
        # packs, so TRL's own dataset packing stays off.
        collator_class = VisionPackingCollator if args.packing else VisionSFTCollator
        args.packing = False
        self.collator = collator_class(processing_class, max_length=args.max_length, overlong=overlong)
        # Our collator needs the raw columns; TRL's own preparation would tokenize without the images.
        args.remove_unused_columns = False
        args.dataset_kwargs = {**(args.dataset_kwargs or {}), "skip_prepare_dataset": True}
        super().__init__(
            model=model,
            args=args,
            data_collator=self.collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            **kwargs,
        )


def main(argv: list[str] | None = None) -> None:
    parser = TrlParser((HfMmArguments, DataArguments, SFTConfig, ModelConfig))
    hf_args, data_args, training_args, model_args = parser.parse_args_and_config(argv)
    set_seed(training_args.seed)  # new weights (a bridge, LoRA) are drawn after it: one seed, one run
    plan = hub_plan(training_args)

    # Model
    model, processor = load_model_and_processor(hf_args, model_args)
    if model_args.use_peft:
        save_composed_base(model, processor, training_args)
    stage = resolve_stage(hf_args, model_args.use_peft)
    model = prepare_model(model, stage, model_args)

    # Dataset
    train_dataset, eval_dataset = load_train_eval(data_args)

    # Training; with score_eval, every evaluation also scores the live model with hf_mm's task scorers
    scoring = TaskScoreCallback(processor, eval_dataset) if data_args.score_eval and eval_dataset else None
    trainer = HfMmSFTTrainer(
        model=model,
        args=training_args,
        processing_class=processor,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        stage=stage,
        overlong=data_args.overlong,
        callbacks=[*hub_callbacks(plan), *([scoring] if scoring else [])],
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # Save, record, card (and push): the scores of the final model
    main_process = trainer.is_world_process_zero()
    scores = score_on_ranks(trainer.model, processor, eval_dataset, main_process) if scoring is not None else None
    record = run_record(trainer, "sft", hf_args, model_args, data_args, stage, scores)
    save_and_report(trainer, processor, training_args, model_args.use_peft, record, plan)


def run_record(trainer, recipe, hf_args, model_args, data_args, stage, scores=None) -> dict:
    """The training record (`hf_mm_training.json`) of an SFT or DPO run."""
    bases = {"vision": hf_args.vision_model_name_or_path, "llm": hf_args.text_model_name_or_path}
    if model_args.model_name_or_path:
        bases = {"model": model_args.model_name_or_path}
    names = dataset_names(data_args)
    return training_record(trainer, recipe, hf_args.stage, stage, bases, names, scores)


def train_and_save(trainer, recipe: str, processor, hf_args, model_args, data_args, stage, plan=None) -> None:
    """Train (resuming if asked), then save and report with the run's record: the end of every RL-style recipe."""
    trainer.train(resume_from_checkpoint=trainer.args.resume_from_checkpoint)
    record = run_record(trainer, recipe, hf_args, model_args, data_args, stage)
    save_and_report(trainer, processor, trainer.args, model_args.use_peft, record, plan)


def save_and_report(trainer, processor, training_args, adapter: bool, record: dict, plan=None) -> None:
    """Save the model (or adapter) with its processor, record and card, push if asked, and say how to load it."""
    if trainer.is_fsdp_enabled:
        # FSDP's SHARDED_STATE_DICT (the recipe's) is for resuming: with it, Trainer.save_model writes no weights and
        # no config. The final model is gathered whole, as safetensors that from_pretrained and vLLM load.
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(training_args.output_dir)
    finish(trainer, processor, record, plan)
    steps, rank, world = trainer.state.global_step, training_args.process_index, training_args.world_size
    print(f"[rank {rank}/{world}] finished {steps} steps")
    if not trainer.is_world_process_zero():
        return
    out = training_args.output_dir
    load = f"AutoModelForImageTextToText.from_pretrained({out!r})"
    if adapter:
        base = trainer.model.peft_config["default"].base_model_name_or_path
        load = f"PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained({base!r}), {out!r})"
    print(
        f"Saved to {out} ({getattr(getattr(trainer, 'collator', None), 'dropped', 0)} over-long samples dropped).\n"
        f"Load it with: import hf_mm; from transformers import AutoModelForImageTextToText, AutoProcessor; "
        f"model = {load}; processor = AutoProcessor.from_pretrained({out!r})"
    )


if __name__ == "__main__":
    main()
