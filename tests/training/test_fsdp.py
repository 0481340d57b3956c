"""FSDP2 on 2 CPU processes (gloo), with the wrap units and settings of `recipes/accelerate/fsdp.yaml`, for every
generative family. `test_accelerate_fsdp.py` runs the same recipe through `accelerate launch` and the Trainer (LLaVA);
this module drives PyTorch's FSDP2 (`fully_shard`) directly, as accelerate would configure it from the recipe, so that
each family's wrap units, bf16 mixed precision and a plain training loop are checked without the Trainer: every
module class in the model's `_no_split_modules` is a unit (TRANSFORMER_BASED_WRAP), the recipe's
`fsdp_reshard_after_forward`, and a sharded state dict saved with `torch.distributed.checkpoint` (SHARDED_STATE_DICT).
The model is a composed LLaVA: frozen tower, trained bridge, and the LM trained fully (and, in
a second run, through LoRA: the loss again equals one process, and the LM's base weights do not move).

Shown: the per-step loss on 2 ranks (2 samples each) equals the single-process run on the same 4-sample batch to
1e-5; the frozen tower is unchanged; a sharded checkpoint resumes (the next step's loss equals the uninterrupted
run's) and consolidates into safetensors that AutoModelForImageTextToText loads with the single-process model's
logits; bf16 mixed precision trains to losses within 2e-2 of fp32.

The other generative families (BLIP-2, Flamingo, Qwen2.5-VL) run in the same launch, each wrapped by its own
`_no_split_modules` (tower block, decoder layer, Q-Former layer, gated cross-attention block): the LM trained fully
and through LoRA, each against one process; the tower frozen; the consolidated state dict loads through the Auto class
with the single-process model's logits.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest
import torch
import yaml

ROOT = pathlib.Path(__file__).parents[2]
RECIPE = yaml.safe_load((ROOT / "recipes/accelerate/fsdp.yaml").read_text())["fsdp_config"]
STEPS, LR = 3, 0.05


def build(lora: bool = False):
    """The composed LLaVA of `instruct`: frozen tower, trained bridge, the LM trained fully or through LoRA."""
    from hf_mm import HfMmLlavaForConditionalGeneration
    from hf_mm.training.setup import HfMmArguments, prepare_model, resolve_stage
    from tests.training.helpers import CONFIG, LORA

    torch.manual_seed(0)
    model = HfMmLlavaForConditionalGeneration(CONFIG)
    if lora:
        return prepare_model(model, resolve_stage(HfMmArguments(stage="instruct"), use_peft=True), LORA)
    return prepare_model(model, "instruct")


def batch() -> dict:
    """4 samples of one image each (16 placeholders) and 8 text tokens; labels on the text."""
    from tests.training.helpers import CONFIG

    generator = torch.Generator().manual_seed(1)
    text = torch.randint(5, 60, (4, 8), generator=generator)
    ids = torch.cat([torch.full((4, 16), CONFIG.image_token_id), text], dim=1)
    labels = ids.masked_fill(ids == CONFIG.image_token_id, -100)
    pixels = torch.randn(4, 3, 32, 32, generator=generator)  # the tiny processor's size: 16 patches
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels, "labels": labels}


OTHER_FAMILIES = ("blip2", "flamingo", "qwen2_5_vl")
# The wrap units each family must get: tower block, LM decoder layer, and the bridge's own block where it has one.
UNITS = {
    "blip2": {"CLIPEncoderLayer", "LlamaDecoderLayer", "Blip2QFormerLayer"},
    "flamingo": {"CLIPEncoderLayer", "LlamaDecoderLayer", "GatedCrossAttentionBlock"},
    "qwen2_5_vl": {"VisionBlock", "Qwen2DecoderLayer"},
}


def family_case(family: str, lora: bool = False) -> tuple[torch.nn.Module, dict]:
    """The `instruct` stage of a tiny `family` model (LM trained fully or through LoRA), and 4 samples of one image
    each, labelled on their text: the conformance testers' inputs."""
    from hf_mm.training.setup import HfMmArguments, prepare_model, resolve_stage
    from tests.conformance.testers import PrefixVLMTester, QwenVLTester, generative_cases
    from tests.training.helpers import LORA

    model_class, config, _ = generative_cases()[family]
    if family == "blip2":  # dropout would draw different masks on 2 ranks than in one process
        config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = 0.0
    if family == "qwen2_5_vl":
        tester = QwenVLTester(None, lambda: config, batch_size=4)
    else:
        tester = PrefixVLMTester(None, lambda: config, {"blip2": 4, "flamingo": 1}[family], batch_size=4)
    torch.manual_seed(1)
    _, inputs = tester.prepare_config_and_inputs_for_common()
    torch.manual_seed(0)
    model = model_class(config)
    placeholders = torch.tensor(model.placeholder_token_ids())
    inputs["labels"] = inputs["input_ids"].masked_fill(torch.isin(inputs["input_ids"], placeholders), -100)
    if lora:
        return prepare_model(model, resolve_stage(HfMmArguments(stage="instruct"), use_peft=True), LORA), inputs
    return prepare_model(model, "instruct"), inputs


