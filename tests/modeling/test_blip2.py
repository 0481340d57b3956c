"""hf_mm_blip2: the shared VLM checks for stage 2, the Q-Former's masks inside the model, stage-1 heads and losses,
InstructBLIP's instruction-aware Q-Former, and composition from pretrained towers and from a stage-1 checkpoint."""

import pytest
import torch
from transformers import Blip2QFormerConfig, LlamaConfig

import hf_mm  # noqa: F401  (registration)
from hf_mm import testing as T
from hf_mm.modeling.blip2 import (
    HfMmBlip2Config,
    HfMmBlip2ForConditionalGeneration,
    HfMmBlip2ForImageTextRetrieval,
    hard_negatives,
)
from hf_mm.processing import HfMmBlip2Processor
from tests.mixin import VLMModelTestMixin

CASES = [("clip", "llama", False), ("siglip", "opt", False), ("vit", "qwen2", True)]


def make_case(vision="clip", text="llama", instruction_aware=False, **config_kwargs):
    config = T.tiny_blip2_config(vision, text, instruction_aware=instruction_aware, **config_kwargs)
    processor = T.tiny_blip2_processor(config, vision)
    processor.tokenizer.padding_side = "left"
    texts = ["<image>compare the two pictures in detail please", "<image>what is it?"]
    inputs = processor(images=T.random_images(2), text=texts, padding=True, return_tensors="pt")
    return config, processor, dict(inputs)


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
class TestBlip2Family(VLMModelTestMixin):
    model_class = HfMmBlip2ForConditionalGeneration

    def get_config_and_inputs(self, case):
        return make_case(*case)

    def trainable_exempt(self, name, config):
        # The towers' pooling heads and CLIP's pooled-output norm sit off the path (the Q-Former reads every token
        # of last_hidden_state).
        tower_head = name.startswith("model.vision_tower.") and any(
            part in name for part in ("post_layernorm", "head.", "pooler")
        )
        # InstructBLIP: the last Q-Former layer's *text* feed-forward output is discarded (only the queries feed
        # the LM), as in the reference; the text FFNs of earlier layers feed the queries through self-attention.
        last = config.qformer_config.num_hidden_layers - 1
        last_text_ffn = any(f"encoder.layer.{last}.{part}." in name for part in ("intermediate", "output"))
        return tower_head or last_text_ffn


def test_placeholders_per_image_are_the_query_count_whatever_the_image_size():
    config, processor, _ = make_case(num_query_tokens=5)
    for size in [(32, 32), (64, 40)]:
        ids = processor(images=T.random_images(1, size=size), text="<image>hi", return_tensors="pt")["input_ids"]
        assert int((ids == config.image_token_id).sum()) == 5


def test_roles_and_cross_attention_frequency():
    config = T.tiny_blip2_config()
    model = HfMmBlip2ForConditionalGeneration(config)
    assert {name for name, _ in model.model.named_children()} == {"vision_tower", "bridge", "language_model"}
    layers = model.model.bridge.qformer.encoder.layer
    assert [layer.has_cross_attention for layer in layers] == [True, False]  # cross_attention_frequency=2
    assert model.model.bridge.query_tokens.shape == (1, 4, T.HIDDEN)
    every = T.tiny_qformer_config(cross_attention_frequency=1)
    model = HfMmBlip2ForConditionalGeneration(T.tiny_blip2_config(qformer_config=every))
    assert all(layer.has_cross_attention for layer in model.model.bridge.qformer.encoder.layer)


def test_init_ran_on_queries_and_projection():
    config = T.tiny_blip2_config()
    bridge = HfMmBlip2ForConditionalGeneration(config).model.bridge
    std = config.initializer_range
    assert abs(bridge.query_tokens.std().item() - std) < 0.3 * std
    assert torch.count_nonzero(bridge.language_projection.bias) == 0


