"""Padding-free packing for VLM SFT: several samples share one row, and no token attends across a sample boundary.

`VisionPackingCollator` encodes each sample exactly as `VisionSFTCollator` does (assistant-only labels, image
placeholders never labelled, over-long samples dropped and counted, never truncated), then packs the samples into
as few rows of at most `max_length` tokens as best-fit-decreasing finds, and returns:
- `input_ids`, `labels` (each sample's first label -100, so no token learns to predict the next sample's start:
  the same positions an unpacked batch scores), `position_ids` restarting at 0 for every sample;
- no `attention_mask`: transformers reads the restarts in `position_ids` as sample boundaries. With SDPA / eager
  attention it builds a block-diagonal causal mask; with flash-attention it runs the varlen kernel on
  `cu_seqlens` derived from the same restarts. `use_cache=False` keeps the LM from creating a cache, which would
  switch that detection off;
- `pixel_values` (and grids) in the order their placeholders appear row by row, as every family expects.
The collator counts `tokens` (real) and `padding_tokens` (left at the ends of shorter rows; 0 with one row).

Families: LLaVA (every bridge), BLIP-2 stage 2, Flamingo (its media mask restarts per sample too) and Qwen2.5-VL
(each sample's 3D M-RoPE ids are built on their own, from its own grids). InstructBLIP's per-sample Q-Former
instructions are not packed: an instruction-aware processor is refused with a clear error.
"""

import dataclasses

import torch

from .collators import IGNORE_INDEX, SEQUENCE_KEYS, VisionSFTCollator

PACKED_KEYS = ("input_ids", "labels", "token_type_ids", "mm_token_type_ids")


def best_fit_decreasing(lengths: list[int], capacity: int | None) -> list[list[int]]:
    """Bins of sample indices, each summing to <= capacity (one bin when capacity is None); stable within a bin."""
    if capacity is None:
        return [list(range(len(lengths)))]
    bins: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [b for b in range(len(bins)) if room[b] >= lengths[index]]
        if fits:
            best = min(fits, key=lambda b: room[b])
            bins[best].append(index)
            room[best] -= lengths[index]
        else:
            bins.append([index])
            room.append(capacity - lengths[index])
    return [sorted(members) for members in bins]


@dataclasses.dataclass
class VisionPackingCollator(VisionSFTCollator):
    """Packs SFT samples into rows of at most `max_length` tokens (one row when `max_length` is None)."""

    tokens: int = 0
    padding_tokens: int = 0

    def __post_init__(self):
        super().__post_init__()
        if getattr(self.processor, "instruction_aware", False):
            raise ValueError(
                "packing=True is not supported with an instruction-aware (InstructBLIP) processor: the Q-Former's "
                "per-sample instructions are not packed. Train it with packing=False."
            )

    def pad(self, samples: list[dict[str, torch.Tensor]]) -> dict:
        lengths = [sample["input_ids"].shape[-1] for sample in samples]
        rows = best_fit_decreasing(lengths, self.max_length)
        width = max(sum(lengths[i] for i in row) for row in rows)
        fills = {"input_ids": self.tokenizer.pad_token_id, "labels": IGNORE_INDEX}
        batch: dict = {key: [] for key in (*PACKED_KEYS, "position_ids") if key == "position_ids" or key in samples[0]}
        others: dict[str, list] = {}
        for row in rows:
            parts = {key: [] for key in batch}
            for index in row:
                sample = samples[index]
                labels = sample["labels"][0].clone()
                labels[0] = IGNORE_INDEX  # never predict a sample's first token from the previous sample
                parts["labels"].append(labels)
                parts["position_ids"].append(torch.arange(lengths[index]))
                for key in batch.keys() - {"labels", "position_ids"}:
                    parts[key].append(sample[key][0])
                for key, value in sample.items():
                    if key not in SEQUENCE_KEYS:
                        others.setdefault(key, []).append(value)
            for key, values in parts.items():
                row_tensor = torch.cat(values)
                pad = width - row_tensor.shape[0]
                # Row padding is one more "sample" (positions restart at 0), so it attends only to itself.
                tail = torch.arange(pad) if key == "position_ids" else torch.full((pad,), fills.get(key, 0))
                batch[key].append(torch.cat([row_tensor, tail.to(row_tensor.dtype)]))
        packed = {key: torch.stack(values) for key, values in batch.items()}
        packed.update({key: torch.cat(values, dim=0) for key, values in others.items()})
        packed["use_cache"] = False
        self.tokens += sum(lengths)
        self.padding_tokens += len(rows) * width - sum(lengths)
        return packed
