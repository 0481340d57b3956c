"""What every importer shares: take a transformers model object or load it from a folder / Hub id, rename its keys
by prefix, and load them strictly (a key that does not map fails, nothing is dropped)."""

import os

from transformers import AutoProcessor


def load_source(model_or_path, cls, processor=None, load_processor=AutoProcessor.from_pretrained):
    """(source model, processor): a `cls` object as it is (with the processor given), or `cls` and its processor
    loaded from a folder or Hub id."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return cls.from_pretrained(model_or_path), processor or load_processor(model_or_path)
    if isinstance(model_or_path, cls):
        return model_or_path, processor
    raise TypeError(f"model_or_path is a {type(model_or_path).__name__}; expected a {cls.__name__} or a path.")


def rename(key: str, renames, source_name: str | None = None) -> str:
    """`key` with its first matching `(old prefix, new prefix)` replaced. Unmatched keys stay as they are, or, with
    `source_name`, are refused (every key of that source must have a place)."""
    for old, new in renames:
        if key.startswith(old):
            return new + key[len(old) :]
    if source_name is not None:
        raise ValueError(f"Unexpected key {key!r} in the {source_name} state dict.")
    return key


def import_weights(model, source, renames, source_name: str | None = None):
    """`model` (in the source's dtype) with the source's weights, renamed and loaded strictly, and its generation
    config; in eval mode."""
    model = model.to(source.dtype)
    state = {rename(key, renames, source_name): value for key, value in source.state_dict().items()}
    model.load_state_dict(state, strict=True)
    if getattr(source, "generation_config", None) is not None and hasattr(model, "generation_config"):
        model.generation_config = source.generation_config
    return model.eval()


__all__ = ["import_weights", "load_source", "rename"]
