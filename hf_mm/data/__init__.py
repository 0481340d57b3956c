"""Data: loaders from LLaVA-JSON / ShareGPT / Hub datasets into the canonical images + messages format."""

from hf_mm.data.loaders import (
    BadRecordError,
    LoadReport,
    canonical_features,
    from_hf_dataset,
    load_llava_json,
    load_sharegpt,
)

__all__ = [
    "BadRecordError",
    "LoadReport",
    "canonical_features",
    "from_hf_dataset",
    "load_llava_json",
    "load_sharegpt",
]
