"""M-RoPE position ids equal transformers' Qwen2.5-VL `get_rope_index` for images, two images of different sizes, a
video with absolute time, and a left-padded batch."""

import inspect

import pytest
import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

from hf_mm.modeling.qwen2_5_vl.mrope import IMAGE, TEXT, VIDEO, mrope_position_ids

# transformers before the fix (5.16.1; 5.20.2 has it) truncated a video's seconds per grid to an int in
# `get_rope_index`, so 1.5 s moved time by 1 s. There the reference is compared on the truncated seconds; the
# absolute-time rule itself is asserted on hf_mm's own ids below, on every release.
TRUNCATES_SECONDS = "int(next(second_per_grid_ts))" in inspect.getsource(Qwen2_5_VLModel.get_rope_index)


@pytest.fixture(scope="module")
def reference():
    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=32, tokens_per_second=4)
    text = dict(hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, vocab_size=64, rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3]})  # fmt: skip
    return Qwen2_5_VLModel(Qwen2_5_VLConfig(vision_config=vision, text_config=text)).eval()


def sequence(*parts) -> list[int]:
    """parts: ("t", n) text tokens, or ("i"/"v", grid) vision runs sized by their merged grid."""
    types = []
    for kind, value in parts:
        if kind == "t":
            types += [TEXT] * value
        else:
            t, h, w = value
            types += [IMAGE if kind == "i" else VIDEO] * (t * h * w // 4)
    return types


CASES = {
    "one_image": ([("t", 3), ("i", (1, 4, 6)), ("t", 5)],),
    "two_images_of_different_sizes": ([("t", 2), ("i", (1, 4, 6)), ("t", 1), ("i", (1, 8, 2)), ("t", 4)],),
    "video_with_absolute_time": ([("t", 2), ("v", (3, 4, 4)), ("t", 3)],),
}


def grids(parts, kind):
    found = [torch.tensor(value) for k, value in parts if k == kind]
    return torch.stack(found) if found else None


@pytest.mark.parametrize("case", sorted(CASES))
def test_position_ids_equal_the_reference(reference, case):
    (parts,) = CASES[case]
    types = torch.tensor([sequence(*parts)])
    seconds = torch.tensor([1.5]) if case.startswith("video") else None  # 2 frames per grid at 4/3 fps
    kwargs = dict(image_grid_thw=grids(parts, "i"), video_grid_thw=grids(parts, "v"), second_per_grid_ts=seconds)
    expected, expected_deltas = reference.get_rope_index(types.clone(), types, **kwargs)
    got, deltas = mrope_position_ids(types, **kwargs)
    if TRUNCATES_SECONDS and seconds is not None:
        truncated, truncated_deltas = mrope_position_ids(types, **{**kwargs, "second_per_grid_ts": seconds.floor()})
        assert torch.equal(truncated, expected) and torch.equal(truncated_deltas, expected_deltas)
    else:
        assert torch.equal(got, expected) and torch.equal(deltas, expected_deltas)
    if case.startswith("video"):  # temporal ids advance by tokens_per_second * seconds = 6 per grid step
        video = got[0, 0][types[0] == VIDEO]
        assert sorted(set(video.tolist())) == [2, 8, 14]


def test_left_padded_batch_equals_the_reference(reference):
    long = sequence(("t", 3), ("i", (1, 4, 6)), ("t", 5))
    short = sequence(("t", 1), ("i", (1, 2, 2)), ("t", 2))
    types = torch.tensor([long, [TEXT] * (len(long) - len(short)) + short])
    mask = torch.ones_like(types)
    mask[1, : len(long) - len(short)] = 0
    image_grid_thw = torch.tensor([[1, 4, 6], [1, 2, 2]])
    expected = reference.get_rope_index(types.clone(), types, image_grid_thw=image_grid_thw, attention_mask=mask)
    got = mrope_position_ids(types, image_grid_thw=image_grid_thw, attention_mask=mask)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_a_vision_run_that_does_not_match_its_grid_is_named():
    types = torch.tensor([sequence(("t", 1), ("i", (1, 4, 4)), ("i", (1, 2, 2)), ("t", 1))])  # no separator
    with pytest.raises(ValueError, match="Sample 0: a run of 5 vision tokens"):
        mrope_position_ids(types, image_grid_thw=torch.tensor([[1, 4, 4], [1, 2, 2]]))


def test_any_rope_lm_wrapped_with_mrope_equals_qwen2_5_vls_text_model():
    from transformers import Qwen2Config, Qwen2Model
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    from hf_mm.modeling.qwen2_5_vl.mrope import wrap_rotary

    common = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, vocab_size=64, rms_norm_eps=1e-6)  # fmt: skip
    rope = {"rope_type": "default", "rope_theta": 10000.0}
    torch.manual_seed(0)
    reference = Qwen2_5_VLTextModel(
        Qwen2_5_VLConfig(text_config=dict(common, rope_parameters={**rope, "mrope_section": [2, 3, 3]})).text_config
    ).eval()
    lm = Qwen2Model(Qwen2Config(**common, rope_parameters=rope)).eval()
    lm.load_state_dict(reference.state_dict())
    rotary = wrap_rotary(lm, [2, 3, 3])
    types = torch.tensor([sequence(("t", 3), ("i", (1, 4, 6)), ("t", 5))])
    position_ids, _ = mrope_position_ids(types, image_grid_thw=torch.tensor([[1, 4, 6]]))
    input_ids = torch.randint(0, 64, types.shape)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, position_ids=position_ids).last_hidden_state
        # The LM gets the temporal ids for its own bookkeeping; the wrapper rotates with all three axes.
        mask = torch.ones_like(input_ids)
        rotary.position_ids = position_ids
        got = lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids[0]).last_hidden_state
        rotary.position_ids = None
        plain = lm(input_ids=input_ids, attention_mask=mask, position_ids=position_ids[0]).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert (plain - expected).abs().max() > 1e-4  # 1D RoPE on the temporal ids alone is off by far more than 1e-5
    with pytest.raises(ValueError, match="must sum to head_dim / 2 = 8"):
        wrap_rotary(Qwen2Model(Qwen2Config(**common)), [2, 2, 2])
