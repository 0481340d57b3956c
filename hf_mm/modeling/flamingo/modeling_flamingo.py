"""Flamingo family: images -> vision_tower -> Perceiver Resampler -> gated cross-attention blocks inside a frozen LM.

`model.bridge` holds everything that connects vision to language: the resampler (`bridge.perceiver`) and the gated
cross-attention dense blocks (`bridge.gated_cross_attn`), so the `bridge` role (and the `align` stage) trains
exactly Flamingo's new parameters while the tower and the LM stay frozen.

How the blocks enter *any* HF causal LM: each block is attached as a forward pre-hook to the decoder layer it
precedes (found by `find_decoder_layers`), and rewrites that layer's input hidden states. The LM's modules and
parameter names stay untouched, so a pretrained LM loads as is, LoRA targets it as usual, and with both tanh gates
at 0 (their init) the model *is* the LM: its logits equal the bare LM's bit for bit.

Media masking follows the paper: every text token attends to the latest `<image>` at or before it, and tokens before
the first image attend to no image (their cross-attention output is zero). In packed rows (positions restarting per
sample, no attention mask) the same holds within each sample. Images are given flat, in order of their
`<image>` tokens across the batch, `pixel_values` (N_images, C, H, W), or (N_images, F, C, H, W) for F video frames.

Departures from the paper / OpenFlamingo:
- The resampler and blocks attend with SDPA (a boolean mask) instead of an explicit softmax.
- transformers' `IdeficsForVisionText2Text` is Flamingo-style but rewrites the LLaMA decoder itself (its own layers,
  query/key layer norms in the resampler, gated cross-attention after the self-attention layer); its weights have no
  one-to-one place here, so there is no parity test against it. The zero-gate identity is the exact check instead.
"""

import torch
from torch import nn
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils.generic import can_return_tuple

from ...tokens import END_OF_CHUNK, IMAGE_TOKEN, prepare_flamingo_tokenizer
from ..bridges import Bridge, PerceiverResampler
from ..compat import take_cache
from ..composition import (
    ComposedCausalLMOutputWithPast,
    ComposedForConditionalGeneration,
    ComposedModel,
    ComposedModelOutputWithPast,
    ComposedPreTrainedModel,
)
from ..towers import image_features_output, read_tower
from .configuration_flamingo import HfMmFlamingoConfig


