"""HfMmFlamingoConfig: any HF vision encoder -> Perceiver Resampler -> gated cross-attention into any HF causal LM.

Defaults follow Flamingo / OpenFlamingo: 64 latents, a 6-block resampler with 8 heads of width 64, and a gated
cross-attention dense block before every 4th decoder layer. Text uses `<image>` to mark where an image stands and
`<|endofchunk|>` to close each (image, text) chunk of an interleaved sequence.
"""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig

from ..blip2.configuration_blip2 import check_vision_config
from ..compat import CompositeConfig, SubConfigSpec
from ..towers import FeatureLayerCompatMixin, check_feature_layer, check_text_config


@strict
class HfMmFlamingoConfig(FeatureLayerCompatMixin, CompositeConfig):
    r"""
    vision_config: any vision encoder config. text_config: any causal LM config.
    num_latents: resampler outputs per image. perceiver_depth / perceiver_heads / perceiver_head_dim: its blocks.
    max_frames: video frames the resampler has time embeddings for.
    cross_attn_every_n_layers: a gated block sits before decoder layers n-1, 2n-1, ... (0-based), as OpenFlamingo.
    cross_attn_heads / cross_attn_head_dim / cross_attn_ff_mult: the gated blocks' attention and feed-forward.
    vision_feature_layer: what the resampler reads (`towers.tower_features`, the same in every family): an index into
        the tower's hidden states, or "last_hidden_state" (default), the tower's own final output.
    image_token_id: id of `<image>` (one token per image; it is not expanded). end_of_chunk_token_id: `<|endofchunk|>`.
    """

    model_type = "hf_mm_flamingo"
    auto_map = {}  # TRL reads `config.auto_map`; a class attribute is never serialized
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_latents: int = 64
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_head_dim: int = 64
    max_frames: int = 8
    cross_attn_every_n_layers: int = 4
    cross_attn_heads: int = 8
    cross_attn_head_dim: int = 64
    cross_attn_ff_mult: int = 4
    vision_feature_layer: int | str = "last_hidden_state"
    image_token_id: int = 32000
    end_of_chunk_token_id: int = 32001
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_vision_config(self.vision_config)
        check_text_config(self.text_config)
        positive = ("num_latents", "perceiver_depth", "perceiver_heads", "perceiver_head_dim", "max_frames",
                    "cross_attn_every_n_layers", "cross_attn_heads", "cross_attn_head_dim", "cross_attn_ff_mult")  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        num_layers = self.text_config.num_hidden_layers
        if self.cross_attn_every_n_layers > num_layers:
            raise ValueError(
                f"cross_attn_every_n_layers={self.cross_attn_every_n_layers} exceeds the LM's {num_layers} decoder "
                f"layers, so no layer would read the images. Use a value in [1, {num_layers}]."
            )
        check_feature_layer(self.vision_config, self.vision_feature_layer)
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    @property
    def cross_attn_layers(self) -> list[int]:
        """0-based indices of the decoder layers that get a gated cross-attention block in front of them."""
        every = self.cross_attn_every_n_layers
        return [i for i in range(self.text_config.num_hidden_layers) if (i + 1) % every == 0]


__all__ = ["HfMmFlamingoConfig"]
