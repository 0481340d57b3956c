from .processing_clip import HfMmClipProcessor
from .processing_llava import HfMmLlavaProcessor
from .tokenization import IMAGE_TOKEN, default_chat_template, prepare_tokenizer

__all__ = ["HfMmClipProcessor", "HfMmLlavaProcessor", "IMAGE_TOKEN", "default_chat_template", "prepare_tokenizer"]
