"""The causal-LM head every generative family shares: logits for the kept positions, and transformers' own loss.

Two rules of transformers' loss contract live here, so no family can drop them:
- The loss keywords reach `self.loss_function`. transformers' Trainer passes `num_items_in_batch` (the label-token
  count of the whole accumulated batch) to a `forward` that takes `**kwargs`, and then no longer divides the loss
  by the accumulation steps; the loss must be `sum / num_items_in_batch`, which `ForCausalLMLoss` computes when it
  gets the count. Dropping it makes gradient accumulation train on a wrongly scaled loss, silently.
- Multimodal placeholders are never targets, in `labels` and in pre-shifted `shift_labels` alike.

Trainer counts `num_items_in_batch` from the collator's labels. hf_mm's collators mask placeholders already, so
the count and the loss agree. A collator that leaves placeholders in `labels` (TRL's default VLM collator does)
makes Trainer count them while the loss drops them: accumulation still equals the full batch, but the loss is
divided by too many tokens. That case is logged once, with the count, instead of passing silently.
"""

import torch
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import logging

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


def placeholder_free(labels: torch.Tensor, input_ids: torch.Tensor | None, token_ids: tuple[int, ...], shifted: bool):
    """`labels` with every position whose target is a placeholder token set to -100.

    `labels` (B, L) are aligned with `input_ids` (position t is the target of t - 1); `shifted` labels (B, L) are
    already next-token targets (position t holds the target of t, i.e. the token at t + 1).
    """
    if input_ids is None:
        return labels
    is_placeholder = torch.isin(input_ids, torch.tensor(token_ids, device=input_ids.device))
    if shifted:
        is_placeholder = torch.nn.functional.pad(is_placeholder[:, 1:], (0, 1), value=False)
    return labels.masked_fill(is_placeholder.to(labels.device), IGNORE_INDEX)


def warn_if_counted(labels: torch.Tensor, cleaned: torch.Tensor, num_items_in_batch) -> None:
    """Log (once) when the caller's token count included placeholder targets that the loss then dropped."""
    dropped = int((labels != IGNORE_INDEX).sum() - (cleaned != IGNORE_INDEX).sum())
    if num_items_in_batch is not None and dropped:
        logger.warning_once(
            f"{dropped} image/video placeholder tokens were loss targets in `labels` and were dropped, but "
            "`num_items_in_batch` counted them, so the loss is divided by too many tokens. Set placeholder labels "
            "to -100 in the collator (hf_mm's collators do) to make the count and the loss agree."
        )


class CausalLMHeadMixin:
    """For a `...ForConditionalGeneration` with `self.lm_head` and an inner `self.model`; the family names its
    placeholder tokens in `placeholder_token_ids()`."""

    # The head reads the embedding it is tied to, so a tensor-parallel plan must gather its output itself.
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def placeholder_token_ids(self) -> tuple[int, ...]:
        return (self.config.image_token_id,)

    def lm_logits_and_loss(self, hidden_states, input_ids, labels, logits_to_keep, **loss_kwargs):
        """(B, L, D) hidden states -> ((B, L_keep, V) logits, loss or None). `loss_kwargs` are the forward's own
        keywords (num_items_in_batch, shift_labels, ignore_index ...), passed on to transformers' loss."""
        logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))  # (B, L_keep, V)
        shift_labels = loss_kwargs.get("shift_labels")
        if labels is None and shift_labels is None:
            return logits, None
        ids = self.placeholder_token_ids()
        count = loss_kwargs.get("num_items_in_batch")
        if labels is not None:
            labels, given = placeholder_free(labels, input_ids, ids, shifted=False), labels
            warn_if_counted(given, labels, count)
        if shift_labels is not None:
            loss_kwargs["shift_labels"] = placeholder_free(shift_labels, input_ids, ids, shifted=True)
            warn_if_counted(shift_labels, loss_kwargs["shift_labels"], count)
        vocab_size = self.config.text_config.vocab_size
        return logits, self.loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **loss_kwargs)


__all__ = ["CausalLMHeadMixin", "placeholder_free", "IGNORE_INDEX"]
