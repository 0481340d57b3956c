"""Where the recipes' data comes from: one `DataArguments` block for the SFT and DPO CLIs.

Formats (`dataset_format`):
- `synthetic`: hf_mm's task suite generated in code (`hf_mm.data.synthetic`); the eval split is the task's held-out
  `test` split. For DPO, each sample becomes a pair: the right answer is chosen, a wrong one of the same kind rejected.
- `hub`: `datasets.load_dataset(dataset_name, dataset_config)`; `disk`: `datasets.load_from_disk(dataset_name)`.
  Both are normalised with `hf_mm.data.from_hf_dataset` (messages) or passed through (prompt/completion, preferences).
- `llava_json` / `sharegpt`: a file (`dataset_name`) whose image paths are relative to `image_root`.
"""

import dataclasses
from pathlib import Path

import numpy as np
from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

from ..data import from_hf_dataset, load_llava_json, load_sharegpt, synthetic

FORMATS = ("synthetic", "hub", "disk", "llava_json", "sharegpt")
PREFERENCE_COLUMNS = ("prompt", "chosen", "rejected")


@dataclasses.dataclass
class DataArguments:
    dataset_format: str = dataclasses.field(default="synthetic", metadata={"help": f"One of {FORMATS}."})
    dataset_name: str | None = dataclasses.field(default=None, metadata={"help": "Hub id, saved folder or file."})
    dataset_config: str | None = dataclasses.field(default=None, metadata={"help": "Hub dataset config name."})
    dataset_train_split: str = dataclasses.field(default="train", metadata={"help": "Split to train on."})
    dataset_test_split: str | None = dataclasses.field(default=None, metadata={"help": "Split to evaluate on."})
    image_root: str | None = dataclasses.field(default=None, metadata={"help": "Root of relative image paths."})
    on_error: str = dataclasses.field(default="raise", metadata={"help": "Bad records: raise, or skip and count."})
    overlong: str = dataclasses.field(default="drop", metadata={"help": "Over-long samples: drop (counted) or error."})
    synthetic_task: str = dataclasses.field(
        default="shapes_vqa", metadata={"help": f"One of {tuple(synthetic.TASKS)}."}
    )
    synthetic_train_samples: int = dataclasses.field(default=2000, metadata={"help": "Synthetic training samples."})
    synthetic_eval_samples: int = dataclasses.field(default=200, metadata={"help": "Synthetic held-out samples."})
    synthetic_image_size: int = dataclasses.field(default=64, metadata={"help": "Synthetic image side in pixels."})
    synthetic_seed: int = dataclasses.field(default=0, metadata={"help": "Seed of the synthetic generator."})
    preference: bool = dataclasses.field(default=False, metadata={"help": "Build preference pairs (set by DPO)."})
    score_eval: bool = dataclasses.field(
        default=False,
        metadata={"help": "After SFT, score the eval split with hf_mm's scorers; results go on the card."},
    )


def dataset_names(args: DataArguments) -> list[str]:
    """How the model card names the training data: a Hub id as is, a local file or folder by its name only."""
    if args.dataset_format == "synthetic":
        return [f"hf_mm-synthetic/{args.synthetic_task}"]
    name = args.dataset_name or ""
    return [name if args.dataset_format == "hub" else Path(name).name]


def load_train_eval(args: DataArguments) -> tuple[Dataset, Dataset | None]:
    """The training dataset and the evaluation dataset (or None) that `args` names."""
    if args.dataset_format not in FORMATS:
        raise ValueError(f"dataset_format={args.dataset_format!r} is not one of {FORMATS}.")
    if args.dataset_format == "synthetic":
        return _synthetic(args, "train"), _synthetic(args, "test") if args.synthetic_eval_samples else None
    if not args.dataset_name:
        raise ValueError(f"dataset_format={args.dataset_format!r} needs dataset_name (a Hub id, folder or file).")
    if args.dataset_format in ("llava_json", "sharegpt"):
        if not args.image_root:
            raise ValueError(f"dataset_format={args.dataset_format!r} needs image_root, the folder of its images.")
        loader = load_llava_json if args.dataset_format == "llava_json" else load_sharegpt
        return loader(args.dataset_name, args.image_root, on_error=args.on_error), None
    if args.dataset_format == "hub":
        splits = load_dataset(args.dataset_name, args.dataset_config)
    else:
        splits = load_from_disk(args.dataset_name)
    if not isinstance(splits, DatasetDict):
        splits = DatasetDict({args.dataset_train_split: splits})
    train = _normalise(splits[args.dataset_train_split], args)
    test = _normalise(splits[args.dataset_test_split], args) if args.dataset_test_split else None
    return train, test


def _normalise(dataset: Dataset, args: DataArguments) -> Dataset:
    if all(column in dataset.column_names for column in PREFERENCE_COLUMNS):
        return dataset  # preference data is TRL's own format; the DPO collator reads it as is
    return from_hf_dataset(dataset, on_error=args.on_error)


def _synthetic(args: DataArguments, split: str) -> Dataset:
    if args.synthetic_task not in synthetic.TASKS:
        raise ValueError(f"synthetic_task={args.synthetic_task!r} is not one of {tuple(synthetic.TASKS)}.")
    n = args.synthetic_train_samples if split == "train" else args.synthetic_eval_samples
    generate = synthetic.TASKS[args.synthetic_task]
    samples = generate(n, seed=args.synthetic_seed, image_size=args.synthetic_image_size, split=split)
    if args.preference:
        return Dataset.from_list(preference_pairs(samples, seed=args.synthetic_seed))
    return synthetic.to_dataset(samples)


def preference_pairs(samples: list[dict], seed: int = 0) -> list[dict]:
    """Synthetic samples -> DPO pairs: the right answer is chosen, another answer to the same kind of question
    (drawn from the other samples) is rejected. Samples whose kind of question has a single answer are skipped."""
    rng = np.random.default_rng(seed)
    answers: dict[str, list[str]] = {}
    for sample in samples:
        answers.setdefault(sample["question_type"], []).append(sample["answer"])
    pairs = []
    for sample in samples:
        wrong = sorted({a for a in answers[sample["question_type"]] if a != sample["answer"]})
        if not wrong:
            continue
        user, assistant = sample["messages"]
        rejected = {"role": "assistant", "content": [{"type": "text", "text": str(rng.choice(wrong))}]}
        pairs.append({"images": sample["images"], "prompt": [user], "chosen": [assistant], "rejected": [rejected]})
    return pairs


__all__ = ["DataArguments", "FORMATS", "load_train_eval", "preference_pairs"]
