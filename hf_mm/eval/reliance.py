"""Does the model look at its images? The held-out answer loss with each sample's own images against the same loss
with the images shuffled across samples. A model that uses its images gets clearly worse when they are swapped;
one that has collapsed to text-only behaviour (the bridge carries nothing, or the images never reach it) does not.
"""

from __future__ import annotations

import torch


def shuffled_images(samples: list[dict]) -> list[dict]:
    """`samples` with every sample's images taken from another sample with the same number of images (a cyclic
    shift within each group, so no sample keeps its own). Messages are untouched, so the placeholders still match."""
    groups: dict[int, list[int]] = {}
    for index, sample in enumerate(samples):
        groups.setdefault(len(sample["images"]), []).append(index)
    shuffled = [dict(sample) for sample in samples]
    for indices in groups.values():
        for position, index in enumerate(indices):
            shuffled[index]["images"] = samples[indices[(position + 1) % len(indices)]]["images"]
    return shuffled


def answer_loss(model, processor, samples: list[dict], batch_size: int = 16) -> float:
    """Mean cross-entropy over the assistant tokens of `samples` (hf_mm's format), as SFT computes it."""
    from ..training.collators import VisionSFTCollator

    collator = VisionSFTCollator(processor)
    was_training, total, tokens = model.training, 0.0, 0
    model.eval()
    try:
        for start in range(0, len(samples), batch_size):
            batch = collator(samples[start : start + batch_size])
            n = int((batch["labels"][:, 1:] != -100).sum())
            with torch.no_grad():
                loss = model(**{k: v.to(model.device) for k, v in batch.items()}).loss
            total, tokens = total + float(loss) * n, tokens + n
    finally:
        model.train(was_training)
    return total / max(tokens, 1)


def vision_reliance(model, processor, samples: list[dict], batch_size: int = 16) -> dict:
    """`{"matched_loss", "shuffled_loss", "gap"}` on held-out `samples`: `gap` = shuffled - matched. A gap near
    zero means the answers do not depend on the images: the run has collapsed to text-only behaviour."""
    if len({len(sample["images"]) for sample in samples}) == len(samples) or len(samples) < 2:
        raise ValueError("vision_reliance needs at least 2 samples with the same number of images to swap them.")
    matched = answer_loss(model, processor, samples, batch_size)
    shuffled = answer_loss(model, processor, shuffled_images(samples), batch_size)
    return {"matched_loss": matched, "shuffled_loss": shuffled, "gap": shuffled - matched}


__all__ = ["answer_loss", "shuffled_images", "vision_reliance"]