def test_vision_tower_runs_once_per_generate_call():
    config, _, inputs = make_case()
    model = HfMmBlip2ForConditionalGeneration(config).eval()
    calls = []
    model.model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert len(calls) == 1


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="qformer_config must be a Blip2QFormerConfig"):
        T.tiny_blip2_config(qformer_config=LlamaConfig())
    with pytest.raises(ValueError, match="num_query_tokens must be >= 1"):
        T.tiny_blip2_config(num_query_tokens=0)
    with pytest.raises(ValueError, match=r"vision_feature_layer=7 is out of range"):
        T.tiny_blip2_config(vision_feature_layer=7)
    with pytest.raises(ValueError, match="vision_config must be a vision encoder config"):
        HfMmBlip2Config(vision_config=LlamaConfig(), qformer_config=Blip2QFormerConfig())
    config = T.tiny_blip2_config(vision="siglip")
    assert config.qformer_config.encoder_hidden_size == config.vision_config.hidden_size


# --- the Q-Former's three masks, observed through the model -------------------------------------------------------


def _stage1(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = T.tiny_blip2_config(**kwargs)
    return HfMmBlip2ForImageTextRetrieval(config).eval(), T.tiny_blip2_processor(config)


def _captions(processor, texts=("a red square", "a blue circle next to a green triangle")):
    out = processor.qformer_tokenizer(list(texts), padding=True, return_tensors="pt")
    return out["input_ids"], out["attention_mask"]


def test_unimodal_pass_equals_separate_query_and_text_passes():
    model, processor = _stage1()
    ids, mask = _captions(processor)
    features = model.image_features(torch.randn(2, 3, 32, 32))
    with torch.no_grad():
        joint = model.bridge.encode(features, ids, mask, mode="unimodal")
        queries = model.bridge.encode(features)
        text = model.bridge.encode_text(ids, mask)
    q = model.config.num_query_tokens
    torch.testing.assert_close(joint[:, :q], queries, atol=1e-6, rtol=0)
    valid = mask.bool()
    torch.testing.assert_close(joint[:, q:][valid], text[valid], atol=1e-6, rtol=0)


def test_causal_mode_text_sees_queries_and_the_past_only():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["a red square on a black background"] * 2)
    features = model.image_features(torch.randn(1, 3, 32, 32)).expand(2, -1, -1)
    changed = ids.clone()
    changed[1, 4] = (changed[1, 4] + 7) % 300  # a later text token differs in sample 1
    with torch.no_grad():
        out = model.bridge.encode(features, changed, mask, mode="causal")
        other_image = model.bridge.encode(torch.randn_like(features), changed, mask, mode="causal")
    q = model.config.num_query_tokens
    torch.testing.assert_close(out[0, : q + 4], out[1, : q + 4], atol=1e-6, rtol=0)  # queries and the past
    assert not torch.allclose(out[0, q + 4 :], out[1, q + 4 :], atol=1e-4)
    assert not torch.allclose(out[:, q:], other_image[:, q:], atol=1e-4)  # the text reads the image via queries


def test_bidirectional_mode_queries_see_the_text():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["a red square", "a red circle"])
    features = model.image_features(torch.randn(1, 3, 32, 32)).expand(2, -1, -1)
    q = model.config.num_query_tokens
    with torch.no_grad():
        both = model.bridge.encode(features, ids, mask, mode="bidirectional")
        alone = model.bridge.encode(features, ids, mask, mode="unimodal")
    assert not torch.allclose(both[0, :q], both[1, :q], atol=1e-4)
    torch.testing.assert_close(alone[0, :q], alone[1, :q], atol=1e-6, rtol=0)


