"""Dataset loaders: LLaVA-Instruct JSON, ShareGPT and Hub datasets into the one format our trainer consumes.

Canonical sample (TRL's SFTTrainer format for VLMs)::

    {"images": [PIL.Image, ...],
     "messages": [{"role": "system" | "user" | "assistant",
                   "content": [{"type": "image"} | {"type": "text", "text": str}, ...]}, ...]}

Sources:
- `load_llava_json`: LLaVA-Instruct, a JSON list (or JSON Lines, by the `.jsonl`/`.ndjson` suffix) of
  `{"id", "image": path | [paths] | absent, "conversations": [{"from": "human"|"gpt"|"system", "value": str}]}`.
- `load_sharegpt`: ShareGPT as LLaMA-Factory uses it: `"messages": [{"role", "content": str}]` or
  `"conversations": [{"from", "value"}]`, plus `"images": [paths]` and an optional top-level `"system"` string.
- `from_hf_dataset`: a `datasets.Dataset` with a messages column (string content, `<image>` placeholders or typed
  parts) or prompt/completion columns, and an `images` (list) or `image` (single) column.

Choices:
- Each `<image>` placeholder (and the one newline after it, which LLaVA writes) becomes an image part at its place, in
  order. A record with images but no placeholder gets them all at the start of its first user turn (what LLaVA and
  TRL do). Any other placeholder/image count mismatch, or a placeholder in an assistant turn (the template never
  shows it to the model), is a bad record.
- Image paths resolve inside `image_root`. A path that leaves it (`..`, absolute, or a symlink) is refused before
  any file is opened: a dataset file must not be able to make us read arbitrary files.
- Images are not kept in memory: each distinct file is opened once to check that it decodes (`verify_images=False`
  skips even that), and the dataset stores its resolved path; `datasets.Image(mode=image_mode)` decodes on access.
  The dataset therefore needs the files to stay where they are. Texts are held in memory (a JSON list is parsed
  whole anyway); JSON Lines files are read line by line.
- Arrow gives every content part the same struct, so image parts read back as `{"type": "image", "text": None}`.
  That is the layout of TRL's own VLM datasets; TRL and our chat templates only look at `type`.
- A bad record raises `ValueError` naming the record index (and id), the field and the fix. With `on_error="skip"`
  it is skipped, counted in a `LoadReport` (`return_report=True`) and logged as a warning: never dropped silently.
"""

import dataclasses
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, NamedTuple

import PIL.Image
from datasets import Dataset, Features, Image, LargeList, List, Value

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
# LLaVA writes "<image>\n" before the question; the newline is layout, not text the model should see.
_PLACEHOLDER_RE = re.compile(re.escape(IMAGE_PLACEHOLDER) + r"\n?")
ROLES = ("system", "user", "assistant")
_SAME_ROLES = {r: r for r in ROLES}
_LLAVA_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}
# LLaMA-Factory's ShareGPT also accepts our own role names under "from".
_SHAREGPT_ROLES = {**_LLAVA_ROLES, **_SAME_ROLES}
OnError = Literal["raise", "skip"]
ON_ERROR = ("raise", "skip")
_REASONS_LOGGED = 5
_ERROR_COLUMN = "__hf_mm_load_error__"


@dataclasses.dataclass
class LoadReport:
    """What a load kept and skipped. `skipped` holds the full error message of every skipped record."""

    source: str
    n_records: int = 0
    n_loaded: int = 0
    skipped: list[str] = dataclasses.field(default_factory=list)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)


class BadRecordError(ValueError):
    """A record that cannot become a canonical sample. `str()` names where, which field, what and the fix."""

    def __init__(self, source: str, index: int, record_id: Any, field: str, problem: str, fix: str):
        self.index, self.record_id, self.field = index, record_id, field
        where = f"record {index}" + ("" if record_id is None else f" (id {record_id!r})")
        super().__init__(f"{source}: {where}: field {field!r}: {problem}. Fix: {fix}.")


class _Problem(Exception):
    """Raised while parsing one record, before the caller knows (or adds) the record index and id."""

    def __init__(self, field: str, problem: str, fix: str):
        super().__init__(field, problem, fix)
        self.field, self.problem, self.fix = field, problem, fix

    def at(self, source: str, index: int, record: Any) -> BadRecordError:
        record_id = record.get("id") if isinstance(record, dict) else None
        return BadRecordError(source, index, record_id, self.field, self.problem, self.fix)


