"""Scoring: hf_mm's synthetic tasks (``scorers``, answers from ``predict``) and dual encoders' zero-shot classification and retrieval."""

from .generation import predict
from .reliance import vision_reliance
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
from .zero_shot import ZeroShotClassifier, embed_images, embed_texts, retrieval_recall, zero_shot_classifier

__all__ = [
    "ZeroShotClassifier",
    "embed_images",
    "embed_texts",
    "retrieval_recall",
    "zero_shot_classifier",
    "box_iou",
    "evaluate",
    "exact_match",
    "grounding_iou",
    "grounding_score",
    "normalize_answer",
    "parse_box",
    "predict",
    "score",
    "vision_reliance",
]
