"""Image-caption pairs for contrastive training, generated in code: scikit-learn's digits with templated captions.

Templates are split: `TRAIN_TEMPLATES` caption the training pairs; `HELD_OUT_TEMPLATES` never appear in training and
serve zero-shot evaluation, so a model must generalise from the class word ("seven" or "7"), not memorise prompts.
"""

import numpy as np

from .synthetic import digits

NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# `{word}` is the number word, `{digit}` the numeral.
TRAIN_TEMPLATES = (
    "a photo of the number {word}",
    "a handwritten {digit}",
    "the digit {word}",
    "an image of a {digit}",
    "a scan of a handwritten {word}",
    "{word}",
    "the number {digit}",
    "a black and white picture of a {word}",
)
HELD_OUT_TEMPLATES = (
    "a drawing of the digit {word}",
    "this is a {digit}",
    "a picture showing {word}",
    "a small {digit} written by hand",
)


def caption(label: int, template: str) -> str:
    return template.format(word=NUMBER_WORDS[label], digit=label)


def digit_pairs(
    n: int, split: str = "train", templates=TRAIN_TEMPLATES, seed: int = 0, image_size: int = 32
) -> list[dict]:
    """`n` pairs {"image", "text", "label"}: a digit of `split` and a caption from a random template."""
    rng = np.random.default_rng([seed, 7])
    pairs = []
    for sample in digits(n, seed=seed, image_size=image_size, split=split):
        label = sample["meta"]["label"]
        template = templates[int(rng.integers(len(templates)))]
        pairs.append({"image": sample["images"][0], "text": caption(label, template), "label": label})
    return pairs


def class_templates(templates=HELD_OUT_TEMPLATES) -> tuple[list[str], list]:
    """(class names, prompt makers) for `hf_mm.eval.zero_shot_classifier`: one maker per template, from the class
    name (the number word) to the caption, so numeral templates get the numeral."""
    makers = [lambda name, t=t: caption(NUMBER_WORDS.index(name), t) for t in templates]
    return list(NUMBER_WORDS), makers


__all__ = ["NUMBER_WORDS", "TRAIN_TEMPLATES", "HELD_OUT_TEMPLATES", "caption", "digit_pairs", "class_templates"]
