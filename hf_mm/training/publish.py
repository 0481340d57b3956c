"""The end of every training CLI: save, record, write the card, push.

`--push_to_hub` (transformers' flag) is taken over here so that every push, at checkpoints and at the end, goes
through `hf_mm.hub.push`: one commit with the generated card, safetensors and JSON only. transformers' own push would
upload `training_args.bin`, a pickle that also holds `--hub_token` if one was given; so `hub_token` is refused, and
the token comes from `HF_TOKEN` or `hf auth login` only. `hub_strategy` other than `end` pushes every saved
checkpoint's weights as its own commit (never its optimizer or RNG pickles).
"""

import dataclasses
from collections import Counter
from pathlib import Path

import torch
from transformers import TrainerCallback

from .. import hub
from ..eval import evaluate, predict
from ..eval.scorers import BOX_TASKS
from .fsdp import is_sharded


class TaskScoreCallback(TrainerCallback):
    """Scores the live model (no second copy) with hf_mm's task scorers on `dataset` at every evaluation, logs
    `score/<task>` into the trainer's log history, and keeps the latest rows (`latest`) for the training record,
    whose `eval` rows become the model card's `model-index`."""

    def __init__(self, processor, dataset, max_new_tokens: int = 32):
        self.processor, self.dataset, self.max_new_tokens = processor, dataset, max_new_tokens
        self.latest: list[dict] | None = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        main = state.is_world_process_zero
        scores = score_on_ranks(model, self.processor, self.dataset, main, max_new_tokens=self.max_new_tokens)
        if main:
            self.latest = scores
            row = {f"score/{r['task']}/{r['metric']}": r["value"] for r in self.latest}
            state.log_history.append({**row, "step": state.global_step})


def training_record(
    trainer, recipe: str, stage_name: str, stage: dict, base_models: dict, datasets: list[str], scores=None
) -> dict:
    """What the card needs from a finished run: `stage` maps role -> RoleSettings; `scores` is a list of
    `{"task", "dataset", "split", "metric", "value", "samples"}` from hf_mm's scorers (or None)."""
    args, model = trainer.args, trainer.model
    peft = getattr(model, "peft_config", {}).get("default")
    lora = None
    if peft is not None:
        targets = peft.target_modules
        lora = {
            "r": peft.r, "alpha": peft.lora_alpha, "dropout": peft.lora_dropout,
            "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets,
            "modules_to_save": sorted(peft.modules_to_save or []),
        }  # fmt: skip
    quant = getattr(getattr(model, "config", None), "quantization_config", None)
    quant = quant.to_dict() if hasattr(quant, "to_dict") else quant
    losses = [entry["train_loss"] for entry in trainer.state.log_history if "train_loss" in entry]
    return {
        "recipe": recipe,
        "stage_name": stage_name,
        "stage": {role: vars(settings).copy() for role, settings in stage.items()},
        "base_models": {role: name for role, name in base_models.items() if name},
        "lora": lora,
        "quantization": {k: quant[k] for k in ("load_in_4bit", "load_in_8bit", "bnb_4bit_quant_type") if k in quant}
        if quant
        else None,
        "global_step": trainer.state.global_step,
        "learning_rate": args.learning_rate,
        "per_device_train_batch_size": args.per_device_train_batch_size,
        "world_size": args.world_size,
        "train_loss": round(losses[-1], 4) if losses else None,
        "datasets": datasets,
        "eval": scores or [],
    }


@dataclasses.dataclass
class HubPlan:
    repo_id: str
    private: bool | None = None
    revision: str | None = None
    every_save: bool = False


def hub_plan(training_args) -> HubPlan | None:
    """Read (and switch off) transformers' push settings; None when not pushing."""
    if training_args.hub_token:
        raise ValueError(
            "hub_token was given on the command line or in the recipe; it would be saved inside training_args.bin. "
            "Remove it and set the HF_TOKEN environment variable or run `hf auth login` instead."
        )
    if not training_args.push_to_hub:
        return None
    strategy = getattr(training_args.hub_strategy, "value", training_args.hub_strategy)
    plan = HubPlan(
        repo_id=training_args.hub_model_id or Path(training_args.output_dir).resolve().name,
        private=training_args.hub_private_repo,
        revision=training_args.hub_revision,
        every_save=strategy != "end",
    )
    training_args.push_to_hub = False  # the Trainer must not push on its own (see the module docstring)
    return plan


