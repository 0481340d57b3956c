"""BLIP-2 stage 1: Q-Former representation learning (ITC + ITM + ITG) on transformers' Trainer; TRL has no such
trainer, and the model computes its own three losses.

Launch:
    hf-mm qformer --config recipes/blip2_stage1.yaml [--any_field value ...]

Then stage 2 (the Q-Former as a soft prompt for a frozen LLM) is an SFT run:
    hf-mm sft --config recipes/blip2_stage2.yaml --stage1_name_or_path outputs/blip2-stage1

Data: rows with an image (`image`, or the first of `images`), a caption (`text`) and optionally a `label`: rows
sharing a label are positives of each other (same image, or same class), never hard negatives. The default stage
`align` trains the bridge role only (queries, Q-Former, projections and heads) with the tower frozen, as in BLIP-2.
"""

import dataclasses

import torch
from transformers import AutoConfig, TrainingArguments, set_seed
from trl import ModelConfig, TrlParser

from ..data.captions import digit_pairs
from ..eval.zero_shot import recall_at_k
from ..modeling.blip2 import HfMmBlip2ForImageTextRetrieval
from ..processing import HfMmBlip2Processor
from .contrastive import HfMmContrastiveTrainer, load_dataset_for
from .setup import prepare_model, resolve_stage


@dataclasses.dataclass
class QFormerCollator:
    """Rows of (image, caption[, label]) -> pixels, Q-Former caption tokens, `image_ids`, `return_loss=True`.

    Captions are never truncated: one longer than the Q-Former's position table raises, naming the row."""

    processor: HfMmBlip2Processor

    def __call__(self, examples: list[dict]) -> dict:
        images = [example["image"] if "image" in example else example["images"][0] for example in examples]
        texts = [example["text"] for example in examples]
        tokens = self.processor.qformer_tokenizer(texts, padding=True, return_tensors="pt")
        limit = self.processor.qformer_tokenizer.model_max_length
        for index, length in enumerate(tokens["attention_mask"].sum(1).tolist()):
            if length > limit:
                raise ValueError(f"Caption {index} has {length} tokens > the Q-Former tokenizer's limit {limit}.")
        batch = {
            "pixel_values": self.processor.image_processor(images, return_tensors="pt")["pixel_values"],
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "return_loss": True,
        }
        if all("label" in example for example in examples):
            batch["image_ids"] = torch.tensor([int(example["label"]) for example in examples])
        return batch


@torch.no_grad()
def evaluate_stage1(model, processor, pairs: list[dict], batch_size: int = 64) -> dict[str, float]:
    """ITC retrieval and ITM accuracy on labelled (image, caption, label) pairs.

    - `itc/image_to_text/R@1`, `itc/text_to_image/R@1`: class-level recall@1 over the pairs' captions (a hit is
      a caption or image of the right label), from BLIP-2's best-query similarity.
    - `itm/accuracy`: each image with a caption of its label and one of another label; a pair counts as matched when
      the ITM probability exceeds 0.5. Chance is 0.5.
    - `itm/pairwise_accuracy`: how often the matching caption scores above the other one (threshold-free; chance 0.5).
    """
    model.eval()
    collate = QFormerCollator(processor)
    images, texts = [], []
    for start in range(0, len(pairs), batch_size):
        batch = collate(pairs[start : start + batch_size])
        images.append(model.get_image_features(batch["pixel_values"].to(model.device)))
        texts.append(model.get_text_features(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device)))  # fmt: skip
    labels = [int(pair["label"]) for pair in pairs]
    similarity = model.similarity(torch.cat(images), torch.cat(texts)).cpu()
    results = {f"itc/{k}": v for k, v in recall_at_k(similarity, labels, ks=(1,), image_labels=labels).items()}

    # ITM: the caption of the next pair with the same label (a different caption) and of the next other label.
    scores = {True: [], False: []}
    for start in range(0, len(pairs), batch_size):
        chunk = range(start, min(start + batch_size, len(pairs)))
        for target in (True, False):
            others = [_next_with(pairs, i, lambda label, i=i, t=target: (label == labels[i]) == t) for i in chunk]
            batch = collate([{"image": pairs[i]["image"], "text": pairs[j]["text"]} for i, j in zip(chunk, others)])
            inputs = (batch[k].to(model.device) for k in ("pixel_values", "input_ids", "attention_mask"))
            scores[target].append(model.itm_scores(*inputs).cpu())
    matched, unmatched = torch.cat(scores[True]), torch.cat(scores[False])
    results["itm/accuracy"] = ((matched > 0.5).sum() + (unmatched <= 0.5).sum()).item() / (2 * len(pairs))
    results["itm/pairwise_accuracy"] = (matched > unmatched).float().mean().item()
    return results


