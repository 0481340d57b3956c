"""Scorers for the synthetic tasks in ``hf_mm.data.synthetic``: exact match and box IoU, plus a small aggregator.

- ``shapes_vqa``, ``ocr`` and ``digits`` are scored by exact match after `normalize_answer` (case-, whitespace- and
  trailing-punctuation-insensitive, with a trailing chat special token such as ``<|im_end|>`` removed). OCR is
  therefore case-insensitive; the generated OCR words are lowercase anyway.
- ``grounding`` is scored as IoU >= threshold (0.5 by default, the usual Acc@0.5) between the first
  ``[x1, y1, x2, y2]`` in the prediction and the answer box. Both must be in the same frame: the generated image's
  pixels unless the task was generated with ``target_size``. Boxes are used as given: a box with ``x2 <= x1`` or
  ``y2 <= y1`` has zero area and overlaps nothing, so a model that swaps corners scores 0.
- An unparseable prediction scores 0; an unparseable *answer* raises, since that is a data bug, not a model error.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

EXACT_MATCH_TASKS = ("shapes_vqa", "ocr", "digits", "compare_counts")
BOX_TASKS = ("grounding",)
TASK_NAMES = EXACT_MATCH_TASKS + BOX_TASKS

# Chat end markers a generation may keep when decoded without skip_special_tokens: <|im_end|>, <|endoftext|>, </s>...
_TRAILING_SPECIAL = re.compile(r"(?:\s*(?:<\|[^<>|]*\|>|</s>|<eos>|<end_of_turn>))+\s*$")
_TRAILING_PUNCT = ".,!?;:"
_NUMBER = r"\s*([-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*"
_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")


def normalize_answer(text: str) -> str:
    """Lowercase, collapse whitespace, drop trailing special tokens and punctuation: ``" Red.<|im_end|>"`` -> "red"."""
    text = _TRAILING_SPECIAL.sub("", text)
    text = " ".join(text.split()).lower()
    return text.rstrip(_TRAILING_PUNCT).rstrip()


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalized prediction equals the normalized answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def parse_box(text: str) -> list[float] | None:
    """The first ``[x1, y1, x2, y2]`` (four numbers, any spacing) in `text`, or None if there is none."""
    match = _BOX.search(text)
    return None if match is None else [float(v) for v in match.groups()]


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes; 0.0 when the union is empty."""
    if len(a) != 4 or len(b) != 4:
        raise ValueError(f"boxes must have 4 coordinates, got {list(a)} and {list(b)}")
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def _answer_box(answer_box: str | Sequence[float]) -> list[float]:
    box = parse_box(answer_box) if isinstance(answer_box, str) else [float(v) for v in answer_box]
    if box is None or len(box) != 4:
        raise ValueError(f"answer box {answer_box!r} is not [x1, y1, x2, y2]")
    return box


def grounding_iou(prediction: str, answer_box: str | Sequence[float]) -> float:
    """Raw IoU between the first box in `prediction` and `answer_box` (a box or its text); 0.0 if none parses."""
    predicted = parse_box(prediction)
    return 0.0 if predicted is None else box_iou(predicted, _answer_box(answer_box))


def grounding_score(prediction: str, answer_box: str | Sequence[float], threshold: float = 0.5) -> float:
    """1.0 if `grounding_iou` >= `threshold`, else 0.0. Use `grounding_iou` for the raw IoU."""
    return float(grounding_iou(prediction, answer_box) >= threshold)


def score(task: str, prediction: str, answer: str | Sequence[float], threshold: float = 0.5) -> float:
    """Score one prediction by the task's rule: exact match, or IoU >= `threshold` for grounding."""
    if task in EXACT_MATCH_TASKS:
        return exact_match(prediction, answer)
    if task in BOX_TASKS:
        return grounding_score(prediction, answer, threshold)
    raise ValueError(f"task={task!r} is not one of {TASK_NAMES}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def evaluate(predictions: Sequence[str], samples: Sequence[Mapping[str, Any]], threshold: float = 0.5) -> dict:
    """Mean scores of `predictions` against `samples` (dicts or Dataset rows with ``task`` and ``answer``).

    Returns ``{"overall": float, "n": int, "per_task": {task: float},
    "per_question_type": {"task/question_type": float}}``, plus ``"mean_iou"`` over grounding samples if any.
    Samples without a ``question_type`` are grouped under their task name.
    """
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples")
    if not samples:
        raise ValueError("nothing to evaluate: no samples")
    scores, per_task, per_type, ious = [], defaultdict(list), defaultdict(list), []
    for prediction, sample in zip(predictions, samples):
        task = sample["task"]
        value = score(task, prediction, sample["answer"], threshold)
        scores.append(value)
        per_task[task].append(value)
        per_type[f"{task}/{sample.get('question_type') or task}"].append(value)
        if task in BOX_TASKS:
            ious.append(grounding_iou(prediction, sample["answer"]))
    result = {
        "overall": _mean(scores),
        "n": len(scores),
        "per_task": {k: _mean(v) for k, v in sorted(per_task.items())},
        "per_question_type": {k: _mean(v) for k, v in sorted(per_type.items())},
    }
    if ious:
        result["mean_iou"] = _mean(ious)
    return result