class HubPushCallback(TrainerCallback):
    """Push each saved checkpoint's model, processor and card (hub_strategy other than `end`)."""

    def __init__(self, plan: HubPlan):
        self.plan = plan
        self.base_pushed = False

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        checkpoint, base = Path(args.output_dir) / f"checkpoint-{state.global_step}", Path(args.output_dir) / "base"
        base_repo = None
        if (checkpoint / "adapter_config.json").is_file() and (base / "config.json").is_file():
            base_repo = f"{self.plan.repo_id}-base"  # where the final push puts the composed base, too
            if not self.base_pushed:
                hub.push(base, base_repo, private=self.plan.private, revision=self.plan.revision)
                self.base_pushed = True
        hub.push(checkpoint, self.plan.repo_id, private=self.plan.private, revision=self.plan.revision,
                 commit_message=f"Checkpoint at step {state.global_step}", base_repo=base_repo)  # fmt: skip


def hub_callbacks(plan: HubPlan | None) -> list[TrainerCallback]:
    return [HubPushCallback(plan)] if plan and plan.every_save else []


def score_split(
    model, processor, dataset, split: str = "test", max_new_tokens: int = 32, **generate_kwargs
) -> list[dict]:
    """hf_mm's scorers on a held-out split with `answer` and `task` columns: one card row per task."""
    scores = evaluate(predict(model, processor, dataset, max_new_tokens=max_new_tokens, **generate_kwargs), dataset)
    counts = Counter(dataset["task"])
    return [card_row(task, value, counts[task], split) for task, value in scores["per_task"].items()]


def score_on_ranks(model, processor, dataset, main: bool, **kwargs) -> list[dict] | None:
    """`score_split` on the main process; on every rank when the model is sharded (FSDP, ZeRO-3), whose forward
    passes gather parameters from all ranks: scored on rank 0 alone it would wait for them forever. Ranks then
    generate in step (`synced_gpus`). Returns the rows where scored, else None."""
    sharded = is_sharded(model)
    if not sharded and not main:
        return None
    return score_split(model, processor, dataset, **kwargs, **({"synced_gpus": True} if sharded else {}))


def card_row(task: str, value: float, samples: int, split: str = "test") -> dict:
    """One `model-index` row of the card (the training record's `eval`) for a synthetic task's score."""
    metric = "iou@0.5" if task in BOX_TASKS else "exact_match"
    return {"task": task, "dataset": f"hf_mm-synthetic/{task}", "split": split, "samples": samples, "metric": metric,
            "value": round(value, 4)}  # fmt: skip


def finish(trainer, processor, record: dict, plan: HubPlan | None) -> None:
    """On the main process: the processor, the training record and the card next to the weights; then the push.
    Every rank then leaves the process group together (`close_process_group`)."""
    if trainer.is_world_process_zero():
        out = trainer.args.output_dir
        trainer.save_state()  # trainer_state.json: the log the record's numbers come from
        processor.save_pretrained(out)
        hub.write_training_record(out, record)
        hub.save_model_card(out, plan.repo_id if plan else None)
        if plan:
            commit = hub.push(out, plan.repo_id, private=plan.private, revision=plan.revision,
                              commit_message=f"Trained with hf-mm {record['recipe']}: {record['global_step']} steps")  # fmt: skip
            print(f"Pushed {out} to {commit.commit_url}")
    close_process_group(trainer)


def close_process_group(trainer) -> None:
    """Wait for the main rank to finish writing, then destroy the process group on every rank. A rank that exits
    while the group is alive can abort in gloo's threads ("terminate called without an active exception"), which
    fails the launch although the run succeeded."""
    trainer.accelerator.wait_for_everyone()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
