"""HfMmQwen2_5_VL: the native-resolution ViT, its 2x2 merger (the bridge) and any causal LM with rotary positions.

    pixels -> vision_tower (hf_mm_qwen2_5_vit) -> bridge (PatchMerger) -> scattered at <|image_pad|> / <|video_pad|>
    input ids -> LM with M-RoPE: (time, row, column) ids from `mrope_position_ids`, applied by wrapping the LM's own
    rotary embedding (`mrope.wrap_rotary`), so the LM's code is untouched.

Position ids are built at prefill from `mm_token_type_ids` (or from the ids themselves) and the grids; their
`rope_deltas` are kept for decoding, where every axis continues at past_length + delta. Images and videos run
through the tower once per `generate()` (the generic prepare_inputs_for_generation drops pixels after prefill).
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

from ...tokens import prepare_qwen_tokenizer
from ..compat import CACHE_NAME, take_cache
from ..composition import (
    ComposedCausalLMOutputWithPast,
    ComposedForConditionalGeneration,
    ComposedModel,
    ComposedModelOutputWithPast,
    ComposedPreTrainedModel,
)
from .configuration_qwen2_5_vit import HfMmQwen2_5_ViTConfig
from .configuration_qwen2_5_vl import HfMmQwen2_5_VLConfig, text_head_dim
from .modeling_qwen2_5_vit import HfMmQwen2_5_ViTModel, PatchMerger, RMSNorm
from .mrope import (
    IMAGE,
    TEXT,
    VIDEO,
    MultimodalRotaryEmbedding,
    mrope_position_ids,
    packed_mrope_position_ids,
    wrap_rotary,
)


def padding_mask_2d(attention_mask, length: int) -> torch.Tensor | None:
    """The (B, L) padding mask M-RoPE counts positions with. generate() hands compiled caches (static) a ready 4D
    mask instead, one per attention type, boolean or additive: at prefill, its last query row sees exactly the
    prompt's non-padding keys."""
    if isinstance(attention_mask, dict):
        attention_mask = attention_mask.get("full_attention", next(iter(attention_mask.values())))
    if attention_mask is None or attention_mask.ndim == 2:
        return attention_mask
    visible = attention_mask[:, 0, -1, :length]  # (B, L)
    return visible if visible.dtype == torch.bool else visible == 0


