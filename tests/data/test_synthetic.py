"""The synthetic tasks are deterministic, their answers match the pixels, and held-out splits don't leak."""

import hashlib
import re

import numpy as np
import PIL.Image
import pytest
from PIL import ImageDraw, ImageFont

from hf_mm.data.synthetic import (
    BACKGROUNDS,
    PALETTE,
    TASKS,
    digits,
    digits_split_indices,
    grounding,
    ocr,
    shapes_vqa,
    to_dataset,
)


def _pixels(sample: dict) -> np.ndarray:
    return np.asarray(sample["images"][0])


def _mask(pixels: np.ndarray, rgb) -> np.ndarray:
    return np.all(pixels == np.asarray(rgb, dtype=np.uint8), axis=-1)


def _palette_mask(pixels: np.ndarray) -> np.ndarray:
    return np.any([_mask(pixels, rgb) for rgb in PALETTE.values()], axis=0)


def _count_blobs(mask: np.ndarray) -> int:
    """4-connected components, by flood fill: counts objects from pixels alone, without the generator's metadata."""
    seen = np.zeros_like(mask)
    count = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        count += 1
        seen[y, x] = True
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    stack.append((ny, nx))
    return count


def _bbox(mask: np.ndarray) -> list[int]:
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _in_box(mask: np.ndarray, box) -> np.ndarray:
    out = np.zeros_like(mask)
    out[box[1] : box[3], box[0] : box[2]] = mask[box[1] : box[3], box[0] : box[2]]
    return out


def _shape_from_pixels(mask_in_box: np.ndarray, box) -> str:
    """A square fills its box, a circle ~pi/4 of it (>= 0.75 from 8 px up), a triangle ~1/2 (<= 0.58)."""
    fill = mask_in_box.sum() / ((box[2] - box[0]) * (box[3] - box[1]))
    return "square" if fill > 0.95 else "circle" if fill > 0.66 else "triangle"


def _find(shapes: list[dict], **attrs) -> dict:
    matches = [s for s in shapes if all(s[k] == v for k, v in attrs.items())]
    assert len(matches) == 1, f"question names {attrs}, which is not unique in {shapes}"
    return matches[0]


def _hashes(samples: list[dict]) -> set[str]:
    return {hashlib.sha1(s["images"][0].tobytes()).hexdigest() for s in samples}


@pytest.fixture(scope="module")
def scenes() -> list[dict]:
    return shapes_vqa(120, seed=11) + grounding(40, seed=11)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_same_seed_same_samples_other_seed_differs(task):
    first, again, other = TASKS[task](12, seed=3), TASKS[task](12, seed=3), TASKS[task](12, seed=4)
    assert [s["images"][0].tobytes() for s in first] == [s["images"][0].tobytes() for s in again]
    assert [(s["messages"], s["answer"], s["meta"]) for s in first] == [
        (s["messages"], s["answer"], s["meta"]) for s in again
    ]
    assert [s["images"][0].tobytes() for s in first] != [s["images"][0].tobytes() for s in other]


@pytest.mark.parametrize("task,size", [("shapes_vqa", 64), ("grounding", 48), ("ocr", 64), ("digits", 32)])
def test_sample_format(task, size):
    for sample in TASKS[task](6, seed=0, image_size=size):
        (image,) = sample["images"]
        assert isinstance(image, PIL.Image.Image) and image.mode == "RGB" and image.size == (size, size)
        user, assistant = sample["messages"]
        assert user["role"] == "user" and user["content"][0] == {"type": "image"}
        assert user["content"][1]["type"] == "text" and user["content"][1]["text"].endswith("?")
        assert assistant == {"role": "assistant", "content": [{"type": "text", "text": sample["answer"]}]}
        assert sample["task"] == task and sample["answer"] and sample["question_type"]


@pytest.mark.parametrize("task", ["shapes_vqa", "grounding", "ocr"])  # compare_counts: an empty scene can recur
def test_test_split_is_a_different_stream_with_no_shared_images(task):
    train, test = TASKS[task](150, seed=0), TASKS[task](150, seed=0, split="test")
    assert not _hashes(train) & _hashes(test)
    with pytest.raises(ValueError, match="split"):
        TASKS[task](1, split="validation")


