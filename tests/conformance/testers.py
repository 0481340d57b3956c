"""Model testers for transformers' `ModelTesterMixin`, built from `hf_mm.testing`'s tiny configs.

Each tester is modelled on transformers' own tester of the analogous model (tests/models/llava, blip_2,
qwen2_5_vl, clip): a batch of `batch_size` samples whose text starts with one image's placeholder run, and the
pixels for those images. hf_mm refuses placeholders without pixels, so every input the mixin builds carries both.
"""

import torch

from hf_mm.testing import tiny_clip_config  # noqa: F401  (the conformance modules import it from here)

IGNORE_IDS = 8  # ids below this are special in the tiny tokenizer (eos 0, pad 1) and never drawn as text


class PrefixVLMTester:
    """For the prefix families (LLaVA, BLIP-2): `tokens_per_image` placeholders, then `text_length` text tokens."""

    def __init__(self, parent, make_config, tokens_per_image: int, batch_size: int = 3, text_length: int = 7):
        self.parent = parent
        self.make_config = make_config
        config = make_config()
        self.batch_size = batch_size
        self.tokens_per_image = tokens_per_image
        self.seq_length = tokens_per_image + text_length
        text = config.text_config
        self.text_config, self.vision_config = text.to_dict(), config.vision_config.to_dict()
        self.num_hidden_layers = text.num_hidden_layers
        self.hidden_size = text.hidden_size
        self.num_attention_heads = text.num_attention_heads
        self.vocab_size = text.vocab_size
        self.image_size = getattr(config.vision_config, "image_size", None)
        self.patch_size = config.vision_config.patch_size
        self.is_training = True

    def get_config(self):
        return self.make_config()

    def text_ids(self, config) -> torch.Tensor:
        ids = torch.randint(IGNORE_IDS, self.vocab_size, (self.batch_size, self.seq_length))
        ids[ids == config.image_token_id] = IGNORE_IDS
        ids[:, : self.tokens_per_image] = config.image_token_id
        return ids

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = self.text_ids(config)
        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}
        return config, inputs


# The mixin decides which tests apply to a class by looking its name up in transformers' static name tables (a base
# model gets no labels, a head model must return a loss). hf_mm registers its classes with the Auto* mappings at
# import, not in those static tables, so each table the mixin reads is extended, in the mixin's module only, with the
# classes the matching Auto* mapping really resolves for `config`.
_NAME_TABLES = {
    "MODEL_MAPPING_NAMES": "MODEL_MAPPING",
    "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES": "MODEL_FOR_CAUSAL_LM_MAPPING",
    "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES": "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING",
    "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES": "MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING",
}


def declare_auto_classes(common, config) -> None:
    """Add the classes hf_mm registered for `type(config)` to the mixin module's name tables."""
    import transformers

    for table, mapping_name in _NAME_TABLES.items():
        mapping = getattr(transformers, mapping_name)
        if type(config) not in mapping:
            continue
        names = getattr(common, table, None)
        if names is None:
            continue
        setattr(common, table, {**names, config.model_type: mapping[type(config)].__name__})


class QwenVLTester(PrefixVLMTester):
    """Qwen2.5-VL, as transformers' Qwen2_5_VLVisionText2TextModelTester: one 28x28 image per sample (a 2x2 grid of
    14-px patches over 2 temporal slots, merged 2x2 into one placeholder), after a `<|vision_start|>`."""

    def __init__(self, parent, make_config, batch_size: int = 3, text_length: int = 7):
        super().__init__(parent, make_config, tokens_per_image=1, batch_size=batch_size, text_length=text_length)
        config = make_config()
        self.image_size = config.vision_config.patch_size * 2
        self.patch_size = config.vision_config.patch_size
        self.seq_length = text_length + 2

    def text_ids(self, config) -> torch.Tensor:
        ids = torch.randint(IGNORE_IDS, self.vocab_size, (self.batch_size, self.seq_length))
        special = (config.image_token_id, config.video_token_id, config.vision_start_token_id)
        ids[torch.isin(ids, torch.tensor(special))] = IGNORE_IDS
        ids[:, 1], ids[:, 2] = config.vision_start_token_id, config.image_token_id
        return ids

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        vision = config.vision_config
        input_ids = self.text_ids(config)
        patch = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        pixel_values = torch.randn(self.batch_size * 4, patch)  # 4 patches (2x2) per image
        grid = torch.tensor([[1, 2, 2]] * self.batch_size)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}
        return config, {**inputs, "image_grid_thw": grid}