class HfMmQwen2_5_VLPreTrainedModel(ComposedPreTrainedModel):
    config: HfMmQwen2_5_VLConfig
    input_modalities = ("image", "video", "text")
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised. The towers are PreTrainedModels and initialise themselves (their
        own `_init_weights`, through transformers' hook chain); what reaches this hook is ours: the merger's linear
        layers N(0, the LM's initializer_range) with zero bias, its RMSNorm at unit scale, and the untied lm_head.
        From a checkpoint, only the weights it lacks come here, module by module."""
        std = getattr(self.config.text_config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.constant_(module.weight, 1.0)
        else:
            super()._init_weights(module)


class HfMmQwen2_5_VLModel(HfMmQwen2_5_VLPreTrainedModel, ComposedModel):
    def __init__(self, config: HfMmQwen2_5_VLConfig):
        super().__init__(config)
        self.rope_deltas: torch.Tensor | None = None
        self.attach_parts()

    @staticmethod
    def build_vision_tower(config: HfMmQwen2_5_VLConfig) -> nn.Module:
        return HfMmQwen2_5_ViTModel(config.vision_config)  # the class itself: remote code has no Auto registry

    @staticmethod
    def build_bridge(config: HfMmQwen2_5_VLConfig) -> nn.Module:
        vision = config.vision_config
        return PatchMerger(vision.hidden_size, vision.out_hidden_size, vision.spatial_merge_size)

    def attach_parts(self) -> None:
        """M-RoPE around the LM's own rotary embedding (again after composition put in a new LM)."""
        if not isinstance(self.language_model.rotary_emb, MultimodalRotaryEmbedding):
            wrap_rotary(self.language_model, self.config.mrope_section)

    def _vision_features(self, pixel_values, grid_thw, output_hidden_states, output_attentions):
        """(N_patches, C*2*14*14) packed pixels -> `pooler_output`: one (N_i / 4, D_text) merged tensor per image or
        video, in the input's order; the tower's `last_hidden_state` (N_patches, D_v) alongside."""
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        outputs = self.vision_tower(pixel_values, grid_thw, output_hidden_states, output_attentions)
        merged = self.bridge(outputs.last_hidden_state)  # (N_patches / 4, D_text)
        sizes = (grid_thw.prod(-1) // self.config.vision_config.spatial_merge_size**2).tolist()
        return BaseModelOutputWithPooling(
            last_hidden_state=outputs.last_hidden_state,
            pooler_output=merged.split(sizes),
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    @can_return_tuple
    def get_image_features(self, pixel_values, image_grid_thw, output_hidden_states=None, output_attentions=None):
        return self._vision_features(pixel_values, image_grid_thw, output_hidden_states, output_attentions)

    @can_return_tuple
    def get_video_features(
        self, pixel_values_videos, video_grid_thw, output_hidden_states=None, output_attentions=None
    ):
        return self._vision_features(pixel_values_videos, video_grid_thw, output_hidden_states, output_attentions)

    def placeholder_masks(self, input_ids, inputs_embeds) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) image and video placeholder masks, from the ids or, without ids, by matching the embeddings."""
        image, video = self.config.image_token_id, self.config.video_token_id
        return self.get_placeholder_mask(input_ids, inputs_embeds, image), self.get_placeholder_mask(
            input_ids, inputs_embeds, video
        )

    def get_rope_index(
        self,
        input_ids,
        image_grid_thw=None,
        video_grid_thw=None,
        second_per_grid_ts=None,
        mm_token_type_ids=None,
        attention_mask=None,
        **kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """((3, B, L) M-RoPE ids, (B, 1) deltas) of a prompt, as transformers' Qwen2.5-VL computes them: what vLLM
        calls once per prompt before it feeds the ids back as `position_ids`."""
        if mm_token_type_ids is None:
            image, video = input_ids == self.config.image_token_id, input_ids == self.config.video_token_id
            mm_token_type_ids = torch.where(image, IMAGE, torch.where(video, VIDEO, TEXT))
        vision = self.config.vision_config
        return mrope_position_ids(mm_token_type_ids, image_grid_thw, video_grid_thw, second_per_grid_ts,
                                  attention_mask, vision.spatial_merge_size, vision.tokens_per_second)  # fmt: skip

    def _position_ids(self, masks, mm_token_type_ids, attention_mask, grids, length: int, past: int, packed=None):
        """(3, B, L) M-RoPE ids: built from the token types (or the placeholder `masks`) at prefill, continued from
        `rope_deltas` after. `packed`: 1D position ids restarting per sample (padding-free packing); each sample
        then gets its own ids."""
        if past == 0 or self.rope_deltas is None:
            if mm_token_type_ids is None:
                image_mask, video_mask = masks
                mm_token_type_ids = torch.full(image_mask.shape, TEXT, dtype=torch.long, device=image_mask.device)
                mm_token_type_ids[image_mask] = IMAGE
                mm_token_type_ids[video_mask] = VIDEO
            vision = self.config.vision_config
            if packed is not None:
                self.rope_deltas = None  # packed rows are for training; nothing decodes from them
                return packed_mrope_position_ids(
                    mm_token_type_ids, *grids, packed, vision.spatial_merge_size, vision.tokens_per_second
                )
            ids, self.rope_deltas = mrope_position_ids(
                mm_token_type_ids, *grids, attention_mask, vision.spatial_merge_size, vision.tokens_per_second
            )
            return ids
        steps = torch.arange(past, past + length, device=self.rope_deltas.device)
        return (steps[None] + self.rope_deltas).expand(3, -1, -1)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,  # transformers >= 5.24 name
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs,
    ) -> ComposedModelOutputWithPast:
        past_key_values = take_cache(past_key_values, cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        masks = self.placeholder_masks(input_ids, inputs_embeds)
        image_outputs = video_outputs = None
        if pixel_values is not None:
            image_outputs = self.get_image_features(pixel_values, image_grid_thw)
            features = torch.cat(image_outputs.pooler_output)
            inputs_embeds = self.scatter_features(inputs_embeds, masks[0], features, "image")
        if pixel_values_videos is not None:
            video_outputs = self.get_video_features(pixel_values_videos, video_grid_thw)
            features = torch.cat(video_outputs.pooler_output)
            inputs_embeds = self.scatter_features(inputs_embeds, masks[1], features, "video")
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        grids = (image_grid_thw, video_grid_thw, second_per_grid_ts)
        rotary = self.language_model.rotary_emb
        given = kwargs.get("position_ids")
        if given is not None and given.dim() == 3:  # (3, B, L) M-RoPE ids from the caller (vLLM, get_rope_index)
            rotary.position_ids, kwargs["position_ids"] = given, given[0]
        else:
            # Packed rows: 1D positions restarting per sample and no mask (transformers then masks per sample, too).
            packed = given if attention_mask is None and past == 0 else None
            rotary.position_ids = self._position_ids(
                masks,
                mm_token_type_ids,
                padding_mask_2d(attention_mask, inputs_embeds.shape[1]),
                grids,
                inputs_embeds.shape[1],
                past,
                packed,
            ).to(inputs_embeds.device)
        try:
            outputs = self.language_model(
                inputs_embeds=inputs_embeds, attention_mask=attention_mask, use_cache=use_cache,
                **{**kwargs, CACHE_NAME: past_key_values, "return_dict": True},
            )  # fmt: skip
        finally:
            rotary.position_ids = None
        return ComposedModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
            video_outputs=video_outputs,
        )


HfMmQwen2_5_VLCausalLMOutput = ComposedCausalLMOutputWithPast  # the name earlier releases exported


class HfMmQwen2_5_VLForConditionalGeneration(HfMmQwen2_5_VLPreTrainedModel, ComposedForConditionalGeneration):
    """`model.{vision_tower, bridge, language_model}` plus `lm_head`, tied to the LM embeddings when the LM ties.

    `from_vision_text_pretrained(vision, text, ...)` composes a saved `hf_mm_qwen2_5_vit` (or a fresh one from
    `vision_config`, when `vision` is None) with any pretrained RoPE causal LM, with the loading keywords every
    family takes; the merger (bridge) is new. `mrope_section` defaults to Qwen's 1/4 : 3/8 : 3/8 split of the LM's
    head_dim / 2. Pair with `HfMmQwen2_5_VLProcessor.from_vision_text_pretrained`.
    """

    _model_class = HfMmQwen2_5_VLModel

    @classmethod
    def load_vision_tower(cls, name_or_path: str | None, config_kwargs: dict, **load_kwargs) -> nn.Module:
        vision_config = config_kwargs.pop("vision_config", None)
        if name_or_path is None:
            return HfMmQwen2_5_ViTModel(vision_config or HfMmQwen2_5_ViTConfig())
        if vision_config is not None:
            raise ValueError("Give a saved vision tower or a vision_config for a new one, not both.")
        return HfMmQwen2_5_ViTModel.from_pretrained(name_or_path, **load_kwargs)

    @classmethod
    def prepare_tokenizer(cls, tokenizer) -> tuple:
        tokenizer = prepare_qwen_tokenizer(tokenizer)
        names = {"image": "<|image_pad|>", "video": "<|video_pad|>", "vision_start": "<|vision_start|>"}
        return tokenizer, {f"{key}_token_id": tokenizer.convert_tokens_to_ids(t) for key, t in names.items()}

    @classmethod
    def compose(cls, vision_tower, causal_lm, tokenizer, **config_kwargs):
        """The merger is new and projects into this LM; M-RoPE's bands follow the LM's head_dim."""
        vision_tower.config.out_hidden_size = causal_lm.config.hidden_size
        half = text_head_dim(causal_lm.config) // 2
        time = half // 4
        config_kwargs.setdefault("mrope_section", [time, (half - time) // 2, half - time - (half - time) // 2])
        return super().compose(vision_tower, causal_lm, tokenizer, **config_kwargs)

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.LongTensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        video_grid_thw: torch.LongTensor | None = None,
        second_per_grid_ts: torch.Tensor | None = None,
        mm_token_type_ids: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,  # transformers >= 5.24 name
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> HfMmQwen2_5_VLCausalLMOutput:
        past_key_values = take_cache(past_key_values, cache)
        outputs = self.model(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
            image_grid_thw=image_grid_thw, pixel_values_videos=pixel_values_videos, video_grid_thw=video_grid_thw,
            second_per_grid_ts=second_per_grid_ts, mm_token_type_ids=mm_token_type_ids,
            cache=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
            **{**kwargs, "return_dict": True},
        )  # fmt: skip
        return self.head_forward(outputs, input_ids, labels, logits_to_keep, **kwargs)

    vision_inputs = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")

    def placeholder_token_ids(self) -> tuple[int, ...]:
        return (self.config.image_token_id, self.config.video_token_id)

    def split_vision_inputs(self, input_ids: torch.Tensor, model_kwargs: dict) -> dict[str, list[torch.Tensor]]:
        """{input name: one tensor per sample}: packed patches split by each grid, grids (and a video's seconds
        per grid) by the placeholder runs each sample holds."""
        merge = self.config.vision_config.spatial_merge_size**2
        split = {}
        for kind, token_id in (("image", self.config.image_token_id), ("video", self.config.video_token_id)):
            grids = model_kwargs.get(f"{kind}_grid_thw")
            if grids is None:
                continue
            pixels = model_kwargs["pixel_values" if kind == "image" else "pixel_values_videos"]
            tokens, per_sample = (grids.prod(-1) // merge).tolist(), []
            for count in (input_ids == token_id).sum(1).tolist():
                n = 0
                while count > 0 and len(tokens) > sum(per_sample) + n:
                    count, n = count - tokens[sum(per_sample) + n], n + 1
                per_sample.append(n)
            if sum(per_sample) != len(tokens):
                return {}  # inconsistent input: forward raises the placeholder mismatch with the numbers
            patches = [int(x) for x in grids.prod(-1).split(per_sample) for x in [x.sum()]]
            split["pixel_values" if kind == "image" else "pixel_values_videos"] = list(pixels.split(patches))
            split[f"{kind}_grid_thw"] = list(grids.split(per_sample))
            if kind == "video" and model_kwargs.get("second_per_grid_ts") is not None:
                split["second_per_grid_ts"] = list(model_kwargs["second_per_grid_ts"].split(per_sample))
        return split

    def get_image_features(self, pixel_values, image_grid_thw=None, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_image_features(pixel_values, image_grid_thw, **kwargs)

    def get_video_features(self, pixel_values_videos, video_grid_thw, **kwargs) -> BaseModelOutputWithPooling:
        return self.model.get_video_features(pixel_values_videos, video_grid_thw, **kwargs)


__all__ = ["HfMmQwen2_5_VLPreTrainedModel", "HfMmQwen2_5_VLModel", "HfMmQwen2_5_VLForConditionalGeneration"]
