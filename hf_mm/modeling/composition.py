"""The composition core every generative family builds on: vision_tower -> bridge -> language_model, plus lm_head.

No family subclasses another; each subclasses these three bases and writes only what is really its own (its
bridge, its image features, and its forward when it is not plain prefix fusion: Flamingo's cross-attention, Qwen's
M-RoPE). What lives here, once:
- composition from pretrained parts, with the same loading keywords in every family: `dtype`, `device_map` and
  `attn_implementation` go to both towers, `quantization_config` to the LM only (the tower, the bridge and the head
  stay in full precision, and the saved config lists them as skipped, so a 4-bit composite reloads as it was);
- the tokenizer hook (`prepare_tokenizer`) and the resize of the LM's embeddings to the prepared tokenizer;
- the placeholder mask, the count check and the scatter of visual features (prefix fusion);
- the LM decoder call and its outputs;
- the head, the loss and `logits_to_keep`, and the generate() rules (`heads.CausalLMHeadMixin`).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, GenerationMixin, PreTrainedModel
from transformers.utils.import_utils import torch_compilable_check

from ..tokens import IMAGE_TOKEN, prepare_tokenizer, stop_at_end_of_turn
from .compat import CACHE_NAME, MultimodalBaseModelOutputWithPast, MultimodalCausalLMOutputWithPast
from .heads import CausalLMHeadMixin
from .initialization import GuardedInitMixin
from .safetensors_only import SafetensorsOnlyMixin
from .towers import embedding_weight_name, load_causal_lm, load_vision_tower, split_causal_lm, tower_from_config

# Roles that composition keeps in full precision. bitsandbytes matches skip entries as prefixes of full module
# names, so they must be full paths ("vision_tower" alone would not match "model.vision_tower").
FULL_PRECISION_ROLES = ("model.vision_tower", "model.bridge", "lm_head")


@dataclass
class ComposedModelOutputWithPast(MultimodalBaseModelOutputWithPast):
    """`last_hidden_state` (B, L, D) of the LM; `image_outputs` / `video_outputs`: the vision path's output, whose
    `pooler_output` holds the bridge outputs the LM received (`image_hidden_states`, as in transformers' LLaVA)."""

    @property
    def image_hidden_states(self) -> torch.Tensor | None:
        return None if self.image_outputs is None else self.image_outputs.pooler_output


@dataclass
class ComposedCausalLMOutputWithPast(MultimodalCausalLMOutputWithPast):
    """transformers' multimodal causal-LM output; `image_hidden_states` as in `ComposedModelOutputWithPast`."""

    @property
    def image_hidden_states(self) -> torch.Tensor | None:
        return None if self.image_outputs is None else self.image_outputs.pooler_output


def loading_kwargs(dtype=None, device_map=None, attn_implementation=None) -> dict:
    """The `from_pretrained` keywords both towers get; unset ones are left to each tower's own default."""
    kwargs = {"dtype": dtype, "device_map": device_map, "attn_implementation": attn_implementation}
    return {key: value for key, value in kwargs.items() if value is not None}


def check_config_kwargs(config_class, config_kwargs: dict) -> None:
    """Refuse a composition keyword that is no field of the family's config: a config would store it silently, and
    a misspelled setting (or a loading keyword of another library) would then do nothing."""
    fields = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(config_kwargs) - fields)
    if unknown:
        raise TypeError(
            f"{unknown} are not fields of {config_class.__name__}, nor composition keywords (dtype, device_map, "
            f"attn_implementation, quantization_config). Its fields: {sorted(fields - {'vision_config', 'text_config'})}."
        )


def skip_non_lm_roles(quantization_config):
    """A copy of the LM's quantization config that also names the full-precision roles, so that reloading the
    saved composite quantizes exactly what was quantized at composition: the LM's linear layers."""
    quantization_config = copy.deepcopy(quantization_config)
    skip = list(quantization_config.llm_int8_skip_modules or [])
    quantization_config.llm_int8_skip_modules = skip + [m for m in FULL_PRECISION_ROLES if m not in skip]
    return quantization_config


