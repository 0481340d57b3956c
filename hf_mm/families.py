"""The family registry: each family is declared once, here, and everything that lists families reads it.

`auto.py` registers every entry with transformers' Auto* classes. The training set-up and the CLI compose a
family by name (`family: blip2` in a recipe). `compare` picks bridges and families from it, and the hub code takes
each family's card template and pipeline tag from it. `hf_mm.testing` builds each family's tiny config and
processor through it.

Adding a family means one folder (config, model, processor) and one `Family(...)` entry below. Its composition is
`generation_class.from_vision_text_pretrained`, with the loading keywords every family shares.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable

from .convert import (
    from_transformers_blip2,
    from_transformers_clip,
    from_transformers_llava,
    from_transformers_qwen2_5_vl,
    from_transformers_siglip,
)
from .modeling.blip2 import HfMmBlip2Config, HfMmBlip2ForConditionalGeneration, HfMmBlip2Model
from .modeling.clip import HfMmClipConfig, HfMmClipModel
from .modeling.flamingo import HfMmFlamingoConfig, HfMmFlamingoForConditionalGeneration, HfMmFlamingoModel
from .modeling.llava import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, HfMmLlavaModel
from .modeling.qwen2_5_vl import HfMmQwen2_5_VLConfig, HfMmQwen2_5_VLForConditionalGeneration, HfMmQwen2_5_VLModel
from .processing import (
    HfMmBlip2Processor,
    HfMmClipProcessor,
    HfMmFlamingoProcessor,
    HfMmLlavaProcessor,
    HfMmQwen2_5_VLImageProcessor,
    HfMmQwen2_5_VLProcessor,
)


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of models.

    name: what recipes, the CLI and `compare` call it (`family: llava`).
    config_class / model_class: the config and the bare model (`AutoModel`).
    generation_class: the `...ForConditionalGeneration` (`AutoModelForImageTextToText` and `AutoModelForCausalLM`),
        whose `from_vision_text_pretrained` composes the family; None for a dual encoder.
    zero_shot_class: registered with `AutoModelForZeroShotImageClassification` (dual encoders).
    processor_class / image_processor_class: `AutoProcessor` (and `AutoImageProcessor` when the family has its own).
    roles: the parameter roles its models have (training/roles.py).
    compose_settings: the composition arguments of the training CLI this family reads (`HfMmArguments` fields),
        passed to the model's `from_vision_text_pretrained`; `processor_settings`, those its processor's takes too.
    importers: `hf-mm convert NAME` -> the function that imports transformers' checkpoint.
    pipeline_tag: the Hub pipeline tag of its cards; the card template is `model_cards/<model_type>.md`.
    tiny: "module:function" pairs of hf_mm.testing's tiny config and processor (resolved lazily).
    """

    name: str
    config_class: type
    model_class: type
    processor_class: type
    roles: tuple[str, ...]
    generation_class: type | None = None
    zero_shot_class: type | None = None
    image_processor_class: type | None = None
    compose_settings: tuple[str, ...] = ()
    processor_settings: tuple[str, ...] = ()
    importers: dict[str, Callable] = dataclasses.field(default_factory=dict)
    pipeline_tag: str = "image-text-to-text"
    tiny: tuple[str, str] | None = None

    @property
    def model_type(self) -> str:
        return self.config_class.model_type

    @property
    def card_template(self) -> str:
        return f"{self.model_type}.md"

    def tiny_config(self, **kwargs):
        return _resolve(self.tiny[0])(**kwargs)

    def tiny_processor(self, config):
        return _resolve(self.tiny[1])(config)


def _resolve(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


GENERATIVE_ROLES = ("vision", "bridge", "llm")
FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Declare a family (hf_mm's own below; a plug-in's from its module). Its Auto* registration follows from
    `hf_mm.auto.register(family)`."""
    if family.name in FAMILIES and FAMILIES[family.name] != family:
        raise ValueError(f"A different family is already registered as {family.name!r}.")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family called `name`, or a ValueError that lists the registered ones."""
    if name not in FAMILIES:
        raise ValueError(f"Unknown family={name!r}. Registered families: {sorted(FAMILIES)}.")
    return FAMILIES[name]


def family_of(model_type: str) -> Family:
    """The family whose config has `model_type` (a saved checkpoint's `config.model_type`)."""
    for family in FAMILIES.values():
        if family.model_type == model_type:
            return family
    raise ValueError(f"No hf_mm family has model_type={model_type!r}; registered: {sorted(FAMILIES)}.")


register_family(Family(
    "llava", HfMmLlavaConfig, HfMmLlavaModel, HfMmLlavaProcessor, GENERATIVE_ROLES,
    generation_class=HfMmLlavaForConditionalGeneration, compose_settings=("bridge_type",), processor_settings=("bridge_type",),
    importers={"llava": from_transformers_llava}, tiny=("hf_mm.testing:tiny_llava_config", "hf_mm.testing:tiny_llava_processor"),
))  # fmt: skip
register_family(Family(
    "blip2", HfMmBlip2Config, HfMmBlip2Model, HfMmBlip2Processor, GENERATIVE_ROLES,
    generation_class=HfMmBlip2ForConditionalGeneration, compose_settings=("num_query_tokens",), processor_settings=("num_query_tokens",),
    importers={"blip2": from_transformers_blip2}, tiny=("hf_mm.testing:tiny_blip2_config", "hf_mm.testing:tiny_blip2_processor"),
))  # fmt: skip
register_family(Family(
    "flamingo", HfMmFlamingoConfig, HfMmFlamingoModel, HfMmFlamingoProcessor, GENERATIVE_ROLES,
    generation_class=HfMmFlamingoForConditionalGeneration, compose_settings=("num_latents", "cross_attn_every_n_layers"),
    tiny=("hf_mm.testing:tiny_flamingo_config", "hf_mm.testing:tiny_flamingo_processor"),
))  # fmt: skip
register_family(Family(
    "qwen2_5_vl", HfMmQwen2_5_VLConfig, HfMmQwen2_5_VLModel, HfMmQwen2_5_VLProcessor, GENERATIVE_ROLES,
    generation_class=HfMmQwen2_5_VLForConditionalGeneration, image_processor_class=HfMmQwen2_5_VLImageProcessor,
    importers={"qwen2_5_vl": from_transformers_qwen2_5_vl},
    tiny=("hf_mm.testing:tiny_qwen2_5_vl_config", "hf_mm.testing:tiny_qwen2_5_vl_processor"),
))  # fmt: skip
register_family(Family(
    "clip", HfMmClipConfig, HfMmClipModel, HfMmClipProcessor, ("vision", "bridge", "text"),
    zero_shot_class=HfMmClipModel, pipeline_tag="zero-shot-image-classification",
    importers={"clip": from_transformers_clip, "siglip": from_transformers_siglip},
    tiny=("hf_mm.testing:tiny_clip_config", "hf_mm.testing:tiny_clip_processor"),
))  # fmt: skip


def importers() -> dict[str, Callable]:
    """Every `hf-mm convert` source: name -> importer."""
    return {name: importer for family in FAMILIES.values() for name, importer in family.importers.items()}


__all__ = ["FAMILIES", "Family", "family_of", "get_family", "importers", "register_family"]
