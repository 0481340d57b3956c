"""Roles: which parameters are the vision tower, the bridge, the LLM (and the text tower of a dual encoder).

Resolved only from the public submodule names of design.md section 1, never from a family's private names. Modules
are looked up by name and parameters matched by identity, so a PEFT-wrapped model resolves the same way (LoRA
weights sit inside the layers they adapt, so they take that layer's role). Every parameter must fall in exactly one
role: an unassigned one is an error, not a silent omission.
"""

from torch import nn

# role -> submodule paths on the unwrapped model; a path missing from a model is skipped (not every family has all).
ROLE_MODULES: dict[str, tuple[str, ...]] = {
    "vision": ("model.vision_tower", "vision_tower"),
    # The bridge, and the heads that train with it: a dual encoder's projections, BLIP-2 stage 1's ITM/ITG heads.
    "bridge": (
        "model.bridge",
        "bridge",
        "visual_projection",
        "text_projection",
        "logit_scale",
        "logit_bias",
        "itm_head",
        "itg_head",
    ),
    "llm": ("model.language_model", "lm_head"),
    "text": ("text_tower",),
}
ROLES = tuple(ROLE_MODULES)


def unwrap(model: nn.Module) -> nn.Module:
    """The hf_mm model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _lookup(model: nn.Module, path: str) -> nn.Module | nn.Parameter | None:
    """The submodule or bare parameter (such as `logit_scale`) at `path`, or None when the model has none."""
    for getter in (model.get_submodule, model.get_parameter):
        try:
            return getter(path)
        except AttributeError:
            pass
    return None


def parameters_of(item: nn.Module | nn.Parameter) -> list[nn.Parameter]:
    """The parameters a role entry holds: a module's, or the bare parameter itself."""
    return [item] if isinstance(item, nn.Parameter) else list(item.parameters())


def role_paths(model: nn.Module) -> dict[str, list[str]]:
    """role -> the submodule (or bare parameter) paths this model has for it."""
    base, found = unwrap(model), {}
    for role, paths in ROLE_MODULES.items():
        present = [path for path in paths if _lookup(base, path) is not None]
        if present:
            found[role] = present
    return found


def role_modules(model: nn.Module) -> dict[str, list[nn.Module | nn.Parameter]]:
    """role -> the submodules (or bare parameters) that hold it, for the roles this model has."""
    base = unwrap(model)
    return {role: [_lookup(base, path) for path in paths] for role, paths in role_paths(model).items()}


def role_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """role -> [(full parameter name, parameter)], covering every parameter of `model` exactly once."""
    modules, owner = role_modules(model), {}
    for role, items in modules.items():
        for item in items:
            for param in parameters_of(item):
                owner.setdefault(id(param), role)
    roles: dict[str, list[tuple[str, nn.Parameter]]] = {role: [] for role in modules}
    unassigned = []
    for name, param in model.named_parameters():
        if id(param) in owner:
            roles[owner[id(param)]].append((name, param))
        else:
            unassigned.append(name)
    if unassigned:
        raise ValueError(
            f"{len(unassigned)} parameters belong to no role ({unassigned[:5]} ...). hf_mm models expose only "
            f"{sorted(ROLE_MODULES)} through the submodules {sorted(p for ps in ROLE_MODULES.values() for p in ps)}."
        )
    return roles


__all__ = ["ROLES", "ROLE_MODULES", "parameters_of", "role_paths", "role_modules", "role_parameters", "unwrap"]
