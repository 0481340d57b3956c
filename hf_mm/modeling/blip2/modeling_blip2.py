"""BLIP-2 family: image -> vision_tower -> Q-Former (the bridge) -> query outputs as <image> prefix tokens -> LLM.

The Q-Former is transformers' `Blip2QFormerModel` (BERT layers whose self-attention is shared by the learned queries
and the text, cross-attention to the image every `cross_attention_frequency` layers for the queries only, separate
feed-forward layers for queries and text). hf_mm adds what transformers leaves out:
- the bridge is built between *any* vision tower and *any* causal LM, and is `model.bridge` (queries, Q-Former,
  text embeddings when the Q-Former reads text, projection into the LM);
- the three self-attention masks of the paper (`masks.py`) and a stage-1 model, `HfMmBlip2ForImageTextRetrieval`,
  that trains with them: ITC, ITM with hard negatives mined from the ITC similarities, and ITG;
- InstructBLIP's instruction-aware Q-Former (`qformer_config.use_qformer_text_input`): the instruction enters the
  Q-Former next to the queries, both seeing each other (the bidirectional mask).

Where this departs from the paper / LAVIS:
- ITC and ITM negatives come from the local batch (LAVIS gathers features from every GPU).
- The temperature is a log-scale `logit_scale` as in CLIP, clamped to LAVIS's range (temperature 0.001-0.5).
- The text summary token is the first text token ([CLS] with a BERT tokenizer); ITG predicts every later token
  from it and from the queries. LAVIS swaps that first token for a [DEC] token in ITG; the causal mask alone tells
  the tasks apart here, so any tokenizer works.
- Pairs that share an `image_ids` entry are all positives: ITC uses soft targets over them, and ITM never samples a
  positive as a hard negative.

Stage 2 (`HfMmBlip2ForConditionalGeneration`) is prefix fusion with the Q-Former as its bridge, on the composition
core (`modeling/composition.py`): the placeholder scatter, the LM head, generation and composition are shared.
"""

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, Blip2QFormerConfig
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPooling, ModelOutput
from transformers.utils import logging
from transformers.utils.generic import can_return_tuple

from ..compat import take_cache
from ..composition import (
    ComposedCausalLMOutputWithPast,
    ComposedForConditionalGeneration,
    ComposedModel,
    ComposedModelOutputWithPast,
    ComposedPreTrainedModel,
    loading_kwargs,
)
from ..towers import image_features_output, load_vision_tower, read_tower, tower_from_config
from .configuration_blip2 import HfMmBlip2Config
from .init_from_bert import qformer_from_bert
from .masks import qformer_attention_mask

logger = logging.get_logger(__name__)

# LAVIS clamps its temperature to [0.001, 0.5]; as a log-scale: log(1/0.5) .. log(1/0.001).
LOGIT_SCALE_RANGE = (math.log(2.0), math.log(1000.0))
LABEL_SMOOTHING = 0.1  # LAVIS's, for ITC and ITG


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, L, L) boolean mask -> additive float mask, valid for eager attention and SDPA alike.

    The Q-Former always gets a ready 4D mask: given a 2D padding mask it builds its own only when its config names an
    attention implementation, and a sub-config composed at run time may name none (padding would then be ignored).
    """
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


class QFormerTextEmbeddings(nn.Module):
    """Word + learned absolute position embeddings of the Q-Former's text (the LayerNorm is the Q-Former's own,
    applied to [queries; text] together, as BERT's embedding LayerNorm in LAVIS)."""

    def __init__(self, qformer_config):
        super().__init__()
        self.word_embeddings = nn.Embedding(
            qformer_config.vocab_size, qformer_config.hidden_size, padding_idx=qformer_config.pad_token_id
        )
        self.position_embeddings = nn.Embedding(qformer_config.max_position_embeddings, qformer_config.hidden_size)

    def forward(self, input_ids: torch.LongTensor) -> torch.Tensor:
        if input_ids.shape[1] > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"Q-Former text of {input_ids.shape[1]} tokens is longer than its {self.position_embeddings.num_embeddings}"
                " position embeddings (qformer_config.max_position_embeddings); shorten the text. It is never cut."
            )
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        return self.word_embeddings(input_ids) + self.position_embeddings(positions)[None]  # (B, T, H)


