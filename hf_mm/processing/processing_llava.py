"""HfMmLlavaProcessor: the vision tower's image processor + the LM's tokenizer + `<image>` + a chat template.

The processor expands each `<image>` into exactly the number of tokens the bridge emits for that image:
the bridge class's own rule (`tokens_per_image`) on the patch grid of the processed pixels.
The model scatters the bridge outputs into those positions; any mismatch fails loudly on both sides.

Choices written down:
- Images must be PIL images, numpy arrays or torch tensors. Strings (paths, URLs) are refused: opening files and
  fetching URLs is the caller's decision, not a side effect of tokenisation.
- Truncation that would change an image's placeholder count raises a ValueError naming the sample, never cuts.
- Chat template: the one passed in, else the tokenizer's, else hf_mm's ChatML template with `{% generation %}`
  markers (installed by `prepare_tokenizer`, with its `<|im_start|>` / `<|im_end|>` tokens).
"""

from __future__ import annotations

import re

from transformers import AutoConfig, AutoTokenizer, ProcessorMixin
from transformers.image_utils import get_image_size, to_numpy_array
from transformers.processing_utils import MultiModalData

from ..modeling.bridges import get_bridge
from ..modeling.compat import AutoImageProcessor
from ..modeling.llava.configuration_llava import HfMmLlavaConfig
from ..modeling.towers import load_vision_config
from ..tokens import IMAGE_TOKEN, default_chat_template, prepare_tokenizer
from .inputs import check_placeholder_count, prepare_images


class HfMmLlavaProcessor(ProcessorMixin):
    r"""
    image_processor: the vision tower's image processor. tokenizer: the LM's tokenizer (with `<image>`).
    patch_size: the vision tower's patch size.
    num_additional_image_tokens: tokens per image beyond the patch grid (CLS/registers kept by `full`).
    bridge_type / bridge_settings: the model's bridge and its constructor settings; the bridge class's own
        `tokens_per_image` rule gives each image's placeholder count.
    fixed_image_tokens: one count for every image, overriding the bridge's rule (Flamingo's single marker).
    downsample_factor: read from processors saved before `bridge_type` was stored (a pixel-shuffle factor).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        chat_template=None,
        patch_size: int = 14,
        num_additional_image_tokens: int = 0,
        bridge_type: str | None = None,
        bridge_settings: dict | None = None,
        image_token: str = IMAGE_TOKEN,
        fixed_image_tokens: int | None = None,
        downsample_factor: int | None = None,
        **kwargs,
    ):
        if bridge_type is None:  # saved before the bridge was stored: a factor > 1 was pixel shuffle's
            factor = downsample_factor or 1
            bridge_type, bridge_settings = ("pixel_shuffle", {"factor": factor}) if factor > 1 else ("linear", {})
        self.bridge_type, self.bridge_settings = bridge_type, dict(bridge_settings or {})
        self.fixed_image_tokens = fixed_image_tokens
        self.patch_size = patch_size
        self.num_additional_image_tokens = num_additional_image_tokens
        self.image_token = image_token
        if image_token not in tokenizer.get_vocab():
            raise ValueError(
                f"The tokenizer has no {image_token!r} token. Call hf_mm.processing.prepare_tokenizer(tokenizer) "
                "first, or build the processor with HfMmLlavaProcessor.from_vision_text_pretrained."
            )
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        if chat_template is None:
            chat_template = tokenizer.chat_template or default_chat_template()
        super().__init__(image_processor, tokenizer, chat_template=chat_template, **kwargs)

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        chat_template: str | None = None,
        **config_kwargs,
    ) -> HfMmLlavaProcessor:
        """The processor matching `HfMmLlavaForConditionalGeneration.from_vision_text_pretrained` with the same
        arguments: the tower's image processor, the LM's tokenizer with `<image>` added, and placeholder counts read
        from the composed config (`bridge_type`, `pixel_shuffle_factor`, `vision_feature_select_strategy`)."""
        vision_config = load_vision_config(vision_model_name_or_path)
        text_config = AutoConfig.from_pretrained(text_model_name_or_path)
        config = HfMmLlavaConfig(vision_config=vision_config, text_config=text_config, **config_kwargs)
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(text_model_name_or_path))
        return cls.from_llava_config(
            config, AutoImageProcessor.from_pretrained(vision_model_name_or_path), tokenizer, chat_template
        )

    @classmethod
    def from_llava_config(cls, config: HfMmLlavaConfig, image_processor, tokenizer, chat_template=None):
        """Build the processor whose placeholder counts match `config`'s tower, feature selection and bridge."""
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            chat_template=chat_template,
            patch_size=config.vision_config.patch_size,
            num_additional_image_tokens=config.num_additional_image_tokens,
            bridge_type=config.bridge_type,
            bridge_settings=config.bridge_settings(),
        )

    def num_image_tokens(self, height: int, width: int) -> int:
        """Placeholders for one processed image of `height` x `width` pixels."""
        if self.fixed_image_tokens is not None:
            return self.fixed_image_tokens
        rule = get_bridge(self.bridge_type).tokens_per_image
        grid = (height // self.patch_size, width // self.patch_size)
        return rule(self.bridge_settings, *grid, self.num_additional_image_tokens)

    def processed_size(self) -> tuple[int, int]:
        """(height, width) of every image after the image processor: the crop if it crops, else its fixed size."""
        processor = self.image_processor
        size = processor.crop_size if getattr(processor, "do_center_crop", False) else processor.size
        if not (size and size.get("height") and size.get("width")):
            raise ValueError(f"{type(processor).__name__} has no fixed output size (size={processor.size!r}).")
        return size["height"], size["width"]

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholders (and 1 pixel tensor) per image of `image_sizes`: how vLLM's and SGLang's transformers
        backends size each image's run before they call the processor."""
        if image_sizes is None:
            return MultiModalData()
        count = self.num_image_tokens(*self.processed_size())
        return MultiModalData(num_image_tokens=[count] * len(image_sizes), num_image_patches=[1] * len(image_sizes))

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        height, width = get_image_size(to_numpy_array(image_inputs["pixel_values"][image_idx]))
        return self.image_token * self.num_image_tokens(height, width)

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        images = prepare_images(images)  # before transformers can open strings as paths or fetch them as URLs
        check_placeholder_count(text, images, self.image_token)
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, audio=audio, **kwargs)

    def _check_special_mm_tokens(self, text: list[str], text_inputs, modalities: list[str]):
        # Overrides transformers' check of the same name (the hook it calls after tokenising) so the error names
        # the sample whose placeholder run truncation would cut.
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        for index, (ids, sample) in enumerate(zip(input_ids, text)):
            expected = len(re.findall(re.escape(self.image_token), sample))
            found = list(ids).count(self.image_token_id)
            if found != expected:
                raise ValueError(
                    f"Sample {index}: truncation would cut its image placeholders ({found} of {expected} "
                    "<image> tokens kept). Image tokens are never truncated: raise max_length, shorten the text, "
                    "or drop the sample."
                )

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["HfMmLlavaProcessor"]
