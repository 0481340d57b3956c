"""HfMmBlip2Config: any HF vision encoder + BLIP-2's Q-Former + any HF causal LM.

Defaults are those of Salesforce/blip2-opt-2.7b (EVA ViT-g as `blip_2_vision_model`, a BERT-base Q-Former with
cross-attention every 2nd layer and 32 queries, OPT-2.7B). The Q-Former config is transformers' own
`Blip2QFormerConfig` (model_type `blip_2_qformer`), so its weights import one to one.

Choices written down:
- `qformer_config.encoder_hidden_size` always follows the vision tower's width (the Q-Former cross-attends to it).
- `qformer_config.use_qformer_text_input` is the InstructBLIP switch: the Q-Former reads the instruction text next
  to its queries (text embeddings and text feed-forward layers are built). The stage-1 model needs the text path
  too (ITC/ITM/ITG read captions), so it turns the switch on for itself.
- `vision_layernorm` adds a LayerNorm over the tower's features inside the bridge, as LAVIS's `ln_vision`. A tower
  whose output is already normalised (transformers' Blip2VisionModel, which imports with it off) does not need it.
"""

from huggingface_hub.dataclasses import strict
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, Blip2QFormerConfig, PreTrainedConfig

from ..compat import CompositeConfig, SubConfigSpec
from ..towers import FeatureLayerCompatMixin, check_feature_layer, check_text_config, is_buildable_tower


def check_vision_config(vision_config: PreTrainedConfig) -> None:
    """A vision encoder hf_mm can build (AutoModel, or one transformers leaves unmapped such as Blip2VisionModel)."""
    model_type = getattr(vision_config, "model_type", None)
    is_encoder = (
        is_buildable_tower(vision_config)
        and type(vision_config) not in MODEL_FOR_CAUSAL_LM_MAPPING
        and hasattr(vision_config, "patch_size")
    )
    if not is_encoder:
        hint = " Pass its `.vision_config`." if hasattr(vision_config, "vision_config") else ""
        raise ValueError(
            f"vision_config must be a vision encoder config (e.g. blip_2_vision_model, clip_vision_model, "
            f"siglip_vision_model, vit); got model_type={model_type!r}.{hint}"
        )


@strict
class HfMmBlip2Config(FeatureLayerCompatMixin, CompositeConfig):
    r"""
    vision_config: any vision encoder config. qformer_config: a `Blip2QFormerConfig` (BERT-like, cross-attention
    every `cross_attention_frequency` layers). text_config: any causal LM config (unused by the stage-1 model).
    num_query_tokens: learned queries, and so placeholders per image in the LM input.
    image_text_hidden_size: width of the stage-1 ITC space (image and text projections).
    vision_feature_layer: what the Q-Former reads (`towers.tower_features`, the same in every family): an index into
        the tower's hidden states, or "last_hidden_state" (default), the tower's own final output.
    vision_layernorm: a trainable LayerNorm over the tower features before the Q-Former (LAVIS's `ln_vision`).
    image_token_id: id of the `<image>` placeholder token in the LM vocabulary.
    """

    model_type = "hf_mm_blip2"
    auto_map = {}  # TRL reads `config.auto_map`; a class attribute is never serialized
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="blip_2_vision_model"),
        "qformer_config": SubConfigSpec(config_class=AutoConfig, model_type="blip_2_qformer"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="opt"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    image_text_hidden_size: int = 256
    vision_feature_layer: int | str = "last_hidden_state"
    vision_layernorm: bool = True
    image_token_id: int = 50265
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_vision_config(self.vision_config)
        check_text_config(self.text_config)
        if not isinstance(self.qformer_config, Blip2QFormerConfig):
            raise ValueError(
                f"qformer_config must be a Blip2QFormerConfig (model_type 'blip_2_qformer'); got "
                f"model_type={getattr(self.qformer_config, 'model_type', None)!r}."
            )
        if self.num_query_tokens < 1:
            raise ValueError(f"num_query_tokens must be >= 1, got {self.num_query_tokens}.")
        check_feature_layer(self.vision_config, self.vision_feature_layer)
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    @property
    def instruction_aware(self) -> bool:
        """InstructBLIP: the instruction text enters the Q-Former next to the queries."""
        return bool(self.qformer_config.use_qformer_text_input)


__all__ = ["HfMmBlip2Config", "check_vision_config"]
