"""Import a transformers `CLIPModel` or `SiglipModel` (and its processor) into hf_mm_clip.

Weights map one to one: `vision_model.*` -> `vision_tower.*` and `text_model.*` -> `text_tower.*`; projections,
`logit_scale` and (SigLIP) `logit_bias` keep their names. SigLIP has no separate projections (its towers end in
their own heads), so it converts with `projection_dim=None` (identity projections). Loading is strict: a key that
does not map fails instead of being dropped.
"""

import os

from transformers import AutoProcessor, CLIPModel, SiglipModel

from ..modeling.clip import HfMmClipConfig, HfMmClipModel
from ..processing.processing_clip import HfMmClipProcessor

_RENAMES = (("vision_model.", "vision_tower."), ("text_model.", "text_tower."))


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        if key.startswith(old):
            return new + key[len(old) :]
    return key


def _load_source(model_or_path, cls, processor):
    if isinstance(model_or_path, (str, os.PathLike)):
        return cls.from_pretrained(model_or_path), processor or AutoProcessor.from_pretrained(model_or_path)
    if isinstance(model_or_path, cls):
        return model_or_path, processor
    raise TypeError(f"model_or_path is a {type(model_or_path).__name__}; expected a {cls.__name__} or a path.")


def _convert(source, config: HfMmClipConfig, processor):
    model = HfMmClipModel(config).to(source.dtype)
    model.load_state_dict({_rename(k): v for k, v in source.state_dict().items()}, strict=True)
    if processor is not None:
        processor = HfMmClipProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer)
    return model.eval(), processor


def from_transformers_clip(model_or_path, processor=None):
    """(HfMmClipModel, HfMmClipProcessor | None) from a transformers CLIPModel or its folder / Hub id."""
    source, processor = _load_source(model_or_path, CLIPModel, processor)
    config = HfMmClipConfig(
        vision_config=source.config.vision_config,
        text_config=source.config.text_config,
        projection_dim=source.config.projection_dim,
        loss_type="infonce",
        logit_scale_init_value=source.config.logit_scale_init_value,
    )
    return _convert(source, config, processor)


def from_transformers_siglip(model_or_path, processor=None):
    """(HfMmClipModel, HfMmClipProcessor | None) from a transformers SiglipModel or its folder / Hub id."""
    source, processor = _load_source(model_or_path, SiglipModel, processor)
    config = HfMmClipConfig(
        vision_config=source.config.vision_config,
        text_config=source.config.text_config,
        projection_dim=None,
        loss_type="sigmoid",
    )
    return _convert(source, config, processor)


__all__ = ["from_transformers_clip", "from_transformers_siglip"]