def test_padding_is_never_attended():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["a red square", "a red square on a black background"])
    features = model.image_features(torch.randn(1, 3, 32, 32)).expand(2, -1, -1)
    junk = ids.clone()
    junk[0][mask[0] == 0] = 5  # different ids under padding
    for mode in ("unimodal", "bidirectional", "causal"):
        with torch.no_grad():
            a = model.bridge.encode(features, ids, mask, mode=mode)
            b = model.bridge.encode(features, junk, mask, mode=mode)
        torch.testing.assert_close(a[0][: 4 + int(mask[0].sum())], b[0][: 4 + int(mask[0].sum())])


# --- stage 1 ------------------------------------------------------------------------------------------------------


def test_stage1_losses_and_gradients_reach_every_trainable_part():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["a red square", "a blue circle", "one green triangle", "two cats"])
    model.train()
    out = model(pixel_values=torch.randn(4, 3, 32, 32), input_ids=ids, attention_mask=mask, return_loss=True)
    assert out.itm_logits.shape == (12, 2) and out.logits_per_image.shape == (4, 4)
    assert out.itg_logits.shape == (*ids.shape, model.config.qformer_config.vocab_size)
    torch.testing.assert_close(out.loss, out.loss_itc + out.loss_itm + out.loss_itg)
    out.loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if not n.startswith("vision_tower.")]
    missing = [n for n, p in trainable if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert model.itg_head.decoder.weight is model.bridge.embeddings.word_embeddings.weight


def test_stage1_inference_scores_every_image_text_combination():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["a red square", "a blue circle", "two cats"])
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = model(pixel_values=pixels, input_ids=ids, attention_mask=mask)
        image, text = model.get_image_features(pixels), model.get_text_features(ids, mask)
    assert out.logits_per_image.shape == (2, 3) and out.loss is None
    assert image.shape == (2, 4, T.HIDDEN) and torch.allclose(image.norm(dim=-1), torch.ones(2, 4))
    torch.testing.assert_close(out.logits_per_image, model.similarity(image, text) * model.logit_scale.exp())
    scores = model.itm_scores(pixels, ids[:2], mask[:2])
    assert scores.shape == (2,) and ((scores > 0) & (scores < 1)).all()


def test_stage1_rejects_unpaired_batches():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["a", "b", "c"])
    with pytest.raises(ValueError, match="one caption per image: got 2 images and 3 captions"):
        model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=ids, attention_mask=mask, return_loss=True)


def test_hard_negatives_are_never_positives_and_follow_the_similarity():
    torch.manual_seed(0)
    ids = torch.tensor([0, 0, 1, 2, 2, 2, 3, 4])
    positives = ids[:, None] == ids[None, :]
    for _ in range(50):
        logits = torch.randn(8, 8) * 5
        text, image = hard_negatives(logits, positives)
        assert not positives[torch.arange(8), text].any() and not positives[image, torch.arange(8)].any()
    # A confident similarity picks its hardest negative almost always.
    logits = torch.full((8, 8), -20.0)
    logits[0, 7] = 20.0
    picks = [int(hard_negatives(logits, positives)[0][0]) for _ in range(20)]
    assert picks.count(7) == 20
    with pytest.raises(ValueError, match="matches the whole batch"):
        hard_negatives(torch.zeros(3, 3), torch.ones(3, 3, dtype=torch.bool))


