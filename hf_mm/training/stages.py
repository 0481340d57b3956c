"""Training stages as data: per role, trainable or frozen, a learning rate, and LoRA on or off.

The papers' presets:
- `align`    (LLaVA stage 1, BLIP-2 stage 2): the bridge only.
- `instruct` (LLaVA stage 2, Qwen2.5-VL SFT/DPO): the bridge and the LLM.
- `full`     (Qwen-VL stage 2): everything.
- `vision`   (Qwen-VL stage 1): the vision tower and the bridge.
- `lit`      (LiT, dual encoders): the image tower locked, the text tower and the projections trained.

`apply_stage(model, stage)` sets `requires_grad` per role and keeps frozen roles in eval mode even through later
`model.train()` calls (Trainer calls it every step), so a frozen tower's dropout and norm statistics never move.
"""

import dataclasses
import types

from torch import nn

from ..roles import ROLES, parameters_of, role_modules, role_parameters, role_paths, unwrap


@dataclasses.dataclass(frozen=True)
class RoleSettings:
    """How one role trains. `lr=None` uses the optimizer's base learning rate."""

    trainable: bool = False
    lr: float | None = None
    lora: bool = False


TRAIN, FROZEN = RoleSettings(trainable=True), RoleSettings(trainable=False)

STAGES: dict[str, dict[str, RoleSettings]] = {
    "align": {"vision": FROZEN, "bridge": TRAIN, "llm": FROZEN, "text": FROZEN},
    "instruct": {"vision": FROZEN, "bridge": TRAIN, "llm": TRAIN, "text": FROZEN},
    "full": {"vision": TRAIN, "bridge": TRAIN, "llm": TRAIN, "text": TRAIN},
    "vision": {"vision": TRAIN, "bridge": TRAIN, "llm": FROZEN, "text": FROZEN},
    "lit": {"vision": FROZEN, "bridge": TRAIN, "llm": FROZEN, "text": TRAIN},
}


def get_stage(stage: str | dict[str, RoleSettings], **overrides: RoleSettings) -> dict[str, RoleSettings]:
    """A preset by name (or a role -> RoleSettings dict), with per-role overrides, e.g. `llm=RoleSettings(True, 2e-5)`."""
    if isinstance(stage, str):
        if stage not in STAGES:
            raise ValueError(f"Unknown stage={stage!r}. Allowed: {sorted(STAGES)}.")
        stage = STAGES[stage]
    stage = {**stage, **overrides}
    unknown = sorted(set(stage) - set(ROLES))
    if unknown:
        raise ValueError(f"Unknown roles {unknown} in the stage. Allowed: {list(ROLES)}.")
    return stage


def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(self, False)


def apply_stage(model: nn.Module, stage: str | dict[str, RoleSettings], **overrides) -> dict[str, RoleSettings]:
    """Freeze or unfreeze each role of `model` as `stage` says; returns the resolved stage.

    LoRA roles are left frozen here: PEFT adds the trainable adapters (see `lora_target_modules`).
    """
    stage = get_stage(stage, **overrides)
    for role, items in role_modules(model).items():
        settings = stage.get(role, FROZEN)
        train = settings.trainable and not settings.lora
        for item in items:
            for param in parameters_of(item):
                param.requires_grad_(train)
            if isinstance(item, nn.Module):
                if settings.trainable:  # undo an earlier stage's freeze
                    item.__dict__.pop("train", None)
                    item.train(model.training)
                else:
                    item.train = types.MethodType(_eval_only_train, item)
                    item.train(False)
    return stage


def param_groups(model: nn.Module, stage: dict[str, RoleSettings], lr: float, weight_decay: float = 0.0):
    """Optimizer parameter groups, one per trainable role, each with the role's learning rate (or `lr`)."""
    groups = []
    for role, named in role_parameters(model).items():
        params = [param for _, param in named if param.requires_grad]
        if params:
            settings = stage.get(role, FROZEN)
            groups.append({"params": params, "lr": settings.lr or lr, "weight_decay": weight_decay, "role": role})
    return groups


def lora_target_modules(model: nn.Module, stage: dict[str, RoleSettings]) -> list[str]:
    """Full names of the linear layers in LoRA roles, for `LoraConfig(target_modules=...)`.

    The output head is never a target: LoRA adapts attention and MLP projections, and PEFT cannot adapt a head
    tied to the input embeddings.
    """
    lora_roles = {role for role, settings in stage.items() if settings.lora}
    head = unwrap(model).get_output_embeddings() if hasattr(unwrap(model), "get_output_embeddings") else None
    targets = []
    for role, items in role_modules(model).items():
        if role in lora_roles:
            ids = {id(m) for item in items if isinstance(item, nn.Module) for m in item.modules() if m is not head}
            targets += [n for n, m in model.named_modules() if id(m) in ids and isinstance(m, nn.Linear)]
    return targets


def _is_module(model: nn.Module, path: str) -> bool:
    try:
        return not isinstance(model.get_submodule(path), nn.Identity)
    except AttributeError:
        return False


def modules_to_save(model: nn.Module, stage: dict[str, RoleSettings]) -> list[str]:
    """Module paths of roles trained in full next to LoRA ones (PEFT's `modules_to_save`), e.g. the bridge.

    Saving them with the adapter is what keeps a merged LoRA checkpoint from dropping the projector.
    """
    paths = role_paths(model)
    full = [role for role, settings in stage.items() if settings.trainable and not settings.lora]
    # PEFT saves modules, not bare parameters: a dual encoder's logit scale stays as it is under LoRA.
    base = unwrap(model)
    return [path for role in full for path in paths.get(role, []) if _is_module(base, path)]


__all__ = [
    "RoleSettings",
    "STAGES",
    "get_stage",
    "apply_stage",
    "param_groups",
    "lora_target_modules",
    "modules_to_save",
]
