"""Export to transformers' own classes, where one computes exactly the same function: the checkpoint then loads
in any process, without hf_mm, through the Auto* classes and transformers' own processor.

Each mapping is an inverse of an importer in `hf_mm.convert` and states the conditions under which it is exact.
A model outside them is refused with the reason; the way to share it is hf_mm's remote-code export
(`hf-mm push`), never an approximation. Weights are renamed by prefix and loaded strictly, so a key that has no
place fails instead of being dropped.

| hf_mm | transformers | exact when |
|---|---|---|
| hf_mm_llava | LlavaForConditionalGeneration | `mlp2x_gelu` bridge at the LM width; integer feature layers; the tower has 0 or 1 prefix tokens, or `full` |
| hf_mm_blip2 | Blip2ForConditionalGeneration | a BLIP-2 vision tower read at its final output, no extra LayerNorm |
| hf_mm_qwen2_5_vl | Qwen2_5_VLForConditionalGeneration | a Qwen2 LM behind the Qwen2.5 ViT |
| hf_mm_clip | CLIPModel / SiglipModel | CLIP towers with projections (infonce) / SigLIP towers without (sigmoid), pooled by the towers |
"""

from __future__ import annotations

import os
from collections.abc import Callable

from transformers import (
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    CLIPModel,
    CLIPProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    SiglipModel,
)

from .convert import blip2 as blip2_import
from .convert import clip as clip_import
from .convert import llava as llava_import
from .convert import qwen2_5_vl as qwen_import
from .convert.common import rename
from .modeling.clip.configuration_clip import resolve_pooling
from .modeling.llava.configuration_llava import num_prefix_tokens


class NotExportable(ValueError):
    """The model has no exactly equivalent transformers class; the message says why and what to do instead."""


def _refuse(model, reason: str) -> NotExportable:
    return NotExportable(
        f"{type(model).__name__} cannot be exported to a transformers class without changing what it computes: "
        f"{reason}. Share it with hf_mm's own format instead (`hf-mm push`, which loads with `import hf_mm` or "
        "through remote code)."
    )


def _inverse(renames) -> tuple[tuple[str, str], ...]:
    return tuple((new, old) for old, new in renames)


def _load(native, model, renames):
    """`native` with `model`'s weights renamed by prefix and loaded strictly; in `model`'s dtype, eval mode."""
    native = native.to(model.dtype)
    native.load_state_dict({rename(k, renames): v for k, v in model.state_dict().items()}, strict=True)
    if getattr(model, "generation_config", None) is not None:
        native.generation_config = model.generation_config
    return native.eval()


# LLaVA ---------------------------------------------------------------------------------------------------------


def _llava_strategy(model) -> str:
    config = model.config
    layers = (
        config.vision_feature_layer if isinstance(config.vision_feature_layer, list) else [config.vision_feature_layer]
    )
    if config.bridge_type != "mlp2x_gelu":
        raise _refuse(model, f"bridge_type={config.bridge_type!r} (LlavaForConditionalGeneration has mlp2x_gelu)")
    if model.model.bridge.linear_1.out_features != config.text_config.hidden_size:
        raise _refuse(model, "the bridge's hidden width differs from the LM's (transformers' projector uses it)")
    if not all(isinstance(layer, int) for layer in layers):
        raise _refuse(model, f"vision_feature_layer={config.vision_feature_layer!r} reads a named tower output")
    if config.vision_feature_select_strategy == "full":
        return "full"
    prefix = num_prefix_tokens(config.vision_config)
    if prefix > 1:
        raise _refuse(model, f"the tower has {prefix} prefix tokens; transformers' `default` drops exactly one")
    return "default" if prefix == 1 else "full"


def _llava(model, processor):
    strategy = _llava_strategy(model)
    config = model.config
    native_config = LlavaConfig(
        vision_config=config.vision_config.to_dict(),
        text_config=config.text_config.to_dict(),
        image_token_index=config.image_token_id,
        vision_feature_layer=config.vision_feature_layer,
        vision_feature_select_strategy=strategy,
        projector_hidden_act="gelu",
        multimodal_projector_bias=config.bridge_bias,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    native = _load(LlavaForConditionalGeneration(native_config), model, _inverse(llava_import._RENAMES))
    if processor is None:
        return native, None
    return native, LlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        patch_size=processor.patch_size,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=num_prefix_tokens(config.vision_config),
        chat_template=processor.chat_template,
        image_token=processor.image_token,
    )


# BLIP-2 --------------------------------------------------------------------------------------------------------


def _blip2(model, processor):
    config = model.config
    if config.vision_config.model_type != "blip_2_vision_model":
        raise _refuse(model, f"the vision tower is {config.vision_config.model_type!r}, not BLIP-2's own")
    if config.vision_feature_layer != "last_hidden_state" or config.vision_layernorm:
        raise _refuse(model, "the Q-Former reads the tower through hf_mm's LayerNorm or from an inner layer")
    native_config = Blip2Config(
        vision_config=config.vision_config.to_dict(),
        qformer_config=config.qformer_config.to_dict(),
        text_config=config.text_config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=config.image_text_hidden_size,
        image_token_index=config.image_token_id,
        initializer_range=config.initializer_range,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    native = Blip2ForConditionalGeneration(native_config)
    renames = _inverse(blip2_import._renames(native))
    native = _load(native, model, renames)
    if processor is None:
        return native, None
    return native, Blip2Processor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        num_query_tokens=config.num_query_tokens,
        chat_template=processor.chat_template,
    )