def test_shared_image_ids_are_soft_itc_targets():
    model, processor = _stage1()
    ids, mask = _captions(processor, ["seven", "seven", "two", "nine"])
    out = model(pixel_values=torch.randn(4, 3, 32, 32), input_ids=ids, attention_mask=mask, return_loss=True,
                image_ids=torch.tensor([7, 7, 2, 9]))  # fmt: skip
    targets = torch.tensor([[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
    logits = out.logits_per_image.detach()
    expected = sum(torch.nn.functional.cross_entropy(x, targets, label_smoothing=0.1) for x in (logits, logits.t()))
    torch.testing.assert_close(out.loss_itc.detach(), expected / 2)


# --- InstructBLIP ---------------------------------------------------------------------------------------------------


def test_instruction_enters_the_qformer():
    config, processor, inputs = make_case(instruction_aware=True)
    assert "qformer_input_ids" in inputs and processor.model_input_names[-1] == "qformer_attention_mask"
    model = HfMmBlip2ForConditionalGeneration(config).eval()
    other = processor(images=T.random_images(2), text=["<image>how many cats?", "<image>which colour?"],
                      qformer_text=["how many cats?", "which colour?"], padding=True, return_tensors="pt")  # fmt: skip
    with torch.no_grad():
        a = model.model.get_image_features(inputs["pixel_values"], inputs["qformer_input_ids"], inputs["qformer_attention_mask"]).pooler_output  # fmt: skip
        b = model.model.get_image_features(inputs["pixel_values"], other["qformer_input_ids"], other["qformer_attention_mask"]).pooler_output  # fmt: skip
    assert not torch.allclose(a, b, atol=1e-4)


def test_plain_blip2_refuses_qformer_text():
    config, processor, inputs = make_case()
    assert "qformer_input_ids" not in inputs
    model = HfMmBlip2ForConditionalGeneration(config)
    ids = processor.qformer_tokenizer(["hi"], return_tensors="pt")["input_ids"].expand(2, -1)
    with pytest.raises(ValueError, match="does not read text"):
        model(**inputs, qformer_input_ids=ids)


# --- composition ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return T.save_tiny_vision_tower(root / "vit", "vit"), T.save_tiny_causal_lm(root / "lm", "llama")


def test_composition_keeps_towers_and_matches_its_processor(towers):
    vision, text = towers
    qformer = T.tiny_qformer_config()
    model = HfMmBlip2ForConditionalGeneration.from_vision_text_pretrained(vision, text, qformer_config=qformer,
                                                                         num_query_tokens=6)  # fmt: skip
    processor = HfMmBlip2Processor.from_vision_text_pretrained(
        vision, text, qformer_config=qformer, num_query_tokens=6
    )
    tower = hf_mm.modeling.towers.load_vision_tower(vision)
    for name, value in tower.state_dict().items():
        assert torch.equal(model.model.vision_tower.state_dict()[name], value), name
    assert model.config.image_token_id == processor.image_token_id
    inputs = processor(images=T.random_images(1), text="<image>what is it?", return_tensors="pt")
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == 6
    assert torch.isfinite(model(**inputs).logits).all()
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 3


def test_stage2_from_stage1_reuses_tower_queries_and_qformer(towers, tmp_path):
    model, processor = _stage1(vision="vit")
    with torch.no_grad():
        model.bridge.query_tokens.add_(1.0)  # "trained"
    model.save_pretrained(tmp_path)
    stage2 = HfMmBlip2ForConditionalGeneration.from_stage1(tmp_path, towers[1])
    bridge = stage2.model.bridge
    assert torch.equal(bridge.query_tokens, model.bridge.query_tokens)
    for name, value in bridge.qformer.state_dict().items():
        assert torch.equal(value, model.bridge.qformer.state_dict()[name]), name
    assert bridge.embeddings is None and not stage2.config.instruction_aware  # the text path stays in stage 1
    features = torch.randn(2, 5, T.HIDDEN)
    with torch.no_grad():
        torch.testing.assert_close(bridge.encode(features), model.bridge.encode(features))
    assert torch.equal(stage2.model.vision_tower.embeddings.patch_embeddings.projection.weight,
                       model.vision_tower.embeddings.patch_embeddings.projection.weight)  # fmt: skip


def test_instructblip_from_stage1_trains_on_the_instruction_not_the_answer(towers, tmp_path):
    from hf_mm.training.collators import VisionSFTCollator

    model, processor = _stage1(vision="vit")
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    stage2 = HfMmBlip2ForConditionalGeneration.from_stage1(tmp_path, towers[1], instruction_aware=True)
    processor2 = HfMmBlip2Processor.from_stage1(tmp_path, towers[1], instruction_aware=True)
    # The Q-Former's text path comes from stage 1 too.
    assert torch.equal(
        stage2.model.bridge.embeddings.word_embeddings.weight, model.bridge.embeddings.word_embeddings.weight
    )
    question, reply = "how many cats are there?", "three cats"
    examples = [
        {"images": T.random_images(1), "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
            {"role": "assistant", "content": [{"type": "text", "text": reply}]},
        ]},
        {"images": T.random_images(1), "prompt": "<image>what is it?", "completion": "a dog"},
    ]  # fmt: skip
    batch = VisionSFTCollator(processor2)(examples)
    qformer_text = processor2.qformer_tokenizer.batch_decode(batch["qformer_input_ids"], skip_special_tokens=True)
    assert [t.strip() for t in qformer_text] == [question, "what is it?"]
    assert batch["qformer_attention_mask"].sum(1).tolist()[1] < batch["qformer_input_ids"].shape[1]  # padded
    loss = stage2(**batch).loss
    loss.backward()
    assert stage2.model.bridge.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_stage1_qformer_starts_from_bert(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = T.tiny_tokenizer()
    bert_config = BertConfig(vocab_size=len(tokenizer), hidden_size=T.HIDDEN, num_hidden_layers=2,
                             num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    bert = BertForMaskedLM(bert_config).eval()
    bert.save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    vision = T.save_tiny_vision_tower(tmp_path / "vit", "vit")
    model = HfMmBlip2ForImageTextRetrieval.from_vision_pretrained(
        vision, qformer_name_or_path=str(tmp_path / "bert"), num_query_tokens=4, cross_attention_frequency=1
    )
    bert_state = bert.state_dict()
    layer = model.bridge.qformer.encoder.layer[1]
    assert torch.equal(layer.attention.attention.query.weight, bert_state["bert.encoder.layer.1.attention.self.query.weight"])  # fmt: skip
    for path in ("intermediate", "intermediate_query"):  # both feed-forward paths start from BERT's
        assert torch.equal(getattr(layer, path).dense.weight, bert_state["bert.encoder.layer.1.intermediate.dense.weight"])  # fmt: skip
    assert torch.equal(model.bridge.qformer.layernorm.weight, bert_state["bert.embeddings.LayerNorm.weight"])
    assert torch.equal(model.bridge.embeddings.word_embeddings.weight, bert_state["bert.embeddings.word_embeddings.weight"])  # fmt: skip
    assert model.itg_head.decoder.weight is model.bridge.embeddings.word_embeddings.weight
    assert torch.equal(model.itg_head.decoder.bias, bert_state["cls.predictions.bias"])
    assert all(layer.has_cross_attention for layer in model.bridge.qformer.encoder.layer)  # new, random
    processor = HfMmBlip2Processor.from_vision_pretrained(vision, str(tmp_path / "bert"), qformer_config=model.config.qformer_config, num_query_tokens=4)  # fmt: skip
    ids, mask = _captions(processor)
    # The text path is BERT itself: with no queries, the Q-Former's text states equal BERT's (no token types).
    with torch.no_grad():
        bert.bert.embeddings.token_type_embeddings.weight.zero_()
        expected = bert.bert(input_ids=ids, attention_mask=mask).last_hidden_state
        actual = model.bridge.encode_text(ids, mask)
    torch.testing.assert_close(actual[mask.bool()], expected[mask.bool()], atol=1e-5, rtol=0)
    out = model(pixel_values=torch.randn(2, 3, 32, 32), input_ids=ids, attention_mask=mask, return_loss=True)
    assert torch.isfinite(out.loss)


def test_text_features_ignore_padding():
    model, processor = _stage1()
    texts = ["a red square", "a blue circle next to a green triangle"]
    ids, mask = _captions(processor, texts)
    with torch.no_grad():
        batched = model.get_text_features(ids, mask)
        single = torch.cat([model.get_text_features(*_captions(processor, [t])) for t in texts])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=0)
