"""The causal-LM head every generative family shares: logits for the kept positions, and transformers' own loss.

Two rules of transformers' loss contract live here, so no family can drop them:
- The loss keywords reach `self.loss_function`. transformers' Trainer passes `num_items_in_batch` (the label-token
  count of the whole accumulated batch) to a `forward` that takes `**kwargs`, and then no longer divides the loss
  by the accumulation steps; the loss must be `sum / num_items_in_batch`, which `ForCausalLMLoss` computes when it
  gets the count. Dropping it makes gradient accumulation train on a wrongly scaled loss, silently.
- Multimodal placeholders are never targets, in `labels` and in pre-shifted `shift_labels` alike.

A training step never holds the full-vocabulary logits: with labels, in training mode and with gradients on, the
loss is computed `config.loss_chunk_size` label positions at a time (`ChunkedCrossEntropy`), and `logits` is None.
At Qwen's 151,936-token vocabulary a 2,048-token sample's fp32 logits are 1.2 GB, before their gradient. Evaluation,
generation and `loss_chunk_size=None` return the logits as transformers' models do.

Trainer counts `num_items_in_batch` from the collator's labels. hf_mm's collators mask placeholders already, so
the count and the loss agree. A collator that leaves placeholders in `labels` (TRL's default VLM collator does)
makes Trainer count them while the loss drops them: accumulation still equals the full batch, but the loss is
divided by too many tokens. That case is logged once, with the count, instead of passing silently.
"""

import torch
from transformers.utils import logging

from .compat import slice_logits_to_keep

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100
DEFAULT_LOSS_CHUNK_SIZE = 1024  # label positions per chunk: 1024 x 151,936 fp32 logits are 622 MB


class ChunkedCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, `chunk_size` rows at a time.

    The loss is a scalar, so its gradients are computed in forward, chunk by chunk, and backward only scales them:
    no chunk's logits outlive the chunk, and nothing is recomputed (the same three matmuls as the plain loss)."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_size: int):
        # hidden (N, D), weight (V, D), bias (V,) or None, targets (N,): only positions that have a label
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if ctx.needs_input_grad[2] else None
        for start in range(0, hidden.shape[0], chunk_size):
            rows, target = hidden[start : start + chunk_size], targets[start : start + chunk_size]
            logits = torch.nn.functional.linear(rows, weight, bias).float()  # (n, V): the only full-vocab tensor
            log_norm = logits.logsumexp(-1)
            total += (log_norm - logits.gather(-1, target[:, None])[:, 0]).sum()
            if grad_hidden is None and grad_weight is None and grad_bias is None:
                continue
            grad_logits = logits.sub_(log_norm[:, None]).exp_()  # softmax, in place
            grad_logits[torch.arange(len(target), device=target.device), target] -= 1.0
            if grad_bias is not None:
                grad_bias += grad_logits.sum(0)
            grad_logits = grad_logits.to(weight.dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_size] = grad_logits @ weight
            if grad_weight is not None:
                grad_weight += grad_logits.T.float() @ rows.float()
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        grads = [
            None if grad is None else (grad * grad_output).to(dtype)
            for grad, dtype in zip(ctx.saved_tensors, ctx.dtypes)
        ]
        return *grads, None, None


def chunked_causal_lm_loss(hidden_states, lm_head, labels=None, shift_labels=None, chunk_size: int = DEFAULT_LOSS_CHUNK_SIZE,
                           num_items_in_batch=None, ignore_index: int = IGNORE_INDEX, **kwargs) -> torch.Tensor:  # fmt: skip
    """transformers' `ForCausalLMLoss` (sum over the labelled positions, divided by `num_items_in_batch` or by
    their count) from (B, L, D) hidden states and the LM head, without the (B, L, V) logits."""
    if shift_labels is None:
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]  # target of t is t + 1
    hidden = hidden_states.reshape(-1, hidden_states.shape[-1])  # (B * L, D)
    targets = shift_labels.reshape(-1).to(hidden.device)
    keep = targets != ignore_index
    total = ChunkedCrossEntropy.apply(hidden[keep], lm_head.weight, lm_head.bias, targets[keep], chunk_size)
    if num_items_in_batch is None:
        return total / keep.sum()
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch


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
    """Log (once) when the caller's token count included placeholder targets that the loss then dropped (only
    under a count: without one there is nothing to compare, and no host sync is spent)."""
    if num_items_in_batch is None:
        return
    dropped = int((labels != IGNORE_INDEX).sum() - (cleaned != IGNORE_INDEX).sum())
    if dropped:
        logger.warning_once(
            f"{dropped} image/video placeholder tokens were loss targets in `labels` and were dropped, but "
            "`num_items_in_batch` counted them, so the loss is divided by too many tokens. Set placeholder labels "
            "to -100 in the collator (hf_mm's collators do) to make the count and the loss agree."
        )


