"""Import a transformers `CLIPModel` or `SiglipModel` (and its processor) into hf_mm_clip.

Weights map one to one: `vision_model.*` -> `vision_tower.*` and `text_model.*` -> `text_tower.*`; projections,
`logit_scale` and (SigLIP) `logit_bias` keep their names. SigLIP has no separate projections (its towers end in
their own heads), so it converts with `projection_dim=None` (identity projections). Loading is strict: a key that
does not map fails instead of being dropped.
"""

from transformers import CLIPModel, SiglipModel

from ..modeling.clip import HfMmClipConfig, HfMmClipModel
from ..processing.processing_clip import HfMmClipProcessor
from .common import import_weights, load_source

_RENAMES = (("vision_model.", "vision_tower."), ("text_model.", "text_tower."))


def _convert(source, config: HfMmClipConfig, processor):
    model = import_weights(HfMmClipModel(config), source, _RENAMES)
    if processor is not None:
        processor = HfMmClipProcessor(image_processor=processor.image_processor, tokenizer=processor.tokenizer)
    return model, processor


def from_transformers_clip(model_or_path, processor=None):
    """(HfMmClipModel, HfMmClipProcessor | None) from a transformers CLIPModel or its folder / Hub id."""
    source, processor = load_source(model_or_path, CLIPModel, processor)
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
    source, processor = load_source(model_or_path, SiglipModel, processor)
    config = HfMmClipConfig(
        vision_config=source.config.vision_config,
        text_config=source.config.text_config,
        projection_dim=None,
        loss_type="sigmoid",
    )
    return _convert(source, config, processor)


__all__ = ["from_transformers_clip", "from_transformers_siglip"]
