"""The SFT collator: images + conversations in, padded tensors out, loss only on what the assistant says.

TRL's `DataCollatorForVisionLanguageModeling` counts image placeholders and prompts in the loss unless told
otherwise, and truncates with `max_length` even through an image's placeholder run. This collator:
- builds labels from the chat template's `{% generation %}` markers (assistant turns only) for `messages` data, and
  from the completion alone for prompt/completion data; image placeholders are always -100;
- never truncates: a sample longer than `max_length` is dropped and counted (`overlong="drop"`, logged), or raises
  naming the sample (`overlong="error"`, strict mode);
- processes each sample on its own and then pads, so dropping a sample drops exactly its images.

Accepted samples (the formats TRL's SFTTrainer accepts for VLMs):
- `{"images": [...], "messages": [...]}` (or a single `"image"`), content as strings or typed parts;
- `{"images": [...], "prompt": ..., "completion": ...}`, both conversational (message lists) or both plain strings
  (plain prompts hold `<image>` placeholders themselves).
"""

import dataclasses
import logging
from typing import Any, Literal

import torch
from trl.data_utils import prepare_multimodal_messages

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100
OVERLONG = ("drop", "error")
SEQUENCE_KEYS = (
    "input_ids", "attention_mask", "labels", "token_type_ids", "mm_token_type_ids",
    "qformer_input_ids", "qformer_attention_mask",  # InstructBLIP's instruction, tokenized for the Q-Former
)  # fmt: skip


def check_overlong(overlong: str) -> None:
    if overlong not in OVERLONG:
        raise ValueError(f"overlong={overlong!r} is not one of 'drop' (count and skip) or 'error' (strict).")


def _images_of(example: dict) -> list:
    if "image" in example:
        return [] if example["image"] is None else [example["image"]]
    return list(example.get("images") or [])


def expand_over_placeholders(short_ids: list, short_mask: list, long_ids: list, placeholder_ids: set) -> torch.Tensor:
    """`short_mask` over `short_ids` carried onto `long_ids`, which are `short_ids` with each run of placeholders
    expanded (or inserted, as BLIP-2's query tokens are). Placeholders are never targets, so they get False."""
    mask, i = [], 0
    for token in long_ids:
        if token in placeholder_ids:
            mask.append(False)
            continue
        while i < len(short_ids) and short_ids[i] in placeholder_ids:
            i += 1
        if i == len(short_ids) or short_ids[i] != token:
            raise ValueError(
                "The processor's token ids differ from its tokenizer's rendering of the same chat beyond the image "
                f"placeholders (at position {len(mask)}), so the assistant turns cannot be located."
            )
        mask.append(bool(short_mask[i]))
        i += 1
    return torch.tensor(mask, dtype=torch.bool)