def find_decoder_layers(language_model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of any HF decoder: the ModuleList with exactly `num_hidden_layers` blocks of one class.

    Llama / Qwen2 / Mistral keep it at `layers`, GPT-2 at `h`, OPT at `decoder.layers`; searching by shape covers
    them all without a table of names. Raises when no list, or more than one, fits.
    """
    num_layers = language_model.config.get_text_config().num_hidden_layers
    found = [
        (name, module)
        for name, module in language_model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) == num_layers
        and len({type(layer) for layer in module}) == 1
        and any(True for _ in module.parameters())
    ]
    if len(found) != 1:
        names = [name for name, _ in found]
        raise ValueError(
            f"Cannot find the decoder layers of {type(language_model).__name__}: expected one ModuleList of "
            f"{num_layers} identical blocks, found {len(found)} ({names}). Flamingo's gated cross-attention needs "
            "an LM whose decoder layers form one such list."
        )
    return found[0][1]


class GatedCrossAttentionBlock(nn.Module):
    """Flamingo's gated xattn-dense block: y = x + tanh(a) * xattn(x, media); y + tanh(b) * ffw(y).

    The gates `attn_gate` / `ff_gate` (one value each) start at 0, so a fresh block is the identity. `media` and
    `text_time` are set by the model before each LM forward (the decoder layers' own signatures have no room for
    them).
    """

    def __init__(self, dim: int, media_dim: int, heads: int, head_dim: int, ff_mult: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(media_dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)
        self.attn_gate = nn.Parameter(torch.zeros(1))  # (1,), not a scalar: FSDP2 cannot shard 0-d parameters
        self.feed_forward = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, ff_mult * dim, bias=False),
            nn.GELU(),
            nn.Linear(ff_mult * dim, dim, bias=False),
        )
        self.ff_gate = nn.Parameter(torch.zeros(1))
        self.media: torch.Tensor | None = None  # (B, M, n, D_v): each sample's images, resampled
        self.text_time: torch.Tensor | None = None  # (B, L): 1-based index of each token's latest image, 0: none

    def forward(self, hidden_states: torch.Tensor, media: torch.Tensor, text_time: torch.Tensor) -> torch.Tensor:
        x = hidden_states.to(self.to_q.weight.dtype)  # (B, L, D)
        batch, num_media, num_latents, _ = media.shape
        split = lambda t: t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # noqa: E731  (B, h, _, d)
        q = split(self.to_q(self.norm(x)))
        k, v = map(split, self.to_kv(media.to(x.dtype).flatten(1, 2)).chunk(2, dim=-1))  # (B, h, M * n, d)
        key_image = torch.arange(1, num_media + 1, device=x.device).repeat_interleave(num_latents)  # (M * n,)
        allowed = text_time[:, :, None] == key_image  # (B, L, M * n): only the latest image
        sees_image = allowed.any(-1, keepdim=True)  # (B, L, 1)
        allowed = allowed | ~sees_image  # a row with no image attends anywhere; its output is zeroed below
        attended = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
        attended = self.to_out(attended.transpose(1, 2).flatten(2)) * sees_image  # (B, L, D)
        x = x + torch.tanh(self.attn_gate) * attended
        x = x + torch.tanh(self.ff_gate) * self.feed_forward(x)
        return x.to(hidden_states.dtype)

    def pre_hook(self, layer: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook of the decoder layer this block precedes: rewrites its input hidden states."""
        if self.media is None:  # no images in this forward: the LM runs untouched
            return None
        if args:
            return (self(args[0], self.media, self.text_time), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": self(kwargs["hidden_states"], self.media, self.text_time)}


class GateAsVector(ConversionOps):
    """Checkpoints saved before the gates became (1,) tensors hold them 0-d: they load as (1,), and save as (1,)."""

    @torch.no_grad()
    def convert(self, input_dict: dict, source_patterns: list[str], target_patterns: list[str], **kwargs) -> dict:
        tensors = next(iter(input_dict.values()))
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor.reshape(1)}

    @property
    def reverse_op(self) -> ConversionOps:
        return self


register_checkpoint_conversion_mapping(
    HfMmFlamingoConfig.model_type,
    [WeightConverter(gate, gate, operations=[GateAsVector()]) for gate in ("attn_gate", "ff_gate")],
    overwrite=True,  # re-importing the module (importlib.reload) registers it again
)


class FlamingoBridge(nn.Module):
    """The resampler plus one gated cross-attention block per chosen decoder layer (`config.cross_attn_layers`)."""

    # Gathered into the composite's `_no_split_modules` by transformers: an FSDP wrap unit, never split by device_map.
    _no_split_modules = ["GatedCrossAttentionBlock"]

    def __init__(self, config: HfMmFlamingoConfig):
        super().__init__()
        vision_width, text_width = config.vision_config.hidden_size, config.text_config.hidden_size
        self.perceiver = PerceiverResampler(
            vision_width, None, num_latents=config.num_latents, depth=config.perceiver_depth,
            heads=config.perceiver_heads, head_dim=config.perceiver_head_dim, max_frames=config.max_frames,
        )  # fmt: skip
        self.gated_cross_attn = nn.ModuleList(
            GatedCrossAttentionBlock(
                text_width,
                vision_width,
                config.cross_attn_heads,
                config.cross_attn_head_dim,
                config.cross_attn_ff_mult,
            )
            for _ in config.cross_attn_layers
        )

    def forward(self, image_features: torch.Tensor, grid_size=None) -> torch.Tensor:
        """(N_img, [F,] P, D_v) tower features -> (N_img, n, D_v) resampled media."""
        return self.perceiver(image_features)


class HfMmFlamingoPreTrainedModel(ComposedPreTrainedModel):
    config: HfMmFlamingoConfig

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised: the bridge's linear layers N(0, initializer_range), LayerNorms at
        identity, the latents and frame embeddings N(0, 1) as in Flamingo, and both gates at exactly 0 (so the
        untrained model is the LM). The towers initialise themselves through this same hook chain."""
        if isinstance(module, Bridge):  # the resampler: its own rule (latents and frame embeddings N(0, 1))
            module.init_weights(self.config.initializer_range)
        elif isinstance(module, GatedCrossAttentionBlock):
            init.zeros_(module.attn_gate)
            init.zeros_(module.ff_gate)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.config.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)


class HfMmFlamingoModel(HfMmFlamingoPreTrainedModel, ComposedModel):
    """`vision_tower`, `bridge` (resampler + gated blocks) and `language_model`, without the LM head."""

    def __init__(self, config: HfMmFlamingoConfig):
        super().__init__(config)
        self._hooks = []
        self.attach_cross_attention()

    @staticmethod
    def build_bridge(config: HfMmFlamingoConfig) -> nn.Module:
        return FlamingoBridge(config)

    def attach_parts(self) -> None:
        self.attach_cross_attention()

    def attach_cross_attention(self) -> None:
        """Hook each gated block in front of its decoder layer (again after the LM or the bridge is replaced)."""
        for handle in self._hooks:
            handle.remove()
        layers = find_decoder_layers(self.language_model)
        blocks = zip(self.config.cross_attn_layers, self.bridge.gated_cross_attn, strict=True)
        self._hooks = [layers[i].register_forward_pre_hook(block.pre_hook, with_kwargs=True) for i, block in blocks]

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        skip_unread_blocks: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """(N, C, H, W) images or (N, F, C, H, W) clips -> `pooler_output` (N, num_latents, D_v), the resampled
        media; the tower's `last_hidden_state` (per frame for clips) alongside."""
        video = pixel_values.dim() == 5
        flat = pixel_values.flatten(0, 1) if video else pixel_values
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        layer = self.config.vision_feature_layer
        outputs, (features,) = read_tower(
            self.vision_tower, flat, [layer], skip_unread_blocks, output_hidden_states, **kwargs
        )  # (N [* F], P, D_v)
        if video:
            features = features.unflatten(0, pixel_values.shape[:2])  # (N, F, P, D_v)
        return image_features_output(outputs, self.bridge(features), output_hidden_states)

    def media_per_sample(self, is_image: torch.Tensor, media: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        """Flat (N_img, n, D) media in `<image>` order -> (B, M, n, D), each sample's images first, zero-padded.
        `is_image` (B, L) marks the `<image>` tokens of this call; `offsets` (B,) counts those behind the cache."""
        counts = is_image.sum(1) + offsets
        if int(counts.sum()) != media.shape[0]:
            raise ValueError(
                f"Image features and image tokens do not match: tokens: {int(counts.sum())}, features: "
                f"{media.shape[0]}. Pass one image per <image> token, in the order the tokens appear in the batch."
            )
        per_sample = media.new_zeros(is_image.shape[0], max(int(counts.max()), 1), *media.shape[1:])
        for b, images in enumerate(media.split(counts.tolist())):
            per_sample[b, : len(images)] = images
        return per_sample

    def restart_per_sample(self, text_time, is_image, position_ids) -> torch.Tensor:
        """Packed rows (no attention mask, positions restarting at 0 per sample): a token sees the latest image of
        its own sample only, and nothing before that sample's first image."""
        is_start = position_ids == 0  # (B, L)
        index = torch.arange(is_image.shape[1], device=is_image.device).expand_as(is_image)
        start = torch.cummax(torch.where(is_start, index, 0), dim=1).values  # each token's sample start
        before = text_time - is_image.long()  # images strictly before each token
        images_before_sample = before.gather(1, start)
        return torch.where(text_time > images_before_sample, text_time, 0)

    def resolve_media(self, is_image, pixel_values, media, offsets, past_key_values) -> torch.Tensor | None:
        """(B, M, n, D) media for this call: resampled from `pixel_values`, or the `image_hidden_states` of an
        earlier call; None when the text (with what the cache holds) has no image. Refuses text whose images
        are missing, including a continuation from a cache whose prefix holds images (`offsets` > 0)."""
        if pixel_values is not None:
            return self.media_per_sample(
                is_image, self.get_image_features(pixel_values, skip_unread_blocks=True).pooler_output, offsets
            )
        has_cache = past_key_values is not None and past_key_values.get_seq_length() > 0
        if media is None and (bool(offsets.any()) or (is_image.any() and not has_cache)):
            raise ValueError(
                "Image features and image tokens do not match: the text (or the prefix in its cache) holds <image> "
                "tokens but no pixel_values (or image_hidden_states) were given. To continue from a returned cache, "
                "pass the same images again, or the image_hidden_states of the previous output."
            )
        return media

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,  # transformers >= 5.24 name
        inputs_embeds: torch.Tensor | None = None,
        image_hidden_states: torch.Tensor | None = None,
        media_offsets: torch.LongTensor | None = None,
        **kwargs,
    ) -> ComposedModelOutputWithPast:
        """`image_hidden_states` (B, M, n, D): media resampled by an earlier call (generate() passes them on);
        `media_offsets` (B,): `<image>` tokens behind the cache, before `input_ids` (generate() sets them)."""
        past_key_values = take_cache(past_key_values, cache)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        is_image = self.get_placeholder_mask(input_ids, inputs_embeds)  # (B, L)
        offsets = torch.zeros(is_image.shape[0], dtype=torch.long, device=is_image.device)
        if media_offsets is not None:
            offsets = media_offsets.to(is_image.device)
        media = self.resolve_media(is_image, pixel_values, image_hidden_states, offsets, past_key_values)
        text_time = None
        if media is not None:  # each token's latest image, 1-based; 0 before the first image
            text_time = torch.cumsum(is_image, dim=1) + offsets[:, None]
            if attention_mask is None and position_ids is not None and past_key_values is None:
                text_time = self.restart_per_sample(text_time, is_image, position_ids)
        for block in self.bridge.gated_cross_attn:
            block.media, block.text_time = media, text_time
        image_outputs = None if media is None else BaseModelOutputWithPooling(pooler_output=media)  # (B, M, n, D)
        return self.decode(inputs_embeds, attention_mask, position_ids, past_key_values, image_outputs, **kwargs)


class HfMmFlamingoForConditionalGeneration(HfMmFlamingoPreTrainedModel, ComposedForConditionalGeneration):
    """`model.{vision_tower, bridge, language_model}` plus `lm_head`. Interleaved text and images; generate() runs
    the tower once and passes the resampled media on to every decoding step. `from_vision_text_pretrained(vision,
    text, cross_attn_every_n_layers=4, num_latents=64, ...)` puts a new resampler and new gated blocks (gates at 0)
    between a pretrained tower and a pretrained causal LM, both kept as they are."""

    _model_class = HfMmFlamingoModel
    images_live_in_cache = False  # every later token cross-attends to its latest image

    @classmethod
    def prepare_tokenizer(cls, tokenizer):
        tokenizer = prepare_flamingo_tokenizer(tokenizer)
        ids = {"image_token_id": IMAGE_TOKEN, "end_of_chunk_token_id": END_OF_CHUNK}
        return tokenizer, {key: tokenizer.convert_tokens_to_ids(token) for key, token in ids.items()}

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        cache: Cache | None = None,  # transformers >= 5.24 name
        inputs_embeds: torch.Tensor | None = None,
        image_hidden_states: torch.Tensor | None = None,
        media_offsets: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> ComposedCausalLMOutputWithPast:
        past_key_values = take_cache(past_key_values, cache)
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,  # the inner model takes both names; this one never warns
            inputs_embeds=inputs_embeds,
            image_hidden_states=image_hidden_states,
            media_offsets=media_offsets,
            **{**kwargs, "return_dict": True},
        )
        return self.head_forward(outputs, input_ids, labels, logits_to_keep, **kwargs)

    def prepare_inputs_for_generation(self, input_ids, inputs_embeds=None, next_sequence_length=None, **kwargs):
        """The generic preparation, plus `media_offsets`: the `<image>` tokens already behind the cache."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, inputs_embeds=inputs_embeds, next_sequence_length=next_sequence_length, **kwargs
        )
        current = model_inputs.get("input_ids")
        if current is not None:
            count = lambda ids: (ids == self.config.image_token_id).sum(1)  # noqa: E731
            model_inputs["media_offsets"] = count(input_ids) - count(current)
        return model_inputs

    def _update_model_kwargs_for_generation(self, outputs, model_kwargs, *args, **kwargs):
        """Carry the resampled media to the next step: the tower and resampler run once per generate() call."""
        model_kwargs = super()._update_model_kwargs_for_generation(outputs, model_kwargs, *args, **kwargs)
        model_kwargs["image_hidden_states"] = outputs.image_hidden_states
        return model_kwargs


__all__ = [
    "FlamingoBridge",
    "GatedCrossAttentionBlock",
    "HfMmFlamingoForConditionalGeneration",
    "HfMmFlamingoModel",
    "HfMmFlamingoPreTrainedModel",
    "find_decoder_layers",
]
