"""Weights load from safetensors only: nothing hf_mm loads is unpickled.

transformers falls back to `pytorch_model.bin` (a pickle, read with `torch.load(weights_only=True)`) when a
checkpoint has no safetensors. hf_mm's documented choice is stricter: every hf_mm model class and every tower it
loads passes `use_safetensors=True`, so a pickle-only checkpoint is refused with an error that says how to convert
it. Passing `use_safetensors=False` explicitly is refused too.
"""

from __future__ import annotations

from .compat import keep_matched_weight_conversions

CONVERT_HINT = (
    "hf_mm loads safetensors weights only and never unpickles. Convert the checkpoint once, in an environment you "
    "trust: load it with transformers and `save_pretrained` it again (safetensors is the default)."
)


def safetensors_kwargs(name_or_path, kwargs: dict) -> dict:
    """`kwargs` for `from_pretrained` with `use_safetensors=True`; refuses an explicit `use_safetensors=False`."""
    if kwargs.get("use_safetensors") is False:
        raise ValueError(f"use_safetensors=False was asked for {name_or_path!r}. {CONVERT_HINT}")
    return {**kwargs, "use_safetensors": True}


def load_safetensors(load, name_or_path, *args, **kwargs):
    """`load(name_or_path, *args, use_safetensors=True, ...)`, with the refusal of a pickle-only checkpoint
    re-raised as a ValueError that names the folder and the fix."""
    try:
        return load(name_or_path, *args, **safetensors_kwargs(name_or_path, kwargs))
    except OSError as error:
        if "safetensors" not in str(error) and ".bin" not in str(error):
            raise
        raise ValueError(f"{name_or_path!r} has no safetensors weights. {CONVERT_HINT}") from error


class SafetensorsOnlyMixin:
    """For hf_mm's PreTrainedModel classes: `from_pretrained` reads safetensors only (see the module docstring), and
    the model keeps only the key conversions its checkpoint used, so that it saves under hf_mm's names whatever
    loaded it (`compat.keep_matched_weight_conversions`: transformers' ZeRO-3 loader keeps them all)."""

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        loaded = load_safetensors(super().from_pretrained, pretrained_model_name_or_path, *args, **kwargs)
        keep_matched_weight_conversions(loaded[0] if isinstance(loaded, tuple) else loaded)  # output_loading_info
        return loaded