class CausalLMHeadMixin:
    """For a `...ForConditionalGeneration` with `self.lm_head` and an inner `self.model`; the family names its
    placeholder tokens in `placeholder_token_ids()` and how its image inputs split per sample in
    `split_vision_inputs`. Also the two generate() rules every family shares: images travel with their sample when
    beam search repeats samples, and (prefix fusion) images already in the cache are not encoded again."""

    # The head reads the embedding it is tied to, so a tensor-parallel plan must gather its output itself.
    _tp_plan = {"lm_head": "colwise_gather_output"}
    # Prefix fusion: an image lives in the KV cache once its placeholders are behind it. Cross-attention fusion
    # (Flamingo) sets False: its text keeps reading the images at every step.
    images_live_in_cache = True
    vision_inputs = ("pixel_values",)

    def placeholder_token_ids(self) -> tuple[int, ...]:
        return (self.config.image_token_id,)

    def split_vision_inputs(self, input_ids: torch.Tensor, model_kwargs: dict) -> dict[str, list[torch.Tensor]]:
        """{input name: one tensor per sample} for the image inputs; each image has the same number of
        placeholders (the prefix bridges' fixed count, or Flamingo's single `<image>`)."""
        pixel_values = model_kwargs.get("pixel_values")
        if pixel_values is None or pixel_values.shape[0] == 0:
            return {}
        counts = torch.isin(input_ids, torch.tensor(self.placeholder_token_ids(), device=input_ids.device)).sum(1)
        per_image, rest = divmod(int(counts.sum()), pixel_values.shape[0])
        if rest or not per_image or (counts % per_image).any():
            return {}  # inconsistent input: forward raises the placeholder mismatch with the numbers
        return {"pixel_values": list(pixel_values.split((counts // per_image).tolist()))}

    def _expand_inputs_for_generation(self, expand_size=1, is_encoder_decoder=False, input_ids=None, **model_kwargs):
        """Beam search and `num_return_sequences` repeat each sample `expand_size` times; its images are repeated
        with it, sample by sample (repeating each image in place would hand a sample with two images the wrong
        ones)."""
        split = self.split_vision_inputs(input_ids, model_kwargs) if expand_size > 1 and input_ids is not None else {}
        for key in split:
            model_kwargs.pop(key)
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size=expand_size, is_encoder_decoder=is_encoder_decoder, input_ids=input_ids, **model_kwargs
        )
        for key, chunks in split.items():
            model_kwargs[key] = torch.cat([chunk for chunk in chunks for _ in range(expand_size)])
        return input_ids, model_kwargs

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, **kwargs):
        """The generic preparation; when continuing from a cache whose prefix already holds every placeholder
        (prefix fusion), the images it was given are already encoded there and are not run again.
        (`inputs_embeds` is named: generate() reads the signature to allow generating from embeddings.)"""
        model_inputs = super().prepare_inputs_for_generation(input_ids, inputs_embeds=inputs_embeds, **kwargs)
        current = model_inputs.get("input_ids")
        if self.images_live_in_cache and current is not None and current.shape[1] < input_ids.shape[1]:
            ids = torch.tensor(self.placeholder_token_ids(), device=current.device)
            if not torch.isin(current, ids).any():
                for key in self.vision_inputs:
                    model_inputs.pop(key, None)
        return model_inputs

    def chunks_loss(self, labels, shift_labels, logits_to_keep) -> int | None:
        """The chunk size when this forward's loss is computed without full logits (a training step), else None."""
        chunk_size = getattr(self.config, "loss_chunk_size", DEFAULT_LOSS_CHUNK_SIZE)
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise ValueError(
                f"config.loss_chunk_size={chunk_size!r}: give a positive int (label positions per chunk of the loss), "
                "or None to compute the loss on full logits."
            )
        has_labels = labels is not None or shift_labels is not None
        whole = isinstance(logits_to_keep, int) and logits_to_keep == 0
        # Under torch.compile the plain loss: the chunks' count depends on the labels (a graph break per step).
        eager = not torch.compiler.is_compiling()
        return chunk_size if has_labels and whole and eager and self.training and torch.is_grad_enabled() else None

    def lm_logits_and_loss(self, hidden_states, input_ids, labels, logits_to_keep, **loss_kwargs):
        """(B, L, D) hidden states -> ((B, L_keep, V) logits or None, loss or None). `loss_kwargs` are the forward's
        own keywords (num_items_in_batch, shift_labels, ignore_index ...), passed on to transformers' loss. A
        training step (`chunks_loss`) returns no logits and computes the same loss in chunks."""
        shift_labels = loss_kwargs.get("shift_labels")
        chunk_size = self.chunks_loss(labels, shift_labels, logits_to_keep)
        logits = None
        if chunk_size is None:
            logits = self.lm_head(slice_logits_to_keep(hidden_states, logits_to_keep))  # (B, L_keep, V)
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
        if chunk_size is not None:
            loss_kwargs.pop("vocab_size", None)
            return None, chunked_causal_lm_loss(
                hidden_states, self.lm_head, labels, chunk_size=chunk_size, **loss_kwargs
            )
        vocab_size = self.config.text_config.vocab_size
        return logits, self.loss_function(logits=logits, labels=labels, vocab_size=vocab_size, **loss_kwargs)


__all__ = ["CausalLMHeadMixin", "ChunkedCrossEntropy", "chunked_causal_lm_loss", "placeholder_free", "IGNORE_INDEX"]