class QFormerBridge(nn.Module):
    """BLIP-2's bridge: learned queries read the tower features through the Q-Former; a linear layer projects the
    query outputs to the LM width (`output_size`; None for the stage-1 model, which has no LM)."""

    # Gathered into the composite's `_no_split_modules` by transformers: an FSDP wrap unit, never split by device_map.
    _no_split_modules = ["Blip2QFormerLayer"]

    def __init__(self, config: HfMmBlip2Config, output_size: int | None = None):
        super().__init__()
        qformer_config = config.qformer_config
        hidden, vision_hidden = qformer_config.hidden_size, config.vision_config.hidden_size
        self.num_query_tokens = config.num_query_tokens
        self.vision_layernorm = nn.LayerNorm(vision_hidden) if config.vision_layernorm else nn.Identity()
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.embeddings = QFormerTextEmbeddings(qformer_config) if qformer_config.use_qformer_text_input else None
        self.qformer = AutoModel.from_config(qformer_config)  # transformers' Blip2QFormerModel
        self.language_projection = nn.Linear(hidden, output_size) if output_size else None

    def encode(
        self,
        image_features: torch.Tensor,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mode: str = "bidirectional",
    ) -> torch.Tensor:
        """(B, N, D_v) features [+ (B, T) text] -> (B, Q [+ T], H) Q-Former outputs, text attending per `mode`."""
        dtype = self.query_tokens.dtype
        image_features = self.vision_layernorm(image_features.to(dtype))
        queries = self.query_tokens.expand(image_features.shape[0], -1, -1)  # (B, Q, H)
        embeds, mask = queries, None
        if input_ids is not None:
            if self.embeddings is None:
                raise ValueError(
                    "This Q-Former has no text path: build it with qformer_config.use_qformer_text_input=True "
                    "(InstructBLIP, or the stage-1 model) to pass Q-Former text."
                )
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            embeds = torch.cat([queries, self.embeddings(input_ids).to(dtype)], dim=1)  # (B, Q + T, H)
            mask = additive_mask(qformer_attention_mask(self.num_query_tokens, attention_mask, mode), dtype)
        outputs = self.qformer(
            query_embeds=embeds,
            query_length=self.num_query_tokens,
            attention_mask=mask,
            encoder_hidden_states=image_features,
            return_dict=True,
        )
        return outputs.last_hidden_state

    def encode_text(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, H): the Q-Former as a text-only BERT (no queries, no image), as ITC's text encoder."""
        if self.embeddings is None:
            raise ValueError("This Q-Former has no text path (qformer_config.use_qformer_text_input=False).")
        dtype = self.query_tokens.dtype
        embeds = self.embeddings(input_ids).to(dtype)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keys = attention_mask.bool()[:, None, None, :].expand(-1, 1, input_ids.shape[1], -1)  # (B, 1, T, T)
        mask = additive_mask(keys, dtype)
        outputs = self.qformer(query_embeds=embeds, query_length=0, attention_mask=mask, return_dict=True)
        return outputs.last_hidden_state

    def forward(
        self,
        image_features: torch.Tensor,
        grid_size=None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, N, D_v) tower features [+ (B, T) instruction] -> (B, Q, D_text) prefix tokens for the LM."""
        query_output = self.encode(image_features, input_ids, attention_mask)[:, : self.num_query_tokens]
        return self.language_projection(query_output)  # (B, Q, D_text)


class HfMmBlip2PreTrainedModel(ComposedPreTrainedModel):
    config: HfMmBlip2Config
    _supports_flash_attn = False  # the Q-Former's custom masks need eager or SDPA
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised: the bridge, the stage-1 heads (N(0, initializer_range), zero bias,
        LayerNorms at identity) and the queries, N(0, initializer_range) as in transformers' Blip2. The towers and
        the Q-Former's own layers are initialised by their classes through this same hook chain."""
        std = self.config.initializer_range
        if isinstance(module, QFormerBridge):
            init.normal_(module.query_tokens, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, HfMmBlip2ForImageTextRetrieval):
            init.constant_(module.logit_scale, math.log(1 / 0.07))
        else:
            super()._init_weights(module)


