"""`vision_feature_layer` means the same tensor in every family (`towers.tower_features`): an index into the
tower's hidden states, or "last_hidden_state" for the tower's own final output. BLIP-2 and Flamingo checkpoints
saved when their -1 meant "last_hidden_state" keep the outputs they had."""

import json

import pytest
import torch

from hf_mm import HfMmBlip2ForConditionalGeneration, HfMmLlavaForConditionalGeneration
from hf_mm import testing as T
from hf_mm.modeling.flamingo import HfMmFlamingoForConditionalGeneration
from hf_mm.modeling.towers import tower_outputs

# SigLIP's last_hidden_state is post-layernorm, so hidden_states[-1] and "last_hidden_state" differ.
FAMILIES = {
    "llava": (HfMmLlavaForConditionalGeneration, lambda **kw: T.tiny_llava_config("siglip", "llama", "linear", **kw)),
    "blip2": (HfMmBlip2ForConditionalGeneration, lambda **kw: T.tiny_blip2_config("siglip", "llama", **kw)),
    "flamingo": (HfMmFlamingoForConditionalGeneration, lambda **kw: T.tiny_flamingo_config("siglip", "llama", **kw)),
}


def tower_input(model, layer):
    """What the family's bridge reads for `layer`: the tower features its get_image_features selects."""
    seen = {}

    def record(module, args, kwargs):
        seen["x"] = args[0] if args else next(iter(kwargs.values()))

    bridge = model.model.bridge
    handle = (bridge.perceiver if hasattr(bridge, "perceiver") else bridge).register_forward_pre_hook(
        record, with_kwargs=True
    )
    pixels = torch.randn(1, 3, T.IMAGE_SIZE, T.IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.get_image_features(
            pixels, **({"vision_feature_layer": layer} if "llava" in type(model).__name__.lower() else {})
        )
        outputs = tower_outputs(model.model.vision_tower, pixels)
    handle.remove()
    return seen["x"], outputs


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("layer", [-1, -2, "last_hidden_state"])
def test_the_same_value_reads_the_same_tensor_in_every_family(family, layer):
    model_class, make = FAMILIES[family]
    extra = {"vision_feature_select_strategy": "full"} if family == "llava" else {}
    model = model_class(make(vision_feature_layer=layer, **extra)).eval()
    seen, outputs = tower_input(model, layer)
    expected = outputs.last_hidden_state if layer == "last_hidden_state" else outputs.hidden_states[layer]
    torch.testing.assert_close(seen.to(expected.dtype), expected, atol=0, rtol=0)
    if layer == -1:  # the two meanings really differ on this tower
        assert not torch.allclose(outputs.hidden_states[-1], outputs.last_hidden_state)


@pytest.mark.parametrize("family", ["blip2", "flamingo"])
def test_a_checkpoint_saved_when_minus_one_meant_last_hidden_state_keeps_its_outputs(family, tmp_path):
    model_class, make = FAMILIES[family]
    torch.manual_seed(0)
    model = model_class(make(vision_feature_layer="last_hidden_state")).eval()
    model.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    saved["vision_feature_layer"] = -1  # how those checkpoints wrote it, without the marker
    path.write_text(json.dumps(saved))
    reloaded = model_class.from_pretrained(tmp_path).eval()
    assert reloaded.config.vision_feature_layer == "last_hidden_state"
    pixels = torch.randn(2, 3, T.IMAGE_SIZE, T.IMAGE_SIZE)
    with torch.no_grad():
        assert torch.equal(
            reloaded.get_image_features(pixels).pooler_output, model.get_image_features(pixels).pooler_output
        )

    explicit = model_class(make(vision_feature_layer=-1))
    explicit.save_pretrained(tmp_path / "new")  # an explicit -1 now is marked, and stays -1
    assert model_class.from_pretrained(tmp_path / "new").config.vision_feature_layer == -1


def test_an_unknown_name_is_refused():
    with pytest.raises(ValueError, match="vision_feature_layer='pooler'"):
        T.tiny_blip2_config(vision_feature_layer="pooler")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_tower_runs_only_up_to_the_block_it_is_read_from(family):
    """`vision_feature_layer=-2`: the models' own reads (`skip_unread_blocks`, which their forward passes) never run
    the last block, its output unused; `get_image_features()` runs it, as transformers' contract fixes its outputs
    (the tower's `last_hidden_state` among them), and so does asking for every hidden state. The same features
    either way, and the model's state-dict keys are the same before and after."""
    from hf_mm.modeling.towers import block_list

    model_class, make = FAMILIES[family]
    model = model_class(make(vision_feature_layer=-2)).eval()
    blocks = block_list(model.model.vision_tower)[2]
    assert len(blocks) >= 2
    keys, ran = list(model.state_dict()), []
    for index, block in enumerate(blocks):
        block.register_forward_hook(lambda *args, index=index: ran.append(index))
    pixels = torch.randn(1, 3, T.IMAGE_SIZE, T.IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        skipped = model.get_image_features(pixels, skip_unread_blocks=True).pooler_output
        assert ran == list(range(len(blocks) - 1))
        for kwargs in ({}, {"skip_unread_blocks": True, "output_hidden_states": True}):
            ran.clear()
            full = model.get_image_features(pixels, **kwargs)
            assert ran == list(range(len(blocks)))
            torch.testing.assert_close(skipped, full.pooler_output, atol=0, rtol=0)
    assert keys == list(model.state_dict())
    assert block_list(model.model.vision_tower)[2] is blocks  # put back


def test_a_llava_forward_skips_the_unread_block():
    from hf_mm.modeling.towers import block_list

    config = T.tiny_llava_config(vision_feature_layer=-2)
    model = HfMmLlavaForConditionalGeneration(config).eval()
    processor = T.tiny_llava_processor(config)
    inputs = processor(images=T.random_images(1), text="<image> what is it?", return_tensors="pt")
    ran = []
    blocks = block_list(model.model.vision_tower)[2]
    blocks[-1].register_forward_hook(lambda *args: ran.append("last"))
    blocks[-2].register_forward_hook(lambda *args: ran.append("read"))
    with torch.no_grad():
        model(**inputs)
    assert ran == ["read"]
