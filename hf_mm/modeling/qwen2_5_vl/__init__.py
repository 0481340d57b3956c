from .configuration_qwen2_5_vit import HfMmQwen2_5_ViTConfig
from .modeling_qwen2_5_vit import HfMmQwen2_5_ViTModel, PatchMerger

__all__ = ["HfMmQwen2_5_ViTConfig", "HfMmQwen2_5_ViTModel", "PatchMerger"]
