"""HfMmClipModel: a dual encoder (CLIP / SigLIP) from any vision tower and any text tower.

    image -> vision_tower -> pool -> visual_projection -> L2 norm --\
                                                                     > scale * <t, v> (+ bias) -> logits_per_text
    text  -> text_tower   -> pool -> text_projection   -> L2 norm --/

Roles (design.md section 1): `vision_tower`, `text_tower`, `visual_projection`, `text_projection`, `logit_scale`
(and `logit_bias` for the sigmoid loss). Departures from the papers, written down:
- The scale multiplier is clamped at `max_logit_scale` (100), as the CLIP paper says; transformers' CLIPModel does
  not clamp, which only matters once exp(scale) passes 100.
- With several processes the loss sees every rank's negatives (`loss_clip.py`).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.utils.generic import can_return_tuple

from ..composition import check_config_kwargs, loading_kwargs
from ..initialization import GuardedInitMixin
from ..safetensors_only import SafetensorsOnlyMixin
from ..towers import load_text_tower, load_vision_config, load_vision_tower, tower_from_config
from .configuration_clip import HfMmClipConfig
from .loss_clip import infonce_loss, sigmoid_loss


@dataclass
class HfMmClipOutput(ModelOutput):
    """`logits_per_image` (n_images, n_texts) and its transpose; embeddings are L2-normalised; each tower's own
    output (with its hidden states and attentions when asked for), as transformers' `CLIPOutput`."""

    loss: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in super().to_tuple())


