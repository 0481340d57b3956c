"""HfMmQwen2_5_VLConfig: Qwen2.5-VL's native-resolution ViT + its 2x2 merger + any causal LM with rotary positions.

Defaults are Qwen2.5-VL-7B's (ViT defaults, a Qwen2 LM, `mrope_section=[16, 24, 24]`, Qwen's vision token ids).
The LM must use RoPE (M-RoPE re-assigns its frequency bands to time, rows and columns), and `mrope_section` must sum
to head_dim / 2; both are checked here, with the numbers, instead of failing inside attention.
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

from ..compat import CompositeConfig, SubConfigSpec
from ..towers import check_text_config
from .configuration_qwen2_5_vit import HfMmQwen2_5_ViTConfig


def text_head_dim(text_config: PreTrainedConfig) -> int:
    return getattr(text_config, "head_dim", None) or text_config.hidden_size // text_config.num_attention_heads


@strict
class HfMmQwen2_5_VLConfig(CompositeConfig):
    r"""
    vision_config: an `hf_mm_qwen2_5_vit` config (its `out_hidden_size` is the merger's output width).
    text_config: any AutoConfig causal LM with rotary position embeddings.
    mrope_section: frequency bands (pairs) per axis (time, rows, columns); sums to head_dim / 2.
    image_token_id / video_token_id / vision_start_token_id: the processor's token ids.
    """

    model_type = "hf_mm_qwen2_5_vl"
    auto_map = {}  # read by TRL; a class attribute is never serialized
    sub_configs_defaults = {
        # The concrete class, not AutoConfig: a remote-code export (no hf_mm, so no registered model_type) rebuilds it.
        "vision_config": SubConfigSpec(config_class=HfMmQwen2_5_ViTConfig),
        # Qwen2.5-VL-7B's LM (head_dim 128, so the default mrope_section sums to 64); a bare Qwen2Config() is
        # 4096 wide and would not fit the ViT's 3584-wide merger.
        "text_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="qwen2",
            init_kwargs={
                "vocab_size": 152064,
                "hidden_size": 3584,
                "intermediate_size": 18944,
                "num_hidden_layers": 28,
                "num_attention_heads": 28,
                "num_key_value_heads": 4,
                "max_position_embeddings": 128000,
                "rms_norm_eps": 1e-6,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
            },
        ),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    mrope_section: list[int] | tuple[int, ...] = (16, 24, 24)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.mrope_section = list(self.mrope_section)
        if self.vision_config.model_type != "hf_mm_qwen2_5_vit":
            raise ValueError(
                f"vision_config has model_type={self.vision_config.model_type!r}; this family needs the native-"
                "resolution ViT (hf_mm_qwen2_5_vit). Other towers compose with hf_mm_llava."
            )
        check_text_config(self.text_config)
        if not hasattr(self.text_config, "rope_parameters"):
            raise ValueError(
                f"text_config {self.text_config.model_type!r} has no rotary position embeddings; M-RoPE needs a RoPE "
                "LM (qwen2, llama, mistral, ...)."
            )
        half = text_head_dim(self.text_config) // 2
        if len(self.mrope_section) != 3 or sum(self.mrope_section) != half:
            raise ValueError(
                f"mrope_section={self.mrope_section} must have 3 entries (time, rows, columns) summing to "
                f"head_dim / 2 = {half} for this LM."
            )
        if self.vision_config.out_hidden_size != self.text_config.hidden_size:
            raise ValueError(
                f"vision_config.out_hidden_size={self.vision_config.out_hidden_size} must equal the LM's "
                f"hidden_size={self.text_config.hidden_size}: the merger projects into the LM."
            )
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True


__all__ = ["HfMmQwen2_5_VLConfig"]
