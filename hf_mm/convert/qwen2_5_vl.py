"""Import a transformers `Qwen2_5_VLForConditionalGeneration` into hf_mm_qwen2_5_vl.

The ViT keeps its parameter names (`model.visual.*` -> `model.vision_tower.*`), the merger becomes the bridge
(`model.visual.merger.*` -> `model.bridge.*`), and the text model loads into a plain Qwen2 LM whose rotary
embedding hf_mm wraps with M-RoPE. transformers has already mapped a checkpoint's legacy layout (`visual.*`,
`model.layers.*`) to these in-memory names when it loaded the source, so both saved layouts import. Loading is
strict: a key that does not map fails instead of being dropped.
"""

from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration, Qwen2Config

from ..modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig
from ..modeling.qwen2_5_vl.configuration_qwen2_5_vl import HfMmQwen2_5_VLConfig
from ..modeling.qwen2_5_vl.modeling_qwen2_5_vl import HfMmQwen2_5_VLForConditionalGeneration
from ..processing.image_processing_qwen2_5_vl import HfMmQwen2_5_VLImageProcessor
from ..processing.processing_qwen2_5_vl import HfMmQwen2_5_VLProcessor
from ..tokens import prepare_qwen_tokenizer
from .common import import_weights, load_source

_RENAMES = (("model.visual.merger.", "model.bridge."), ("model.visual.", "model.vision_tower."))
_VISION_FIELDS = (
    "depth", "hidden_size", "intermediate_size", "num_heads", "hidden_act", "in_channels", "patch_size",
    "temporal_patch_size", "spatial_merge_size", "window_size", "fullatt_block_indexes", "tokens_per_second",
    "out_hidden_size", "initializer_range",
)  # fmt: skip
_TEXT_FIELDS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "initializer_range",
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip


def convert_config(source) -> HfMmQwen2_5_VLConfig:
    vision = HfMmQwen2_5_ViTConfig(**{f: getattr(source.vision_config, f) for f in _VISION_FIELDS})
    text = source.text_config
    rope = {"rope_type": "default", "rope_theta": text.rope_parameters["rope_theta"]}
    if text.rope_parameters.get("rope_type", "default") not in ("default", "mrope"):
        raise ValueError(f"rope_type={text.rope_parameters['rope_type']!r}: only plain (m)rope imports exactly.")
    fields = {f: getattr(text, f) for f in _TEXT_FIELDS if hasattr(text, f)}
    qwen2 = Qwen2Config(
        **fields, rope_parameters=rope, use_sliding_window=False, tie_word_embeddings=source.tie_word_embeddings
    )
    return HfMmQwen2_5_VLConfig(
        vision_config=vision,
        text_config=qwen2,
        mrope_section=list(text.rope_parameters["mrope_section"]),
        image_token_id=source.image_token_id,
        video_token_id=source.video_token_id,
        vision_start_token_id=source.vision_start_token_id,
        tie_word_embeddings=source.tie_word_embeddings,
    )


def from_transformers_qwen2_5_vl(model_or_path, processor=None):
    """(HfMmQwen2_5_VLForConditionalGeneration, HfMmQwen2_5_VLProcessor | None) from transformers' model or folder.

    With a path, the processor is built from the folder too: its tokenizer (Qwen's already has the vision tokens and
    chat template) and hf_mm's PIL image processor with the folder's sizes (transformers' needs torchvision).
    """
    source, processor = load_source(model_or_path, Qwen2_5_VLForConditionalGeneration, processor, _load_processor)
    model = HfMmQwen2_5_VLForConditionalGeneration(convert_config(source.config))
    return import_weights(model, source, _RENAMES), processor


def _load_processor(path) -> HfMmQwen2_5_VLProcessor | None:
    try:
        tokenizer = prepare_qwen_tokenizer(AutoTokenizer.from_pretrained(path))
    except OSError:  # a model folder without a tokenizer
        return None
    try:
        images = HfMmQwen2_5_VLImageProcessor.from_pretrained(path)
    except OSError:
        images = HfMmQwen2_5_VLImageProcessor()
    return HfMmQwen2_5_VLProcessor(image_processor=images, tokenizer=tokenizer)


__all__ = ["convert_config", "from_transformers_qwen2_5_vl"]
