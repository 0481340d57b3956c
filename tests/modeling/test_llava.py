import itertools

import pytest
import torch
from transformers import CLIPConfig, CLIPTextConfig, LlamaConfig

import hf_mm
from hf_mm import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration
from hf_mm import testing as T
from tests.mixin import VLMModelTestMixin
from tests.modeling.helpers import PAIRS, UNUSED_TOWER_PARTS, make_case

# The built-in bridges (a test may register a plug-in bridge in hf_mm.BRIDGES).
CASES = [
    (v, t, b)
    for (v, t), b in itertools.product(PAIRS, ("linear", "mlp2x_gelu", "perceiver", "pixel_shuffle", "qwen_adapter"))
]


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
class TestLlavaFamily(VLMModelTestMixin):
    model_class = HfMmLlavaForConditionalGeneration

    def get_config_and_inputs(self, case):
        # The last tower layer feeds the bridge, so every encoder block is on the gradient path.
        return make_case(*case, vision_feature_layer=-1)

    def trainable_exempt(self, name, config):
        # Tower parts off LLaVA's path: pooling heads, the final norm after the hidden state read (hidden_states[-1]
        # is pre-norm), DINOv2's masked-image-modelling token. Only at the tower's root, never inside its blocks.
        # The perceiver's per-frame time embeddings serve video frames only; these cases are single images.
        return UNUSED_TOWER_PARTS.match(name) is not None or name == "model.bridge.frame_embeddings"


def test_roles_are_named_and_lm_head_ties_when_the_lm_ties():
    for text, ties in [("llama", False), ("qwen2", True), ("gpt2", True)]:
        model = HfMmLlavaForConditionalGeneration(T.tiny_llava_config("clip", text))
        assert {"vision_tower", "bridge", "language_model"} <= dict(model.model.named_children()).keys()
        embed = model.get_input_embeddings().weight
        assert (model.lm_head.weight.data_ptr() == embed.data_ptr()) is ties, text


def test_feature_layer_list_concatenates_hidden_states():
    config = T.tiny_llava_config("clip", "llama", "linear", vision_feature_layer=[-2, -1])
    model = HfMmLlavaForConditionalGeneration(config).eval()
    assert model.model.bridge.linear.in_features == 2 * config.vision_config.hidden_size
    pixels = torch.randn(1, 3, T.IMAGE_SIZE, T.IMAGE_SIZE)
    states = model.model.vision_tower(pixels, output_hidden_states=True).hidden_states
    expected = model.model.bridge(torch.cat([states[-2], states[-1]], -1)[:, 1:])
    torch.testing.assert_close(model.model.get_image_features(pixels).pooler_output, expected, rtol=0, atol=0)


def test_default_strategy_drops_only_the_towers_prefix_tokens():
    # CLIP has a CLS token, SigLIP none: both must yield exactly the 16 patches of a 4x4 grid.
    for vision in ("clip", "siglip", "dinov2"):
        model = HfMmLlavaForConditionalGeneration(T.tiny_llava_config(vision, "llama", "linear"))
        assert model.get_image_features(torch.randn(2, 3, 32, 32)).pooler_output.shape == (2, 16, T.HIDDEN), vision
    full = HfMmLlavaForConditionalGeneration(
        T.tiny_llava_config("clip", "llama", "linear", vision_feature_select_strategy="full")
    )
    assert full.get_image_features(torch.randn(2, 3, 32, 32)).pooler_output.shape == (2, 17, T.HIDDEN)


def test_image_placeholders_are_never_loss_targets():
    config, processor, inputs = make_case("clip", "llama", "mlp2x_gelu")
    model = HfMmLlavaForConditionalGeneration(config).eval()
    labels = inputs["input_ids"].clone()
    masked = labels.masked_fill(labels == config.image_token_id, -100)
    with torch.no_grad():
        assert torch.equal(model(**inputs, labels=labels).loss, model(**inputs, labels=masked).loss)
        unmasked = model.loss_function(
            logits=model(**inputs).logits, labels=labels, vocab_size=config.text_config.vocab_size
        )
    assert not torch.isclose(unmasked, model(**inputs, labels=labels).loss)


def test_vision_tower_runs_once_per_generate_call():
    config, processor, inputs = make_case("clip", "llama", "mlp2x_gelu")
    model = HfMmLlavaForConditionalGeneration(config).eval()
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert len(calls) == 1


def test_image_tokens_without_pixels_raise():
    config, processor, inputs = make_case("clip", "llama", "linear")
    model = HfMmLlavaForConditionalGeneration(config)
    with pytest.raises(ValueError, match="no pixel_values were given"):
        model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])


def test_bridge_init_ran():
    config = T.tiny_llava_config("clip", "llama", "mlp2x_gelu")
    bridge = HfMmLlavaForConditionalGeneration(config).model.bridge
    std = config.text_config.initializer_range
    for linear in (bridge.linear_1, bridge.linear_2):
        assert torch.count_nonzero(linear.bias) == 0
        assert abs(linear.weight.std().item() - std) < 0.3 * std


def test_bridge_casts_its_input_to_its_weight_dtype():
    bridge = hf_mm.modeling.get_bridge("pixel_shuffle")(8, 16).to(torch.bfloat16)
    assert bridge(torch.randn(2, 16, 8), grid_size=(4, 4)).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(bridge_type="qformerx"), r"Unknown bridge_type='qformerx'. Allowed: \['linear', 'mlp2x_gelu'"),
        (dict(vision_config=LlamaConfig()), "vision_config must be a vision encoder config .* model_type='llama'"),
        (dict(vision_config=CLIPConfig()), r"model_type='clip'. Pass its `.vision_config`"),
        (dict(text_config=CLIPTextConfig()), "text_config must be a causal LM config .* model_type='clip_text_model'"),
        (dict(text_config=T.tiny_vision_config("vit")), "text_config must be a causal LM config"),
        (dict(vision_feature_select_strategy="cls"), "vision_feature_select_strategy='cls' is not one of"),
        (dict(vision_feature_layer=5), r"vision_feature_layer=5 is out of range: .* \[-3, 2\]"),
        (dict(pixel_shuffle_factor=0), "pixel_shuffle_factor must be >= 1"),
    ],
)
def test_config_rejects_bad_values(kwargs, match):
    base = dict(vision_config=T.tiny_vision_config("clip"), text_config=T.tiny_text_config("llama"))
    with pytest.raises(ValueError, match=match):
        HfMmLlavaConfig(**{**base, **kwargs})


def test_pixel_shuffle_rejects_kept_prefix_tokens_and_odd_grids():
    with pytest.raises(ValueError, match="needs the bare patch grid, .* clip_vision_model tower's CLS"):
        T.tiny_llava_config("clip", "llama", "pixel_shuffle", vision_feature_select_strategy="full")
    T.tiny_llava_config("siglip", "llama", "pixel_shuffle", vision_feature_select_strategy="full")  # no prefix: fine
    with pytest.raises(ValueError, match="emits extra .*vision_feature_select_strategy='default'"):
        hf_mm.modeling.get_bridge("pixel_shuffle")(8, 16)(torch.randn(1, 17, 8), grid_size=(4, 4))
    bridge = hf_mm.modeling.get_bridge("pixel_shuffle")(8, 16, factor=2)
    with pytest.raises(ValueError, match="does not divide the patch grid 3x3"):
        bridge(torch.randn(1, 9, 8), grid_size=(3, 3))
