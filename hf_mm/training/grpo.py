"""GRPO for any hf_mm VLM on TRL's GRPOTrainer, with verifiable rewards from hf_mm's own scorers.

Launch:
    hf-mm grpo --config recipes/grpo_grounding.yaml [--any_field value ...]

Data: prompts with images, plus the `task` and `answer` each reward is checked against. Any dataset in hf_mm's
format works (`images` + `messages`, whose first user turn becomes the prompt), the synthetic suite included.
Rewards (`task_reward`): IoU with the answer box for grounding (continuous, so a near miss still teaches), exact
match of the normalised answer for counting and VQA.

TRL recognises a VLM by its processing class (a `ProcessorMixin`), which every hf_mm processor is, so GRPO's
multimodal path needs nothing more. The gate that reads built-in `model_type`s is online DPO's
(`trl.experimental`), not GRPO's.
"""

from datasets import Dataset
from transformers import set_seed
from trl import GRPOConfig, GRPOTrainer, ModelConfig, TrlParser

from ..eval.scorers import BOX_TASKS, exact_match, grounding_iou
from .data_args import DataArguments, load_train_eval
from .guards import TrainingGuardsMixin
from .publish import hub_callbacks, hub_plan
from .setup import HfMmArguments, RoleOptimizerMixin, load_model_and_processor, prepare_model, resolve_stage
from .sft import train_and_save
from .stages import RoleSettings, get_stage


def completion_text(completion) -> str:
    """A completion as TRL hands it to rewards: plain text, or (conversational prompts) a list of messages."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def task_reward(completions, task, answer, **kwargs) -> list[float]:
    """IoU for grounding, exact match for everything else, per completion (TRL passes dataset columns by name)."""
    rewards = []
    for completion, kind, truth in zip(completions, task, answer):
        text = completion_text(completion)
        rewards.append(grounding_iou(text, truth) if kind in BOX_TASKS else exact_match(text, truth))
    return rewards


def to_prompts(dataset: Dataset) -> Dataset:
    """hf_mm's format -> GRPO's: the first user turn as a conversational `prompt`, with `images`, `task` and the
    `answer` (a string; boxes in hf_mm's text format) for the rewards."""
    return Dataset.from_dict(
        {
            "prompt": [messages[:1] for messages in dataset["messages"]],
            "images": dataset["images"],
            "task": dataset["task"],
            "answer": [str(answer) for answer in dataset["answer"]],
        }
    )


class HfMmGRPOTrainer(TrainingGuardsMixin, RoleOptimizerMixin, GRPOTrainer):
    """GRPOTrainer with hf_mm's per-role optimizer groups and training guards; `task_reward` by default."""

    def __init__(self, model, args: GRPOConfig, processing_class, train_dataset, eval_dataset=None,
                 reward_funcs=None, stage: str | dict[str, RoleSettings] = "instruct", **kwargs):  # fmt: skip
        self.stage = get_stage(stage)
        super().__init__(
            model=model,
            reward_funcs=reward_funcs or [task_reward],
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            **kwargs,
        )


def main(argv: list[str] | None = None) -> None:
    parser = TrlParser((HfMmArguments, DataArguments, GRPOConfig, ModelConfig))
    hf_args, data_args, training_args, model_args = parser.parse_args_and_config(argv)
    set_seed(training_args.seed)  # new weights (a bridge, LoRA) are drawn after it: one seed, one run
    plan = hub_plan(training_args)

    model, processor = load_model_and_processor(hf_args, model_args)
    stage = resolve_stage(hf_args, model_args.use_peft)
    model = prepare_model(model, stage, model_args)
    train_dataset, eval_dataset = load_train_eval(data_args)
    processor.tokenizer.padding_side = "left"  # generation pads on the left

    trainer = HfMmGRPOTrainer(
        model=model,
        args=training_args,
        processing_class=processor,
        train_dataset=to_prompts(train_dataset),
        eval_dataset=to_prompts(eval_dataset) if eval_dataset is not None else None,
        stage=stage,
        callbacks=hub_callbacks(plan),
    )
    train_and_save(trainer, "grpo", processor, hf_args, model_args, data_args, stage, plan)


if __name__ == "__main__":
    main()