class ComposedPreTrainedModel(GuardedInitMixin, SafetensorsOnlyMixin, PreTrainedModel):
    """The flags every composed family shares; a family adds `config: <its config class>` and `_init_weights`."""

    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = ["past_key_values", "cache"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


class ComposedModel(ComposedPreTrainedModel):
    """`vision_tower`, `bridge` and `language_model` (the bare decoder), without the head; returns
    `last_hidden_state`, which TRL's fused-head loss reads."""

    def __init__(self, config):
        super().__init__(config)
        self.vision_tower = self.build_vision_tower(config)
        self.bridge = self.build_bridge(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    @staticmethod
    def build_vision_tower(config) -> nn.Module:
        return tower_from_config(config.vision_config)

    @staticmethod
    def build_bridge(config) -> nn.Module:
        raise NotImplementedError("A family's model builds its bridge from its config.")

    def attach_parts(self) -> None:
        """Re-attach what links the roles after composition replaced a tower (Flamingo's hooks, Qwen's M-RoPE)."""

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_placeholder_mask(self, input_ids, inputs_embeds, token_id: int | None = None) -> torch.Tensor:
        """(B, L) bool mask of `token_id` (default `<image>`) positions, from the ids or, without ids, by matching
        the placeholder's embedding."""
        token_id = self.config.image_token_id if token_id is None else token_id
        if input_ids is not None:
            return input_ids == token_id
        token = torch.tensor(token_id, device=inputs_embeds.device)
        return (inputs_embeds == self.get_input_embeddings()(token)).all(-1)

    @staticmethod
    def scatter_features(inputs_embeds, placeholder_mask, features: torch.Tensor, name: str = "image"):
        """`inputs_embeds` (B, L, D) with `features` (N_tokens, D) written at the placeholders, in order; refuses
        a count mismatch with the numbers (the wording TRL's hint looks for)."""
        n_tokens, n_features = placeholder_mask.sum(), features.shape[0]
        # A tensor check, not `int(...)`: under torch.compile it is a hint instead of a host sync and a graph break.
        torch_compilable_check(
            n_tokens == n_features,
            lambda: (
                f"Image features and image tokens do not match: {name} tokens: {int(n_tokens)}, features: "
                f"{n_features}. Build the text with this model's processor, which expands each placeholder into "
                "exactly the number of tokens the bridge emits, and pass one image per placeholder."
            ),
        )
        features = features.to(inputs_embeds.device, inputs_embeds.dtype)
        return inputs_embeds.masked_scatter(placeholder_mask.unsqueeze(-1), features)

    def prefix_forward(self, input_ids, pixel_values, inputs_embeds, past_key_values, image_kwargs: dict):
        """Prefix fusion: ((B, L, D) embeddings with the bridge outputs at the `<image>` placeholders, the image
        features output, whose `pooler_output` is the (B_img, N, D) bridge outputs, or None). Refuses placeholders
        without pixels (unless the cache holds them)."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)  # (B, L, D)
        placeholder_mask = self.get_placeholder_mask(input_ids, inputs_embeds)
        if pixel_values is None:
            if placeholder_mask.any() and (past_key_values is None or past_key_values.get_seq_length() == 0):
                raise ValueError(
                    f"Image features and image tokens do not match: tokens: {int(placeholder_mask.sum())}, "
                    "features: 0. The text holds <image> placeholders but no pixel_values were given."
                )
            return inputs_embeds, None
        image_outputs = self.get_image_features(pixel_values, skip_unread_blocks=True, **image_kwargs)
        flat = image_outputs.pooler_output.reshape(-1, inputs_embeds.shape[-1])  # (B_img * N, D)
        return self.scatter_features(inputs_embeds, placeholder_mask, flat), image_outputs

    def decode(self, inputs_embeds, attention_mask, position_ids, past_key_values, image_outputs, **kwargs):
        """The LM decoder on the fused embeddings; `image_outputs` (the vision path's `BaseModelOutputWithPooling`,
        or None) are returned with the LM's outputs."""
        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            **{**kwargs, CACHE_NAME: past_key_values, "return_dict": True},  # our outputs are always ModelOutput
        )
        return ComposedModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=image_outputs,
        )