def _next_with(pairs: list[dict], index: int, accept) -> int:
    """The index of the first pair after `index` (cyclically) whose label `accept`s; `index` itself if none does."""
    n = len(pairs)
    for step in range(1, n):
        if accept(int(pairs[(index + step) % n]["label"])):
            return (index + step) % n
    return index


@dataclasses.dataclass
class QFormerArguments:
    """The stage-1 composition (a vision tower + a new Q-Former), the stage and the data."""

    vision_model_name_or_path: str | None = dataclasses.field(default=None, metadata={"help": "Vision tower."})
    qformer_name_or_path: str | None = dataclasses.field(
        default=None, metadata={"help": "BERT checkpoint the Q-Former starts from, as in BLIP-2 (and its tokenizer)."}
    )
    qformer_config_name_or_path: str | None = dataclasses.field(
        default=None, metadata={"help": "Or a Blip2QFormerConfig folder for a random Q-Former (default BERT-base)."}
    )
    qformer_tokenizer_name_or_path: str | None = dataclasses.field(
        default=None, metadata={"help": "Tokenizer of the Q-Former's text (default: qformer_name_or_path's)."}
    )
    num_query_tokens: int = dataclasses.field(default=32, metadata={"help": "Learned queries."})
    stage: str = dataclasses.field(default="align", metadata={"help": "align (Q-Former only) | vision | full."})
    vision_lr: float | None = dataclasses.field(default=None, metadata={"help": "Tower LR (else base LR)."})
    bridge_lr: float | None = dataclasses.field(default=None, metadata={"help": "Q-Former LR (else base LR)."})
    dataset_format: str = dataclasses.field(default="digits", metadata={"help": "digits | disk | hub."})
    dataset_name: str | None = dataclasses.field(default=None, metadata={"help": "Saved folder or Hub id."})
    digits_train_pairs: int = dataclasses.field(default=20000, metadata={"help": "Pairs for dataset_format=digits."})


def load_model_and_processor(args: QFormerArguments, model_args: ModelConfig):
    if model_args.model_name_or_path:
        path = model_args.model_name_or_path
        return HfMmBlip2ForImageTextRetrieval.from_pretrained(path), HfMmBlip2Processor.from_pretrained(path)
    tokenizer = args.qformer_tokenizer_name_or_path or args.qformer_name_or_path
    if not (args.vision_model_name_or_path and tokenizer):
        raise ValueError(
            "Give model_name_or_path (a saved stage-1 model), or vision_model_name_or_path and qformer_name_or_path "
            "(a BERT to start from) or qformer_tokenizer_name_or_path (for a random Q-Former) for a new Q-Former."
        )
    kwargs = {"num_query_tokens": args.num_query_tokens, "qformer_name_or_path": args.qformer_name_or_path}
    if args.qformer_config_name_or_path:
        kwargs["qformer_config"] = AutoConfig.from_pretrained(args.qformer_config_name_or_path)
    model = HfMmBlip2ForImageTextRetrieval.from_vision_pretrained(args.vision_model_name_or_path, **kwargs)
    processor = HfMmBlip2Processor.from_vision_pretrained(
        args.vision_model_name_or_path, tokenizer,
        qformer_config=model.config.qformer_config, num_query_tokens=args.num_query_tokens,
    )  # fmt: skip
    return model, processor


def main(argv: list[str] | None = None) -> None:
    parser = TrlParser((QFormerArguments, TrainingArguments, ModelConfig))
    args, training_args, model_args = parser.parse_args_and_config(argv)
    set_seed(training_args.seed)  # new weights (a bridge, LoRA) are drawn after it: one seed, one run

    # Model
    model, processor = load_model_and_processor(args, model_args)
    stage = resolve_stage(args, use_peft=False)
    model = prepare_model(model, stage)

    # Dataset
    train_dataset = load_dataset_for(args)

    # Training
    trainer = HfMmContrastiveTrainer(
        model=model,
        args=training_args,
        processing_class=processor,
        train_dataset=train_dataset,
        stage=stage,
        data_collator=QFormerCollator(processor),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # Save
    trainer.save_model(training_args.output_dir)
    if trainer.is_world_process_zero():
        processor.save_pretrained(training_args.output_dir)
        held_out = digit_pairs(500, split="test") if args.dataset_format == "digits" else None
        if held_out:
            print({k: round(v, 4) for k, v in evaluate_stage1(model, processor, held_out).items()})
        print(f"Saved to {training_args.output_dir}. Next, stage 2: hf-mm sft --config recipes/blip2_stage2.yaml "
              f"--stage1_name_or_path {training_args.output_dir}")  # fmt: skip


if __name__ == "__main__":
    main()
