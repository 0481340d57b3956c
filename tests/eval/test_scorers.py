"""Scorers: normalization, box parsing and IoU edge cases, dispatch, and aggregation over synthetic samples."""

import pytest

from hf_mm.data.synthetic import digits, grounding, ocr, shapes_vqa
from hf_mm.eval import (
    box_iou,
    evaluate,
    exact_match,
    grounding_iou,
    grounding_score,
    normalize_answer,
    parse_box,
    score,
)


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("Red", "red"),
        ("  red.  ", "red"),
        ("red<|im_end|>", "red"),
        ("Left!<|im_end|><|endoftext|>", "left"),
        ("7</s>", "7"),
        ("light  \n blue", "light blue"),
        ("", ""),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_exact_match_is_strict_after_normalizing():
    assert exact_match("Circle.<|im_end|>", "circle") == 1.0
    assert exact_match("circles", "circle") == 0.0
    assert exact_match("3", "three") == 0.0
    assert exact_match("", "red") == 0.0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("[1,2,3,4]", [1.0, 2.0, 3.0, 4.0]),
        ("The box is [ 10 , 20.5,30 ,40 ]<|im_end|>", [10.0, 20.5, 30.0, 40.0]),
        ("[1, 2] then [5, 6, 7, 8] and [9, 9, 9, 9]", [5.0, 6.0, 7.0, 8.0]),
        ("[-1, 0, .5, 2.]", [-1.0, 0.0, 0.5, 2.0]),
        ("[1, 2, 3]", None),
        ("[1, 2, 3, 4, 5]", None),
        ("[a, b, c, d]", None),
        ("1, 2, 3, 4", None),
        ("", None),
    ],
)
def test_parse_box(text, expected):
    assert parse_box(text) == expected


def test_box_iou_edge_cases():
    assert box_iou([0, 0, 10, 10], [0, 0, 10, 10]) == 1.0
    assert box_iou([0, 0, 10, 10], [20, 20, 30, 30]) == 0.0
    assert box_iou([0, 0, 10, 10], [10, 0, 20, 10]) == 0.0, "touching edges share no area"
    assert box_iou([0, 0, 10, 10], [5, 0, 15, 10]) == pytest.approx(50 / 150)
    assert box_iou([0, 0, 10, 10], [2, 2, 4, 4]) == pytest.approx(4 / 100), "contained box"
    assert box_iou([5, 5, 5, 5], [5, 5, 5, 5]) == 0.0, "empty boxes: no union, no credit"
    assert box_iou([10, 10, 0, 0], [0, 0, 10, 10]) == 0.0, "swapped corners have zero area"
    with pytest.raises(ValueError, match="4 coordinates"):
        box_iou([0, 0, 1], [0, 0, 1, 1])


def test_grounding_score_thresholds_iou():
    assert grounding_iou("[5, 0, 15, 10]", [0, 0, 10, 10]) == pytest.approx(1 / 3)
    assert grounding_score("[5, 0, 15, 10]", [0, 0, 10, 10]) == 0.0
    assert grounding_score("[5, 0, 15, 10]", [0, 0, 10, 10], threshold=0.3) == 1.0
    assert grounding_score("[1, 0, 11, 10]<|im_end|>", "[0, 0, 10, 10]") == 1.0, "answer given as text"
    assert grounding_score("left", [0, 0, 10, 10]) == 0.0 and grounding_iou("", [0, 0, 10, 10]) == 0.0
    with pytest.raises(ValueError, match="answer box"):
        grounding_score("[0, 0, 1, 1]", "no box here")


def test_score_dispatches_by_task():
    assert score("shapes_vqa", "Red", "red") == score("ocr", "cat.", "cat") == score("digits", "7", "7") == 1.0
    assert score("grounding", "[0, 0, 10, 10]", "[0, 0, 10, 10]") == 1.0
    assert score("grounding", "red", "[0, 0, 10, 10]") == 0.0
    assert score("digits", "[0, 0, 10, 10]", "7") == 0.0
    with pytest.raises(ValueError, match="captioning"):
        score("captioning", "a", "a")


def test_evaluate_means_overall_per_task_and_per_question_type():
    samples = [
        {"task": "shapes_vqa", "question_type": "colour", "answer": "red"},
        {"task": "shapes_vqa", "question_type": "count", "answer": "2"},
        {"task": "grounding", "question_type": "box", "answer": "[0, 0, 10, 10]"},
        {"task": "digits", "answer": "7"},  # no question_type: grouped under its task
    ]
    result = evaluate(["red", "3", "[0, 0, 10, 5]", "7"], samples)
    assert result["overall"] == pytest.approx(0.75) and result["n"] == 4, "IoU 0.5 meets the 0.5 threshold"
    assert result["per_task"] == {"digits": 1.0, "grounding": 1.0, "shapes_vqa": 0.5}
    assert result["per_question_type"] == {
        "digits/digits": 1.0,
        "grounding/box": 1.0,
        "shapes_vqa/colour": 1.0,
        "shapes_vqa/count": 0.0,
    }
    assert result["mean_iou"] == pytest.approx(0.5)
    assert "mean_iou" not in evaluate(["7"], samples[3:])
    with pytest.raises(ValueError, match="3 predictions for 4 samples"):
        evaluate(["red"] * 3, samples)
    with pytest.raises(ValueError, match="no samples"):
        evaluate([], [])


def test_generated_answers_score_perfectly_and_wrong_ones_do_not():
    samples = shapes_vqa(16, seed=0) + grounding(8, seed=0) + ocr(8, seed=0) + digits(8, seed=0)
    perfect = evaluate([s["answer"] + "<|im_end|>" for s in samples], samples)
    assert perfect["overall"] == 1.0 and perfect["mean_iou"] == 1.0
    assert set(perfect["per_task"]) == {"shapes_vqa", "grounding", "ocr", "digits"}
    assert {"shapes_vqa/colour", "shapes_vqa/position", "ocr/word", "ocr/number"} <= set(perfect["per_question_type"])
    shifted = [samples[(i + 1) % len(samples)]["answer"] for i in range(len(samples))]
    assert evaluate(shifted, samples)["overall"] < 0.5