class HfMmBlip2Model(HfMmBlip2PreTrainedModel, ComposedModel):
    """Stage 2 without the LM head: tower -> Q-Former queries -> `<image>` placeholders -> LM decoder."""

    @staticmethod
    def build_bridge(config: HfMmBlip2Config) -> nn.Module:
        return QFormerBridge(config, output_size=config.text_config.hidden_size)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        skip_unread_blocks: bool = False,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """(B, C, H, W) pixels [+ (B, T) instruction for InstructBLIP] -> `pooler_output` (B, Q, D_text), the prefix
        tokens; the tower's `last_hidden_state` (and, when asked for, its hidden states) alongside."""
        if qformer_input_ids is not None and not self.config.instruction_aware:
            raise ValueError(
                "Got qformer_input_ids, but this model's Q-Former does not read text. Drop them, or build an "
                "instruction-aware model (qformer_config.use_qformer_text_input=True, InstructBLIP)."
            )
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        layer = self.config.vision_feature_layer
        outputs, (features,) = read_tower(
            self.vision_tower, pixel_values, [layer], skip_unread_blocks, output_hidden_states, **kwargs
        )  # (B, N, D_v)
        prefix = self.bridge(features, input_ids=qformer_input_ids, attention_mask=qformer_attention_mask)
        return image_features_output(outputs, prefix, output_hidden_states)

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
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> ComposedModelOutputWithPast:
        past_key_values = take_cache(past_key_values, cache)
        image_kwargs = {"qformer_input_ids": qformer_input_ids, "qformer_attention_mask": qformer_attention_mask}
        inputs_embeds, features = self.prefix_forward(input_ids, pixel_values, inputs_embeds, past_key_values, image_kwargs)  # fmt: skip
        return self.decode(inputs_embeds, attention_mask, position_ids, past_key_values, features, **kwargs)


class HfMmBlip2ForConditionalGeneration(HfMmBlip2PreTrainedModel, ComposedForConditionalGeneration):
    """Stage 2: `model.{vision_tower, bridge, language_model}` plus `lm_head`; the projected query outputs fill the
    `num_query_tokens` placeholders of each `<image>` as a soft visual prompt. Compose a new Q-Former between
    pretrained towers with `from_vision_text_pretrained(vision, text, qformer_config=..., num_query_tokens=...)`
    (default: a BERT-base-sized `Blip2QFormerConfig()` and 32 queries), or continue from stage 1 (`from_stage1`)."""

    _model_class = HfMmBlip2Model

    @classmethod
    def from_stage1(
        cls,
        stage1_name_or_path: str,
        text_model_name_or_path: str,
        instruction_aware: bool = False,
        dtype=None,
        device_map=None,
        attn_implementation: str | None = None,
        quantization_config=None,
    ) -> "HfMmBlip2ForConditionalGeneration":
        """Stage 2 from a trained stage-1 checkpoint (`HfMmBlip2ForImageTextRetrieval`) and a pretrained causal LM.

        The tower, the queries and the Q-Former's query path come from stage 1; the projection into the LM is new.
        Unless `instruction_aware`, the Q-Former's text path (embeddings, text feed-forward layers) is not needed and
        is left out; it stays in the stage-1 checkpoint, and the count of left-out tensors is logged.
        """
        load_kwargs = loading_kwargs(dtype, device_map, attn_implementation)
        stage1 = HfMmBlip2ForImageTextRetrieval.from_pretrained(stage1_name_or_path, **load_kwargs)
        qformer_config = copy.deepcopy(stage1.config.qformer_config)
        qformer_config.use_qformer_text_input = instruction_aware
        keep = ("num_query_tokens", "image_text_hidden_size", "vision_feature_layer", "vision_layernorm")
        model = cls.compose_with_text_model(
            stage1.vision_tower, text_model_name_or_path, quantization_config, load_kwargs,
            qformer_config=qformer_config, **{key: getattr(stage1.config, key) for key in keep},
        )  # fmt: skip
        bridge_state = stage1.bridge.state_dict()
        missing, unexpected = model.model.bridge.load_state_dict(bridge_state, strict=False)
        new = sorted({name.split(".")[0] for name in missing})
        if new != ["language_projection"]:
            raise ValueError(f"Stage-1 bridge does not fit the stage-2 bridge: missing {missing[:5]}.")
        logger.info(f"from_stage1: left out {len(unexpected)} Q-Former text-path tensors not used in stage 2.")
        return model

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
        qformer_input_ids: torch.LongTensor | None = None,
        qformer_attention_mask: torch.Tensor | None = None,
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
            qformer_input_ids=qformer_input_ids,
            qformer_attention_mask=qformer_attention_mask,
            **{**kwargs, "return_dict": True},
        )
        return self.head_forward(outputs, input_ids, labels, logits_to_keep, **kwargs)