# Qwen2.5-VL ----------------------------------------------------------------------------------------------------


def _qwen2_5_vl(model, processor):
    config = model.config
    if config.text_config.model_type != "qwen2":
        raise _refuse(model, f"the LM is {config.text_config.model_type!r}; Qwen2_5_VL's text model is Qwen2")
    vision = {field: getattr(config.vision_config, field) for field in qwen_import._VISION_FIELDS}
    text = config.text_config.to_dict()
    text["rope_parameters"] = {
        **text["rope_parameters"],
        "rope_type": "default",
        "mrope_section": config.mrope_section,
    }
    native_config = Qwen2_5_VLConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=config.image_token_id,
        video_token_id=config.video_token_id,
        vision_start_token_id=config.vision_start_token_id,
        tie_word_embeddings=config.tie_word_embeddings,
    )
    native = _load(Qwen2_5_VLForConditionalGeneration(native_config), model, _inverse(qwen_import._RENAMES))
    if processor is None:
        return native, None
    # transformers' Qwen2_5_VLProcessor cannot be built without torchvision (its video processor), so the parts
    # are exported: the tokenizer, and transformers' PIL image processor with hf_mm's sizes (the same function).
    ours = processor.image_processor
    size = {"shortest_edge": ours.size["shortest_edge"], "longest_edge": ours.size["longest_edge"]}
    images = Qwen2VLImageProcessorPil(size=size, patch_size=ours.patch_size, temporal_patch_size=ours.temporal_patch_size,
                                      merge_size=ours.merge_size)  # fmt: skip
    return native, [processor.tokenizer, images]


# CLIP / SigLIP -------------------------------------------------------------------------------------------------


def _clip(model, processor):
    config = model.config
    towers = (config.vision_config.model_type, config.text_config.model_type)
    pooled = all(
        resolve_pooling(c, p, f) == "pooler"
        for c, p, f in ((config.vision_config, config.vision_pooling, "vision_pooling"),
                        (config.text_config, config.text_pooling, "text_pooling"))
    )  # fmt: skip
    if towers == ("clip_vision_model", "clip_text_model") and config.loss_type == "infonce" and pooled:
        if config.projection_dim is None:
            raise _refuse(model, "CLIPModel has projections; this model has none")
        native_class, processor_class = CLIPModel, CLIPProcessor
        native_config = native_class.config_class(
            vision_config=config.vision_config.to_dict(),
            text_config=config.text_config.to_dict(),
            projection_dim=config.projection_dim,
            logit_scale_init_value=config.logit_scale_init_value,
        )
    elif towers == ("siglip_vision_model", "siglip_text_model") and config.loss_type == "sigmoid" and pooled:
        if config.projection_dim is not None:
            raise _refuse(model, "SiglipModel has no projections; this model has them")
        native_class, processor_class = SiglipModel, None
        native_config = native_class.config_class(
            vision_config=config.vision_config.to_dict(), text_config=config.text_config.to_dict()
        )
    else:
        raise _refuse(model, f"towers {towers} with loss_type={config.loss_type!r} are neither CLIP nor SigLIP")
    native = _load(native_class(native_config), model, _inverse(clip_import._RENAMES))
    if processor is None or processor_class is None:
        return native, processor
    return native, processor_class(image_processor=processor.image_processor, tokenizer=processor.tokenizer)


EXPORTERS: dict[str, Callable] = {
    "hf_mm_llava": _llava,
    "hf_mm_blip2": _blip2,
    "hf_mm_qwen2_5_vl": _qwen2_5_vl,
    "hf_mm_clip": _clip,
}


def to_transformers(model, processor=None):
    """(transformers model, transformers processor) computing exactly what `model` computes, or `NotExportable`
    naming the reason. The processor is None without one, and for Qwen2.5-VL the list [tokenizer, image processor]
    (transformers' processor class needs torchvision). See the table in this module's docstring."""
    exporter = EXPORTERS.get(model.config.model_type)
    if exporter is None:
        reason = f"transformers has no class for {model.config.model_type!r} (exportable: {sorted(EXPORTERS)})"
        raise _refuse(model, reason)
    return exporter(model, processor)


def export_transformers(source: str | os.PathLike, destination: str | os.PathLike) -> str:
    """Load the hf_mm checkpoint at `source`, export it, and save the transformers checkpoint (safetensors) and
    processor to `destination`. Returns the transformers class name."""
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(source)
    auto = AutoModel if config.model_type == "hf_mm_clip" else AutoModelForImageTextToText
    model = auto.from_pretrained(source)
    try:
        processor = AutoProcessor.from_pretrained(source)
    except (OSError, ValueError):
        processor = None
    native, native_processor = to_transformers(model, processor)
    native.save_pretrained(destination)
    parts = native_processor if isinstance(native_processor, list) else [native_processor]
    for part in filter(None, parts):
        part.save_pretrained(destination)
    return type(native).__name__


__all__ = ["EXPORTERS", "NotExportable", "export_transformers", "to_transformers"]
