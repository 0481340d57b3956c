"""BLIP-2's Q-Former masks: for each mode, which positions may attend to which (2 queries, 3 text tokens, 1 pad)."""

import pytest
import torch

from hf_mm.modeling.blip2.masks import qformer_attention_mask

Q = 2
TEXT_MASK = torch.tensor([[1, 1, 0]])  # the last text token is padding
q0, q1, t0, t1, pad = range(5)


def sees(mode: str) -> dict[int, set[int]]:
    mask = qformer_attention_mask(Q, TEXT_MASK, mode)[0, 0]
    return {row: {col for col in range(5) if mask[row, col]} for row in range(5)}


def test_unimodal_itc_keeps_queries_and_text_apart():
    s = sees("unimodal")
    assert s[q0] == s[q1] == {q0, q1}
    assert s[t0] == s[t1] == {t0, t1}


def test_bidirectional_itm_lets_everything_see_everything_but_padding():
    s = sees("bidirectional")
    assert all(s[row] == {q0, q1, t0, t1} for row in (q0, q1, t0, t1))


def test_causal_itg_queries_see_queries_and_text_sees_queries_and_its_past():
    s = sees("causal")
    assert s[q0] == s[q1] == {q0, q1}
    assert s[t0] == {q0, q1, t0}
    assert s[t1] == {q0, q1, t0, t1}


def test_shape_and_unknown_mode():
    assert qformer_attention_mask(Q, torch.ones(4, 3), "causal").shape == (4, 1, 5, 5)
    with pytest.raises(ValueError, match="mode='itc' is not one of"):
        qformer_attention_mask(Q, TEXT_MASK, "itc")
