"""Scoring for hf_mm's synthetic tasks (see ``hf_mm.data.synthetic``)."""

from .scorers import (
    box_iou,
    evaluate,
    exact_match,
    grounding_iou,
    grounding_score,
    normalize_answer,
    parse_box,
    score,
)

__all__ = [
    "box_iou",
    "evaluate",
    "exact_match",
    "grounding_iou",
    "grounding_score",
    "normalize_answer",
    "parse_box",
    "score",
]
