"""A training step never holds the full-vocabulary logits, and its loss and gradients are transformers' own.

For every generative family: the chunked loss (training mode, chunks of 3 label positions) against the plain
`ForCausalLMLoss` on full logits (the same model in eval mode, which returns logits), with and without
`num_items_in_batch`, and with pre-shifted `shift_labels`: the loss and every gradient agree to 1e-5 (fp32; both
losses compute in fp32 whatever the model's dtype, as transformers' loss does). A dispatch
mode records every tensor the training step creates: none is as large as (batch, sequence, vocab).
"""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hf_mm.modeling.heads import ChunkedCrossEntropy
from tests.conformance.testers import generative_cases

FAMILIES = ("llava", "blip2", "flamingo", "qwen2_5_vl")


def case(family: str):
    model_class, config, inputs = generative_cases()[family]
    config.loss_chunk_size = 3
    if family == "blip2":  # dropout would draw different masks in training and evaluation mode
        config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    model = model_class(config)
    placeholders = torch.tensor(model.placeholder_token_ids())
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    labels = labels.masked_fill(torch.isin(labels, placeholders), -100)
    labels[:, : labels.shape[1] // 2] = -100  # a prompt: only the second half is supervised
    return model, inputs, labels


def loss_and_grads(model, inputs, training: bool, **loss_kwargs):
    model.train(training)
    model.zero_grad(set_to_none=True)
    outputs = model(**inputs, **loss_kwargs)
    outputs.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return outputs, grads


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("count", [None, 7])
def test_chunked_loss_and_gradients_equal_the_full_logits_loss(family, count):
    model, inputs, labels = case(family)
    kwargs = {"labels": labels} if count is None else {"labels": labels, "num_items_in_batch": torch.tensor(count)}
    chunked, chunked_grads = loss_and_grads(model, inputs, training=True, **kwargs)
    plain, plain_grads = loss_and_grads(model, inputs, training=False, **kwargs)
    assert chunked.logits is None and plain.logits is not None  # a training step returns no logits
    torch.testing.assert_close(chunked.loss, plain.loss, rtol=1e-5, atol=1e-5)
    assert chunked_grads.keys() == plain_grads.keys() and len(plain_grads) > 10
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_pre_shifted_labels_chunk_like_labels():
    model, inputs, labels = case("llava")
    shift = torch.nn.functional.pad(labels[:, 1:], (0, 1), value=-100)
    chunked, chunked_grads = loss_and_grads(model, inputs, training=True, shift_labels=shift)
    plain, plain_grads = loss_and_grads(model, inputs, training=False, labels=labels)
    torch.testing.assert_close(chunked.loss, plain.loss, rtol=1e-5, atol=1e-5)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)


def test_loss_chunk_size_none_returns_logits_in_training():
    model, inputs, labels = case("llava")
    model.config.loss_chunk_size = None
    outputs, _ = loss_and_grads(model, inputs, training=True, labels=labels)
    assert outputs.logits.shape == (*labels.shape, model.config.text_config.vocab_size)


class LargestTensor(TorchDispatchMode):
    """Records the element count of the largest tensor any op creates while active."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(tensor, torch.Tensor):
                self.largest = max(self.largest, tensor.numel())
        return out


def test_a_training_step_never_creates_full_vocabulary_logits():
    model, inputs, labels = case("llava")
    vocab = model.config.text_config.vocab_size
    full_logits = labels.numel() * vocab
    for training, check in ((True, lambda n: n < full_logits / 2), (False, lambda n: n >= full_logits)):
        model.train(training)
        with LargestTensor() as mode:
            model(**inputs, labels=labels).loss.backward()
        assert check(mode.largest), (training, mode.largest, full_logits)  # chunks of 3 x vocab at most in training


def test_chunked_cross_entropy_matches_torch_with_a_bias_and_a_frozen_weight():
    torch.manual_seed(0)
    hidden = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    weight, bias = torch.randn(13, 6, dtype=torch.float64), torch.randn(13, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 13, (10,))
    loss = ChunkedCrossEntropy.apply(hidden, weight, bias, targets, 4)
    loss.backward()
    grads = hidden.grad.clone(), bias.grad.clone()
    hidden.grad = bias.grad = None
    logits = (hidden @ weight.T + bias).float()  # fp32, as transformers' loss computes
    reference = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
    reference.backward()
    assert loss.dtype == torch.float32 and hidden.grad.dtype == bias.grad.dtype == torch.float64
    torch.testing.assert_close(loss, reference, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grads, (hidden.grad, bias.grad), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "1024"])
def test_a_loss_chunk_size_it_cannot_honour_is_refused(value):
    model, inputs, labels = case("llava")
    model.config.loss_chunk_size = value
    model.train()
    with pytest.raises(ValueError, match=r"config\.loss_chunk_size=.*positive int"):
        model(**inputs, labels=labels)
