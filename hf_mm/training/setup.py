"""Model set-up shared by the SFT and DPO recipes: compose or load, quantize, apply a stage, add LoRA, group params.

Choices written down:
- With `use_peft`, every trainable LLM (and text-tower) role gets LoRA; the bridge and any other fully trained role go
  to PEFT's `modules_to_save`, so the adapter checkpoint carries them and `merge_and_unload` keeps them. LoRA on the
  vision tower is opt-in (`lora_vision`), and then the tower trains through its adapters only.
- QLoRA quantizes the LLM's linear layers only (4-bit nf4 by default). The vision tower, bridge and lm_head stay in
  full precision through full-prefix skip lists (see `HfMmLlavaForConditionalGeneration.from_vision_text_pretrained`).
- We wrap the model with PEFT ourselves instead of handing TRL a `peft_config`: the targets come from the roles, and
  TRL's QLoRA path would cast every trainable parameter (the bridge included) to bf16.
- Learning rates per role become optimizer parameter groups (`RoleOptimizerMixin`), split into decay / no-decay.
"""

import dataclasses
import os

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from transformers import AutoModelForImageTextToText, AutoProcessor, GenerationMixin
from trl import ModelConfig, get_quantization_config

from ..families import FAMILIES, get_family
from ..modeling.blip2 import HfMmBlip2ForConditionalGeneration
from ..processing import HfMmBlip2Processor
from ..roles import ROLES
from .stages import RoleSettings, apply_stage, get_stage, lora_target_modules, modules_to_save, param_groups


@dataclasses.dataclass
class HfMmArguments:
    """What to build and which stage to train; the rest comes from TRL's `ModelConfig` and the trainer config."""

    vision_model_name_or_path: str | None = dataclasses.field(
        default=None, metadata={"help": "Vision tower to compose (with text_model_name_or_path) into a new model."}
    )
    text_model_name_or_path: str | None = dataclasses.field(
        default=None, metadata={"help": "Causal LM to compose with the vision tower."}
    )
    family: str = dataclasses.field(
        default="llava", metadata={"help": f"Family of a new composition: one of {sorted(FAMILIES)}."}
    )
    bridge_type: str = dataclasses.field(
        default="mlp2x_gelu", metadata={"help": "family=llava: the prefix bridge (hf_mm.BRIDGES)."}
    )
    num_query_tokens: int = dataclasses.field(default=32, metadata={"help": "family=blip2: Q-Former queries."})
    num_latents: int = dataclasses.field(default=64, metadata={"help": "family=flamingo: resampler latents."})
    cross_attn_every_n_layers: int = dataclasses.field(
        default=4, metadata={"help": "family=flamingo: a gated block before every n-th LM layer."}
    )
    stage1_name_or_path: str | None = dataclasses.field(
        default=None,
        metadata={"help": "BLIP-2 stage 2: a stage-1 Q-Former (hf-mm qformer) + text_model_name_or_path."},
    )
    stage: str = dataclasses.field(default="instruct", metadata={"help": "align | instruct | full | vision."})
    vision_lr: float | None = dataclasses.field(default=None, metadata={"help": "Vision tower LR (else base LR)."})
    bridge_lr: float | None = dataclasses.field(default=None, metadata={"help": "Bridge LR (else base LR)."})
    llm_lr: float | None = dataclasses.field(default=None, metadata={"help": "LLM LR (else base LR)."})
    lora_vision: bool = dataclasses.field(default=False, metadata={"help": "With use_peft, LoRA on the tower too."})


def load_model_and_processor(hf_args: HfMmArguments, model_args: ModelConfig):
    """A new composition of two pretrained towers, or a saved hf_mm model (`model_name_or_path`)."""
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    quantization_config = get_quantization_config(model_args)
    composing = hf_args.vision_model_name_or_path or hf_args.text_model_name_or_path
    if composing and model_args.model_name_or_path:
        raise ValueError(
            f"Got model_name_or_path={model_args.model_name_or_path!r} and vision/text towers to compose: give "
            "either a saved hf_mm model or the two towers."
        )
    if hf_args.stage1_name_or_path:
        return _compose_blip2_stage2(hf_args, dtype, model_args.attn_implementation, quantization_config)
    if composing:
        loading = {"dtype": dtype, "attn_implementation": model_args.attn_implementation}
        return compose(hf_args, quantization_config=quantization_config, **loading)
    if not model_args.model_name_or_path:
        raise ValueError("Give model_name_or_path (a saved hf_mm model), or vision_ and text_model_name_or_path.")
    kwargs = {"dtype": dtype, "attn_implementation": model_args.attn_implementation}
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    model = AutoModelForImageTextToText.from_pretrained(model_args.model_name_or_path, **kwargs)
    return model, AutoProcessor.from_pretrained(model_args.model_name_or_path)


def compose(hf_args: HfMmArguments, **loading):
    """(model, processor) of `hf_args.family` between the two towers: the family's settings (its
    `compose_settings`) go to both the model's and the processor's `from_vision_text_pretrained`; a setting of
    another family that was changed from its default is refused rather than ignored."""
    family = get_family(hf_args.family)
    if family.generation_class is None:
        raise ValueError(f"family={family.name!r} is a dual encoder: train it with `hf-mm contrastive`.")
    towers = (hf_args.vision_model_name_or_path, hf_args.text_model_name_or_path)
    if not towers[1]:  # the vision tower is the family's to require (Qwen2.5-VL may start a new ViT)
        raise ValueError(
            "Composing needs text_model_name_or_path (and, for most families, vision_model_name_or_path)."
        )
    _check_settings(hf_args, family)
    settings = {name: getattr(hf_args, name) for name in family.compose_settings}
    model = family.generation_class.from_vision_text_pretrained(*towers, **loading, **settings)
    processor_settings = {name: settings[name] for name in family.processor_settings}
    return model, family.processor_class.from_vision_text_pretrained(*towers, **processor_settings)


