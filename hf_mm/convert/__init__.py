"""Importers from transformers and official checkpoints, one file per source."""

from .llava import from_transformers_llava

__all__ = ["from_transformers_llava"]
