import pytest
import torch
from peft import LoraConfig, get_peft_model

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm.roles import role_parameters
from hf_mm.training.stages import (
    STAGES,
    RoleSettings,
    apply_stage,
    get_stage,
    lora_target_modules,
    modules_to_save,
    param_groups,
)
from tests.modeling.helpers import UNUSED_TOWER_PARTS, make_case


def tiny_model():
    config, processor, inputs = make_case("clip", "llama", "mlp2x_gelu", vision_feature_layer=-1)
    torch.manual_seed(0)
    return HfMmLlavaForConditionalGeneration(config), inputs


def one_step(model, inputs, groups):
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(groups)
    model.train()
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    optimizer.step()
    return {name for name, p in model.named_parameters() if not torch.equal(before[name], p)}


@pytest.mark.parametrize("stage_name", sorted(STAGES))
def test_each_preset_changes_exactly_its_roles(stage_name):
    model, inputs = tiny_model()
    stage = apply_stage(model, stage_name)
    changed = one_step(model, inputs, param_groups(model, stage, lr=0.1))
    roles = role_parameters(model)
    expected = {
        name
        for role, named in roles.items()
        if stage[role].trainable
        for name, _ in named
        if not UNUSED_TOWER_PARTS.match(name)
    }
    assert changed == expected
    assert {"bridge"} <= {role for role in roles if stage[role].trainable}
    for role, items in roles.items():  # frozen roles stay in eval mode through model.train(), with no grad
        if not stage[role].trainable:
            assert all(not p.requires_grad for _, p in items)
    for role, module in {"vision": model.model.vision_tower, "llm": model.model.language_model}.items():
        assert all(sub.training == stage[role].trainable for sub in module.modules()), role


def test_a_later_stage_unfreezes_and_restores_train_mode():
    model, inputs = tiny_model()
    apply_stage(model, "align")
    apply_stage(model, "full")
    model.train()
    assert model.model.vision_tower.training and all(p.requires_grad for p in model.parameters())


def test_role_learning_rates_become_parameter_groups():
    model, _ = tiny_model()
    stage = apply_stage(model, "instruct", bridge=RoleSettings(trainable=True, lr=1e-3))
    groups = {g["role"]: g for g in param_groups(model, stage, lr=2e-5)}
    assert set(groups) == {"bridge", "llm"}
    assert (groups["bridge"]["lr"], groups["llm"]["lr"]) == (1e-3, 2e-5)
    bridge_params = {id(p) for p in model.model.bridge.parameters()}
    assert {id(p) for p in groups["bridge"]["params"]} == bridge_params


def test_lora_on_the_llm_keeps_the_bridge_trained_in_full():
    model, inputs = tiny_model()
    stage = apply_stage(model, "instruct", llm=RoleSettings(trainable=True, lora=True))
    targets = lora_target_modules(model, stage)
    assert targets and all(t.startswith("model.language_model.") for t in targets)
    assert modules_to_save(model, stage) == ["model.bridge"]
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=targets, modules_to_save=["model.bridge"]))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(("lora_" in n and "language_model" in n) or "model.bridge" in n for n in trainable)
    assert any("model.bridge" in n for n in trainable)
    roles = role_parameters(peft_model)  # every parameter, adapters included, still has a role
    assert any("lora_A" in n for n, _ in roles["llm"])
    changed = one_step(peft_model, inputs, [p for p in peft_model.parameters() if p.requires_grad])
    assert changed and changed <= trainable


@pytest.mark.parametrize(
    "stage, kwargs, match",
    [("warmup", {}, r"Unknown stage='warmup'. Allowed: \['align'"), ("align", {"audio": RoleSettings()}, "audio")],
)
def test_bad_stages_are_rejected(stage, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_stage(stage, **kwargs)


def test_roles_resolve_on_a_model_without_an_inner_model():
    # The dual-encoder layout (#4): towers and projections at the top, `logit_scale` a bare parameter.
    class DualEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_tower, self.text_tower = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            self.visual_projection = torch.nn.Linear(2, 2)
            self.logit_scale = torch.nn.Parameter(torch.ones(()))

    roles = role_parameters(DualEncoder())
    assert {role: {n for n, _ in named} for role, named in roles.items()} == {
        "vision": {"vision_tower.weight", "vision_tower.bias"},
        "bridge": {"visual_projection.weight", "visual_projection.bias", "logit_scale"},
        "text": {"text_tower.weight", "text_tower.bias"},
    }
