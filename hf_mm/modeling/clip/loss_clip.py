"""Contrastive losses for dual encoders, with negatives from every process.

Both losses take L2-normalised embeddings of this process's batch (b rows) and, when torch.distributed is running,
gather every rank's rows with gradients flowing back to the rows' owner (`torch.distributed.nn.all_gather`), so each
rank scores its rows against the global batch (B = b * world rows) of negatives: transformers #22252.

Scaling: each rank returns the mean loss of *its* rows against all B candidates. The mean over ranks is then the
single-process loss on the concatenated batch, and because all_gather's backward sums every rank's gradient into the
owner, DDP's gradient average equals the single-process gradient too (tested on 2 gloo processes).

- `infonce_loss`: CLIP's symmetric cross-entropy over image->text and text->image softmaxes.
- `sigmoid_loss`: SigLIP's pairwise binary loss, -sum_j log sigmoid(z_ij * (scale * <t_i, v_j> + bias)), with
  z = +1 on matching pairs and -1 elsewhere, summed over candidates and averaged over rows. With gathered image
  embeddings this is the "all-gather" variant; SigLIP's chunked ring gives the same value with less memory.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(b, D) local rows -> ((B, D) rows of every rank in rank order, offset of this rank's rows)."""
    rank, world = _world()
    if world == 1:
        return x, 0
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"Every process must hold the same number of pairs to gather negatives; got {[int(s) for s in sizes]}. "
            "Use drop_last (dataloader_drop_last=True) so the last batch is not ragged."
        )
    from torch.distributed.nn.functional import all_gather  # autograd-aware

    return torch.cat(all_gather(x), dim=0), rank * x.shape[0]


def _check_pairs(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    if image_embeds.shape[0] != text_embeds.shape[0]:
        raise ValueError(
            f"The contrastive loss needs one text per image: got {image_embeds.shape[0]} images and "
            f"{text_embeds.shape[0]} texts. Pass matching (image, text) pairs, or call the model without return_loss."
        )


def infonce_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss on (b, D) normalised pairs; `logit_scale` is the multiplier (already exp'd and clamped)."""
    _check_pairs(image_embeds, text_embeds)
    all_images, offset = gather_with_grad(image_embeds)
    all_texts, _ = gather_with_grad(text_embeds)
    labels = torch.arange(image_embeds.shape[0], device=image_embeds.device) + offset
    image_to_text = logit_scale * image_embeds @ all_texts.t()  # (b, B)
    text_to_image = logit_scale * text_embeds @ all_images.t()  # (b, B)
    return (F.cross_entropy(image_to_text, labels) + F.cross_entropy(text_to_image, labels)) / 2


def sigmoid_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, logit_bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP's loss on (b, D) normalised pairs: each local text against every image of the global batch."""
    _check_pairs(image_embeds, text_embeds)
    all_images, offset = gather_with_grad(image_embeds)
    logits = logit_scale * text_embeds @ all_images.t() + logit_bias  # (b, B)
    signs = -torch.ones_like(logits)
    rows = torch.arange(logits.shape[0], device=logits.device)
    signs[rows, rows + offset] = 1.0
    return -F.logsigmoid(signs * logits).sum(dim=-1).mean()


__all__ = ["gather_with_grad", "infonce_loss", "sigmoid_loss"]
