"""hf_mm_flamingo: the shared VLM checks, the zero-gate identity, media masking, interleaved and few-shot input,
video frames, decoder-layer discovery, and composition from pretrained towers."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config

import hf_mm  # noqa: F401  (registration)
from hf_mm import testing as T
from hf_mm.modeling.flamingo import HfMmFlamingoForConditionalGeneration, find_decoder_layers
from hf_mm.processing import HfMmFlamingoProcessor
from tests.mixin import VLMModelTestMixin

CASES = [("clip", "llama"), ("siglip", "qwen2"), ("vit", "gpt2"), ("dinov2", "opt")]


def open_gates(model, value=0.5):
    """Trained-looking gates, so the images reach the LM (fresh gates are 0: the model is the LM)."""
    with torch.no_grad():
        for block in model.model.bridge.gated_cross_attn:
            block.attn_gate.fill_(value)
            block.ff_gate.fill_(value)
    return model


def interleaved_batch(processor, seed=0):
    """Left-padded: sample 0 text, image, text, image, text; sample 1 text, image, text."""
    images = T.random_images(3, seed=seed)
    processor.tokenizer.padding_side = "left"
    samples = [
        ["a photo of", images[0], "a red square. and then", images[1], "what is it?"],
        ["one picture:", images[2], "what is in it"],
    ]
    return dict(processor(interleaved=samples, padding=True, return_tensors="pt"))


def bare_lm(model):
    """The causal LM the Flamingo model wraps, with the same weights."""
    config = model.config.text_config
    lm = AutoModelForCausalLM.from_config(config).eval()
    state = {f"{lm.base_model_prefix}.{k}": v for k, v in model.model.language_model.state_dict().items()}
    lm.load_state_dict({**state, "lm_head.weight": model.lm_head.weight}, strict=True)
    return lm


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
class TestFlamingoFamily(VLMModelTestMixin):
    model_class = HfMmFlamingoForConditionalGeneration

    def get_config_and_inputs(self, case):
        vision, text = case
        processor = T.tiny_flamingo_processor(vision=vision)
        return T.tiny_flamingo_config(vision, text), processor, interleaved_batch(processor)

    def _build(self, case):
        model, processor, inputs = super()._build(case)
        return open_gates(model), processor, inputs

    def trainable_exempt(self, name, config):
        tower_head = name.startswith("model.vision_tower.") and any(
            part in name for part in ("post_layernorm", "head.", "pooler", "mask_token")
        )
        return tower_head or name == "model.bridge.perceiver.frame_embeddings"  # video frames only


@pytest.mark.parametrize("text", ["llama", "qwen2", "gpt2"])
def test_zero_gates_make_the_model_the_language_model_bit_for_bit(text):
    torch.manual_seed(0)
    model = HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config("clip", text)).eval()
    inputs = interleaved_batch(T.tiny_flamingo_processor())
    with torch.no_grad():
        ours = model(**inputs).logits  # images given, gates at their init of 0
        reference = bare_lm(model)(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
    assert torch.equal(ours, reference)
    with torch.no_grad():  # and the images do reach the LM once a gate opens
        assert not torch.equal(open_gates(model)(**inputs).logits, reference)


def test_each_token_sees_exactly_the_latest_image_before_it():
    torch.manual_seed(0)
    model = open_gates(HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config()).eval())
    processor = T.tiny_flamingo_processor()
    images = T.random_images(2, seed=3)
    inputs = processor(interleaved=[["before", images[0], "middle words", images[1], "after"]], return_tensors="pt")
    ids = inputs["input_ids"][0]
    first, second = (ids == model.config.image_token_id).nonzero()[:, 0].tolist()
    # Hidden states at the first decoder layer's input see the images only through the gated block in front of it.
    seen = {}
    layer = find_decoder_layers(model.model.language_model)[0]
    layer.register_forward_hook(lambda module, args, output: seen.__setitem__("h", args[0].clone()))

    def hidden(pixels):
        with torch.no_grad():
            model(input_ids=inputs["input_ids"], pixel_values=pixels)
        return seen["h"][0]  # (L, D): after the block, before the layer

    base = hidden(inputs["pixel_values"])
    other_first = hidden(torch.stack([torch.randn_like(inputs["pixel_values"][0]), inputs["pixel_values"][1]]))
    other_second = hidden(torch.stack([inputs["pixel_values"][0], torch.randn_like(inputs["pixel_values"][1])]))
    changed = lambda a, b: (a - b).abs().amax(-1) > 1e-6  # noqa: E731  (L,) which positions moved
    positions = torch.arange(len(ids))
    assert torch.equal(changed(base, other_first), (positions >= first) & (positions < second))
    assert torch.equal(changed(base, other_second), positions >= second)


def test_three_images_and_generation_with_and_without_cache():
    torch.manual_seed(0)
    model = open_gates(HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config("siglip", "qwen2")).eval())
    processor = T.tiny_flamingo_processor(vision="siglip")
    images = T.random_images(4, seed=5)
    processor.tokenizer.padding_side = "left"
    samples = [["a", images[0], "b", images[1], "c", images[2], "which?"], ["just", images[3], "one"]]
    inputs = processor(interleaved=samples, padding=True, return_tensors="pt")
    assert inputs["pixel_values"].shape[0] == 4
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=T.PAD_ID)
    cached = model.generate(**inputs, **kwargs)
    assert len(calls) == 1  # the tower runs once; decoding reuses the resampled media
    assert torch.equal(cached, model.generate(**inputs, use_cache=False, **kwargs))


def test_video_frames_get_time_embeddings():
    torch.manual_seed(0)
    model = open_gates(HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config()).eval())
    ids = torch.tensor([[5, model.config.image_token_id, 7, 8]])
    clip = torch.randn(1, 3, 3, 32, 32)  # one clip of 3 frames
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=clip).logits
        reversed_order = model(input_ids=ids, pixel_values=clip.flip(1)).logits
    assert not torch.allclose(logits, reversed_order, atol=1e-5)  # frame order matters through the time embeddings
    with pytest.raises(ValueError, match="9 frames > the resampler's max_frames=8"):
        model(input_ids=ids, pixel_values=torch.randn(1, 9, 3, 32, 32))


def test_image_count_mismatch_and_missing_images_raise():
    model = HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config())
    inputs = interleaved_batch(T.tiny_flamingo_processor())
    with pytest.raises(ValueError, match="Image features and image tokens do not match: tokens: 3, features: 2"):
        model(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"][:2])
    with pytest.raises(ValueError, match="no pixel_values"):
        model(input_ids=inputs["input_ids"])


def test_decoder_layers_are_found_generically_or_refused():
    for text, path in (("llama", "layers"), ("gpt2", "h"), ("opt", "decoder.layers")):
        lm = AutoModelForCausalLM.from_config(T.tiny_text_config(text)).base_model
        assert find_decoder_layers(lm) is lm.get_submodule(path)

    class NoList(nn.Module):
        config = GPT2Config(n_layer=2)

    with pytest.raises(ValueError, match="Cannot find the decoder layers of NoList"):
        find_decoder_layers(NoList())


def test_gated_blocks_sit_before_every_nth_layer():
    config = T.tiny_flamingo_config(cross_attn_every_n_layers=2)
    assert config.cross_attn_layers == [1]
    model = HfMmFlamingoForConditionalGeneration(config)
    layers = find_decoder_layers(model.model.language_model)
    assert [len(layer._forward_pre_hooks) for layer in layers] == [0, 1]
    with pytest.raises(ValueError, match="cross_attn_every_n_layers=3 exceeds the LM's 2 decoder layers"):
        T.tiny_flamingo_config(cross_attn_every_n_layers=3)


def test_processor_interleaves_and_builds_few_shot_prompts():
    processor = T.tiny_flamingo_processor()
    images = T.random_images(3)
    text, prompt_images = processor.few_shot_prompt([(images[0], "a cat."), (images[1], "a dog.")], images[2], "A")
    assert text == "<image>a cat.<|endofchunk|><image>a dog.<|endofchunk|><image>A" and prompt_images == images
    inputs = processor(images=[prompt_images], text=[text], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    image_id = processor.tokenizer.convert_tokens_to_ids("<image>")
    assert ids.count(image_id) == 3 and inputs["pixel_values"].shape == (3, 3, 32, 32)
    assert ids.count(processor.tokenizer.convert_tokens_to_ids("<|endofchunk|>")) == 2
    with pytest.raises(TypeError, match="interleaved\\[0\\] must be a list"):
        processor(interleaved=["just a string"])


def test_composition_keeps_the_language_model_and_round_trips(tmp_path):
    vision = T.save_tiny_vision_tower(tmp_path / "vit", "vit")
    text = T.save_tiny_causal_lm(tmp_path / "lm", "gpt2")
    settings = dict(cross_attn_every_n_layers=1, num_latents=4, perceiver_depth=1, perceiver_heads=2,
                    perceiver_head_dim=16, cross_attn_heads=2, cross_attn_head_dim=16)  # fmt: skip
    model = HfMmFlamingoForConditionalGeneration.from_vision_text_pretrained(vision, text, **settings)
    processor = HfMmFlamingoProcessor.from_vision_text_pretrained(vision, text)
    assert model.config.image_token_id == processor.image_token_id
    assert model.config.end_of_chunk_token_id == processor.tokenizer.convert_tokens_to_ids("<|endofchunk|>")
    inputs = processor(interleaved=[["look", T.random_images(1)[0], "a picture of"]], return_tensors="pt")
    lm = AutoModelForCausalLM.from_pretrained(text).eval()
    lm.resize_token_embeddings(len(processor.tokenizer))
    with torch.no_grad():  # the new rows (<image>, <|endofchunk|>, chat tokens) are freshly sampled on each resize
        lm.get_input_embeddings().weight.copy_(model.get_input_embeddings().weight)
    with torch.no_grad():  # gates at 0: the composed model is the pretrained LM
        expected = lm(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        assert torch.equal(model(**inputs).logits, expected)
    open_gates(model)
    model.save_pretrained(tmp_path / "flamingo")
    processor.save_pretrained(tmp_path / "flamingo")
    from transformers import AutoModelForImageTextToText, AutoProcessor

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "flamingo").eval()
    assert type(AutoProcessor.from_pretrained(tmp_path / "flamingo")) is HfMmFlamingoProcessor
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model.eval()(**inputs).logits)


def test_checkpoints_with_0d_gates_load_as_1_element_gates(tmp_path):
    """The gates are (1,) tensors, since FSDP2 cannot shard a 0-d parameter; a checkpoint saved when they were 0-d
    still loads, with its values, and saves back as (1,)."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config())
    gates = [name for name, _ in model.named_parameters() if name.endswith("_gate")]
    with torch.no_grad():
        for i, name in enumerate(gates):
            model.get_parameter(name).fill_(0.1 * (i + 1))
    model.save_pretrained(tmp_path / "new")
    weights = load_file(tmp_path / "new" / "model.safetensors")
    assert len(gates) == 4 and all(weights[name].shape == (1,) for name in gates)
    old = {key: value.reshape(()) if key in gates else value for key, value in weights.items()}
    (tmp_path / "old").mkdir()
    save_file(old, tmp_path / "old" / "model.safetensors", metadata={"format": "pt"})
    model.config.save_pretrained(tmp_path / "old")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "old")
    for i, name in enumerate(gates):
        assert loaded.get_parameter(name).shape == (1,)
        torch.testing.assert_close(loaded.get_parameter(name), torch.tensor([0.1 * (i + 1)]))
    loaded.save_pretrained(tmp_path / "again")
    assert all(load_file(tmp_path / "again" / "model.safetensors")[name].shape == (1,) for name in gates)
