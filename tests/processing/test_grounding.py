import pytest

from hf_mm.processing.grounding import grounding_json, parse_grounding
from hf_mm.processing.image_processing_qwen2_5_vl import map_box, smart_resize


def test_boxes_round_trip_through_the_answer_format_in_processed_pixels():
    original = (480, 640)
    processed = smart_resize(*original)
    box = map_box([100, 50, 300, 200], original, processed)  # the paper's coordinates: the resized image's pixels
    answer = grounding_json([{"bbox_2d": box, "label": "red circle"}, {"point_2d": [10.4, 20.6], "label": "cup"}])
    assert answer.startswith("```json\n[") and '"bbox_2d": [' in answer
    objects = parse_grounding("Here you go:\n" + answer)
    assert objects == [
        {"bbox_2d": [round(v) for v in box], "label": "red circle"},
        {"point_2d": [10, 21], "label": "cup"},
    ]
    back = map_box(objects[0]["bbox_2d"], processed, original)
    assert back == pytest.approx([100, 50, 300, 200], abs=2)  # within the integer rounding, scaled back


def test_parse_tolerates_bare_json_and_skips_what_it_cannot_read():
    text = 'boxes: [{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"bbox_2d": [1, 2]}, "noise", {"point_2d": [5, 6]}]'
    assert parse_grounding(text) == [{"bbox_2d": [1, 2, 3, 4], "label": "a"}, {"point_2d": [5, 6], "label": ""}]
    assert parse_grounding("no boxes here") == [] and parse_grounding("```json\n[{oops```") == []


def test_grounding_json_names_a_bad_object():
    with pytest.raises(ValueError, match=r"objects\[0\] needs 'bbox_2d'"):
        grounding_json([{"box": [1, 2, 3, 4]}])