@dataclass
class HfMmBlip2ImageTextOutput(ModelOutput):
    """Stage-1 outputs. `loss` = `loss_itc + loss_itm + loss_itg` when pairs are given with `return_loss`.

    logits_per_image (B_img, B_txt): ITC similarity (best query per text) times the logit scale.
    itm_logits (3B, 2): match / no-match logits of [positives; image + hard-negative text; hard-negative image + text].
    itg_logits (B, T, V): next-token logits of the captions.
    """

    loss: torch.Tensor | None = None
    loss_itc: torch.Tensor | None = None
    loss_itm: torch.Tensor | None = None
    loss_itg: torch.Tensor | None = None
    logits_per_image: torch.Tensor | None = None
    logits_per_text: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    itg_logits: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


class ITGHead(nn.Module):
    """BERT's LM head (transform + decoder), the decoder weight tied to the Q-Former's word embeddings."""

    def __init__(self, qformer_config):
        super().__init__()
        hidden = qformer_config.hidden_size
        self.dense = nn.Linear(hidden, hidden)
        self.layernorm = nn.LayerNorm(hidden, eps=qformer_config.layer_norm_eps)
        self.decoder = nn.Linear(hidden, qformer_config.vocab_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.layernorm(F.gelu(self.dense(hidden_states))))  # (B, T, V)


