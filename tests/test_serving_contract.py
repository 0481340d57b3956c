"""The contract of vLLM 0.33's and SGLang 0.5.23's transformers backends, for the models with no native class:
each model is driven the way those engines drive it (read from their wheels; README, "After training").

- the bare model builds with `AutoModel.from_config` on the meta device;
- its LM shares the composite's text-config object, and each decoder layer dispatches attention through
  `ALL_ATTENTION_FUNCTIONS` exactly once, counted by a registered attention function;
- a forward from `inputs_embeds` (the engine scatters the image features itself) with `use_cache=False`,
  `return_dict=False`, 1D `position_ids` and no mask gives the model's own hidden states at `[0]`;
- `get_image_features(pixel_values, return_dict=True).pooler_output` has one run per image, as long as the
  processor's `_get_num_multimodal_tokens` says and its `return_text_replacement_offsets` replacement holds;
- the LM is `language_model`, and the tensor-parallel plan reaches its layers.
"""

import collections

import pytest
import torch
from transformers import AutoConfig, AutoModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm import testing as T

CALLS = collections.Counter()
SEEN_CONFIGS = []


def counting_attention(module, query, key, value, attention_mask, **kwargs):
    CALLS[module.layer_idx] += 1
    SEEN_CONFIGS.append(module.config)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


ALL_ATTENTION_FUNCTIONS.register("hf_mm_counting", counting_attention)

CASES = {
    "llava_mlp2x_gelu_qwen2": ("llava", {"text": "qwen2"}),
    "llava_perceiver": ("llava", {"bridge_type": "perceiver"}),
    "llava_qwen_adapter": ("llava", {"bridge_type": "qwen_adapter"}),
    "llava_pixel_shuffle": ("llava", {"bridge_type": "pixel_shuffle"}),
    "blip2_llama": ("blip2", {}),
}


def build(case: str, tmp_path):
    family, kwargs = CASES[case]
    if family == "llava":
        config = T.tiny_llava_config(**kwargs)
        model, processor = HfMmLlavaForConditionalGeneration(config), T.tiny_llava_processor(config)
    else:
        model, processor = T.tiny_model_and_processor(family, **kwargs)
    model.save_pretrained(tmp_path)
    return model.eval(), processor


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_bare_model_serves_the_way_the_engines_drive_it(case, tmp_path):
    model, processor = build(case, tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    with torch.device("meta"):
        on_meta = AutoModel.from_config(config)
    assert type(on_meta) is type(model.model) and all(p.is_meta for p in on_meta.parameters())

    bare = AutoModel.from_pretrained(tmp_path).eval()
    text_config = bare.config.text_config
    assert bare.language_model.config is text_config  # the engines patch this one object
    assert any(key.startswith("language_model.layers") for key in bare.tp_plan)

    images = [image.convert("RGB") for image in T.random_images(2)]
    inputs = processor(images=images, text=["<image>a <image>b: compare them"], return_tensors="pt")
    with torch.no_grad():
        expected = bare(**inputs).last_hidden_state
        features = bare.get_image_features(inputs["pixel_values"], return_dict=True).pooler_output
    counts = processor._get_num_multimodal_tokens(image_sizes=[[im.height, im.width] for im in images])
    assert [len(run) for run in features] == counts["num_image_tokens"]
    assert (inputs["input_ids"] == processor.image_token_id).sum() == sum(counts["num_image_tokens"])

    out = engine_forward(bare, inputs["input_ids"], processor.image_token_id, features, positions=None)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=0)


def engine_forward(bare, input_ids, image_token_id, features, positions):
    """What the engines do: embed the text, scatter the image features at the placeholders themselves, and call the
    bare model with `inputs_embeds`, positions, no mask and no cache, with attention dispatched to a counting
    function registered in ALL_ATTENTION_FUNCTIONS. Each LM layer must dispatch exactly once, with the shared
    text config."""
    text_config = bare.config.text_config
    is_image = input_ids == image_token_id
    embeds = bare.get_input_embeddings()(input_ids)
    embeds = embeds.masked_scatter(is_image[..., None], torch.cat(list(features)).to(embeds.dtype))
    positions = torch.arange(embeds.shape[1])[None] if positions is None else positions
    text_config._attn_implementation = "hf_mm_counting"
    CALLS.clear()
    SEEN_CONFIGS.clear()
    with torch.no_grad():
        out = bare(input_ids=None, inputs_embeds=embeds, position_ids=positions, use_cache=False, return_dict=False)
    assert dict(CALLS) == dict.fromkeys(range(text_config.num_hidden_layers), 1)
    assert SEEN_CONFIGS and all(seen is text_config for seen in SEEN_CONFIGS)
    return out


def test_qwen2_5_vl_serves_with_its_rope_index(tmp_path):
    """vLLM computes M-RoPE ids once per prompt with `get_rope_index` and feeds them back as (3, 1, L)
    `position_ids`; the model must use them rather than recompute its own."""
    model, processor = T.tiny_model_and_processor("qwen2_5_vl")
    model.save_pretrained(tmp_path)
    bare = AutoModel.from_pretrained(tmp_path).eval()
    assert bare.language_model.config is bare.config.text_config
    images = [image.convert("RGB") for image in T.random_images(2, size=(56, 84))]
    text = [f"a {processor.image_token} b {processor.image_token} c"]
    inputs = processor(images=images, text=text, return_tensors="pt", return_text_replacement_offsets=True)
    offsets = inputs.pop("text_replacement_offsets")[0]
    with torch.no_grad():
        expected = bare(**inputs).last_hidden_state
        features = bare.get_image_features(
            inputs["pixel_values"], image_grid_thw=inputs["image_grid_thw"], return_dict=True
        ).pooler_output
    counts = processor._get_num_multimodal_tokens(image_sizes=[[im.height, im.width] for im in images])
    assert (
        [len(run) for run in features]
        == counts["num_image_tokens"]
        == [entry["replacement"].count(processor.image_token) for entry in offsets]
    )
    positions, deltas = bare.get_rope_index(
        input_ids=inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
    )  # fmt: skip
    assert positions.shape == (3, 1, inputs["input_ids"].shape[1]) and deltas.shape == (1, 1)
    out = engine_forward(bare, inputs["input_ids"], processor.image_token_id, features, positions)
    torch.testing.assert_close(out[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["llava_perceiver", "blip2_llama"])
def test_text_replacement_offsets_locate_each_images_run(case, tmp_path):
    _, processor = build(case, tmp_path)
    images = [image.convert("RGB") for image in T.random_images(2)]
    out = processor(images=images, text=["<image>a <image>b"], return_text_replacement_offsets=True)
    offsets = out["text_replacement_offsets"][0]
    counts = processor._get_num_multimodal_tokens(image_sizes=[[im.height, im.width] for im in images])
    assert len(offsets) == 2
    for entry, count in zip(offsets, counts["num_image_tokens"]):
        ids = processor.tokenizer(entry["replacement"], add_special_tokens=False)["input_ids"]
        most_common, n = collections.Counter(ids).most_common(1)[0]
        assert most_common == processor.image_token_id and n == count
