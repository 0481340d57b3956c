"""Importers from transformers and official checkpoints, one file per source."""

from .blip2 import from_transformers_blip2
from .clip import from_transformers_clip, from_transformers_siglip
from .llava import from_transformers_llava
from .qwen2_5_vl import from_transformers_qwen2_5_vl

__all__ = [
    "from_transformers_blip2",
    "from_transformers_clip",
    "from_transformers_llava",
    "from_transformers_qwen2_5_vl",
    "from_transformers_siglip",
]