class ComposedForConditionalGeneration(CausalLMHeadMixin, ComposedPreTrainedModel, GenerationMixin):
    """`model.{vision_tower, bridge, language_model}` plus `lm_head`, tied to the LM embeddings when the LM ties."""

    _model_class: type[ComposedModel]

    def __init__(self, config):
        super().__init__(config)
        self.model = self._model_class(config)
        embed_dim = self.model.get_input_embeddings().embedding_dim
        self.lm_head = nn.Linear(embed_dim, config.text_config.vocab_size, bias=False)
        # The embedding's parameter name depends on the LM (embed_tokens, wte, decoder.embed_tokens ...).
        self._tied_weights_keys = {
            "lm_head.weight": f"model.language_model.{embedding_weight_name(self.model.language_model)}"
        }
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Module) -> None:
        self.lm_head = new_embeddings

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs):
        return self.model.get_image_features(pixel_values, **kwargs)

    def head_forward(self, outputs, input_ids, labels, logits_to_keep, **kwargs) -> ComposedCausalLMOutputWithPast:
        """LM head and loss on the inner model's outputs: placeholders are never loss targets, and the loss
        keywords (num_items_in_batch, shift_labels) reach transformers' loss."""
        logits, loss = self.lm_logits_and_loss(outputs.last_hidden_state, input_ids, labels, logits_to_keep, **kwargs)
        return ComposedCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: getattr(outputs, CACHE_NAME)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_outputs=getattr(outputs, "image_outputs", None),
            video_outputs=getattr(outputs, "video_outputs", None),
        )

    # Composition from pretrained parts --------------------------------------------------------------------------

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str | None,
        text_model_name_or_path: str,
        *,
        dtype=None,
        device_map=None,
        attn_implementation: str | None = None,
        quantization_config=None,
        **config_kwargs,
    ):
        """Compose a model from a pretrained vision encoder (or dual encoder) and a pretrained causal LM.

        Both towers keep their weights; the bridge is new. The LM's tokenizer is prepared by the family's
        `prepare_tokenizer` (as its processor's `from_vision_text_pretrained` does) and the embeddings are resized
        to fit. `dtype`, `device_map` and `attn_implementation` go to both towers' `from_pretrained`;
        `quantization_config` goes to the LM only. `config_kwargs` are the family config's own fields.
        """
        check_config_kwargs(cls.config_class, config_kwargs)
        load_kwargs = loading_kwargs(dtype, device_map, attn_implementation)
        vision_tower = cls.load_vision_tower(vision_model_name_or_path, config_kwargs, **load_kwargs)
        return cls.compose_with_text_model(
            vision_tower, text_model_name_or_path, quantization_config, load_kwargs, **config_kwargs
        )

    @classmethod
    def compose_with_text_model(cls, vision_tower, text_model_name_or_path, quantization_config, load_kwargs: dict,
                                **config_kwargs):  # fmt: skip
        """`compose` around a loaded vision tower and the pretrained causal LM (and its prepared tokenizer) at
        `text_model_name_or_path`, loaded with `load_kwargs` and `quantization_config`."""
        causal_lm = load_causal_lm(text_model_name_or_path, quantization_config=quantization_config, **load_kwargs)
        tokenizer, token_ids = cls.prepare_tokenizer(AutoTokenizer.from_pretrained(text_model_name_or_path))
        if len(tokenizer) > causal_lm.get_input_embeddings().num_embeddings:
            causal_lm.resize_token_embeddings(len(tokenizer))
        return cls.compose(vision_tower, causal_lm, tokenizer, **token_ids, **config_kwargs)

    @classmethod
    def load_vision_tower(cls, name_or_path: str, config_kwargs: dict, **load_kwargs) -> PreTrainedModel:
        """The pretrained vision tower (a family may take its fields from `config_kwargs`, or start a new tower
        without a path, as Qwen does)."""
        if name_or_path is None:
            raise ValueError(f"{cls.__name__} composes a pretrained vision tower: give vision_model_name_or_path.")
        return load_vision_tower(name_or_path, **load_kwargs)

    @classmethod
    def prepare_tokenizer(cls, tokenizer) -> tuple:
        """(the LM's tokenizer with `<image>` and a chat template, the config's token-id fields)."""
        tokenizer = prepare_tokenizer(tokenizer)
        return tokenizer, {"image_token_id": tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}

    @classmethod
    def compose(cls, vision_tower, causal_lm, tokenizer, **config_kwargs):
        """A model around loaded towers: `cls.config_class` from both configs plus `config_kwargs`, the towers
        moved in, a fresh bridge, and the LM's generation config with the chat template's end-of-turn stop."""
        # Keep the attention each tower resolved; building the composite config resets the shared sub-configs'.
        text_attn = causal_lm.config._attn_implementation
        vision_attn = vision_tower.config._attn_implementation
        config = cls.config_class(vision_config=vision_tower.config, text_config=causal_lm.config, **config_kwargs)
        config._attn_implementation = {"": text_attn, "text_config": text_attn, "vision_config": vision_attn}
        with torch.device("meta"):  # the towers are replaced below; don't allocate them twice
            model = cls(config)
        model.model.vision_tower = vision_tower
        model.model.language_model, model.lm_head = split_causal_lm(causal_lm)
        model.model.bridge = model.new_bridge(device=next(vision_tower.parameters()).device)
        model.generation_config = causal_lm.generation_config
        stop_at_end_of_turn(model.generation_config, tokenizer)
        if getattr(causal_lm, "hf_quantizer", None) is not None:
            model.hf_quantizer = causal_lm.hf_quantizer
            # The flags the quantizer set on the LM (read by PEFT's prepare_model_for_kbit_training and Trainer).
            for flag in ("is_quantized", "is_loaded_in_4bit", "is_loaded_in_8bit", "quantization_method"):
                if hasattr(causal_lm, flag):
                    setattr(model, flag, getattr(causal_lm, flag))
            model.config.quantization_config = skip_non_lm_roles(causal_lm.config.quantization_config)
        model.model.attach_parts()
        return model.eval()

    def new_bridge(self, device) -> nn.Module:
        """A freshly initialised bridge for `self.config`, on `device`, in the LM's floating dtype."""
        bridge = self.model.build_bridge(self.config)
        bridge.apply(self._init_weights)
        return bridge.to(device=device, dtype=self.model.get_input_embeddings().weight.dtype)


__all__ = [
    "ComposedCausalLMOutputWithPast",
    "ComposedForConditionalGeneration",
    "ComposedModel",
    "ComposedModelOutputWithPast",
    "ComposedPreTrainedModel",
    "FULL_PRECISION_ROLES",
    "check_config_kwargs",
    "loading_kwargs",
    "skip_non_lm_roles",
]
