"""Hub publishing: model cards filled from the checkpoint and its training record, and one-commit pushes.

What a card says comes from files, never from hand-typed text:
- `config.json` (and `base/config.json` under an adapter): family, towers, bridge;
- the safetensors headers: parameter counts by role (read without loading a tensor);
- `hf_mm_training.json`, which the training CLIs write next to the weights (`training_record`): the stage and the
  roles it trained, LoRA / QLoRA settings, steps, learning rate, datasets, final loss and scorer results;
- the towers' own cards, where they are local or in the Hub cache: their licences.

Pushes go through the real `huggingface_hub` client: `push` uploads weights, config, processor, chat template and
the card in one commit. Only safetensors, JSON, text and Jinja files travel: pickles (`training_args.bin`,
optimizer and RNG states) are never uploaded, and a folder whose weights exist only as pickles is refused.
The token comes from `huggingface_hub`'s own mechanisms (`HF_TOKEN`, `hf auth login`, or `token=` here) and is
never written to a card, a config, a log or an error message.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import os
import re
import tempfile
from pathlib import Path

import jinja2
from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, try_to_load_from_cache
from safetensors import safe_open

from .families import family_of
from .roles import ROLE_MODULES

logger = logging.getLogger(__name__)

TRAINING_RECORD = "hf_mm_training.json"
TEMPLATES = Path(__file__).parent / "model_cards"
# What a push uploads. Everything else (checkpoints, pickles, logs) stays local; skipped files are reported.
UPLOADED = ("*.safetensors", "*.safetensors.index.json", "*.json", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.py")
PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt")
SKIPPED_DIRS = ("checkpoint-*", "runs", ".*", "__pycache__")
ROLE_NAMES = {"vision": "vision tower", "bridge": "bridge", "llm": "language model", "text": "text tower"}
REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


# ---------------------------------------------------------------- the training record


def write_training_record(output_dir: str | os.PathLike, record: dict) -> None:
    Path(output_dir, TRAINING_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def read_training_record(model_dir: str | os.PathLike) -> dict | None:
    path = Path(model_dir, TRAINING_RECORD)
    return json.loads(path.read_text()) if path.is_file() else None


# ---------------------------------------------------------------- parameter counts from safetensors headers


def _tensor_shapes(model_dir: Path, filename: str) -> dict[str, list[int]]:
    """name -> shape for every tensor saved in `filename` (or the shards its `.index.json` lists), headers only."""
    index = model_dir / f"{filename}.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else [filename]
    shapes = {}
    for name in files:
        if not (model_dir / name).is_file():
            continue
        with safe_open(model_dir / name, framework="pt") as handle:
            shapes.update({key: handle.get_slice(key).get_shape() for key in handle.keys()})  # noqa: SIM118
    return shapes


def role_of(name: str) -> str:
    """The role a saved parameter belongs to, from the public module paths of `hf_mm.training.roles`."""
    name = name.removeprefix("base_model.model.")  # PEFT's prefix in adapter files
    for role, paths in ROLE_MODULES.items():
        if any(name == path or name.startswith(path + ".") for path in paths):
            return role
    return "other"


def parameter_counts(model_dir: str | os.PathLike, filename: str = "model.safetensors") -> dict[str, int]:
    """role -> number of saved parameters (a tied output head is saved, hence counted, once)."""
    counts: dict[str, int] = {}
    for name, shape in _tensor_shapes(Path(model_dir), filename).items():
        role = role_of(name)
        counts[role] = counts.get(role, 0) + math.prod(shape)
    return counts


# ---------------------------------------------------------------- licences of the towers


def tower_licence(name_or_path: str | None) -> str | None:
    """The licence in a tower's card, from a local folder or the local Hub cache; never from the network."""
    if not name_or_path:
        return None
    readme = Path(name_or_path, "README.md")
    if not readme.is_file() and REPO_ID.match(name_or_path):
        cached = try_to_load_from_cache(name_or_path, "README.md")
        readme = Path(cached) if isinstance(cached, str) else readme
    if not readme.is_file():
        return None
    return ModelCard.load(readme).data.license


# ---------------------------------------------------------------- model cards


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _has_local_base(model_dir: Path) -> bool:
    """An adapter folder that carries its base composition in `base/` (a fresh composition has no other home)."""
    return (model_dir / "adapter_config.json").is_file() and (model_dir / "base" / "config.json").is_file()


def _display(name: str) -> str:
    """A tower's name for the card: a Hub id as is; a local folder by its last component (paths stay private)."""
    return name if REPO_ID.match(name) and not Path(name).exists() else f"a local checkpoint (`{Path(name).name}`)"