class HfMmBlip2ForImageTextRetrieval(HfMmBlip2PreTrainedModel):
    """Stage 1: `vision_tower` + `bridge` (queries, Q-Former with its text path) + the ITC, ITM and ITG heads.

    `forward(pixel_values, input_ids, attention_mask, return_loss=True)` trains all three objectives on matched
    (image, caption) pairs, `input_ids` being Q-Former (not LM) tokens. Without `return_loss` it returns the ITC
    similarities for every image-text combination; `itm_scores` gives the matching head's probabilities.
    """

    base_model_prefix = "hf_mm_blip2"

    def __init__(self, config: HfMmBlip2Config):
        config = copy.deepcopy(config)
        config.qformer_config.use_qformer_text_input = True  # ITC/ITM/ITG read captions
        config.tie_word_embeddings = True  # the ITG decoder is the Q-Former's word embeddings, as BERT's LM head
        super().__init__(config)
        hidden, embed_dim = config.qformer_config.hidden_size, config.image_text_hidden_size
        self.vision_tower = tower_from_config(config.vision_config)
        self.bridge = QFormerBridge(config)
        self.visual_projection = nn.Linear(hidden, embed_dim)
        self.text_projection = nn.Linear(hidden, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.itm_head = nn.Linear(hidden, 2)
        self.itg_head = ITGHead(config.qformer_config)
        self._tied_weights_keys = {"itg_head.decoder.weight": "bridge.embeddings.word_embeddings.weight"}
        self.post_init()

    @classmethod
    def from_vision_pretrained(
        cls,
        vision_model_name_or_path: str,
        qformer_config=None,
        text_config=None,
        num_query_tokens: int = 32,
        qformer_name_or_path: str | None = None,
        cross_attention_frequency: int = 2,
        **config_kwargs,
    ) -> "HfMmBlip2ForImageTextRetrieval":
        """A new Q-Former with its stage-1 heads on a pretrained vision tower, kept as it is.

        The Q-Former is `qformer_config` (default BERT-base-sized, random), or, as in BLIP-2, a BERT checkpoint
        `qformer_name_or_path` with new cross-attention layers every `cross_attention_frequency` layers (see
        `qformer_from_bert`, in `init_from_bert.py`). `text_config` names the LM stage 2 will use (stage 1 never builds it).
        """
        bert_state = {}
        if qformer_name_or_path is not None:
            if qformer_config is not None:
                raise ValueError("Give qformer_config (a new Q-Former) or qformer_name_or_path (BERT), not both.")
            qformer_config, bert_state = qformer_from_bert(qformer_name_or_path, cross_attention_frequency)
        vision_tower = load_vision_tower(vision_model_name_or_path)
        config = HfMmBlip2Config(
            vision_config=vision_tower.config,
            qformer_config=qformer_config if qformer_config is not None else Blip2QFormerConfig(),
            text_config=text_config,
            num_query_tokens=num_query_tokens,
            **config_kwargs,
        )
        with torch.device("meta"):  # the tower is replaced below; don't allocate it twice
            model = cls(config)
        model.vision_tower = vision_tower
        for name, module in model.named_children():
            if name != "vision_tower":  # materialise and initialise everything but the pretrained tower
                module.to_empty(device=vision_tower.device).apply(model._init_weights)
        model.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07), device=vision_tower.device))
        if bert_state:
            unexpected = model.load_state_dict(bert_state, strict=False).unexpected_keys
            if unexpected:
                raise ValueError(f"BERT weights without a place in the Q-Former: {unexpected[:5]}")
        model.tie_weights()
        return model.eval()

    def get_input_embeddings(self) -> nn.Module:
        return self.bridge.embeddings.word_embeddings

    def get_output_embeddings(self) -> nn.Module:
        return self.itg_head.decoder

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, D_v) tower features."""
        return read_tower(self.vision_tower, pixel_values, [self.config.vision_feature_layer])[1][0]

    @torch.no_grad()
    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, Q, D) L2-normalised query embeddings in the ITC space."""
        queries = self.bridge.encode(self.image_features(pixel_values))
        return F.normalize(self.visual_projection(queries), dim=-1)

    @torch.no_grad()
    def get_text_features(self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None):
        """(B, T) Q-Former tokens -> (B, D) L2-normalised summary-token embeddings in the ITC space."""
        text = self.bridge.encode_text(input_ids, attention_mask)[:, 0]
        return F.normalize(self.text_projection(text), dim=-1)

    def similarity(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        """(B_i, Q, D) x (B_t, D) -> (B_i, B_t): the best query per text, as in BLIP-2's ITC."""
        return torch.einsum("iqd,td->itq", image_embeds, text_embeds).amax(-1)

    @torch.no_grad()
    def itm_scores(self, pixel_values, input_ids, attention_mask=None) -> torch.Tensor:
        """(B,) probability that image i matches text i, from the ITM head (queries and text see each other)."""
        return self._itm_logits(self.image_features(pixel_values), input_ids, attention_mask).softmax(-1)[:, 1]

    def _itm_logits(self, features, input_ids, attention_mask) -> torch.Tensor:
        fused = self.bridge.encode(features, input_ids, attention_mask, mode="bidirectional")
        return self.itm_head(fused[:, : self.config.num_query_tokens]).mean(1)  # (B, 2), averaged over queries

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        image_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        **kwargs,
    ) -> HfMmBlip2ImageTextOutput:
        """`image_ids` (B,): pairs sharing an id are positives (same image, or same class); None: the diagonal."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        features = self.image_features(pixel_values)  # (B, N, D_v)
        if not return_loss:
            image_embeds = F.normalize(self.visual_projection(self.bridge.encode(features)), dim=-1)
            text_embeds = F.normalize(self.text_projection(self.bridge.encode_text(input_ids, attention_mask)[:, 0]), dim=-1)  # fmt: skip
            logits = self.similarity(image_embeds, text_embeds) * self.logit_scale.exp()
            return HfMmBlip2ImageTextOutput(
                logits_per_image=logits, logits_per_text=logits.t(), image_embeds=image_embeds, text_embeds=text_embeds
            )
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Stage-1 losses need one caption per image: got {pixel_values.shape[0]} images and "
                f"{input_ids.shape[0]} captions. Pass matched pairs, or call without return_loss."
            )
        ids = (
            torch.arange(len(input_ids), device=input_ids.device)
            if image_ids is None
            else image_ids.to(input_ids.device)
        )
        positives = ids[:, None] == ids[None, :]  # (B, B)
        loss_itc, logits, image_embeds, text_embeds = self._itc(features, input_ids, attention_mask, positives)
        loss_itm, itm_logits = self._itm(features, input_ids, attention_mask, logits, positives)
        loss_itg, itg_logits = self._itg(features, input_ids, attention_mask)
        return HfMmBlip2ImageTextOutput(
            loss=loss_itc + loss_itm + loss_itg,
            loss_itc=loss_itc,
            loss_itm=loss_itm,
            loss_itg=loss_itg,
            logits_per_image=logits,
            logits_per_text=logits.t(),
            itm_logits=itm_logits,
            itg_logits=itg_logits,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
        )

    def _itc(self, features, input_ids, attention_mask, positives):
        """ITC: one pass with the uni-modal mask yields both streams, which never see each other. Returns (loss,
        (B, B) logits, (B, Q, D) image and (B, D) text embeddings)."""
        q = self.config.num_query_tokens
        hidden = self.bridge.encode(features, input_ids, attention_mask, mode="unimodal")  # (B, Q + T, H)
        image_embeds = F.normalize(self.visual_projection(hidden[:, :q]), dim=-1)  # (B, Q, D)
        text_embeds = F.normalize(self.text_projection(hidden[:, q]), dim=-1)  # (B, D)
        scale = self.logit_scale.clamp(*LOGIT_SCALE_RANGE).exp()
        logits = self.similarity(image_embeds, text_embeds) * scale  # (B, B)
        targets = positives.float() / positives.sum(1, keepdim=True)
        itc = [F.cross_entropy(x, targets, label_smoothing=LABEL_SMOOTHING) for x in (logits, logits.t())]
        return (itc[0] + itc[1]) / 2, logits, image_embeds, text_embeds  # `positives` is symmetric: both directions

    def _itm(self, features, input_ids, attention_mask, logits, positives):
        """ITM: positives, plus one hard negative text per image and one hard negative image per text."""
        batch = input_ids.shape[0]
        negative_text, negative_image = hard_negatives(logits.detach(), positives)
        itm_logits = self._itm_logits(
            torch.cat([features, features, features[negative_image]]),
            torch.cat([input_ids, input_ids[negative_text], input_ids]),
            torch.cat([attention_mask, attention_mask[negative_text], attention_mask]),
        )  # (3B, 2)
        itm_labels = torch.cat([torch.ones(batch), torch.zeros(2 * batch)]).long().to(itm_logits.device)
        return F.cross_entropy(itm_logits, itm_labels), itm_logits

    def _itg(self, features, input_ids, attention_mask):
        """ITG: captions generated from the queries through the causal multimodal mask."""
        hidden = self.bridge.encode(features, input_ids, attention_mask, mode="causal")
        itg_logits = self.itg_head(hidden[:, self.config.num_query_tokens :])  # (B, T, V)
        labels = input_ids.masked_fill(attention_mask == 0, -100)[:, 1:]
        loss = F.cross_entropy(
            itg_logits[:, :-1].flatten(0, 1), labels.flatten(), ignore_index=-100, label_smoothing=LABEL_SMOOTHING
        )
        return loss, itg_logits


@torch.no_grad()
def hard_negatives(logits: torch.Tensor, positives: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each image a text, and for each text an image, sampled in proportion to softmax(ITC similarity) among
    the non-positives (B,) each. A row with no negative at all (every pair in the batch positive) raises."""
    if positives.all(1).any() or positives.all(0).any():
        raise ValueError(
            "ITM needs a negative for every pair, but some image or caption matches the whole batch (every "
            "image_ids entry equal). Use larger or more varied batches."
        )
    weights_i2t = logits.float().softmax(1).masked_fill(positives, 0) + (~positives) * 1e-12
    weights_t2i = logits.t().float().softmax(1).masked_fill(positives.t(), 0) + (~positives.t()) * 1e-12
    return torch.multinomial(weights_i2t, 1)[:, 0], torch.multinomial(weights_t2i, 1)[:, 0]


__all__ = [
    "HfMmBlip2PreTrainedModel",
    "HfMmBlip2Model",
    "HfMmBlip2ForConditionalGeneration",
    "HfMmBlip2ForImageTextRetrieval",
    "HfMmBlip2ImageTextOutput",
    "QFormerBridge",
    "hard_negatives",
]