def rank_share(inputs: dict, rank: int) -> dict:
    """Samples 2 * rank and 2 * rank + 1 of a 4-sample batch, with their images' pixel rows (Qwen2.5-VL flattens
    patches of every image into one tensor, so a sample's share is pixel_values.shape[0] / 4 rows)."""
    rows = inputs["pixel_values"].shape[0] // 4
    mine = {key: value[2 * rank : 2 * rank + 2] for key, value in inputs.items()}
    mine["pixel_values"] = inputs["pixel_values"][2 * rank * rows : (2 * rank + 2) * rows]
    return mine


def step(model, optimizer, inputs: dict, count: int, scale: float = 1.0) -> float:
    """One SGD step on `inputs`; the loss is summed over tokens and divided by the global `count`."""
    loss = model(**inputs, num_items_in_batch=torch.tensor(count)).loss
    (loss * scale).backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.detach()


def train_alone(model, inputs: dict, steps: int) -> tuple[list[float], object]:
    """`steps` SGD steps in one process on the whole batch: the reference every sharded run must equal."""
    count = int((inputs["labels"] != -100).sum())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    return [float(step(model, optimizer, inputs, count)) for _ in range(steps)], model


def single_process(steps: int, lora: bool = False) -> tuple[list[float], object]:
    return train_alone(build(lora), batch(), steps)


def single_process_family(family: str, lora: bool = False) -> tuple[list[float], object]:
    return train_alone(*family_case(family, lora), STEPS)


def global_step(model, optimizer, mine: dict, count: int) -> float:
    """One step of a sharded run on this rank's share; returns the global batch's loss."""
    import torch.distributed as dist

    # FSDP averages gradients over ranks: scale by the world size so they sum, as the full batch's do.
    loss = step(model, optimizer, mine, count, scale=dist.get_world_size())
    dist.all_reduce(loss)  # each rank's loss is its share of the global sum / count
    return float(loss)