def pool(outputs, mode: str, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(B, N, D) tower outputs -> (B, D) by the config's pooling (see configuration_clip.py)."""
    if mode == "pooler":
        return outputs.pooler_output
    hidden = outputs.last_hidden_state
    if mode == "cls":
        return hidden[:, 0]
    mask = torch.ones(hidden.shape[:2], device=hidden.device) if attention_mask is None else attention_mask
    if mode == "mean":
        mask = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    # "last": the last non-padding position, for right or left padding alike.
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (positions * mask.to(positions.dtype)).argmax(dim=1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def _with_pooler_output(outputs, pooler_output: torch.Tensor) -> BaseModelOutputWithPooling:
    """A tower's output with `pooler_output` set to the projected embedding (any tower: a causal LM's output has
    no pooler field of its own)."""
    return BaseModelOutputWithPooling(
        last_hidden_state=outputs.last_hidden_state,
        pooler_output=pooler_output,
        hidden_states=getattr(outputs, "hidden_states", None),
        attentions=getattr(outputs, "attentions", None),
    )


def _heads(config: HfMmClipConfig):
    """The modules hf_mm adds to the towers: two projections (or identities), the logit scale and the bias."""
    if config.projection_dim is None:
        projections = nn.Identity(), nn.Identity()
    else:
        projections = (
            nn.Linear(config.vision_embed_dim, config.projection_dim, bias=False),
            nn.Linear(config.text_embed_dim, config.projection_dim, bias=False),
        )
    scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
    bias = nn.Parameter(torch.tensor(config.logit_bias_init_value)) if config.loss_type == "sigmoid" else None
    return (*projections, scale, bias)


class HfMmClipPreTrainedModel(GuardedInitMixin, SafetensorsOnlyMixin, PreTrainedModel):
    config: HfMmClipConfig
    base_model_prefix = "hf_mm_clip"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised. Towers initialise themselves; ours are the projections, N(0, 1/sqrt
        of the input width) as in CLIP, and the logit scale / bias from the config."""
        if isinstance(module, HfMmClipModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            if module.logit_bias is not None:
                init.constant_(module.logit_bias, self.config.logit_bias_init_value)
            for projection in (module.visual_projection, module.text_projection):
                if isinstance(projection, nn.Linear):
                    init.normal_(projection.weight, mean=0.0, std=projection.in_features**-0.5)
        elif not isinstance(module, nn.Linear):
            super()._init_weights(module)


class HfMmClipModel(HfMmClipPreTrainedModel):
    def __init__(self, config: HfMmClipConfig):
        super().__init__(config)
        self.vision_tower = tower_from_config(config.vision_config)
        self.text_tower = tower_from_config(config.text_config)
        self.visual_projection, self.text_projection, self.logit_scale, self.logit_bias = _heads(config)
        self.post_init()

    @can_return_tuple
    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """(B, C, H, W) -> the image tower's output, its `pooler_output` replaced by the (B, projection_dim)
        embedding, not normalised (as transformers' CLIPModel). `kwargs` go to the tower."""
        outputs = self.vision_tower(pixel_values=pixel_values.to(self.vision_tower.dtype), return_dict=True, **kwargs)
        embeds = self.visual_projection(pool(outputs, self.config.resolved_vision_pooling, None))
        return _with_pooler_output(outputs, embeds)

    @can_return_tuple
    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """(B, T) token ids -> the text tower's output, its `pooler_output` replaced by the (B, projection_dim)
        embedding, not normalised."""
        outputs = self.text_tower(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **kwargs)
        embeds = self.text_projection(pool(outputs, self.config.resolved_text_pooling, attention_mask))
        return _with_pooler_output(outputs, embeds)

    def contrastive_loss(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """The config's loss (InfoNCE or sigmoid) of L2-normalised (B, D) embeddings, matching pairs on the diagonal."""
        if self.config.loss_type == "infonce":
            return infonce_loss(image_embeds, text_embeds, self.scale())
        return sigmoid_loss(image_embeds, text_embeds, self.scale(), self.logit_bias)

    def scale(self) -> torch.Tensor:
        """The logit multiplier exp(logit_scale), clamped at `max_logit_scale`."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> HfMmClipOutput:
        """`kwargs` (output_hidden_states, output_attentions) go to both towers."""
        vision_outputs = self.get_image_features(pixel_values, **kwargs)
        text_outputs = self.get_text_features(input_ids, attention_mask, **kwargs)
        image_embeds = nn.functional.normalize(vision_outputs.pooler_output, dim=-1)  # (B_i, D)
        text_embeds = nn.functional.normalize(text_outputs.pooler_output, dim=-1)  # (B_t, D)
        logits_per_text = self.scale() * text_embeds @ image_embeds.t()  # (B_t, B_i)
        if self.logit_bias is not None:
            logits_per_text = logits_per_text + self.logit_bias
        loss = self.contrastive_loss(image_embeds, text_embeds) if return_loss else None
        return HfMmClipOutput(
            loss=loss,
            logits_per_image=logits_per_text.t(),
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        *,
        dtype=None,
        device_map=None,
        attn_implementation: str | None = None,
        quantization_config=None,
        **config_kwargs,
    ) -> "HfMmClipModel":
        """Compose pretrained towers with fresh projections (`config_kwargs` go to `HfMmClipConfig`).

        `vision` may be a vision encoder or a dual-encoder checkpoint (its vision tower is taken); `text` may be a
        text encoder or a causal LM (its bare decoder, pooled at the last token). The loading keywords are every
        family's; `quantization_config` is refused: both towers of a dual encoder train in full precision here.
        """
        if quantization_config is not None:
            raise ValueError(
                "quantization_config: hf_mm_clip composes its towers in full precision (both train, or one is locked "
                "as in LiT). Drop it, or compose a generative family, whose LM can be quantized."
            )
        check_config_kwargs(HfMmClipConfig, config_kwargs)
        load_kwargs = loading_kwargs(dtype, device_map, attn_implementation)
        vision_tower = load_vision_tower(vision_model_name_or_path, **load_kwargs)
        text_tower = load_text_tower(text_model_name_or_path, **load_kwargs)
        config = HfMmClipConfig(
            vision_config=load_vision_config(vision_model_name_or_path), text_config=text_tower.config, **config_kwargs
        )
        with torch.device("meta"):
            model = cls(config)
        model.vision_tower, model.text_tower = vision_tower, text_tower
        model.visual_projection, model.text_projection, model.logit_scale, model.logit_bias = _heads(config)
        model._init_weights(model)
        return model.to(next(vision_tower.parameters()).dtype).eval()


__all__ = ["HfMmClipModel", "HfMmClipOutput", "HfMmClipPreTrainedModel", "pool"]
