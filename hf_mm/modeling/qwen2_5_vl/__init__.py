from .configuration_qwen2_5_vit import HfMmQwen2_5_ViTConfig
from .configuration_qwen2_5_vl import HfMmQwen2_5_VLConfig
from .modeling_qwen2_5_vit import HfMmQwen2_5_ViTModel, PatchMerger
from .modeling_qwen2_5_vl import HfMmQwen2_5_VLForConditionalGeneration, HfMmQwen2_5_VLModel

__all__ = [
    "HfMmQwen2_5_ViTConfig",
    "HfMmQwen2_5_ViTModel",
    "HfMmQwen2_5_VLConfig",
    "HfMmQwen2_5_VLForConditionalGeneration",
    "HfMmQwen2_5_VLModel",
    "PatchMerger",
]