class _Turn(NamedTuple):
    role: str
    content: str | list  # a string (maybe with placeholders) or typed parts
    field: str  # where the content came from, for error messages


def canonical_features(image_mode: str | None = "RGB") -> Features:
    """The `datasets.Features` of a canonical dataset: images decode to PIL (converted to `image_mode`)."""
    part = {"type": Value("string"), "text": Value("string")}
    return Features(
        {"images": List(Image(mode=image_mode)), "messages": List({"role": Value("string"), "content": List(part)})}
    )


# ---------------------------------------------------------------------------------------------------------------
# Messages: placeholders -> parts, shared by every source.


def _parts(turn: _Turn) -> list[dict]:
    if isinstance(turn.content, str):
        parts = []
        for i, chunk in enumerate(_PLACEHOLDER_RE.split(turn.content)):
            if i:
                parts.append({"type": "image"})
            if chunk:
                parts.append({"type": "text", "text": chunk})
        return parts
    parts = []
    for j, part in enumerate(turn.content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image" and not any(part.get(k) is not None for k in ("image", "url", "path")):
            parts.append({"type": "image"})
        elif kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        else:
            raise _Problem(
                f"{turn.field}[{j}]",
                f"unsupported content part {part!r}",
                "use {'type': 'image'} (the image itself goes in the images column) or {'type': 'text', 'text': str}",
            )
    return parts


def _build_messages(turns: list[_Turn], n_images: int, images_field: str) -> list[dict]:
    """Canonical messages from turns; checks that image parts and images pair up one to one."""
    messages = []
    for turn in turns:
        parts = _parts(turn)
        if turn.role == "assistant" and any(p["type"] == "image" for p in parts):
            raise _Problem(
                turn.field, "image placeholder in an assistant turn", "move the <image> placeholder to a user turn"
            )
        messages.append({"role": turn.role, "content": parts})
    n_parts = sum(p["type"] == "image" for m in messages for p in m["content"])
    if n_parts == 0 and n_images:
        first_user = next((m for m in messages if m["role"] == "user"), None)
        if first_user is None:
            raise _Problem(images_field, f"{n_images} image(s) but no user turn to put them in", "add a user turn")
        first_user["content"][:0] = [{"type": "image"} for _ in range(n_images)]
    elif n_parts != n_images:
        raise _Problem(
            images_field,
            f"{n_parts} <image> placeholder(s) in the text but {n_images} image(s)",
            f"give one {images_field!r} entry per placeholder, or remove the placeholders to put all images "
            "at the start of the first user turn",
        )
    return messages


def _turns(
    items: Any, field: str, role_key: str, text_key: str, role_map: dict[str, str], allow_parts: bool = False
) -> list[_Turn]:
    """Turns from `[{role_key: ..., text_key: str}]`; `role_map` maps source role names to ours. File formats hold
    strings only; Hub datasets may also hold typed parts (`allow_parts`)."""
    if not isinstance(items, list) or not items:
        raise _Problem(field, f"expected a non-empty list of turns, got {items!r:.80}", f"give {field!r} as a list")
    turns = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or role_key not in item or text_key not in item:
            raise _Problem(
                f"{field}[{i}]",
                f"expected {{{role_key!r}: ..., {text_key!r}: ...}}, got {item!r:.80}",
                f"give every turn a {role_key!r} and a {text_key!r}",
            )
        role, text = item[role_key], item[text_key]
        if role not in role_map:
            raise _Problem(f"{field}[{i}].{role_key}", f"unknown role {role!r}", f"use one of {sorted(role_map)}")
        if not (isinstance(text, str) or (allow_parts and isinstance(text, list))):
            raise _Problem(
                f"{field}[{i}].{text_key}",
                f"expected a string, got {type(text).__name__}",
                "give the turn's text as a string, with <image> where each image goes",
            )
        turns.append(_Turn(role_map[role], text, f"{field}[{i}].{text_key}"))
    return turns


def _image_list(record: dict, key: str) -> list[str]:
    value = record.get(key)
    paths = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise _Problem(key, f"expected a path or a list of paths, got {value!r:.80}", "give image paths as strings")
    return paths


# ---------------------------------------------------------------------------------------------------------------
# Records of each file format -> (turns, image paths, name of the image field).


def _require_object(record: Any) -> None:
    if not isinstance(record, dict):
        raise _Problem(
            "<record>", f"expected a JSON object, got {type(record).__name__}", "give one object per record"
        )


def _parse_llava(record: Any) -> tuple[list[_Turn], list[str], str]:
    _require_object(record)
    if "conversations" not in record:
        raise _Problem("conversations", "missing", "give the dialogue as 'conversations': [{'from', 'value'}, ...]")
    turns = _turns(record["conversations"], "conversations", "from", "value", _LLAVA_ROLES)
    return turns, _image_list(record, "image"), "image"


def _parse_sharegpt(record: Any) -> tuple[list[_Turn], list[str], str]:
    _require_object(record)
    if ("messages" in record) == ("conversations" in record):
        raise _Problem("messages", "need exactly one of 'messages' and 'conversations'", "keep one of the two")
    if "messages" in record:
        turns = _turns(record["messages"], "messages", "role", "content", _SAME_ROLES)
    else:
        turns = _turns(record["conversations"], "conversations", "from", "value", _SHAREGPT_ROLES)
    system = record.get("system")
    if system is not None:  # LLaMA-Factory's separate system prompt column
        if not isinstance(system, str):
            raise _Problem(
                "system", f"expected a string, got {type(system).__name__}", "give the system prompt as text"
            )
        turns.insert(0, _Turn("system", system, "system"))
    return turns, _image_list(record, "images"), "images"


def _iter_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(index, record) pairs. A JSON Lines line that does not parse is yielded as a `_Problem` (a bad record).

    Files are read as utf-8-sig: a BOM written by Windows tools would otherwise make the first record invalid JSON.
    """
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8-sig") as f:
            index = 0
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    record = _Problem("<line>", f"line {line_no} is not valid JSON ({e})", "fix or remove the line")
                yield index, record
                index += 1
        return
    with path.open(encoding="utf-8-sig") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(
                f"{path}: not valid JSON ({e}). Fix: a .json file holds one JSON list of records; "
                "name JSON Lines files *.jsonl."
            ) from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got a {type(data).__name__}.")
    yield from enumerate(data)


# ---------------------------------------------------------------------------------------------------------------
# Images: containment first, then existence, then one decode per distinct file.


def _resolve_root(image_root: str | os.PathLike) -> Path:
    root = Path(os.path.realpath(image_root))
    if not root.is_dir():
        raise ValueError(f"image_root {str(image_root)!r} is not a directory. Fix: pass the folder the images are in.")
    return root


def _resolve_image(rel: str, root: Path, field: str) -> Path:
    """`rel` resolved inside `root` (a realpath), following symlinks, or a `_Problem` if it leaves the root."""
    candidate = root / rel  # an absolute `rel` replaces the root; the containment check below judges it
    # realpath only lstat()s and readlink()s the components: nothing is opened before the check passes.
    real = Path(os.path.realpath(candidate))
    if not real.is_relative_to(root):
        how = " through a symlink" if Path(os.path.normpath(candidate)).is_relative_to(root) else ""
        raise _Problem(
            field,
            f"image path {rel!r} resolves{how} to {str(real)!r}, outside image_root {str(root)!r}; refused",
            "keep image files inside image_root (paths are relative to it) or pass the folder that holds them",
        )
    return real


def _check_image(real: Path, rel: str, field: str, verify: bool, verified: set[Path]) -> None:
    if real in verified:
        return
    if not real.is_file():
        raise _Problem(
            field,
            f"image file {rel!r} not found (looked for {str(real)!r})",
            "fix the path (relative to image_root) or pass on_error='skip'",
        )
    if verify:
        try:
            with PIL.Image.open(real) as image:
                image.load()
        # Pillow's decoders raise many types on corrupt data (OSError, SyntaxError, ValueError, struct.error...).
        except Exception as e:
            raise _Problem(
                field,
                f"image file {rel!r} does not decode ({type(e).__name__}: {e})",
                "re-encode or replace the file, or pass on_error='skip'",
            ) from None
    verified.add(real)


# ---------------------------------------------------------------------------------------------------------------
# Public loaders.


def _check_options(on_error: OnError, image_mode: str | None) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not one of {ON_ERROR} ('raise': strict, 'skip': count and skip).")
    if image_mode is not None and image_mode not in PIL.Image.MODES:
        raise ValueError(f"image_mode={image_mode!r} is not a PIL mode; use one of {PIL.Image.MODES} or None.")


def _warn_skipped(report: LoadReport) -> None:
    if report.skipped:
        logger.warning(
            "%s: skipped %d of %d records (on_error='skip'); first reasons:\n  %s",
            report.source,
            report.n_skipped,
            report.n_records,
            "\n  ".join(report.skipped[:_REASONS_LOGGED]),
        )


def _load_file(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    parse: Callable[[Any], tuple[list[_Turn], list[str], str]],
    on_error: OnError,
    image_mode: str | None,
    verify_images: bool,
    return_report: bool,
) -> Dataset | tuple[Dataset, LoadReport]:
    _check_options(on_error, image_mode)
    root, source = _resolve_root(image_root), str(path)
    report = LoadReport(source=source)
    rows: dict[str, list] = {"images": [], "messages": []}
    verified: set[Path] = set()
    for index, record in _iter_records(Path(path)):
        report.n_records += 1
        try:
            if isinstance(record, _Problem):
                raise record
            turns, rels, images_field = parse(record)
            messages = _build_messages(turns, len(rels), images_field)
            images = []
            for i, rel in enumerate(rels):
                field = images_field if isinstance(record.get(images_field), str) else f"{images_field}[{i}]"
                real = _resolve_image(rel, root, field)
                _check_image(real, rel, field, verify_images, verified)
                images.append(str(real))
        except _Problem as problem:
            error = problem.at(source, index, record)
            if on_error == "raise":
                raise error from None
            report.skipped.append(str(error))
            continue
        rows["images"].append(images)
        rows["messages"].append(messages)
    report.n_loaded = len(rows["messages"])
    _warn_skipped(report)
    dataset = Dataset.from_dict(rows, features=canonical_features(image_mode))
    return (dataset, report) if return_report else dataset


def load_llava_json(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    on_error: OnError = "raise",
    image_mode: str | None = "RGB",
    verify_images: bool = True,
    return_report: bool = False,
) -> Dataset | tuple[Dataset, LoadReport]:
    """Load a LLaVA-Instruct JSON (or `.jsonl`) file into a canonical dataset (see the module docstring).

    Args:
        path: the JSON list, or JSON Lines file (by its `.jsonl`/`.ndjson` suffix).
        image_root: folder that the records' `image` paths are relative to; nothing outside it is ever opened.
        on_error: `"raise"` (a `ValueError` naming the record) or `"skip"` (skip, count, log a warning).
        image_mode: PIL mode images are converted to on access (None keeps each file's own mode).
        verify_images: decode each distinct image once at load time so a corrupt file fails here, not mid-training.
        return_report: also return a `LoadReport` with the counts and the reasons for skipped records.
    """
    return _load_file(path, image_root, _parse_llava, on_error, image_mode, verify_images, return_report)


def load_sharegpt(
    path: str | os.PathLike,
    image_root: str | os.PathLike,
    *,
    on_error: OnError = "raise",
    image_mode: str | None = "RGB",
    verify_images: bool = True,
    return_report: bool = False,
) -> Dataset | tuple[Dataset, LoadReport]:
    """Load a ShareGPT (LLaMA-Factory style) JSON or `.jsonl` file into a canonical dataset.

    Records hold `"messages"` (`role`/`content`) or `"conversations"` (`from`/`value`), `"images"` paths relative to
    `image_root`, and optionally a top-level `"system"` prompt. The arguments are those of `load_llava_json`.
    """
    return _load_file(path, image_root, _parse_sharegpt, on_error, image_mode, verify_images, return_report)


# ---------------------------------------------------------------------------------------------------------------
# Hub datasets.


def _undecoded(feature: Any, column: str) -> Any:
    """The image column's feature with decoding off, so images pass through as stored bytes/paths, not re-encoded."""
    if isinstance(feature, Image):
        return Image(decode=False)
    if isinstance(feature, (List, LargeList)) and isinstance(feature.feature, Image):
        return List(Image(decode=False))
    raise ValueError(
        f"Column {column!r} holds {feature}, not images. Fix: cast it with "
        f"dataset.cast_column({column!r}, datasets.Image()) (or List(Image()) for several per row), or pass image_column."
    )


def _check_prompt_completion(prompt: Any, completion: Any, n_images: int) -> None:
    if isinstance(prompt, str) and isinstance(completion, str):
        n_parts = prompt.count(IMAGE_PLACEHOLDER)  # plain prompts carry the placeholders themselves
        if n_parts != n_images or IMAGE_PLACEHOLDER in completion:
            raise _Problem(
                "prompt",
                f"{n_parts} <image> placeholder(s) in the prompt, {completion.count(IMAGE_PLACEHOLDER)} in the "
                f"completion, and {n_images} image(s)",
                "put exactly one <image> per image in the prompt and none in the completion",
            )
        return
    if not isinstance(prompt, list) or not isinstance(completion, list):
        raise _Problem(
            "prompt",
            f"prompt is a {type(prompt).__name__}, completion a {type(completion).__name__}",
            "give both as strings or both as lists of messages",
        )
    turns = _turns(prompt, "prompt", "role", "content", _SAME_ROLES, allow_parts=True)
    turns += _turns(completion, "completion", "role", "content", _SAME_ROLES, allow_parts=True)
    _build_messages(turns, n_images, "images")  # validation only: prompt/completion pass through unchanged


def _normalise_row(
    row: dict, index: int, *, image_column: str | None, messages_column: str | None, on_error: OnError, source: str
) -> dict:
    value = row[image_column] if image_column else None
    images = [] if value is None else value if isinstance(value, list) else [value]
    out: dict[str, Any] = {"images": images, _ERROR_COLUMN: None}
    try:
        if messages_column:
            turns = _turns(row[messages_column], messages_column, "role", "content", _SAME_ROLES, allow_parts=True)
            out["messages"] = _build_messages(turns, len(images), image_column or "images")
        else:
            _check_prompt_completion(row["prompt"], row["completion"], len(images))
    except _Problem as problem:
        error = problem.at(source, index, row)
        if on_error == "raise":
            raise error from None
        # The row is filtered out after `map`; it still needs values of the output's types.
        out = {"images": [], _ERROR_COLUMN: str(error), **({"messages": []} if messages_column else {})}
    return out


def from_hf_dataset(
    dataset: Dataset,
    *,
    image_column: str | None = None,
    messages_column: str | None = None,
    image_mode: str | None = "RGB",
    on_error: OnError = "raise",
    return_report: bool = False,
) -> Dataset | tuple[Dataset, LoadReport]:
    """Normalise a `datasets.Dataset` into the canonical format (messages) or validated prompt/completion data.

    - Messages (`messages_column`, default `"messages"`): string content with `<image>` placeholders, string content
      without them (TRL style: the images go before the first user message's text), or typed parts. Written to a
      `messages` column in the canonical layout.
    - Otherwise `prompt` and `completion` columns (both message lists, or both strings with the `<image>` placeholders
      in the prompt) are checked and kept as they are.
    - Images come from `image_column` (default `"images"`, else `"image"`): a `datasets.Image` column (one image per
      row) or a list of them, written to `images`. They are passed through undecoded, never re-encoded.
    Other columns are kept. `on_error`, `image_mode` and `return_report` work as in `load_llava_json`.
    """
    _check_options(on_error, image_mode)
    columns = dataset.column_names
    image_column = image_column or next((c for c in ("images", "image") if c in columns), None)
    messages_column = messages_column or ("messages" if "messages" in columns else None)
    for arg, column in (("image_column", image_column), ("messages_column", messages_column)):
        if column is not None and column not in columns:
            raise ValueError(f"{arg}={column!r} is not a column of the dataset; its columns are {columns}.")
    if messages_column is None and not {"prompt", "completion"} <= set(columns):
        raise ValueError(
            f"The dataset has no 'messages' column and no 'prompt'/'completion' pair (columns: "
            f"{columns}). Fix: pass messages_column=<the column holding the conversations>."
        )
    canonical = canonical_features(image_mode)
    features = {k: v for k, v in dataset.features.items() if k not in (image_column, messages_column)}
    features |= {"images": canonical["images"], _ERROR_COLUMN: Value("string")}
    if messages_column:
        features["messages"] = canonical["messages"]
    if image_column:
        dataset = dataset.cast_column(image_column, _undecoded(dataset.features[image_column], image_column))
    source = f"dataset {dataset.info.dataset_name!r}" if dataset.info.dataset_name else "dataset"
    mapped = dataset.map(
        _normalise_row,
        with_indices=True,
        fn_kwargs={
            "image_column": image_column,
            "messages_column": messages_column,
            "on_error": on_error,
            "source": source,
        },
        remove_columns=[c for c in (image_column, messages_column) if c],
        features=Features(features),
    )
    report = LoadReport(source=source, n_records=len(mapped))
    report.skipped = [e for e in mapped[_ERROR_COLUMN] if e is not None]
    if report.skipped:
        mapped = mapped.filter(lambda error: error is None, input_columns=_ERROR_COLUMN)
    mapped = mapped.remove_columns(_ERROR_COLUMN)
    report.n_loaded = len(mapped)
    _warn_skipped(report)
    return (mapped, report) if return_report else mapped