class DualEncoderTester:
    """hf_mm_clip, as transformers' CLIPModelTester: captions (right-padded) and images, `return_loss=True`."""

    def __init__(self, parent, make_config, batch_size: int = 3, seq_length: int = 7):
        self.parent, self.make_config = parent, make_config
        config = make_config()
        self.batch_size, self.seq_length = batch_size, seq_length
        text = config.text_config
        self.text_config, self.vision_config = text.to_dict(), config.vision_config.to_dict()
        self.num_hidden_layers, self.hidden_size = text.num_hidden_layers, text.hidden_size
        self.num_attention_heads, self.vocab_size = text.num_attention_heads, text.vocab_size
        self.image_size, self.patch_size = config.vision_config.image_size, config.vision_config.patch_size
        self.is_training = True

    def get_config(self):
        return self.make_config()

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        input_ids = torch.randint(IGNORE_IDS, self.vocab_size, (self.batch_size, self.seq_length))
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, -2:] = 0  # one right-padded caption
        pixel_values = torch.randn(self.batch_size, 3, self.image_size, self.image_size)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
        return config, {**inputs, "return_loss": True}


# The one exception to "skip only where transformers skips": these mixin tests feed `<image>` placeholders (the
# tester's own ids, or random ids that hit the placeholder id) without pixel_values. hf_mm refuses such input on
# purpose, where transformers' Llava embeds the placeholders as text. What each test is about is checked with images
# in tests/conformance/test_with_images.py.
NO_PIXELS = (
    "feeds <image> placeholders without pixel_values, which hf_mm refuses on purpose; covered with images in "
    "tests/conformance/test_with_images.py"
)


def skip_mixin_tests(*names: str, reason: str):
    """Class decorator: skip the mixin tests `names`, including their parameterized expansions (`name_00_fp16...`),
    with `reason`."""
    import re
    import unittest

    def decorate(cls):
        for attr in dir(cls):
            if any(re.fullmatch(rf"{name}(_\d+.*)?", attr) for name in names):
                setattr(cls, attr, unittest.skip(reason=reason)(lambda self: None))
        return cls

    return decorate


def left_pad(inputs: dict, pad_id: int, n: int = 3) -> dict:
    """The first sample left-padded by `n` tokens (mask 0); the others get `n` more text tokens in front."""
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    front = torch.randint(IGNORE_IDS, IGNORE_IDS + 50, (ids.shape[0], n))
    front[0] = pad_id
    front_mask = torch.ones_like(front)
    front_mask[0] = 0
    return {**inputs, "input_ids": torch.cat([front, ids], 1), "attention_mask": torch.cat([front_mask, mask], 1)}


def generative_cases() -> dict:
    """family -> (model class, config, a left-padded batch with one image per sample). The text after each image
    is random; `config.text_config.pad_token_id` pads."""
    from hf_mm import HfMmBlip2ForConditionalGeneration, HfMmLlavaForConditionalGeneration
    from hf_mm import testing as T
    from hf_mm.modeling.flamingo import HfMmFlamingoForConditionalGeneration
    from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_VLForConditionalGeneration

    families = {
        "llava": (HfMmLlavaForConditionalGeneration, PrefixVLMTester(None, T.tiny_llava_config, 16)),
        "blip2": (HfMmBlip2ForConditionalGeneration, PrefixVLMTester(None, T.tiny_blip2_config, 4)),
        "flamingo": (HfMmFlamingoForConditionalGeneration, PrefixVLMTester(None, T.tiny_flamingo_config, 1)),
        "qwen2_5_vl": (HfMmQwen2_5_VLForConditionalGeneration, QwenVLTester(None, T.tiny_qwen2_5_vl_config)),
    }
    cases = {}
    for family, (model_class, tester) in families.items():
        torch.manual_seed(0)
        config, inputs = tester.prepare_config_and_inputs_for_common()
        cases[family] = (model_class, config, left_pad(inputs, config.text_config.pad_token_id))
    return cases
