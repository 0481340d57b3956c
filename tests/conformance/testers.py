"""Model testers for transformers' `ModelTesterMixin`, built from `hf_mm.testing`'s tiny configs.

Each tester is modelled on transformers' own tester of the analogous model (tests/models/llava, blip_2,
qwen2_5_vl, clip): a batch of `batch_size` samples whose text starts with one image's placeholder run, and the
pixels for those images. hf_mm refuses placeholders without pixels, so every input the mixin builds carries both.
"""

import torch

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
