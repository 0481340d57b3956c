"""Safetensors only: a pickle-only checkpoint is refused before anything is unpickled (the documented choice)."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, CLIPVisionModel

import hf_mm
from hf_mm import testing as T


def _pickle_only(model, folder):
    model.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")  # what an old checkpoint ships


@pytest.fixture
def no_unpickling(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called: a pickle was about to be read")

    monkeypatch.setattr(torch, "load", refuse)


def test_hf_mm_models_refuse_pickle_only_checkpoints(tmp_path, no_unpickling):
    _pickle_only(hf_mm.HfMmLlavaForConditionalGeneration(T.tiny_llava_config()), tmp_path)
    with pytest.raises(ValueError, match="has no safetensors weights. hf_mm loads safetensors weights only"):
        AutoModelForImageTextToText.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="use_safetensors=False was asked"):
        hf_mm.HfMmLlavaForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=False)


def test_towers_are_loaded_from_safetensors_only(tmp_path, no_unpickling):
    _pickle_only(CLIPVisionModel(T.tiny_vision_config("clip")), tmp_path / "vision")
    text = T.save_tiny_causal_lm(tmp_path / "text")
    with pytest.raises(ValueError, match="vision.*has no safetensors weights"):
        hf_mm.HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(str(tmp_path / "vision"), text)


def test_safetensors_checkpoints_still_load(tmp_path):
    model = hf_mm.HfMmLlavaForConditionalGeneration(T.tiny_llava_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