def _licence_fields(licences: dict[str, str | None]) -> tuple[str | None, str]:
    """(card metadata licence, sentence for the card) from the towers' licences."""
    known = {role: licence for role, licence in licences.items() if licence}
    listed = ", ".join(f"{role}: `{licence}`" for role, licence in known.items())
    if not known:
        return None, "Unknown: the towers' cards were not available locally; check their licences before use."
    unknown = sorted(set(licences) - set(known))
    suffix = f"; unknown for {', '.join(unknown)}" if unknown else ""
    if len(set(known.values())) == 1 and not unknown:
        return next(iter(known.values())), f"Inherited from the towers ({listed})."
    return "other", f"Combined from the towers ({listed}{suffix}); the most restrictive applies."


def _eval_results(record: dict | None) -> list[EvalResult]:
    return [
        EvalResult(
            task_type="visual-question-answering",
            dataset_type=row["dataset"],
            dataset_name=row["dataset"],
            dataset_split=row.get("split"),
            metric_type=row["metric"],
            metric_value=row["value"],
        )  # fmt: skip
        for row in (record or {}).get("eval", [])
    ]


def _training_status(record: dict | None) -> dict[str, str]:
    """role -> "trained" / "trained through LoRA" / "frozen", as the recorded stage set it."""
    status = {}
    for role, settings in (record or {}).get("stage", {}).items():
        lora = settings.get("lora") and (record or {}).get("lora")
        status[role] = "trained through LoRA" if lora else "trained" if settings.get("trainable") else "frozen"
    return status


def card_context(model_dir: str | os.PathLike, repo_id: str | None = None, base_repo: str | None = None) -> dict:
    """Everything a template may use, read from the folder: config, parameter counts, adapter, training record."""
    from transformers import AutoConfig

    model_dir = Path(model_dir)
    adapter = _read_json(model_dir / "adapter_config.json")
    base_in_repo = _has_local_base(model_dir)
    base_dir = model_dir / "base" if base_in_repo else model_dir
    config = AutoConfig.from_pretrained(
        adapter["base_model_name_or_path"] if adapter and not base_in_repo else base_dir
    )
    record = read_training_record(model_dir)
    bases = (record or {}).get("base_models", {})
    counts = parameter_counts(base_dir) if (base_dir / "config.json").is_file() else {}
    params = {role: counts[role] for role in (*ROLE_MODULES, "other") if role in counts}
    return {
        "repo_id": repo_id or model_dir.resolve().name,
        "config": config,
        "family": config.model_type,
        "params": params,
        "total_params": sum(params.values()),
        "adapter": adapter,
        "adapter_params": parameter_counts(model_dir, "adapter_model.safetensors") if adapter else {},
        "base_repo": base_repo or (adapter or {}).get("base_model_name_or_path"),
        "record": record,
        "bases": {role: _display(name) for role, name in bases.items()},
        "licences": {role: tower_licence(name) for role, name in bases.items()},
        "role_names": ROLE_NAMES,
        "training_status": _training_status(record),
    }


def model_card(model_dir: str | os.PathLike, repo_id: str | None = None, base_repo: str | None = None) -> ModelCard:
    """The card for a saved hf_mm model or adapter folder, rendered from `model_cards/<model_type>.md`. `base_repo`
    names where an adapter's base is published (else its `adapter_config.json` says)."""
    context = card_context(model_dir, repo_id, base_repo)
    template = TEMPLATES / family_of(context["family"]).card_template
    if not template.is_file():
        raise ValueError(f"No model card template for model_type={context['family']!r} in {TEMPLATES}.")
    licence, licence_text = _licence_fields(context["licences"])
    hub_bases = [name for name in (context["record"] or {}).get("base_models", {}).values() if REPO_ID.match(name) and not Path(name).exists()]  # fmt: skip
    data = ModelCardData(
        license=licence,
        library_name="peft" if context["adapter"] else "transformers",
        pipeline_tag=family_of(context["family"]).pipeline_tag,
        tags=["hf_mm", context["family"], "vision-language"] + (["lora"] if context["adapter"] else []),
        base_model=hub_bases or None,
        model_name=context["repo_id"],
        eval_results=_eval_results(context["record"]) or None,
    )
    common = jinja2.Template((TEMPLATES / "_common.md").read_text()).render(licence_text=licence_text, **context)
    return ModelCard.from_template(
        data, template_path=str(template), licence_text=licence_text, common=common.strip(), **context
    )


