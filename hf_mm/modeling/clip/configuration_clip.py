"""HfMmClipConfig: any HF vision encoder x any HF text encoder, projected into one space and trained contrastively.

Defaults are those of CLIP ViT-B/32 (projection 512, InfoNCE, logit scale log(1/0.07)). Choices written down:
- `projection_dim=None` means the towers' pooled outputs already share one space and the projections are identity
  (SigLIP, whose text tower ends in its own head and whose vision tower ends in attention pooling).
- Pooling is read from the tower type (`pooling="auto"`): a tower with a pooler (CLIP's EOS token, SigLIP's last
  token + head or MAP head, BERT's CLS + tanh dense) uses it; a causal LM uses its last non-padding token; a text
  encoder without a pooler must say `cls` or `mean`. A text config hf_mm cannot pool is refused here, not at run time.
- `loss_type="sigmoid"` starts the scale at log(10) and adds `logit_bias` at -10, as in SigLIP; InfoNCE has no bias
  (a shared bias cancels in a softmax). The scale is clamped to exp(scale) <= 100, as in CLIP.
"""

import math

from huggingface_hub.dataclasses import strict
from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoConfig, PreTrainedConfig

from ..compat import CompositeConfig, SubConfigSpec
from ..towers import is_buildable_tower

LOSS_TYPES = ("infonce", "sigmoid")
POOLINGS = ("auto", "pooler", "cls", "mean", "last")
# Towers whose AutoModel returns a `pooler_output` that is the pooled embedding the dual encoder should use.
_POOLER_TOWERS = (
    "clip_vision_model", "clip_text_model", "siglip_vision_model", "siglip_text_model", "vit", "dinov2", "bert",
    "roberta", "xlm-roberta",
)  # fmt: skip
# Text encoders without a pooler that are still fine with `cls` or `mean` (sentence-transformers style).
_ENCODER_ONLY = ("distilbert", "mpnet", "electra", "deberta-v2", "modernbert")


def resolve_pooling(config: PreTrainedConfig, pooling: str, field: str) -> str:
    """The pooling a tower uses: `pooling` itself, or for `auto` the tower's own pooler / last token."""
    if pooling not in POOLINGS:
        raise ValueError(f"{field}={pooling!r} is not one of {POOLINGS}.")
    model_type = getattr(config, "model_type", None)
    if not is_buildable_tower(config) or model_type.startswith("hf_mm_") or hasattr(config, "text_config"):
        raise ValueError(
            f"{field.replace('_pooling', '_config')} has model_type={model_type!r}, which is not a single tower "
            "AutoModel can build; pass a tower config (for a dual encoder, its .vision_config / .text_config)."
        )
    if pooling != "auto":
        return pooling
    if model_type in _POOLER_TOWERS:
        return "pooler"
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING:
        return "last"
    hint = " Use `cls` or `mean`." if model_type in _ENCODER_ONLY else ""
    raise ValueError(
        f"Cannot pool a {model_type!r} tower automatically: it has no pooler and is not a causal LM.{hint} Set "
        f"{field} to one of {POOLINGS[1:]} if its last hidden state can be pooled that way."
    )


@strict
class HfMmClipConfig(CompositeConfig):
    r"""
    vision_config: any AutoConfig vision encoder. text_config: any AutoConfig text encoder or causal LM.
    projection_dim: width of the shared space (None: identity projections, the towers' outputs already share it).
    loss_type: `infonce` (CLIP: symmetric softmax cross-entropy) or `sigmoid` (SigLIP: pairwise binary).
    logit_scale_init_value: initial log scale (None: log(1/0.07) for infonce, log(10) for sigmoid).
    logit_bias_init_value: initial bias for `sigmoid` (None: -10).
    vision_pooling / text_pooling: `auto`, `pooler`, `cls`, `mean` or `last` (last non-padding token).
    """

    model_type = "hf_mm_clip"
    auto_map = {}  # read by TRL; a class attribute is never serialized
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(
            config_class=AutoConfig,
            model_type="clip_vision_model",
            init_kwargs={"hidden_size": 768, "patch_size": 32, "image_size": 224, "num_attention_heads": 12},
        ),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="clip_text_model"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    projection_dim: int | None = 512
    loss_type: str = "infonce"
    logit_scale_init_value: float | None = None
    logit_bias_init_value: float | None = None
    max_logit_scale: float = 100.0
    vision_pooling: str = "auto"
    text_pooling: str = "auto"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type={self.loss_type!r} is not one of {LOSS_TYPES}.")
        resolve_pooling(self.vision_config, self.vision_pooling, "vision_pooling")
        resolve_pooling(self.text_config, self.text_pooling, "text_pooling")
        if self.projection_dim is None and self.vision_embed_dim != self.text_embed_dim:
            raise ValueError(
                f"projection_dim=None needs towers of one width; got vision {self.vision_embed_dim} and text "
                f"{self.text_embed_dim}. Set projection_dim."
            )
        if self.logit_scale_init_value is None:
            self.logit_scale_init_value = math.log(1 / 0.07) if self.loss_type == "infonce" else math.log(10.0)
        if self.logit_bias_init_value is None and self.loss_type == "sigmoid":
            self.logit_bias_init_value = -10.0

    @property
    def vision_embed_dim(self) -> int:
        """Width of the vision tower's pooled output (SigLIP's MAP head keeps the hidden size)."""
        return self.vision_config.hidden_size

    @property
    def text_embed_dim(self) -> int:
        """Width of the text tower's pooled output (SigLIP's text head projects to `projection_size`)."""
        return getattr(self.text_config, "projection_size", None) or self.text_config.hidden_size

    @property
    def resolved_vision_pooling(self) -> str:
        return resolve_pooling(self.vision_config, self.vision_pooling, "vision_pooling")

    @property
    def resolved_text_pooling(self) -> str:
        return resolve_pooling(self.text_config, self.text_pooling, "text_pooling")


__all__ = ["HfMmClipConfig", "LOSS_TYPES", "POOLINGS", "resolve_pooling"]
