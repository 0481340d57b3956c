"""hf_mm_qwen2_5_vit: parity with transformers' Qwen2.5-VL vision transformer on packed images of several sizes and a
video, windowed vs full attention, segment attention, and the tower's Auto* round trip."""

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl
from transformers.models.qwen2_5_vl.configuration_qwen2_5_vl import Qwen2_5_VLVisionConfig
from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig, HfMmQwen2_5_ViTModel, PatchMerger
from hf_mm.modeling.qwen2_5_vl.modeling_qwen2_5_vit import segment_attention

# 3 blocks, block 1 with full attention: windowing is exercised in blocks 0 and 2.
TINY = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=48, fullatt_block_indexes=[1])
# A 12x20-patch image (windows cut at its edges), an 8x8 one, and a 2-frame video, packed in one sequence.
GRID = torch.tensor([[1, 12, 20], [1, 8, 8], [2, 4, 6]])
# hf_mm computes the rotary angles in fp32, as transformers does since it renamed the class to
# `Qwen2_5_VLVisionRotaryEmbedding` (5.20.2 has it). The older class (5.16.1) computed them at the model's dtype, so
# in fp64 the two differ by the fp32 rounding of the angles (~4e-7 here), not by 0.
FP64_ATOL = 1e-6 if hasattr(modeling_qwen2_5_vl, "Qwen2_5_VisionRotaryEmbedding") else 1e-10


def reference_and_ours(dtype=torch.float64, sharpen=0.3):
    torch.manual_seed(0)
    reference = Qwen2_5_VisionTransformerPretrainedModel._from_config(
        Qwen2_5_VLVisionConfig(**TINY), attn_implementation="sdpa"
    ).eval()
    with torch.no_grad():  # larger weights than the default init, so every path moves the output
        for p in reference.parameters():
            p.normal_(0, sharpen)
    reference = reference.to(dtype)
    ours = HfMmQwen2_5_ViTModel(HfMmQwen2_5_ViTConfig(**TINY)).eval().to(dtype)
    merger = PatchMerger(32, 48).to(dtype)
    state = reference.state_dict()
    ours.load_state_dict({k: v for k, v in state.items() if not k.startswith("merger.")}, strict=True)
    merger.load_state_dict({k.removeprefix("merger."): v for k, v in state.items() if k.startswith("merger.")})
    return reference, ours, merger


def pixels(dtype=torch.float64):
    n = int(GRID.prod(dim=1).sum())
    return torch.randn(n, 3 * 2 * 14 * 14, generator=torch.Generator().manual_seed(1), dtype=dtype)


def test_merged_features_match_the_reference_in_fp64():
    reference, ours, merger = reference_and_ours()
    with torch.no_grad():
        expected = reference(pixels(), grid_thw=GRID).pooler_output
        got = merger(ours(pixels(), GRID).last_hidden_state)
    assert got.shape == expected.shape == (int(GRID.prod(dim=1).sum()) // 4, 48)
    torch.testing.assert_close(got, expected, atol=FP64_ATOL, rtol=0)


def test_fp32_at_default_scale_within_1e5():
    reference, ours, merger = reference_and_ours(torch.float32, sharpen=0.02)
    with torch.no_grad():
        expected = reference(pixels(torch.float32), grid_thw=GRID).pooler_output
        got = merger(ours(pixels(torch.float32), GRID).last_hidden_state)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("change", ["full_attention_elsewhere", "no_windows"])
def test_the_attention_layout_matters(change):
    # Guards the parity test: moving the full-attention block, or making the windows cover whole images, changes it.
    reference, ours, merger = reference_and_ours()
    if change == "full_attention_elsewhere":
        ours.config.fullatt_block_indexes = [2]
    else:
        ours.config.window_size = 14 * 2 * 16
    with torch.no_grad():
        expected = reference(pixels(), grid_thw=GRID).pooler_output
        got = merger(ours(pixels(), GRID).last_hidden_state)
    assert (got - expected).abs().max() > 1e-3


def test_segment_attention_equals_block_diagonal_attention():
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(10, 2, 4, generator=generator) for _ in range(3))
    lengths = [4, 2, 4]
    mask = torch.block_diag(*[torch.ones(n, n) for n in lengths]).bool()
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1), attn_mask=mask
    ).transpose(0, 1)
    torch.testing.assert_close(segment_attention(q, k, v, lengths), dense)


def test_tower_round_trips_through_auto_classes(tmp_path):
    model = HfMmQwen2_5_ViTModel(HfMmQwen2_5_ViTConfig(**TINY)).eval()
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HfMmQwen2_5_ViTConfig)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        x = pixels(torch.float32)
        assert torch.equal(reloaded(x, GRID).last_hidden_state, model(x, GRID).last_hidden_state)
    assert torch.equal(reloaded.inv_freq, model.inv_freq)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fullatt_block_indexes=[3]), r"fullatt_block_indexes \[3\]"),
        (dict(num_heads=16), "head_dim divisible by 4"),
        (dict(window_size=100), "multiple of patch_size"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        HfMmQwen2_5_ViTConfig(**{**TINY, **kwargs})
