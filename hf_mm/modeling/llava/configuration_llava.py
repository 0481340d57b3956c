"""HfMmLlavaConfig: any HF vision encoder + a prefix bridge + any HF causal LM.

Defaults are those of LLaVA-1.5-7B (CLIP ViT-L/14-336 tower, `mlp2x_gelu`, feature layer -2, CLS dropped).
Choices the papers leave open, written down here:
- `vision_feature_select_strategy="default"` drops the tower's *prefix* tokens (CLS, and registers for
  DINOv2-with-registers), counted from the tower itself. transformers' Llava always drops exactly one token, which is
  the same for CLIP but drops a real patch on SigLIP (which has no CLS); we keep every patch.
- `tie_word_embeddings` follows the text config when the text config ties, as in transformers' `LlavaConfig`.
"""

from huggingface_hub.dataclasses import strict
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING, AutoConfig, PreTrainedConfig

from ..bridges import get_bridge
from ..compat import CompositeConfig, SubConfigSpec
from ..towers import check_feature_layer, check_text_config

FEATURE_SELECT_STRATEGIES = ("default", "full")

# Tokens a vision tower puts before its patch grid. Used by the processor to count placeholders for the `full`
# strategy; the model itself measures the prefix at run time, so an unlisted tower still works with `default`.
_PREFIX_TOKENS = {
    "clip_vision_model": lambda c: 1,
    "siglip_vision_model": lambda c: 0,
    "siglip2_vision_model": lambda c: 0,
    "vit": lambda c: 1,
    "dinov2": lambda c: 1,
    "dinov2_with_registers": lambda c: 1 + c.num_register_tokens,
}


def num_prefix_tokens(vision_config: PreTrainedConfig) -> int:
    """Number of CLS/register tokens the tower emits before its patches."""
    if vision_config.model_type not in _PREFIX_TOKENS:
        raise ValueError(
            f"Unknown prefix-token count for vision model_type={vision_config.model_type!r}. Use "
            "vision_feature_select_strategy='default', or pass num_additional_image_tokens to the processor. "
            f"Known towers: {sorted(_PREFIX_TOKENS)}."
        )
    return _PREFIX_TOKENS[vision_config.model_type](vision_config)


def check_vision_config(vision_config: PreTrainedConfig) -> None:
    """A vision encoder: AutoModel can build it, it has a patch grid, and it is not a composite or a causal LM."""
    model_type = getattr(vision_config, "model_type", None)
    is_encoder = (
        type(vision_config) in MODEL_MAPPING
        and type(vision_config) not in MODEL_FOR_CAUSAL_LM_MAPPING
        and hasattr(vision_config, "patch_size")
        and hasattr(vision_config, "num_channels")
    )
    if not is_encoder:
        hint = " Pass its `.vision_config`." if hasattr(vision_config, "vision_config") else ""
        raise ValueError(
            f"vision_config must be a vision encoder config (e.g. clip_vision_model, siglip_vision_model, vit, "
            f"dinov2); got model_type={model_type!r}.{hint}"
        )


