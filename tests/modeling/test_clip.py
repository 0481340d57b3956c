"""hf_mm_clip: parity with transformers' CLIPModel and SiglipModel, Auto*, the zero-shot pipeline, composition of
any image tower with any text tower (pooler, CLS/mean, last token), and the named errors."""

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPProcessor,
    SiglipConfig,
    SiglipModel,
    T5Config,
    pipeline,
)

from hf_mm import HfMmClipConfig, HfMmClipModel, HfMmClipProcessor, from_transformers_clip, from_transformers_siglip
from hf_mm import testing as T
from tests.modeling.helpers import TEXT, tiny_clip

TEXT.update(num_attention_heads=2, bos_token_id=T.EOS_ID, eos_token_id=T.EOS_ID, pad_token_id=T.PAD_ID)


def tiny_siglip() -> SiglipModel:
    vision = T.tiny_vision_config("siglip").to_dict()
    model = SiglipModel(SiglipConfig(vision_config=vision, text_config=dict(TEXT, max_position_embeddings=16)))
    with torch.no_grad():  # away from the initial values, so a mix-up of scale and bias would show
        model.logit_scale.fill_(2.0)
        model.logit_bias.fill_(-3.0)
    return model.eval()


def batch(n: int = 4, length: int = 9):
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 300, (n, length), generator=generator)
    input_ids[:, -1] = T.EOS_ID
    return {"input_ids": input_ids, "pixel_values": torch.randn(n, 3, 32, 32, generator=generator)}


def test_clip_parity_embeddings_logits_and_loss():
    reference = tiny_clip()
    model, _ = from_transformers_clip(reference)
    inputs = batch()
    with torch.no_grad():
        expected = reference(**inputs, return_loss=True)
        got = model(**inputs, return_loss=True)
    for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name), atol=1e-5, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-6, rtol=0)


def test_siglip_parity_and_the_sigmoid_loss_formula():
    reference = tiny_siglip()
    model, _ = from_transformers_siglip(reference)
    assert model.config.projection_dim is None and model.config.loss_type == "sigmoid"
    inputs = batch()
    with torch.no_grad():
        expected = reference(**inputs, return_loss=True)
        got = model(**inputs, return_loss=True)
    torch.testing.assert_close(got.logits_per_text, expected.logits_per_text, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.image_embeds, expected.image_embeds, atol=1e-5, rtol=0)
    # The SigLIP paper's loss, written out: -1/|B| sum_i sum_j log sigmoid(z_ij (t * x_i . y_j + b)).
    logits = 2.0**0 * torch.exp(torch.tensor(2.0)) * got.text_embeds @ got.image_embeds.t() - 3.0
    z = 2 * torch.eye(4) - 1
    by_hand = -torch.log(torch.sigmoid(z * logits)).sum() / 4
    torch.testing.assert_close(got.loss, by_hand, atol=1e-5, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


def test_converted_checkpoint_round_trips_through_auto_classes(tmp_path):
    reference = tiny_clip()
    reference.save_pretrained(tmp_path / "clip")
    CLIPProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer()).save_pretrained(
        tmp_path / "clip"
    )
    model, processor = from_transformers_clip(tmp_path / "clip")
    assert isinstance(processor, HfMmClipProcessor)
    model.save_pretrained(tmp_path / "hf_mm")
    processor.save_pretrained(tmp_path / "hf_mm")
    inputs = batch()
    for auto in (AutoModel, AutoModelForZeroShotImageClassification):
        reloaded = auto.from_pretrained(tmp_path / "hf_mm").eval()
        assert type(reloaded) is HfMmClipModel
        with torch.no_grad():
            assert torch.equal(reloaded(**inputs).logits_per_image, model(**inputs).logits_per_image)
    assert type(AutoProcessor.from_pretrained(tmp_path / "hf_mm")) is HfMmClipProcessor


