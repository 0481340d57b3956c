"""The only place hf_mm registers with transformers' Auto* classes. Imported by `import hf_mm`.

Every family of the registry (`families.py`) is registered the same way:
- `AutoConfig` and `AutoModel`;
- `AutoModelForImageTextToText` and `AutoModelForCausalLM` for generative families (TRL's model-from-path and PEFT's
  `AutoPeftModelForCausalLM` fall back to the latter);
- `AutoModelForZeroShotImageClassification` for dual encoders;
- `AutoProcessor`, and `AutoImageProcessor` when the family has its own image processor.

After this, they load hf_mm checkpoints without `trust_remote_code`. The native-resolution ViT is a tower, not a
family; it is registered on its own so that AutoModel builds it like any other vision encoder.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .families import FAMILIES, Family
from .modeling.compat import AutoImageProcessor
from .modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig, HfMmQwen2_5_ViTModel
from .processing.image_processing_qwen2_5_vl import HfMmQwen2_5_VLImageProcessor


def register(family: Family) -> None:
    """Register `family`'s config, models and processors with the Auto* classes."""
    config = family.config_class
    AutoConfig.register(config.model_type, config, exist_ok=True)
    AutoModel.register(config, family.model_class, exist_ok=True)
    if family.generation_class is not None:
        AutoModelForImageTextToText.register(config, family.generation_class, exist_ok=True)
        AutoModelForCausalLM.register(config, family.generation_class, exist_ok=True)
    if family.zero_shot_class is not None:
        # transformers' zero-shot-image-classification pipeline loads this and reads `logits_per_image`.
        AutoModelForZeroShotImageClassification.register(config, family.zero_shot_class, exist_ok=True)
    if family.image_processor_class is not None:
        AutoImageProcessor.register(
            config, image_processor_classes={"pil": family.image_processor_class}, exist_ok=True
        )
    AutoProcessor.register(config, family.processor_class, exist_ok=True)


def _register_qwen2_5_vit() -> None:
    AutoConfig.register(HfMmQwen2_5_ViTConfig.model_type, HfMmQwen2_5_ViTConfig, exist_ok=True)
    AutoModel.register(HfMmQwen2_5_ViTConfig, HfMmQwen2_5_ViTModel, exist_ok=True)
    # A saved tower ships its image processor, so composition can read both from one folder.
    AutoImageProcessor.register(
        HfMmQwen2_5_ViTConfig, image_processor_classes={"pil": HfMmQwen2_5_VLImageProcessor}, exist_ok=True
    )


_register_qwen2_5_vit()
for _family in FAMILIES.values():
    register(_family)
