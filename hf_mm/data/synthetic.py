"""A seeded synthetic task suite generated in code: shapes VQA, grounding, OCR and handwritten digits.

Each generator returns ``list[dict]`` samples in the ``images`` + ``messages`` format TRL's SFT collator reads::

    {"images": [PIL.Image (RGB)],
     "messages": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
                  {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
     "answer": answer, "task": "shapes_vqa" | "grounding" | "ocr" | "digits", "question_type": str,
     "meta": {...}}  # the scene as drawn, so answers can be checked against pixels

Answers are exact strings that ``hf_mm.eval.scorers`` scores: one word or number for shapes VQA, OCR and digits,
and a box ``"[x1, y1, x2, y2]"`` for grounding.

Choices:

- Randomness: every call builds its own ``numpy.random.default_rng([seed, split_id])``; global random state is never
  touched. The same ``(seed, split)`` gives identical pixels and text.
- Held-out splits: every generator takes ``split="train" | "test"``. For the generated tasks (shapes VQA, grounding,
  OCR) the split picks an independent random stream (so ``split="test", seed=0`` is a fresh draw, as is any other
  seed); scenes are continuous enough (positions, sizes, colours, backgrounds) that identical images across splits
  do not occur in practice, and a test checks it. OCR words come from one small vocabulary in both splits (the
  renderings differ); its numbers (0-9999) are mostly unseen. Digits use a fixed permutation of scikit-learn's 1797
  images, independent of ``seed``: the first 80% are train, the rest test, so the splits never share an image.
- Colours are exact palette RGB values: ImageDraw fills and PIL's bitmap font are not anti-aliased, so a shape's or
  a word's pixels can be recovered by exact colour match. Backgrounds never use a palette colour, and the "noise"
  background is grey in 185..215, which cannot collide with any palette colour either.
- Shapes never overlap: their boxes are kept at least ``_GAP`` pixels apart. Shapes are at least 8 px wide, below
  which PIL's circles and triangles stop looking different.
- Boxes are integer pixel edges ``[x1, y1, x2, y2]``: ``x1, y1`` is the first pixel inside, ``x2, y2`` one past the
  last (width is ``x2 - x1``), in the coordinates of the image as generated. A processor later resizes images to its
  own size; pass ``grounding(..., target_size=...)`` to express answer boxes in processed-image pixels instead
  (Qwen2.5-VL style). The scorer compares boxes in whatever frame the answer uses.
- Questions are only asked when their answer is unique (e.g. a colour question names a shape type that occurs once);
  scenes are redrawn until the requested question type can be asked.
- scikit-learn is a dev extra, not a runtime dependency, so ``digits`` imports it lazily.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from datasets import Dataset, Features, Image, Json, List, Value
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 230),
    "yellow": (240, 210, 30),
    "purple": (150, 60, 200),
    "orange": (250, 140, 0),
}
# Plain backgrounds share no colour with PALETTE; "noise" is drawn per pixel in _NOISE_RANGE.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255),
    "light grey": (200, 200, 200),
    "dark grey": (64, 64, 64),
    "black": (0, 0, 0),
}
BACKGROUND_NAMES = (*BACKGROUNDS, "noise")
SHAPES = ("circle", "square", "triangle")
QUESTION_TYPES = ("colour", "shape", "count", "position")
MAX_SHAPES = 4
SPLITS = ("train", "test")
OCR_WORDS = (
    "cat", "dog", "sun", "tree", "book", "fish", "bird", "star", "moon", "car", "hat", "box",
    "cup", "pen", "milk", "door", "frog", "lamp", "rain", "ship", "wolf", "kite", "leaf", "bus",
)  # fmt: skip
OCR_QUESTION = "What text is in the image?"
DIGITS_QUESTION = "What digit is this?"
DIGITS_TRAIN_FRACTION = 0.8

_GAP = 2  # min pixels between two shapes' boxes, so they never touch and read as separate objects
_MIN_SHAPE = 8
_NOISE_RANGE = (185, 216)
_NOISE_LUMA = 200.0
_MAX_REDRAWS = 1000
_DIGITS_SPLIT_SEED = 1234  # fixed, independent of `seed`, so the train/test partition never moves
_TEXT_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "red": PALETTE["red"],
    "blue": PALETTE["blue"],
    "green": PALETTE["green"],
    "yellow": PALETTE["yellow"],
}
_MIN_TEXT_CONTRAST = 100.0  # luma difference between text and background

Box = list[int]
Shape = dict[str, Any]  # {"shape": str, "colour": str, "box": Box}


# ---------------------------------------------------------------- common helpers


def _rng(seed: int, split: str) -> np.random.Generator:
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    return np.random.default_rng([seed, SPLITS.index(split)])


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    # rng.choice would turn tuples/dicts into numpy arrays; index instead.
    return options[int(rng.integers(len(options)))]


def _sample(task: str, image: PILImage.Image, question: str, answer: str, question_type: str, meta: dict) -> dict:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    return {
        "images": [image],
        "messages": messages,
        "answer": answer,
        "task": task,
        "question_type": question_type,
        "meta": meta,
    }


def _luma(rgb: Sequence[float]) -> float:
    return 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]


def _background(rng: np.random.Generator, image_size: int) -> tuple[PILImage.Image, str]:
    name = _pick(rng, BACKGROUND_NAMES)
    if name != "noise":
        return PILImage.new("RGB", (image_size, image_size), BACKGROUNDS[name]), name
    grey = rng.integers(*_NOISE_RANGE, size=(image_size, image_size, 1), dtype=np.uint8)
    return PILImage.fromarray(np.repeat(grey, 3, axis=2), "RGB"), name


def format_box(box: Sequence[int]) -> str:
    """The answer text for a box: ``"[x1, y1, x2, y2]"``."""
    return "[" + ", ".join(str(int(v)) for v in box) + "]"


# ---------------------------------------------------------------- shape scenes


def _apart(a: Box, b: Box) -> bool:
    return a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1]


def _place_boxes(rng: np.random.Generator, k: int, image_size: int) -> list[Box]:
    """k square boxes of random size, pairwise at least _GAP apart, by rejection sampling."""
    smin, smax = _MIN_SHAPE, max(_MIN_SHAPE, image_size // 3)
    for _ in range(100):
        boxes: list[Box] = []
        for _ in range(30 * k):
            size = int(rng.integers(smin, smax + 1))
            x, y = (int(v) for v in rng.integers(0, image_size - size + 1, size=2))
            box = [x, y, x + size, y + size]
            if all(_apart(box, other) for other in boxes):
                boxes.append(box)
                if len(boxes) == k:
                    return boxes
    raise ValueError(f"could not place {k} non-overlapping shapes in a {image_size}px image; use a larger image_size")


def _layout(rng: np.random.Generator, k: int, image_size: int) -> list[Shape]:
    boxes = _place_boxes(rng, k, image_size)
    return [{"shape": _pick(rng, SHAPES), "colour": _pick(rng, tuple(PALETTE)), "box": box} for box in boxes]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: Shape) -> None:
    x1, y1, x2, y2 = shape["box"]
    last_x, last_y = x2 - 1, y2 - 1  # ImageDraw's coordinates are inclusive; our boxes' right/bottom are exclusive
    rgb = PALETTE[shape["colour"]]
    if shape["shape"] == "square":
        draw.rectangle([x1, y1, last_x, last_y], fill=rgb)
    elif shape["shape"] == "circle":
        draw.ellipse([x1, y1, last_x, last_y], fill=rgb)
    else:  # upright isosceles triangle filling the box
        draw.polygon([(x1, last_y), (last_x, last_y), ((x1 + last_x) / 2, y1)], fill=rgb)


def _render_scene(rng: np.random.Generator, shapes: list[Shape], image_size: int) -> tuple[PILImage.Image, str]:
    image, background = _background(rng, image_size)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        _draw_shape(draw, shape)
    return image, background


def _unique(shapes: list[Shape], *keys: str) -> list[int]:
    """Indices of shapes whose values for `keys` no other shape shares (so a question naming them is unambiguous)."""
    signature = [tuple(s[k] for k in keys) for s in shapes]
    return [i for i, sig in enumerate(signature) if signature.count(sig) == 1]


def _name(shape: Shape) -> str:
    return f"{shape['colour']} {shape['shape']}"


# Each asker returns (question, answer, meta) or None when the scene has no unambiguous question of its type.
def _ask_colour(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str, dict] | None:
    if len(shapes) == 1:
        return "What colour is the shape?", shapes[0]["colour"], {"target": 0}
    candidates = _unique(shapes, "shape")
    if not candidates:
        return None
    i = _pick(rng, candidates)
    return f"What colour is the {shapes[i]['shape']}?", shapes[i]["colour"], {"target": i}


def _ask_shape(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str, dict] | None:
    if len(shapes) == 1:
        return "What shape is this?", shapes[0]["shape"], {"target": 0}
    candidates = _unique(shapes, "colour")
    if not candidates:
        return None
    i = _pick(rng, candidates)
    return f"What shape is the {shapes[i]['colour']} object?", shapes[i]["shape"], {"target": i}


def _ask_count(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str, dict]:
    return "How many shapes are there?", str(len(shapes)), {}


def _ask_position(rng: np.random.Generator, shapes: list[Shape]) -> tuple[str, str, dict] | None:
    named = _unique(shapes, "colour", "shape")
    # Only pairs whose x-ranges are disjoint: "left of" is then unambiguous.
    pairs = [
        (a, b)
        for a in named
        for b in named
        if a != b and (shapes[a]["box"][2] <= shapes[b]["box"][0] or shapes[b]["box"][2] <= shapes[a]["box"][0])
    ]
    if not pairs:
        return None
    a, b = _pick(rng, pairs)
    answer = "left" if shapes[a]["box"][2] <= shapes[b]["box"][0] else "right"
    question = f"Is the {_name(shapes[a])} left or right of the {_name(shapes[b])}?"
    return question, answer, {"target": a, "reference": b}


_ASKERS: dict[str, Callable[[np.random.Generator, list[Shape]], tuple[str, str, dict] | None]] = {
    "colour": _ask_colour,
    "shape": _ask_shape,
    "count": _ask_count,
    "position": _ask_position,
}


def _shapes_sample(rng: np.random.Generator, question_type: str, image_size: int) -> dict:
    min_shapes = 2 if question_type == "position" else 1
    for _ in range(_MAX_REDRAWS):
        shapes = _layout(rng, int(rng.integers(min_shapes, MAX_SHAPES + 1)), image_size)
        asked = _ASKERS[question_type](rng, shapes)
        if asked is not None:
            break
    else:
        raise RuntimeError(f"no scene allowed a {question_type!r} question after {_MAX_REDRAWS} draws")
    question, answer, refs = asked
    image, background = _render_scene(rng, shapes, image_size)
    meta = {"shapes": shapes, "background": background, **refs}
    return _sample("shapes_vqa", image, question, answer, question_type, meta)


def shapes_vqa(
    n: int,
    seed: int = 0,
    image_size: int = 64,
    question_types: Sequence[str] = QUESTION_TYPES,
    split: str = "train",
) -> list[dict]:
    """VQA over scenes of 1-4 non-overlapping coloured circles, squares and triangles.

    Question types cycle through `question_types` in order (so each gets n / len(question_types) samples):

    - ``"colour"``: "What colour is the circle?" -> "red" (or "What colour is the shape?" with one shape)
    - ``"shape"``: "What shape is the red object?" -> "circle" (or "What shape is this?" with one shape)
    - ``"count"``: "How many shapes are there?" -> "3"
    - ``"position"``: "Is the red circle left or right of the blue square?" -> "left" / "right"

    ``meta`` holds ``shapes`` (each ``{"shape", "colour", "box"}``), ``background``, and ``target`` /
    ``reference`` (indices into ``shapes``) for the shapes a question names.
    """
    bad = [q for q in question_types if q not in QUESTION_TYPES]
    if bad or not question_types:
        raise ValueError(f"question_types={tuple(question_types)!r}: each must be one of {QUESTION_TYPES}")
    rng = _rng(seed, split)
    return [_shapes_sample(rng, question_types[i % len(question_types)], image_size) for i in range(n)]


# ---------------------------------------------------------------- grounding


def _scale_box(box: Box, image_size: int, target_size: tuple[int, int]) -> Box:
    sx, sy = target_size[0] / image_size, target_size[1] / image_size
    return [int(box[0] * sx + 0.5), int(box[1] * sy + 0.5), int(box[2] * sx + 0.5), int(box[3] * sy + 0.5)]


def _grounding_sample(rng: np.random.Generator, image_size: int, target_size: tuple[int, int] | None) -> dict:
    for _ in range(_MAX_REDRAWS):
        shapes = _layout(rng, int(rng.integers(1, MAX_SHAPES + 1)), image_size)
        candidates = _unique(shapes, "colour", "shape")
        if candidates:
            break
    else:
        raise RuntimeError(f"no scene had a uniquely named shape after {_MAX_REDRAWS} draws")
    target = _pick(rng, candidates)
    box = shapes[target]["box"]
    answer_box = box if target_size is None else _scale_box(box, image_size, target_size)
    image, background = _render_scene(rng, shapes, image_size)
    meta = {
        "shapes": shapes,
        "background": background,
        "target": target,
        "box": box,
        "answer_box": answer_box,
        "frame": [image_size, image_size] if target_size is None else list(target_size),
    }
    return _sample("grounding", image, f"Where is the {_name(shapes[target])}?", format_box(answer_box), "box", meta)


def grounding(
    n: int,
    seed: int = 0,
    image_size: int = 64,
    target_size: int | tuple[int, int] | None = None,
    split: str = "train",
) -> list[dict]:
    """Grounding: "Where is the red circle?" -> ``"[x1, y1, x2, y2]"``, over the same scenes as `shapes_vqa`.

    Boxes are integer pixel edges (``x2``/``y2`` one past the last pixel) in the generated image's coordinates.
    Processors resize images to their own size; pass ``target_size`` (an int for square, or ``(width, height)``)
    to give answer boxes in that frame instead, rounded to integers (Qwen2.5-VL's absolute-coordinate style).
    ``meta["box"]`` always holds the generated-image box, ``meta["answer_box"]`` the answer's, and ``meta["frame"]``
    the answer frame's ``[width, height]``.
    """
    if isinstance(target_size, int):
        target_size = (target_size, target_size)
    rng = _rng(seed, split)
    return [_grounding_sample(rng, image_size, target_size) for _ in range(n)]


# ---------------------------------------------------------------- OCR


@functools.lru_cache(maxsize=1)
def _bitmap_font() -> ImageFont.ImageFont:
    # ImageFont.load_default() returns an anti-aliased FreeType font when FreeType is present (Pillow >= 10.1);
    # the bitmap variant draws 1-bit glyphs, so text pixels keep their exact colour and look the same everywhere.
    return ImageFont.load_default_imagefont()


def render_text_mask(text: str, scale: int = 1) -> PILImage.Image:
    """An "L" mask (0/255) of `text` in PIL's default bitmap font, cropped to its ink and upscaled by `scale`."""
    font = _bitmap_font()
    _, _, right, bottom = font.getbbox(text)
    mask = PILImage.new("L", (right, bottom))
    ImageDraw.Draw(mask).text((0, 0), text, font=font, fill=255)
    mask = mask.crop(mask.getbbox())
    return mask.resize((mask.width * scale, mask.height * scale), PILImage.Resampling.NEAREST)


def _ocr_sample(rng: np.random.Generator, question_type: str, image_size: int) -> dict:
    text = _pick(rng, OCR_WORDS) if question_type == "word" else str(int(rng.integers(0, 10_000)))
    glyphs = render_text_mask(text)
    max_scale = min((image_size - 2) // glyphs.width, (image_size - 2) // glyphs.height)
    if max_scale < 1:
        raise ValueError(f"{text!r} does not fit in a {image_size}px image; use image_size >= 32")
    scale = int(rng.integers((max_scale + 1) // 2, max_scale + 1))  # upper half of the fitting scales: readable
    mask = render_text_mask(text, scale)
    image, background = _background(rng, image_size)
    background_luma = _NOISE_LUMA if background == "noise" else _luma(BACKGROUNDS[background])
    colours = [c for c, rgb in _TEXT_COLOURS.items() if abs(_luma(rgb) - background_luma) >= _MIN_TEXT_CONTRAST]
    colour = _pick(rng, colours)
    x = int(rng.integers(0, image_size - mask.width + 1))
    y = int(rng.integers(0, image_size - mask.height + 1))
    image.paste(_TEXT_COLOURS[colour], (x, y, x + mask.width, y + mask.height), mask)
    meta = {
        "text": text,
        "text_colour": colour,
        "text_rgb": list(_TEXT_COLOURS[colour]),
        "scale": scale,
        "box": [x, y, x + mask.width, y + mask.height],
        "background": background,
    }
    return _sample("ocr", image, OCR_QUESTION, text, question_type, meta)


def ocr(n: int, seed: int = 0, image_size: int = 64, split: str = "train") -> list[dict]:
    """Read a short rendered word or number: "What text is in the image?" -> "lamp" / "4071".

    Question types alternate ``"word"`` (from `OCR_WORDS`, lowercase) and ``"number"`` (0-9999). Text is drawn in
    PIL's default bitmap font, upscaled (nearest) by an integer factor, at a random position, in a colour that
    contrasts with the background. ``meta`` holds ``text``, ``text_colour``/``text_rgb``, ``scale`` and the ink
    ``box``.
    """
    rng = _rng(seed, split)
    return [_ocr_sample(rng, ("word", "number")[i % 2], image_size) for i in range(n)]


# ---------------------------------------------------------------- digits


@functools.lru_cache(maxsize=1)
def _digits_data() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits  # lazy: a dev extra, and slow to import
    except ImportError as e:
        raise ImportError("digits() needs scikit-learn (pip install 'hf-mm[dev]')") from e
    data = load_digits()
    return data.images, data.target


def digits_split_indices(split: str) -> np.ndarray:
    """Indices into ``sklearn.datasets.load_digits()`` of a split: a fixed permutation, first 80% train, rest test."""
    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    images, _ = _digits_data()
    order = np.random.default_rng(_DIGITS_SPLIT_SEED).permutation(len(images))
    cut = int(DIGITS_TRAIN_FRACTION * len(images))
    return order[:cut] if split == "train" else order[cut:]


def digits(n: int, seed: int = 0, image_size: int = 32, split: str = "train") -> list[dict]:
    """scikit-learn's 8x8 handwritten digits: "What digit is this?" -> "7".

    Digits are drawn dark on white, upscaled (nearest) to `image_size`, as RGB. `seed` only orders the split's
    images: shuffled passes over the split, repeated when ``n`` exceeds its size. ``meta`` holds the
    ``load_digits`` ``index`` and the ``label``.
    """
    pool = digits_split_indices(split)
    rng = _rng(seed, split)
    passes = -(-n // len(pool)) if n > 0 else 0
    order = np.concatenate([rng.permutation(pool) for _ in range(passes)] or [pool[:0]])[:n]
    images, labels = _digits_data()
    samples = []
    for index in order:
        grey = (255 - np.round(images[index] * 255 / 16)).astype(np.uint8)  # 0..16 ink -> dark ink on white
        image = PILImage.fromarray(grey, "L").resize((image_size, image_size), PILImage.Resampling.NEAREST)
        label = str(int(labels[index]))
        meta = {"index": int(index), "label": int(labels[index])}
        samples.append(_sample("digits", image.convert("RGB"), DIGITS_QUESTION, label, "digit", meta))
    return samples


# ---------------------------------------------------------------- two-image comparison

COMPARE_QUESTION = "Which image has more circles, the first or the second?"
COMPARE_ANSWERS = ("first", "second")


def _circles_scene(
    rng: np.random.Generator, circles: int, others: int, image_size: int
) -> tuple[PILImage.Image, dict]:
    shapes = _layout(rng, circles + others, image_size) if circles + others else []
    for i, shape in enumerate(shapes):
        shape["shape"] = "circle" if i < circles else _pick(rng, ("square", "triangle"))
    image, background = _render_scene(rng, shapes, image_size)
    return image, {"shapes": shapes, "background": background}


def compare_counts(
    n: int, seed: int = 0, image_size: int = 64, split: str = "train", max_circles: int = 3, distractors: bool = False
) -> list[dict]:
    """Two images per sample: "Which image has more circles, the first or the second?" -> "first" / "second".

    Each image holds 0..`max_circles` circles (never the same count in both; answers alternate, so chance is 50%),
    plus up to one square or triangle each when `distractors`. ``meta`` holds both scenes and ``counts``.
    """
    rng = _rng(seed, split)
    samples = []
    for i in range(n):
        low = int(rng.integers(0, max_circles))
        high = int(rng.integers(low + 1, max_circles + 1))
        counts = (high, low) if i % 2 == 0 else (low, high)
        scenes = [
            _circles_scene(rng, count, int(rng.integers(0, 2)) if distractors else 0, image_size) for count in counts
        ]
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": COMPARE_QUESTION}]},
            {"role": "assistant", "content": [{"type": "text", "text": COMPARE_ANSWERS[i % 2]}]},
        ]  # fmt: skip
        samples.append({
            "images": [image for image, _ in scenes], "messages": messages, "answer": COMPARE_ANSWERS[i % 2],
            "task": "compare_counts", "question_type": "compare",
            "meta": {"counts": list(counts), "scenes": [meta for _, meta in scenes]},
        })  # fmt: skip
    return samples


# ---------------------------------------------------------------- registry and Dataset


TASKS: dict[str, Callable[..., list[dict]]] = {
    "shapes_vqa": shapes_vqa,
    "grounding": grounding,
    "ocr": ocr,
    "digits": digits,
    "compare_counts": compare_counts,
}

_FEATURES = {
    "images": List(Image()),
    # Json, not an Arrow struct: a struct would unify all content parts to {"type", "text"} and hand back
    # {"type": "image", "text": None}; Json returns the messages exactly as generated.
    "messages": List(Json()),
    "answer": Value("string"),
    "task": Value("string"),
    "question_type": Value("string"),
    "meta": Json(),  # its shape differs per task, so it can't be one struct across a mixed list
}


def to_dataset(samples: list[dict]) -> Dataset:
    """A ``datasets.Dataset`` of `samples` (any mix of tasks); rows decode back to PIL images and equal messages."""
    keys = list(_FEATURES) if not samples else [k for k in _FEATURES if k in samples[0]]
    features = Features({k: _FEATURES[k] for k in keys})
    return Dataset.from_list([{k: s[k] for k in keys} for s in samples], features=features)