@dataclasses.dataclass
class VisionSFTCollator:
    """Collates SFT samples for any hf_mm processor. `dropped` counts the over-long samples dropped so far."""

    processor: Any
    max_length: int | None = None
    overlong: Literal["drop", "error"] = "drop"
    pad_to_multiple_of: int | None = None
    dropped: int = 0

    def __post_init__(self):
        check_overlong(self.overlong)
        self.tokenizer = self.processor.tokenizer
        self.image_token_id = self.processor.image_token_id
        self.placeholder_ids = {self.image_token_id, getattr(self.processor, "video_token_id", None)} - {None}

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        encoded = []
        for index, example in enumerate(examples):
            sample = self.encode(example)
            length = sample["input_ids"].shape[-1]
            if self.max_length is None or length <= self.max_length:
                encoded.append(sample)
                continue
            n_image = int((sample["input_ids"] == self.image_token_id).sum())
            message = (
                f"Sample {index} of the batch has {length} tokens ({n_image} image placeholders) > "
                f"max_length={self.max_length}. Image tokens are never truncated"
            )
            if self.overlong == "error":
                raise ValueError(f"{message}: raise max_length, shorten the sample, or use overlong='drop'.")
            self.dropped += 1
            logger.warning("%s; dropped (%d over-long samples dropped so far).", message, self.dropped)
        if not encoded:
            raise ValueError(
                f"Every sample of this batch is longer than max_length={self.max_length}; raise max_length."
            )
        return self.pad(encoded)

    def encode(self, example: dict) -> dict[str, torch.Tensor]:
        """One sample -> unpadded tensors (batch dimension 1) with `labels`."""
        images = _images_of(example)
        if "messages" in example:
            sample = self._encode_messages(example["messages"], images)
        elif "prompt" in example and "completion" in example:
            sample = self._encode_prompt_completion(example["prompt"], example["completion"], images)
        else:
            raise ValueError(
                f"A sample has keys {sorted(example)}; expected 'messages', or 'prompt' and 'completion' "
                "(plus 'images' or 'image')."
            )
        sample["labels"][sample["input_ids"] == self.image_token_id] = IGNORE_INDEX
        return sample

    def _encode_messages(self, messages: list[dict], images: list) -> dict[str, torch.Tensor]:
        messages = prepare_multimodal_messages(messages, images=images)
        out = self.processor.apply_chat_template(
            messages,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"add_special_tokens": False, **self._instruction(messages)},
        )
        mask = self._assistant_mask(messages, out["input_ids"][0])
        if not mask.any() and any(m["role"] == "assistant" for m in messages):
            raise ValueError(
                "The chat template marks no assistant tokens, so the loss would be empty. Use a template with "
                "{% generation %} markers around assistant content (hf_mm's default ChatML template has them)."
            )
        out["labels"] = torch.where(mask[None], out["input_ids"], IGNORE_INDEX)
        return dict(out)

    def _assistant_mask(self, messages: list[dict], input_ids: torch.Tensor) -> torch.Tensor:
        """(L,) True on the tokens inside the template's `{% generation %}` spans.

        The spans are found on the tokenizer's rendering, before the processor expands each image placeholder into
        its run: transformers before 5.2x located them with the offsets of the expanded text and so shifted them
        by every expansion, silently. The mask is then carried onto the expanded ids, run by run.
        """
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.processor.chat_template, tokenize=True, return_dict=True,
            return_assistant_tokens_mask=True,
        )  # fmt: skip
        return expand_over_placeholders(text["input_ids"], text["assistant_masks"], input_ids.tolist(),
                                        self.placeholder_ids)  # fmt: skip

    def _encode_prompt_completion(self, prompt, completion, images: list) -> dict[str, torch.Tensor]:
        if isinstance(prompt, str) != isinstance(completion, str):
            raise TypeError("'prompt' and 'completion' must both be strings or both be message lists.")
        if isinstance(prompt, str):
            prompt_text, completion_text = prompt, completion
            if self.tokenizer.eos_token and not completion_text.endswith(self.tokenizer.eos_token):
                completion_text += self.tokenizer.eos_token  # plain completions end with EOS, as TRL does
        else:
            prompt = prepare_multimodal_messages(prompt, images=images)
            completion = prepare_multimodal_messages(completion)
            prompt_text = self.processor.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
            full_text = self.processor.apply_chat_template(prompt + completion, tokenize=False)
            if not full_text.startswith(prompt_text):
                raise ValueError("The chat template renders the prompt differently once the completion follows it.")
            completion_text = full_text[len(prompt_text) :]
        instruction = self._instruction(prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}])
        out = self.processor(
            images=images or None, text=[prompt_text], return_tensors="pt", add_special_tokens=False, **instruction
        )
        completion_ids = self.tokenizer(completion_text, add_special_tokens=False, return_tensors="pt").input_ids
        prompt_ids = out["input_ids"]
        out["input_ids"] = torch.cat([prompt_ids, completion_ids], dim=1)
        out["attention_mask"] = torch.ones_like(out["input_ids"])
        out["labels"] = torch.cat([torch.full_like(prompt_ids, IGNORE_INDEX), completion_ids], dim=1)
        for key in ("token_type_ids", "mm_token_type_ids"):
            if key in out:
                out[key] = torch.cat([out[key], torch.zeros_like(completion_ids)], dim=1)
        return dict(out)

    def _instruction(self, messages: list[dict]) -> dict:
        """For an instruction-aware processor (InstructBLIP), the user turns' text as `qformer_text`: the Q-Former
        reads the instruction, never the answer it is trained to give."""
        if not getattr(self.processor, "instruction_aware", False):
            return {}
        parts = []
        for message in messages:
            if message["role"] == "user":
                content = message["content"]
                parts += [content] if isinstance(content, str) else [c["text"] for c in content if c["type"] == "text"]
        text = " ".join(part.replace(self.processor.image_token, "").strip() for part in parts)
        return {"qformer_text": [text]}

    def pad(self, samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Right-pad the sequence keys; concatenate the rest (pixel_values, grids) along their first dimension."""
        length = max(sample["input_ids"].shape[-1] for sample in samples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        pad_values = {"input_ids": self.tokenizer.pad_token_id, "labels": IGNORE_INDEX}
        if hasattr(self.processor, "qformer_tokenizer"):
            pad_values["qformer_input_ids"] = self.processor.qformer_tokenizer.pad_token_id
        batch = {}
        for key in dict.fromkeys(key for sample in samples for key in sample):
            values = [sample[key] for sample in samples if key in sample]  # text-only samples have no pixels
            if key in SEQUENCE_KEYS:
                fill = pad_values.get(key, 0)
                batch[key] = torch.stack(
                    [torch.nn.functional.pad(v[0], (0, length - v.shape[-1]), value=fill) for v in values]
                )
            else:
                batch[key] = torch.cat(values, dim=0)
        return batch


class DroppedCountLogMixin:
    """Trainer mixin: every log line carries the collator's count of dropped over-long samples (`dropped_overlong`),
    in the log history and in every reporter. It is added before `Trainer.log` writes them: a callback's `on_log`
    runs after the history entry is copied and after the built-in reporters, so a count added there reaches neither.
    """

    def log(self, logs: dict, *args, **kwargs) -> None:
        collator = getattr(self, "collator", None)
        if collator is not None and hasattr(collator, "dropped"):
            logs = {**logs, "dropped_overlong": collator.dropped}
        super().log(logs, *args, **kwargs)


__all__ = ["IGNORE_INDEX", "DroppedCountLogMixin", "VisionSFTCollator"]