def test_zero_shot_pipeline_serves_a_saved_model(tmp_path):
    model, _ = from_transformers_clip(tiny_clip())
    processor = HfMmClipProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer())
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    classify = pipeline("zero-shot-image-classification", model=str(tmp_path))
    image = T.random_images(1)[0]
    result = classify(image, candidate_labels=["red", "blue", "green"])
    assert sorted(r["label"] for r in result) == ["blue", "green", "red"]
    assert abs(sum(r["score"] for r in result) - 1) < 1e-5
    # The pipeline's top label is the model's own argmax for the pipeline's prompts.
    texts = [f"This is a photo of {label}." for label in ("red", "blue", "green")]
    inputs = processor(images=[image], text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        best = model(**inputs).logits_per_image[0].argmax().item()
    assert result[0]["label"] == ("red", "blue", "green")[best]


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("dual")
    paths = {"clip": T.save_tiny_vision_tower(root / "clip", "clip"), "llama": T.save_tiny_causal_lm(root / "llama")}
    tokenizer = T.tiny_tokenizer()
    bert = BertConfig(**{k: v for k, v in TEXT.items() if k not in ("bos_token_id", "eos_token_id")})
    BertModel(bert).save_pretrained(root / "bert")
    tokenizer.save_pretrained(root / "bert")
    paths["bert"] = str(root / "bert")
    return paths


@pytest.mark.parametrize("text, pooling", [("bert", "pooler"), ("llama", "last")])
def test_any_text_tower_composes_and_pools(towers, text, pooling):
    model = HfMmClipModel.from_vision_text_pretrained(towers["clip"], towers[text], projection_dim=16)
    processor = HfMmClipProcessor.from_vision_text_pretrained(towers["clip"], towers[text])
    assert model.config.resolved_text_pooling == pooling
    assert torch.equal(model.vision_tower.state_dict()["embeddings.patch_embedding.weight"],
                       AutoModel.from_pretrained(towers["clip"]).state_dict()["embeddings.patch_embedding.weight"])  # fmt: skip
    texts = ["a red square", "a photo of a blue circle next to a green triangle"]
    inputs = processor(images=T.random_images(2), text=texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs, return_loss=True)
        alone = model.get_text_features(**processor.tokenizer(texts[:1], return_tensors="pt")).pooler_output
    assert out.logits_per_image.shape == (2, 2) and torch.isfinite(out.loss)
    # Padding must not change a text's embedding (the pooled token is the last real one / the CLS).
    batched = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)


def test_causal_lm_text_tower_pools_the_last_real_token(towers):
    model = HfMmClipModel.from_vision_text_pretrained(towers["clip"], towers["llama"], projection_dim=16)
    ids = torch.tensor([[5, 6, 7, T.PAD_ID, T.PAD_ID]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    with torch.no_grad():
        hidden = model.text_tower(input_ids=ids, attention_mask=mask).last_hidden_state
        expected = model.text_projection(hidden[:, 2])
        assert torch.equal(model.get_text_features(ids, mask).pooler_output, expected)


def test_mean_and_cls_pooling_follow_the_mask():
    config = HfMmClipConfig(
        vision_config=T.tiny_vision_config("vit"), text_config=BertConfig(**{k: TEXT[k] for k in TEXT if "bos" not in k and "eos" not in k}),
        text_pooling="mean", vision_pooling="cls", projection_dim=None,
    )  # fmt: skip
    model = HfMmClipModel(config).eval()
    ids, mask = torch.tensor([[5, 6, 7, 1]]), torch.tensor([[1, 1, 1, 0]])
    with torch.no_grad():
        hidden = model.text_tower(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(model.get_text_features(ids, mask).pooler_output, hidden[:, :3].mean(1))
        pixels = torch.randn(1, 3, 32, 32)
        torch.testing.assert_close(
            model.get_image_features(pixels).pooler_output,
            model.vision_tower(pixel_values=pixels).last_hidden_state[:, 0],
        )


def test_logit_scale_starts_at_the_papers_values_and_is_clamped():
    infonce = HfMmClipModel(HfMmClipConfig(vision_config=T.tiny_vision_config("clip"), text_config=CLIPConfig(text_config=TEXT).text_config, projection_dim=8))  # fmt: skip
    assert infonce.logit_scale.item() == pytest.approx(torch.log(torch.tensor(1 / 0.07)).item())
    assert infonce.logit_bias is None
    with torch.no_grad():
        infonce.logit_scale.fill_(10.0)
    assert infonce.scale().item() == 100.0
    sigmoid = HfMmClipModel(HfMmClipConfig(vision_config=T.tiny_vision_config("clip"), text_config=CLIPConfig(text_config=TEXT).text_config, projection_dim=8, loss_type="sigmoid"))  # fmt: skip
    assert sigmoid.logit_scale.item() == pytest.approx(torch.log(torch.tensor(10.0)).item())
    assert sigmoid.logit_bias.item() == -10.0


def test_bad_configs_and_inputs_name_the_field():
    vision = T.tiny_vision_config("clip")
    with pytest.raises(ValueError, match="Cannot pool a 't5' tower"):
        HfMmClipConfig(vision_config=vision, text_config=T5Config(d_model=32, num_layers=1))
    with pytest.raises(ValueError, match="loss_type='softmax'"):
        HfMmClipConfig(vision_config=vision, text_config=CLIPConfig().text_config, loss_type="softmax")
    with pytest.raises(ValueError, match="text_pooling='max'"):
        HfMmClipConfig(vision_config=vision, text_config=CLIPConfig().text_config, text_pooling="max")
    with pytest.raises(ValueError, match="pass a tower config"):
        HfMmClipConfig(vision_config=CLIPConfig(), text_config=CLIPConfig().text_config)
    model, _ = from_transformers_clip(tiny_clip())
    inputs = batch(4)
    inputs["input_ids"] = inputs["input_ids"][:3]
    with pytest.raises(ValueError, match="3 texts"):
        model(**inputs, return_loss=True)
    assert model(**inputs).logits_per_image.shape == (4, 3)  # without a loss, any number of texts is fine


def test_every_parameter_gets_a_gradient():
    model, _ = from_transformers_clip(tiny_clip())
    model.train()
    model(**batch(), return_loss=True).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