def test_shapes_are_drawn_where_recorded_and_never_overlap(scenes):
    for sample in scenes:
        pixels, shapes = _pixels(sample), sample["meta"]["shapes"]
        others = _palette_mask(pixels)
        for i, shape in enumerate(shapes):
            own = _in_box(_mask(pixels, PALETTE[shape["colour"]]), shape["box"])
            assert _bbox(own) == shape["box"], "the box is the shape's tight pixel extent"
            assert _shape_from_pixels(own, shape["box"]) == shape["shape"]
            assert not (_in_box(others, shape["box"]) & ~own).any(), "another shape's pixels inside this box"
            for other in shapes[i + 1 :]:
                a, b = shape["box"], other["box"]
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], "boxes touch or overlap"
        assert not _mask(pixels, (0, 0, 0)).all() and sample["meta"]["background"] in (*BACKGROUNDS, "noise")


def test_count_answers_equal_the_number_of_blobs(scenes):
    counted = [s for s in scenes if s["question_type"] == "count"]
    assert len(counted) == 30 and {s["answer"] for s in counted} == {"1", "2", "3", "4"}
    for sample in counted:
        assert _count_blobs(_palette_mask(_pixels(sample))) == int(sample["answer"])


def test_colour_answers_are_the_named_shapes_colour(scenes):
    asked = [s for s in scenes if s["question_type"] == "colour"]
    assert any(len(s["meta"]["shapes"]) == 1 for s in asked) and any(len(s["meta"]["shapes"]) > 1 for s in asked)
    for sample in asked:
        question, shapes = sample["messages"][0]["content"][1]["text"], sample["meta"]["shapes"]
        if question == "What colour is the shape?":
            assert len(shapes) == 1
            target = shapes[0]
        else:
            target = _find(shapes, shape=re.fullmatch(r"What colour is the (\w+)\?", question)[1])
        x1, y1, x2, y2 = target["box"]
        centre = _pixels(sample)[(y1 + y2) // 2, (x1 + x2) // 2]
        assert tuple(centre) == PALETTE[sample["answer"]]


def test_shape_answers_match_the_named_objects_pixels(scenes):
    asked = [s for s in scenes if s["question_type"] == "shape"]
    assert len(asked) == 30
    for sample in asked:
        question, shapes = sample["messages"][0]["content"][1]["text"], sample["meta"]["shapes"]
        if question == "What shape is this?":
            assert len(shapes) == 1
            target = shapes[0]
        else:
            target = _find(shapes, colour=re.fullmatch(r"What shape is the (\w+) object\?", question)[1])
        own = _in_box(_mask(_pixels(sample), PALETTE[target["colour"]]), target["box"])
        assert _shape_from_pixels(own, target["box"]) == sample["answer"]


def test_position_answers_match_pixel_centres(scenes):
    asked = [s for s in scenes if s["question_type"] == "position"]
    assert {s["answer"] for s in asked} == {"left", "right"}
    pattern = r"Is the (\w+) (\w+) left or right of the (\w+) (\w+)\?"
    for sample in asked:
        colour_a, shape_a, colour_b, shape_b = re.fullmatch(
            pattern, sample["messages"][0]["content"][1]["text"]
        ).groups()
        centres = []
        for colour, shape in ((colour_a, shape_a), (colour_b, shape_b)):
            box = _find(sample["meta"]["shapes"], colour=colour, shape=shape)["box"]
            centres.append(np.nonzero(_in_box(_mask(_pixels(sample), PALETTE[colour]), box))[1].mean())
        assert sample["answer"] == ("left" if centres[0] < centres[1] else "right")


def test_question_types_can_be_restricted_and_are_validated():
    assert {s["question_type"] for s in shapes_vqa(6, question_types=("count", "shape"))} == {"count", "shape"}
    with pytest.raises(ValueError, match="size"):
        shapes_vqa(1, question_types=("size",))


def test_grounding_boxes_hold_the_named_shape():
    for sample in grounding(40, seed=5):
        colour, shape = re.fullmatch(
            r"Where is the (\w+) (\w+)\?", sample["messages"][0]["content"][1]["text"]
        ).groups()
        box = _find(sample["meta"]["shapes"], colour=colour, shape=shape)["box"]
        assert [int(v) for v in re.findall(r"\d+", sample["answer"])] == box == sample["meta"]["box"]
        colour_mask = _mask(_pixels(sample), PALETTE[colour])
        assert _bbox(_in_box(colour_mask, box)) == box
        # Every pixel of that colour outside the box belongs to another shape of the same colour.
        outside = colour_mask & ~_in_box(np.ones_like(colour_mask), box)
        for other in sample["meta"]["shapes"]:
            if other["colour"] == colour and other["box"] != box:
                outside &= ~_in_box(np.ones_like(colour_mask), other["box"])
        assert not outside.any()


def test_grounding_target_size_rescales_boxes_not_images():
    plain, square, wide = (
        grounding(20, seed=2),
        grounding(20, seed=2, target_size=128),
        grounding(20, seed=2, target_size=(32, 96)),
    )
    for a, b, c in zip(plain, square, wide):
        assert a["images"][0].tobytes() == b["images"][0].tobytes() == c["images"][0].tobytes()
        x1, y1, x2, y2 = a["meta"]["box"]
        assert b["meta"]["answer_box"] == [2 * x1, 2 * y1, 2 * x2, 2 * y2] and b["meta"]["frame"] == [128, 128]
        exact = [x1 / 2, y1 * 1.5, x2 / 2, y2 * 1.5]
        assert all(isinstance(v, int) and abs(v - e) <= 0.5 for v, e in zip(c["meta"]["answer_box"], exact))
        assert b["answer"] == "[{}, {}, {}, {}]".format(*b["meta"]["answer_box"])


def test_ocr_images_show_the_answer_text():
    font = ImageFont.load_default_imagefont()
    samples = ocr(30, seed=1)
    assert {s["question_type"] for s in samples} == {"word", "number"}
    for sample in samples:
        text, meta = sample["answer"], sample["meta"]
        assert text and text == meta["text"] and (text.isdigit() == (sample["question_type"] == "number"))
        ink = _mask(_pixels(sample), meta["text_rgb"])
        assert ink.sum() >= 10 and _bbox(ink) == meta["box"]
        # Render the answer independently and compare glyph for glyph.
        glyphs = PIL.Image.new("L", (8 * len(text), 16))
        ImageDraw.Draw(glyphs).text((0, 0), text, font=font, fill=255)
        glyphs = glyphs.crop(glyphs.getbbox())
        scale = meta["scale"]
        expected = np.asarray(glyphs.resize((glyphs.width * scale, glyphs.height * scale), PIL.Image.NEAREST)) > 0
        x1, y1, x2, y2 = meta["box"]
        np.testing.assert_array_equal(ink[y1:y2, x1:x2], expected)


def test_digits_show_the_labelled_digit_and_splits_are_disjoint():
    from sklearn.datasets import load_digits

    source = load_digits()
    train_idx, test_idx = set(digits_split_indices("train").tolist()), set(digits_split_indices("test").tolist())
    assert not train_idx & test_idx and len(train_idx | test_idx) == len(source.images)
    assert len(train_idx) == int(0.8 * len(source.images))
    held_out = digits(len(test_idx), seed=0, split="test")
    assert {s["meta"]["index"] for s in held_out} == test_idx, "one pass covers the split exactly once"
    for sample in held_out[:50] + digits(50, seed=1):
        index = sample["meta"]["index"]
        assert sample["answer"] == str(source.target[index])
        expected = 255 - np.round(source.images[index] * 255 / 16)
        np.testing.assert_array_equal(_pixels(sample)[::4, ::4, 0], expected)
    assert all(s["meta"]["index"] in train_idx for s in digits(2 * len(train_idx) + 3, seed=2))


def test_dataset_round_trip_gives_back_pil_images_and_the_same_messages():
    samples = shapes_vqa(4, seed=1) + grounding(2, seed=1) + ocr(2, seed=1) + digits(2, seed=1)
    dataset = to_dataset(samples)
    assert len(dataset) == len(samples)
    for row, sample in zip(dataset, samples):
        (image,) = row["images"]
        assert isinstance(image, PIL.Image.Image) and image.mode == "RGB"
        assert image.tobytes() == sample["images"][0].tobytes()
        for key in ("messages", "answer", "task", "question_type", "meta"):
            assert row[key] == sample[key], key


def test_compare_counts_answers_match_the_circles_drawn():
    samples = TASKS["compare_counts"](40, seed=0, distractors=True)
    assert [s["answer"] for s in samples].count("first") == 20
    for sample in samples:
        counts = [sum(shape["shape"] == "circle" for shape in scene["shapes"]) for scene in sample["meta"]["scenes"]]
        assert counts == sample["meta"]["counts"] and counts[0] != counts[1]
        assert sample["answer"] == ("first" if counts[0] > counts[1] else "second")
        assert len(sample["images"]) == 2
        assert [part["type"] for part in sample["messages"][0]["content"]] == ["image", "image", "text"]
        for image, scene in zip(sample["images"], sample["meta"]["scenes"]):
            pixels = np.asarray(image)
            for shape in scene["shapes"]:  # each recorded shape is drawn in its colour inside its box
                assert _in_box(_mask(pixels, PALETTE[shape["colour"]]), shape["box"]).any()
