"""Gradient accumulation for contrastive losses that equals the global batch (gradient caching, Gao et al. 2021).

A contrastive loss is not a sum over samples: every pair is scored against every other pair of the batch, so
accumulating the losses of micro-batches trains on fewer negatives than the global batch, and to a different loss.
Here the accumulation window is encoded once without gradients, the loss of the whole window is computed on those
embeddings (leaves that collect d loss / d embedding, while the logit scale and bias get their gradient directly),
and each micro-batch is then encoded again with gradients and back-propagated through `embedding . cached gradient`.
The update equals one step on the global batch; the memory stays that of one micro-batch plus the embeddings.

Dropout draws the same masks in both passes (the RNG state is replayed). It applies to `HfMmClipModel` training in
one process; with several processes (or models that compute their own loss, as BLIP-2's stage 1) each micro-batch
keeps its own negatives, and a warning says so once.
"""

import torch
from transformers.utils import logging

logger = logging.get_logger(__name__)


class ContrastiveAccumulationMixin:
    """For a Trainer whose model has `contrastive_loss(image_embeds, text_embeds)` and returns normalised
    `image_embeds` / `text_embeds`."""

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batch_samples, count = super().get_batch_samples(epoch_iterator, num_batches, device)
        model = self.accelerator.unwrap_model(self.model)
        cacheable = hasattr(model, "contrastive_loss") and self.args.world_size == 1
        if len(batch_samples) > 1 and not cacheable:
            logger.warning_once(
                "Gradient accumulation with a contrastive loss: each micro-batch uses its own negatives here "
                "(several processes, or a model that computes its own loss), not those of the global batch."
            )
        self._window, self._window_loss = (batch_samples if cacheable and len(batch_samples) > 1 else None), None
        return batch_samples, count

    def training_step(self, model, inputs, num_items_in_batch=None):
        window = getattr(self, "_window", None)
        if not window or not any(inputs is batch for batch in window):
            return super().training_step(model, inputs, num_items_in_batch)
        model.train()
        index = next(i for i, batch in enumerate(window) if batch is inputs)
        if index == 0:
            self._cache_window(model, window)
        with torch.random.fork_rng(devices=[]):
            torch.random.set_rng_state(self._rng_states[index])
            outputs = model(**{**self._prepare_inputs(inputs), "return_loss": False})
        image_grad, text_grad = self._embedding_grads[index]
        surrogate = (outputs.image_embeds * image_grad).sum() + (outputs.text_embeds * text_grad).sum()
        self.accelerator.backward(surrogate)
        return self._window_loss / len(window)  # summed over the window, Trainer logs the window's loss

    def _cache_window(self, model, window) -> None:
        """Embeddings of every micro-batch (no graph), the window's loss on them, and its gradient per embedding."""
        self._rng_states, images, texts = [], [], []
        with torch.no_grad():
            for batch in window:
                self._rng_states.append(torch.random.get_rng_state())
                outputs = model(**{**self._prepare_inputs(batch), "return_loss": False})
                images.append(outputs.image_embeds)
                texts.append(outputs.text_embeds)
        image_embeds, text_embeds = torch.cat(images).requires_grad_(), torch.cat(texts).requires_grad_()
        loss = self.accelerator.unwrap_model(model).contrastive_loss(image_embeds, text_embeds)
        self.check_finite_loss(loss)
        self.accelerator.backward(loss)  # also the logit scale's (and bias's) gradient, once
        sizes = [len(i) for i in images]
        self._embedding_grads = list(zip(image_embeds.grad.split(sizes), text_embeds.grad.split(sizes)))
        self._window_loss = loss.detach()


__all__ = ["ContrastiveAccumulationMixin"]
