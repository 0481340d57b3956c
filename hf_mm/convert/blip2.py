"""Import a transformers `Blip2ForConditionalGeneration` (and its `Blip2Processor`) into hf_mm_blip2.

Weights map one to one, by prefix: the vision model becomes `model.vision_tower`; the queries, the Q-Former and the
language projection become `model.bridge.{query_tokens, qformer, language_projection}`; the causal LM splits into
`model.language_model` and `lm_head`. The state dict is loaded strictly, so a key that does not map fails loudly.

transformers' Blip2 reads the vision model's final (post-layernorm) output and has no extra LayerNorm before the
Q-Former, so the import sets `vision_feature_layer="last_hidden_state"` and `vision_layernorm=False`.
"""

from transformers import Blip2ForConditionalGeneration

from ..modeling.blip2 import HfMmBlip2Config, HfMmBlip2ForConditionalGeneration
from ..modeling.blip2.init_from_bert import qformer_from_bert  # noqa: F401  (re-exported: hf_mm.convert.qformer_from_bert)
from ..processing import HfMmBlip2Processor
from .common import import_weights, load_source


def _convert_config(source) -> HfMmBlip2Config:
    if not source.use_decoder_only_language_model:
        raise ValueError(
            f"The source's language model ({source.text_config.model_type}) is an encoder-decoder (BLIP-2 with "
            "Flan-T5); hf_mm_blip2 composes causal LMs only. Convert an OPT-style BLIP-2."
        )
    return HfMmBlip2Config(
        vision_config=source.vision_config,
        qformer_config=source.qformer_config,
        text_config=source.text_config,
        num_query_tokens=source.num_query_tokens,
        image_text_hidden_size=source.image_text_hidden_size,
        vision_feature_layer="last_hidden_state",
        vision_layernorm=False,
        image_token_id=source.image_token_index,
        initializer_range=source.initializer_range,
        tie_word_embeddings=bool(getattr(source.text_config, "tie_word_embeddings", False)),
    )


def _renames(source) -> tuple[tuple[str, str], ...]:
    lm_prefix = source.language_model.base_model_prefix  # "model" for OPT and Llama, "transformer" for GPT-2
    return (
        ("vision_model.", "model.vision_tower."),
        ("query_tokens", "model.bridge.query_tokens"),
        ("qformer.", "model.bridge.qformer."),
        ("language_projection.", "model.bridge.language_projection."),
        (f"language_model.{lm_prefix}.", "model.language_model."),
        ("language_model.lm_head.", "lm_head."),
    )


def from_transformers_blip2(model_or_path, processor=None, qformer_tokenizer=None):
    """(HfMmBlip2ForConditionalGeneration, HfMmBlip2Processor | None) from a transformers Blip2 model or folder/id.

    With a path, the processor is loaded from it too; with a model object, pass its `Blip2Processor` to convert
    it. `qformer_tokenizer` (BLIP-2's is bert-base-uncased) is carried by the processor for stage-1 training; BLIP-2
    ships none, so it defaults to the LM tokenizer, which stage 2 never uses.
    """
    source, processor = load_source(model_or_path, Blip2ForConditionalGeneration, processor)
    config = _convert_config(source.config)
    model = HfMmBlip2ForConditionalGeneration(config)
    model = import_weights(model, source, _renames(source), "Blip2ForConditionalGeneration")
    if processor is None:
        return model.eval(), None
    hf_processor = HfMmBlip2Processor(
        image_processor=processor.image_processor,
        tokenizer=processor.tokenizer,
        qformer_tokenizer=qformer_tokenizer or processor.tokenizer,
        chat_template=processor.chat_template,
        num_query_tokens=config.num_query_tokens,
        image_token=str(processor.image_token),
    )
    return model.eval(), hf_processor


__all__ = ["from_transformers_blip2", "qformer_from_bert"]