@strict
class HfMmLlavaConfig(CompositeConfig):
    r"""
    vision_config: any AutoConfig vision encoder. text_config: any AutoConfig causal LM.
    bridge_type: one of `BRIDGES` (`linear`, `mlp2x_gelu`, `pixel_shuffle`, `perceiver`, `qwen_adapter`), or a
        bridge registered with `hf_mm.register_bridge`.
    bridge_kwargs: the settings of a registered (plug-in) bridge, passed to its constructor.
    bridge_hidden_size: hidden width of MLP bridges (None: the LM width).
    bridge_bias: bias in the bridge's linear layers.
    pixel_shuffle_factor: side s of the s x s neighbourhoods the `pixel_shuffle` bridge concatenates.
    perceiver_num_latents, perceiver_depth, perceiver_heads, perceiver_head_dim: the `perceiver` bridge's latents
        (= tokens per image), blocks, attention heads and head width (BLIP-3 / xGen-MM: 128 latents).
    adapter_num_queries, adapter_heads: the `qwen_adapter` bridge's learned queries (= tokens per image, a square)
        and the heads of its cross-attention at the LM width (Qwen-VL: 256 queries).
    vision_feature_layer: what the bridge reads (`towers.tower_features`, the same in every family): an index into the
        tower's hidden states (LLaVA-1.5: -2), "last_hidden_state" (the tower's own final output), or a list of
        them, concatenated.
    vision_feature_select_strategy: `default` drops CLS/register tokens, `full` keeps them.
    image_token_id: id of the `<image>` placeholder token.
    """

    model_type = "hf_mm_llava"
    # TRL reads `config.auto_map` when given a path; a class attribute (not a field) is never serialized.
    auto_map = {}
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "patch_size": 14,
                "image_size": 336,
                "projection_dim": 768,
            },
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    bridge_type: str = "mlp2x_gelu"
    bridge_hidden_size: int | None = None
    bridge_bias: bool = True
    pixel_shuffle_factor: int = 2
    perceiver_num_latents: int = 64
    perceiver_depth: int = 6
    perceiver_heads: int = 8
    perceiver_head_dim: int = 64
    adapter_num_queries: int = 256
    adapter_heads: int = 8
    bridge_kwargs: dict | None = None
    vision_feature_layer: int | str | list[int | str] = -2
    vision_feature_select_strategy: str = "default"
    image_token_id: int = 32000
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_vision_config(self.vision_config)
        check_text_config(self.text_config)
        get_bridge(self.bridge_type)  # refuses an unknown bridge_type, listing the registered ones
        if self.vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise ValueError(
                f"vision_feature_select_strategy={self.vision_feature_select_strategy!r} is not one of "
                f"{FEATURE_SELECT_STRATEGIES}."
            )
        self._check_feature_layers()
        if self.pixel_shuffle_factor < 1:
            raise ValueError(f"pixel_shuffle_factor must be >= 1, got {self.pixel_shuffle_factor}.")
        for name in ("perceiver_num_latents", "perceiver_depth", "perceiver_heads", "perceiver_head_dim",
                     "adapter_num_queries", "adapter_heads"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        self._check_grid_bridge()
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True

    def _check_feature_layers(self) -> None:
        if not self.vision_feature_layers:
            raise ValueError("vision_feature_layer is an empty list: give at least one hidden state to read.")
        for layer in self.vision_feature_layers:
            check_feature_layer(self.vision_config, layer)

    def _check_grid_bridge(self) -> None:
        # pixel_shuffle needs the bare patch grid; a kept CLS/register prefix makes it ragged. Towers missing from
        # _PREFIX_TOKENS are still checked by the bridge at run time.
        known = self.vision_config.model_type in _PREFIX_TOKENS
        if self.bridge_type == "pixel_shuffle" and self.vision_feature_select_strategy == "full" and known:
            if num_prefix_tokens(self.vision_config) > 0:
                raise ValueError(
                    "bridge_type='pixel_shuffle' needs the bare patch grid, but vision_feature_select_strategy='full' "
                    f"keeps the {self.vision_config.model_type} tower's CLS/register tokens. Use 'default'."
                )

    @property
    def vision_feature_layers(self) -> list[int]:
        """`vision_feature_layer` as a list (a single int becomes a one-element list)."""
        layer = self.vision_feature_layer
        return [layer] if isinstance(layer, (int, str)) else list(layer)

    def bridge_settings(self) -> dict:
        """The bridge's constructor keywords, read by the bridge class itself (`Bridge.settings`)."""
        return get_bridge(self.bridge_type).settings(self)

    def tokens_per_image(self, height: int, width: int) -> int:
        """Placeholders one image becomes for a `height` x `width` patch grid: the bridge's own rule."""
        rule = get_bridge(self.bridge_type).tokens_per_image
        return rule(self.bridge_settings(), height, width, self.num_additional_image_tokens)

    @property
    def num_additional_image_tokens(self) -> int:
        """Tokens per image beyond the patch grid: the tower's prefix tokens when they are kept (`full`)."""
        return num_prefix_tokens(self.vision_config) if self.vision_feature_select_strategy == "full" else 0


__all__ = ["HfMmLlavaConfig"]
