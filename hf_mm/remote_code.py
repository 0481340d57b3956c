"""`hf-mm export-remote-code DIR`: make a saved hf_mm checkpoint loadable where hf_mm is not installed.

transformers' remote code copies the module an `auto_map` entry names, plus the modules it imports *relatively
from the same folder* (`from .x import y`), into its module cache. hf_mm's modules import across packages
(`from ..bridges import ...`), so the export flattens them: every hf_mm module the family needs is written next to
the weights under its own name, and each hf_mm import is rewritten to `from .<module> import <names>`, resolving
names that a package `__init__` re-exports to the module that defines them. The rewritten files are hf_mm's source,
unchanged apart from those import lines.

`config.json` gains `auto_map` entries for every Auto class the family is registered with (read from transformers'
registry after `import hf_mm`, so the map cannot drift from `hf_mm/auto.py`), and `processor_config.json` one for
`AutoProcessor`. hf_mm's own loading never uses any of this: with `import hf_mm` the Auto classes resolve natively.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path

import transformers
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

PACKAGE = "hf_mm"
AUTO_CLASSES = (
    "AutoModel",
    "AutoModelForImageTextToText",
    "AutoModelForCausalLM",
    "AutoModelForZeroShotImageClassification",
)


def _resolve(module: str, level: int, current: str, is_package: bool) -> str:
    """The absolute name of `from <level dots><module> import ...` written in module `current`."""
    if level == 0:
        return module
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_package(name: str) -> bool:
    return Path(importlib.import_module(name).__file__).name == "__init__.py"


def _hf_mm_imports(name: str) -> list[tuple[ast.ImportFrom, str]]:
    """(node, absolute module) for every `from <hf_mm module> import ...` anywhere in module `name`."""
    tree = ast.parse(Path(importlib.import_module(name).__file__).read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(node.module or "", node.level, name, _is_package(name))
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                found.append((node, target))
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
            raise ValueError(f"{name} uses `import {PACKAGE}...`; the export only rewrites `from ... import` forms.")
    return found


def _origin(module: str, symbol: str) -> str:
    """The hf_mm module that defines `symbol`, following a package's re-exports (or a submodule named so)."""
    if not _is_package(module):
        return module
    for node, target in _hf_mm_imports(module):
        if any((alias.asname or alias.name) == symbol for alias in node.names):
            original = next(alias.name for alias in node.names if (alias.asname or alias.name) == symbol)
            return _origin(target, original)
    submodule = f"{module}.{symbol}"
    if importlib.util.find_spec(submodule) is not None:
        raise ValueError(f"Importing the submodule {submodule} as a name is not supported by the export.")
    raise ValueError(f"Cannot find where {module} gets {symbol!r}.")


def _flat_name(module: str) -> str:
    return module.rsplit(".", 1)[-1]


def _rewrite(name: str) -> tuple[str, set[str]]:
    """Module `name`'s source with each hf_mm import replaced by same-folder imports, and the modules it needs."""
    lines = Path(importlib.import_module(name).__file__).read_text().splitlines(keepends=True)
    needed: set[str] = set()
    edits = []
    for node, target in _hf_mm_imports(name):
        by_module: dict[str, list[str]] = {}
        for alias in node.names:
            origin = _origin(target, alias.name)
            needed.add(origin)
            spelled = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
            by_module.setdefault(origin, []).append(spelled)
        indent = " " * node.col_offset
        new = "".join(f"{indent}from .{_flat_name(m)} import {', '.join(names)}\n" for m, names in by_module.items())
        edits.append((node.lineno - 1, node.end_lineno, new))
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = [new]
    return "".join(lines), needed


def _registered(config_class: type) -> dict[str, type]:
    """Auto class name -> the hf_mm class that `hf_mm/auto.py` registered for `config_class`."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    found = {"AutoConfig": config_class}
    for auto_name in AUTO_CLASSES:
        model_class = getattr(transformers, auto_name)._model_mapping._extra_content.get(config_class)
        if model_class is not None:
            found[auto_name] = model_class
    processor_class = PROCESSOR_MAPPING._extra_content.get(config_class)
    if processor_class is not None:
        found["AutoProcessor"] = processor_class
    return found


def _write_modules(model_dir: Path, roots: set[str]) -> list[str]:
    """Write `roots` and every hf_mm module they need, flattened, into `model_dir`."""
    todo, done, names = sorted(roots), {}, {}
    while todo:
        module = todo.pop()
        if module in done:
            continue
        source, needed = _rewrite(module)
        flat = _flat_name(module)
        if names.setdefault(flat, module) != module:
            raise ValueError(f"Two hf_mm modules flatten to {flat}.py: {names[flat]} and {module}.")
        done[module] = source
        todo.extend(sorted(needed - set(done)))
    for module, source in done.items():
        (model_dir / f"{_flat_name(module)}.py").write_text(source)
    return sorted(f"{_flat_name(module)}.py" for module in done)


def _add_auto_map(path: Path, entries: dict[str, type]) -> None:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data["auto_map"] = {**data.get("auto_map", {}), **{name: f"{_flat_name(c.__module__)}.{c.__name__}" for name, c in entries.items()}}  # fmt: skip
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def export_remote_code(model_dir: str | Path) -> list[str]:
    """Write the flattened modules and the `auto_map`s into `model_dir`; returns the module files written."""
    from . import auto  # noqa: F401  (the registry this reads)

    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"{model_dir} has no config.json: save an hf_mm model there first.")
    model_type = json.loads(config_path.read_text()).get("model_type", "")
    config_class = CONFIG_MAPPING[model_type] if model_type in CONFIG_MAPPING else None
    if config_class is None or not config_class.__module__.startswith(PACKAGE + "."):
        raise ValueError(f"{model_dir} holds model_type={model_type!r}, which is not an hf_mm family.")
    registered = _registered(config_class)
    written = _write_modules(model_dir, {cls.__module__ for cls in registered.values()})
    processor = {k: v for k, v in registered.items() if k == "AutoProcessor"}
    _add_auto_map(config_path, {k: v for k, v in registered.items() if k != "AutoProcessor"})
    if processor and (model_dir / "processor_config.json").is_file():
        _add_auto_map(model_dir / "processor_config.json", processor)
    return written
