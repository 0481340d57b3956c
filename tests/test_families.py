"""The family registry drives the Auto* registration, the CLI's importers, cards and the tiny test builders."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

import hf_mm
from hf_mm import testing as T
from hf_mm.cli import CONVERTERS
from hf_mm.families import FAMILIES, family_of, get_family


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_registered_family_round_trips_through_the_auto_classes(name, tmp_path):
    family = get_family(name)
    model, processor = T.tiny_model_and_processor(name)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert type(AutoConfig.from_pretrained(tmp_path)) is family.config_class
    assert type(AutoProcessor.from_pretrained(tmp_path)) is family.processor_class
    assert type(AutoModel.from_pretrained(tmp_path)) is family.model_class
    if family.generation_class is not None:
        reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path)
        assert type(reloaded) is family.generation_class
        for (key, a), b in zip(model.state_dict().items(), reloaded.state_dict().values()):
            assert torch.equal(a, b), key
    assert family_of(family.model_type) is family and (tmp_path / "model.safetensors").exists()


def test_the_cli_importers_and_the_exports_come_from_the_registry():
    assert set(CONVERTERS) == {"llava", "blip2", "qwen2_5_vl", "clip", "siglip"}
    exported = [getattr(hf_mm, name) for name in hf_mm.__all__]
    assert all(f.generation_class in exported for f in FAMILIES.values() if f.generation_class is not None)
    with pytest.raises(ValueError, match=r"Unknown family='gpt4v'. Registered families: \['blip2', 'clip'"):
        get_family("gpt4v")
