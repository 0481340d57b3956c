"""Import a transformers `LlavaForConditionalGeneration` (and its `LlavaProcessor`) into hf_mm_llava.

Weights map one to one: `multi_modal_projector.linear_{1,2}` becomes `bridge.linear_{1,2}` of the `mlp2x_gelu`
bridge; every other key keeps its name. The state dict is loaded strictly, so a key that does not map fails loudly
instead of being dropped. The in-memory source is read after transformers has converted any legacy key layout.
"""

from transformers import LlavaForConditionalGeneration

from ..modeling.llava import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration
from ..modeling.llava.configuration_llava import num_prefix_tokens
from ..processing import HfMmLlavaProcessor
from .common import import_weights, load_source

_RENAMES = (("model.multi_modal_projector.", "model.bridge."),)


def _convert_config(source) -> HfMmLlavaConfig:
    if source.projector_hidden_act != "gelu":
        raise ValueError(
            f"projector_hidden_act={source.projector_hidden_act!r}: hf_mm's mlp2x_gelu bridge is exact GELU only."
        )
    if source.vision_feature_select_strategy == "default" and num_prefix_tokens(source.vision_config) != 1:
        raise ValueError(
            "The source drops exactly one token with vision_feature_select_strategy='default', but its "
            f"{source.vision_config.model_type} tower has {num_prefix_tokens(source.vision_config)} prefix tokens; "
            "hf_mm drops exactly the prefix, so the outputs would differ. Convert a 'full'-strategy model instead."
        )
    return HfMmLlavaConfig(
        vision_config=source.vision_config,
        text_config=source.text_config,
        bridge_type="mlp2x_gelu",
        bridge_bias=source.multimodal_projector_bias,
        vision_feature_layer=source.vision_feature_layer,
        vision_feature_select_strategy=source.vision_feature_select_strategy,
        image_token_id=source.image_token_id,
        tie_word_embeddings=source.tie_word_embeddings,
    )


def from_transformers_llava(model_or_path, processor=None):
    """(HfMmLlavaForConditionalGeneration, HfMmLlavaProcessor | None) from a transformers Llava model or folder/id.

    With a path, the processor is loaded from it too; with a model object, pass its `LlavaProcessor` to convert it.
    """
    source, processor = load_source(model_or_path, LlavaForConditionalGeneration, processor)
    config = _convert_config(source.config)
    model = import_weights(HfMmLlavaForConditionalGeneration(config), source, _RENAMES)
    return model, (_convert_processor(processor, config) if processor is not None else None)


def _convert_processor(processor, config: HfMmLlavaConfig) -> HfMmLlavaProcessor:
    return HfMmLlavaProcessor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        chat_template=processor.chat_template,
        patch_size=config.vision_config.patch_size,
        num_additional_image_tokens=config.num_additional_image_tokens,
        bridge_type=config.bridge_type,
        bridge_settings=config.bridge_settings(),
        image_token=processor.image_token,
    )


__all__ = ["from_transformers_llava"]
