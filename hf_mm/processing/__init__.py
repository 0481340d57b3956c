from ..tokens import (
    END_OF_CHUNK,
    IMAGE_TOKEN,
    default_chat_template,
    prepare_flamingo_tokenizer,
    prepare_qwen_tokenizer,
    prepare_tokenizer,
)
from .image_processing_qwen2_5_vl import HfMmQwen2_5_VLImageProcessor
from .processing_blip2 import HfMmBlip2Processor
from .processing_clip import HfMmClipProcessor
from .processing_flamingo import HfMmFlamingoProcessor
from .processing_llava import HfMmLlavaProcessor
from .processing_qwen2_5_vl import HfMmQwen2_5_VLProcessor

__all__ = [
    "HfMmBlip2Processor",
    "HfMmClipProcessor",
    "HfMmFlamingoProcessor",
    "END_OF_CHUNK",
    "prepare_flamingo_tokenizer",
    "HfMmLlavaProcessor",
    "HfMmQwen2_5_VLImageProcessor",
    "HfMmQwen2_5_VLProcessor",
    "IMAGE_TOKEN",
    "default_chat_template",
    "prepare_qwen_tokenizer",
    "prepare_tokenizer",
]
