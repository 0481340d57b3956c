"""The checks every hf_mm VLM family passes (design.md section 5).

A family's test class sets `model_class` and implements `get_config_and_inputs(case)` returning
(config, processor, inputs) for each case in `cases`, and `trainable_exempt(name, config)` naming parameters that
no forward path uses (vision-tower heads the family never reads).
"""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor


class VLMModelTestMixin:
    model_class = None
    cases: list = []

    def get_config_and_inputs(self, case):
        raise NotImplementedError

    def trainable_exempt(self, name: str, config) -> bool:
        return False

    def _build(self, case):
        config, processor, inputs = self.get_config_and_inputs(case)
        torch.manual_seed(0)
        return self.model_class(config).eval(), processor, inputs

    def test_forward_shapes_and_finite(self, case):
        model, _, inputs = self._build(case)
        with torch.no_grad():
            out = model(**inputs)
        batch, length = inputs["input_ids"].shape
        assert out.logits.shape == (batch, length, model.config.text_config.vocab_size)
        assert torch.isfinite(out.logits).all()
        inner = model.model(**inputs)
        assert inner.last_hidden_state.shape[:2] == (batch, length)

    def test_save_load_bit_exact(self, case, tmp_path):
        model, processor, inputs = self._build(case)
        model.save_pretrained(tmp_path)
        assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
        reloaded = self.model_class.from_pretrained(tmp_path).eval()
        for (name, a), (_, b) in zip(model.state_dict().items(), reloaded.state_dict().items()):
            assert torch.equal(a, b), name
        with torch.no_grad():
            assert torch.equal(model(**inputs).logits, reloaded(**inputs).logits)

    def test_auto_classes_round_trip(self, case, tmp_path):
        model, processor, inputs = self._build(case)
        model.save_pretrained(tmp_path)
        processor.save_pretrained(tmp_path)
        assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
        assert type(AutoProcessor.from_pretrained(tmp_path)) is type(processor)
        expected = model(**inputs).logits
        for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
            loaded = auto.from_pretrained(tmp_path).eval()
            assert type(loaded) is self.model_class
            assert torch.equal(loaded(**inputs).logits, expected)
        base = AutoModel.from_pretrained(tmp_path)
        assert type(base) is type(model.model)

    def test_generate_cache_matches_no_cache(self, case):
        model, _, inputs = self._build(case)
        kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=model.config.text_config.pad_token_id)
        with_cache = model.generate(**inputs, use_cache=True, **kwargs)
        without = model.generate(**inputs, use_cache=False, **kwargs)
        assert with_cache.shape[1] == inputs["input_ids"].shape[1] + 6
        assert torch.equal(with_cache, without)

    def test_every_trainable_parameter_gets_a_gradient(self, case):
        model, _, inputs = self._build(case)
        model.train()
        labels = inputs["input_ids"].clone()
        model(**inputs, labels=labels).loss.backward()
        missing = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)
            if not self.trainable_exempt(name, model.config)
        ]
        assert not missing, missing

    def test_placeholder_mismatch_raises(self, case):
        model, _, inputs = self._build(case)
        ids = inputs["input_ids"].clone()
        first = (ids == model.config.image_token_id).nonzero()[0]
        ids[first[0], first[1]] = model.config.text_config.pad_token_id  # one placeholder fewer
        with pytest.raises(ValueError, match="Image features and image tokens do not match"):
            model(**{**inputs, "input_ids": ids})