def save_model_card(model_dir: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Write the card as `README.md` into the folder (the training CLIs do this after saving)."""
    path = Path(model_dir, "README.md")
    base_repo = f"{repo_id}-base" if repo_id and _has_local_base(Path(model_dir)) else None
    model_card(model_dir, repo_id, base_repo).save(path)
    return path


# ---------------------------------------------------------------- push


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def files_to_upload(model_dir: Path) -> tuple[list[str], list[str]]:
    """(relative paths to upload, relative paths left out). Refuses a folder whose weights are pickles only."""
    upload, left_out = [], []
    for root, dirs, files in os.walk(model_dir):
        dirs[:] = sorted(d for d in dirs if not _matches(d, SKIPPED_DIRS))
        for name in sorted(files):
            if name.startswith("."):  # hidden files (the run's write lock) are bookkeeping, not the model
                continue
            relative = Path(root, name).relative_to(model_dir).as_posix()
            if relative != "README.md":  # the card is generated afresh on every push
                (upload if _matches(name, UPLOADED) else left_out).append(relative)
    weights = [name for name in upload if name.endswith(".safetensors")]
    pickled = [name for name in left_out if _matches(Path(name).name, PICKLES) and "model" in Path(name).name]
    if pickled and not weights:
        raise ValueError(
            f"{model_dir} holds weights only as pickle files ({', '.join(pickled)}). hf_mm pushes safetensors only: "
            "load the model and save_pretrained it again (safetensors is the default), then push."
        )
    return upload, left_out


def _save_objects(objects, folder: str) -> None:
    for item in objects if isinstance(objects, (tuple, list)) else (objects,):
        item.save_pretrained(folder)


def push(
    source, repo_id: str, *, token: str | None = None, private: bool | None = None, revision: str | None = None,
    commit_message: str | None = None, create_pr: bool = False, base_repo: str | None = None,
):  # fmt: skip
    """Upload a saved folder (or a model / (model, processor) tuple, saved to a temporary folder first) with its
    generated card to `repo_id`, in one commit. An adapter folder whose base composition sits in `base/` (a fresh
    composition has no other home) first pushes that base as its own model repo, `<repo_id>-base`, and its
    `adapter_config.json` then names that repo, so PEFT and transformers resolve the base the standard way.
    An adapter whose base is any other local folder needs `base_repo`, the repo where that base is published.
    Returns the adapter's (or model's) `CommitInfo`."""
    if not isinstance(source, (str, os.PathLike)):
        with tempfile.TemporaryDirectory() as folder:
            _save_objects(source, folder)
            return push(folder, repo_id, token=token, private=private, revision=revision,
                        commit_message=commit_message, create_pr=create_pr)  # fmt: skip
    model_dir = Path(source)
    if not (model_dir / "config.json").is_file() and not (model_dir / "adapter_config.json").is_file():
        raise ValueError(f"{model_dir} has no config.json or adapter_config.json: save the model there first.")
    upload, left_out = files_to_upload(model_dir)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name)) for name in upload]
    adapter = _read_json(model_dir / "adapter_config.json")
    if adapter and _has_local_base(model_dir):
        base_repo = f"{repo_id}-base"
        push(model_dir / "base", base_repo, token=token, private=private, revision=revision,
             commit_message=f"Base composition of the adapter {repo_id}", create_pr=create_pr)  # fmt: skip
    elif adapter and base_repo is None and Path(adapter["base_model_name_or_path"]).exists():
        raise ValueError(
            f"The adapter in {model_dir} was trained on the local folder {Path(adapter['base_model_name_or_path']).name}"
            "/, which nobody else can load. Push that base first (hf-mm push BASE_DIR USER/BASE) and pass "
            "base_repo='USER/BASE' (hf-mm push --base-repo USER/BASE)."
        )
    if adapter and base_repo:
        adapter["base_model_name_or_path"] = base_repo
        operations = [op for op in operations if not op.path_in_repo.startswith("base/")]
        operations = [op for op in operations if op.path_in_repo != "adapter_config.json"]
        operations.append(CommitOperationAdd("adapter_config.json", json.dumps(adapter, indent=2).encode()))
    card = model_card(model_dir, repo_id, base_repo=base_repo if adapter else None)
    if left_out:
        logger.warning("Not uploading %d file(s) (pickles, logs, old cards): %s", len(left_out), ", ".join(left_out))
    operations.append(CommitOperationAdd("README.md", str(card).encode()))
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    message = commit_message or f"Upload {card.data.tags[1]} model with hf_mm"
    return api.create_commit(repo_id, operations, commit_message=message, revision=revision, create_pr=create_pr)