def _check_settings(hf_args: HfMmArguments, family) -> None:
    """Refuse a composition setting that belongs to another family (it would be silently ignored)."""
    if hf_args.bridge_type in ("qformer", "gated_cross_attn"):
        name = "blip2" if hf_args.bridge_type == "qformer" else "flamingo"
        raise ValueError(
            f"bridge_type={hf_args.bridge_type!r} names a family, not a prefix bridge: set family: {name} instead "
            "(bridge_type picks the prefix bridge of family llava)."
        )
    defaults = {field.name: field.default for field in dataclasses.fields(HfMmArguments)}
    foreign = {
        name
        for other in FAMILIES.values()
        if other is not family
        for name in other.compose_settings
        if name not in family.compose_settings and getattr(hf_args, name) != defaults[name]
    }
    if foreign:
        raise ValueError(
            f"{sorted(foreign)} are settings of another family; family={family.name!r} takes "
            f"{list(family.compose_settings) or 'none'}. Set family to the one you mean."
        )


def _compose_blip2_stage2(hf_args: HfMmArguments, dtype, attn_implementation, quantization_config):
    """BLIP-2 stage 2: the stage-1 tower and Q-Former with a new projection into `text_model_name_or_path`."""
    if not hf_args.text_model_name_or_path or hf_args.vision_model_name_or_path:
        raise ValueError(
            "stage1_name_or_path composes with text_model_name_or_path only (the stage-1 checkpoint holds the "
            f"vision tower); got vision_model_name_or_path={hf_args.vision_model_name_or_path!r}, "
            f"text_model_name_or_path={hf_args.text_model_name_or_path!r}."
        )
    paths = (hf_args.stage1_name_or_path, hf_args.text_model_name_or_path)
    model = HfMmBlip2ForConditionalGeneration.from_stage1(
        *paths, dtype=dtype, attn_implementation=attn_implementation, quantization_config=quantization_config
    )
    return model, HfMmBlip2Processor.from_stage1(*paths)


def save_composed_base(model, processor, training_args) -> None:
    """An adapter needs its exact base. A fresh composition has no path to reload it from (and its new token rows,
    `<image>` and the chat tokens, were just initialised), so save it to `output_dir/base` and point PEFT there."""
    if model.name_or_path:
        return
    base = os.path.join(training_args.output_dir, "base")
    if training_args.process_index == 0:
        model.save_pretrained(base)
        processor.save_pretrained(base)
    model.name_or_path = model.config._name_or_path = base


def resolve_stage(hf_args, use_peft: bool) -> dict[str, RoleSettings]:
    """The stage preset with the per-role learning rates (`<role>_lr` fields of `hf_args`) and, under `use_peft`,
    LoRA on the trainable LLM / text roles (and the vision tower with `lora_vision`)."""
    stage = dict(get_stage(hf_args.stage))
    for role in ROLES:
        lr = getattr(hf_args, f"{role}_lr", None)
        if lr is not None:
            stage[role] = dataclasses.replace(stage[role], lr=lr)
    if use_peft:
        for role in ("llm", "text"):
            stage[role] = dataclasses.replace(stage[role], lora=stage[role].trainable)
        if hf_args.lora_vision:
            stage["vision"] = dataclasses.replace(stage["vision"], trainable=True, lora=True)
    return stage


def prepare_model(model, stage: dict[str, RoleSettings], model_args: ModelConfig | None = None):
    """Apply `stage` and wrap with LoRA when a role asks for it. Returns the model to hand to the trainer."""
    stage = get_stage(stage)
    quantized = getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False)
    if quantized:
        if stage["llm"].trainable and not stage["llm"].lora:
            raise ValueError(
                "The LLM is quantized, so it trains through LoRA only: set use_peft=True (or train a stage that "
                "freezes the LLM, such as 'align')."
            )
        # Casts the full-precision roles to fp32 and freezes everything; the stage then unfreezes what trains.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    stage = apply_stage(model, stage)
    if not any(settings.lora for settings in stage.values()):
        return model
    model_args = model_args or ModelConfig(use_peft=True)
    lora_config = LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=lora_target_modules(model, stage),
        modules_to_save=modules_to_save(model, stage) or None,
        use_rslora=model_args.use_rslora,
        use_dora=model_args.use_dora,
        # A dual encoder does not generate: the plain PeftModel passes its inputs through untouched.
        task_type="CAUSAL_LM" if isinstance(model, GenerationMixin) else None,
    )
    return get_peft_model(model, lora_config)


class RoleOptimizerMixin:
    """Builds the optimizer from one parameter group per trainable role (each with its stage learning rate)."""

    stage: dict[str, RoleSettings]

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(model))
            names = {id(p): n for n, p in model.named_parameters()}
            groups = []
            for group in param_groups(model, self.stage, self.args.learning_rate):
                for wd, keep in ((self.args.weight_decay, True), (0.0, False)):
                    params = [p for p in group["params"] if (names[id(p)] in decay) == keep]
                    if params:
                        groups.append({**group, "params": params, "weight_decay": wd})
            optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(groups, **kwargs)
        return self.optimizer


__all__ = ["HfMmArguments", "load_model_and_processor", "resolve_stage", "prepare_model", "RoleOptimizerMixin"]
