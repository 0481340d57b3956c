"""HfMmQwen2_5_ViTConfig: Qwen2.5-VL's native-resolution vision transformer as a stand-alone tower.

Defaults are Qwen2.5-VL-7B's ViT (32 blocks of width 1280, patch 14, temporal patch 2, 2x2 merge, 112 px windows,
full attention in blocks 7, 15, 23 and 31). `out_hidden_size` is the width the 2x2 patch merger projects to: the
merger is the family's bridge (`model.bridge`), so the tower itself stops at the blocks.
"""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig


@strict
class HfMmQwen2_5_ViTConfig(PreTrainedConfig):
    r"""
    depth / hidden_size / intermediate_size / num_heads / hidden_act: the transformer blocks (RMSNorm, SwiGLU MLP).
    patch_size / temporal_patch_size: the Conv3d patch embedding (a single image fills both temporal slots).
    spatial_merge_size: side of the patch blocks the merger concatenates; 2D RoPE ids are laid out block-major.
    window_size: window side in pixels for the windowed blocks; fullatt_block_indexes: blocks with full attention.
    tokens_per_second: temporal ids per second of video, for the LM's multimodal RoPE (absolute time).
    out_hidden_size: output width of the merger (the LM width).
    """

    model_type = "hf_mm_qwen2_5_vit"
    attribute_map = {"num_attention_heads": "num_heads", "num_hidden_layers": "depth"}

    depth: int = 32
    hidden_size: int = 1280
    intermediate_size: int = 3420
    num_heads: int = 16
    hidden_act: str = "silu"
    in_channels: int = 3
    patch_size: int = 14
    temporal_patch_size: int = 2
    spatial_merge_size: int = 2
    window_size: int = 112
    fullatt_block_indexes: list[int] | tuple[int, ...] = (7, 15, 23, 31)
    tokens_per_second: int = 4
    out_hidden_size: int = 3584
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.fullatt_block_indexes = list(self.fullatt_block_indexes)
        bad = [i for i in self.fullatt_block_indexes if not 0 <= i < self.depth]
        if bad:
            raise ValueError(f"fullatt_block_indexes {bad} are outside the {self.depth} blocks [0, {self.depth}).")
        head_dim, unit = self.hidden_size // self.num_heads, self.patch_size * self.spatial_merge_size
        if self.hidden_size % self.num_heads or head_dim % 4:
            raise ValueError(
                f"hidden_size={self.hidden_size} / num_heads={self.num_heads} must give a head_dim divisible by 4 "
                "(2D RoPE rotates a quarter of it per axis and direction)."
            )
        if self.window_size % unit:
            raise ValueError(
                f"window_size={self.window_size} px must be a multiple of patch_size * spatial_merge_size = {unit}."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def window_units(self) -> int:
        """Window side in merge units (2x2 patch blocks): 112 px / 14 / 2 = 4."""
        return self.window_size // (self.patch_size * self.spatial_merge_size)


__all__ = ["HfMmQwen2_5_ViTConfig"]