def shard(model, mixed_precision: bool = False):
    """The recipe's FSDP2 wrapping: every `_no_split_modules` class is a unit, then the root; SGD on the trainable."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if mixed_precision else MixedPrecisionPolicy()  # fmt: skip
    units = set(model._no_split_modules)  # the recipe's TRANSFORMER_BASED_WRAP
    wrapped = {type(module).__name__ for module in model.modules() if type(module).__name__ in units}
    for module in model.modules():
        if type(module).__name__ in units:
            fully_shard(module, reshard_after_forward=RECIPE["fsdp_reshard_after_forward"], mp_policy=policy)
    fully_shard(model, reshard_after_forward=RECIPE["fsdp_reshard_after_forward"], mp_policy=policy)
    return model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR), wrapped


def tower_of(model) -> torch.nn.Module:
    """The vision tower, wherever the family keeps it (hf_mm.roles resolves the public names)."""
    from hf_mm.roles import role_paths, unwrap

    return unwrap(model).get_submodule(role_paths(model)["vision"][0])


def family_worker(family: str, out: pathlib.Path) -> dict:
    """One family on this rank: full-LM and LoRA runs, tower check, consolidation (rank 0 saves it)."""
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    rank, record = dist.get_rank(), {}
    for lora in (False, True):
        model, inputs = family_case(family, lora)
        count, mine = int((inputs["labels"] != -100).sum()), rank_share(inputs, rank)
        model, optimizer, wrapped = shard(model)
        tower = {k: v.full_tensor().clone() for k, v in tower_of(model).state_dict().items()}
        losses = [global_step(model, optimizer, mine, count) for _ in range(STEPS)]
        frozen = all(torch.equal(v.full_tensor(), tower[k]) for k, v in tower_of(model).state_dict().items())
        record["lora" if lora else "full"] = {"losses": losses, "frozen": frozen, "units": sorted(wrapped)}
        if not lora:
            full_state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if rank == 0:
                plain, _ = family_case(family)
                plain.load_state_dict(full_state)
                plain.save_pretrained(out / family)
    return record


def worker(out: str) -> None:
    """Runs on each of the 2 ranks (torch.distributed.run): the fp32 run with its checkpoint, then bf16."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    out = pathlib.Path(out)

    def sharded(mixed_precision: bool = False, lora: bool = False):
        return shard(build(lora), mixed_precision)[:2]

    full = batch()
    count, mine = int((full["labels"] != -100).sum()), rank_share(full, rank)  # 2 samples per rank

    def train_step(model, optimizer) -> float:
        return global_step(model, optimizer, mine, count)

    model, optimizer = sharded()
    tower = {k: v.full_tensor().clone() for k, v in tower_of(model).state_dict().items()}
    losses = [train_step(model, optimizer) for _ in range(STEPS)]
    frozen = all(torch.equal(v.full_tensor(), tower[k]) for k, v in tower_of(model).state_dict().items())
    dcp.save(get_model_state_dict(model), checkpoint_id=str(out / "sharded"))  # SHARDED_STATE_DICT
    after_save = train_step(model, optimizer)

    resumed, resumed_optimizer = sharded()
    state = get_model_state_dict(resumed)
    dcp.load(state, checkpoint_id=str(out / "sharded"))
    set_model_state_dict(resumed, state)
    after_resume = train_step(resumed, resumed_optimizer)

    # Consolidate the checkpoint as saved (after STEPS steps) into a plain safetensors folder.
    dcp.load(state, checkpoint_id=str(out / "sharded"))
    set_model_state_dict(resumed, state)
    consolidated = get_model_state_dict(resumed, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    bf16, bf16_optimizer = sharded(mixed_precision=True)
    bf16_losses = [train_step(bf16, bf16_optimizer) for _ in range(STEPS)]
    lora, lora_optimizer = sharded(lora=True)
    base = {k: v.full_tensor().clone() for k, v in lora.state_dict().items() if "base_layer" in k}
    lora_losses = [train_step(lora, lora_optimizer) for _ in range(STEPS)]
    lora_base_frozen = all(torch.equal(v.full_tensor(), base[k]) for k, v in lora.state_dict().items() if k in base)
    families = {family: family_worker(family, out) for family in OTHER_FAMILIES}
    if rank == 0:
        plain = build()
        plain.load_state_dict(consolidated)
        plain.save_pretrained(out / "consolidated")
        record = {"losses": losses, "after_save": after_save, "after_resume": after_resume, "frozen": frozen,
                  "bf16_losses": bf16_losses, "lora_losses": lora_losses, "lora_base_frozen": lora_base_frozen,
                  "lora_base_weights": len(base), "families": families}  # fmt: skip
        (out / "record.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
    """One 2-process launch for both tests (starting a process group costs more than the steps)."""
    folder = tmp_path_factory.mktemp("fsdp")
    script = folder / "worker.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\nfrom tests.training.test_fsdp import worker\n"
                      f"worker({str(folder)!r})\n")  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, json.loads((folder / "record.json").read_text())


def test_fsdp2_matches_one_process_saves_sharded_resumes_and_consolidates(fsdp_run):
    from transformers import AutoModelForImageTextToText

    folder, record = fsdp_run
    expected, _ = single_process(STEPS + 1)
    print(f"FSDP2 losses {record['losses'] + [record['after_save']]}, one process {expected}")
    assert max(abs(a - b) for a, b in zip(record["losses"], expected)) < 1e-5
    assert abs(record["after_save"] - expected[STEPS]) < 1e-5 and abs(record["after_resume"] - expected[STEPS]) < 1e-5
    assert record["frozen"]
    loaded = AutoModelForImageTextToText.from_pretrained(folder / "consolidated").eval()
    _, reference = single_process(STEPS)  # the weights the sharded checkpoint holds
    inputs = {k: v for k, v in batch().items() if k != "labels"}
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, reference.eval()(**inputs).logits, atol=1e-5, rtol=1e-5)


def test_fsdp2_trains_in_bf16_mixed_precision(fsdp_run):
    _, record = fsdp_run
    expected, _ = single_process(STEPS)
    print(f"FSDP2 bf16 losses {record['bf16_losses']}, fp32 one process {expected}")
    assert all(abs(a - b) < 2e-2 for a, b in zip(record["bf16_losses"], expected))


def test_fsdp2_trains_the_lm_through_lora_like_one_process(fsdp_run):
    _, record = fsdp_run
    expected, _ = single_process(STEPS, lora=True)
    print(f"FSDP2 LoRA losses {record['lora_losses']}, one process {expected}")
    assert max(abs(a - b) for a, b in zip(record["lora_losses"], expected)) < 1e-5
    assert record["lora_base_weights"] > 0 and record["lora_base_frozen"]  # the LM's base weights never move


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_fsdp2_trains_every_family_like_one_process_and_consolidates(fsdp_run, family):
    from transformers import AutoModelForImageTextToText

    folder, record = fsdp_run
    run = record["families"][family]
    expected, reference = single_process_family(family)
    expected_lora, _ = single_process_family(family, lora=True)
    print(f"{family}: FSDP2 {run['full']['losses']} vs {expected}; LoRA {run['lora']['losses']} vs {expected_lora}")
    assert max(abs(a - b) for a, b in zip(run["full"]["losses"], expected)) < 1e-5
    assert max(abs(a - b) for a, b in zip(run["lora"]["losses"], expected_lora)) < 1e-5
    assert run["full"]["frozen"] and run["lora"]["frozen"]
    assert UNITS[family] <= set(run["full"]["units"])
    loaded = AutoModelForImageTextToText.from_pretrained(folder / family).eval()
    _, inputs = family_case(family)
    inputs.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, reference.eval()(**inputs).logits, atol=1e-5, rtol=1e-5)
