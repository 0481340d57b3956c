"""HfMmFlamingoProcessor: the tower's image processor + the LM's tokenizer with `<image>` and `<|endofchunk|>`.

Flamingo does not expand images into placeholder runs: each image is one `<image>` token, which marks where the
image stands; the model's gated cross-attention reads the image from there on. Outputs:
- `input_ids` / `attention_mask`, with one `<image>` per image;
- `pixel_values` (N_images, C, H, W), the batch's images flat, in the order of their `<image>` tokens (the layout
  every hf_mm processor and collator uses; the model regroups them per sample). Video clips go to the model as
  (N, F, C, H, W) directly.

Interleaved input: `processor(interleaved=[["a photo of", image, "a cat.", image2, ...], ...])`, strings and images
in any order. `few_shot_prompt(demos, query_image)` builds Flamingo's k-shot prompt
`<image>{text}<|endofchunk|>... <image>{query_prefix}`.
"""

from __future__ import annotations

from transformers import AutoTokenizer

from ..modeling.compat import AutoImageProcessor
from ..tokens import END_OF_CHUNK, IMAGE_TOKEN, prepare_flamingo_tokenizer
from .processing_llava import HfMmLlavaProcessor


class HfMmFlamingoProcessor(HfMmLlavaProcessor):
    r"""
    image_processor: the vision tower's image processor. tokenizer: the LM's tokenizer, prepared with
    `prepare_flamingo_tokenizer`. end_of_chunk: the token that closes each (image, text) chunk.
    """

    def __init__(
        self, image_processor=None, tokenizer=None, chat_template=None, image_token: str = IMAGE_TOKEN,
        end_of_chunk: str = END_OF_CHUNK, **kwargs,
    ):  # fmt: skip
        if end_of_chunk not in tokenizer.get_vocab():
            raise ValueError(
                f"The tokenizer has no {end_of_chunk!r} token. Call hf_mm.processing.prepare_flamingo_tokenizer"
                "(tokenizer) first, or build the processor with HfMmFlamingoProcessor.from_vision_text_pretrained."
            )
        self.end_of_chunk = end_of_chunk
        kwargs.pop("fixed_image_tokens", None)  # always one token per image
        super().__init__(
            image_processor, tokenizer, chat_template, image_token=image_token, fixed_image_tokens=1, **kwargs
        )

    @classmethod
    def from_vision_text_pretrained(
        cls, vision_model_name_or_path: str, text_model_name_or_path: str, chat_template: str | None = None
    ) -> HfMmFlamingoProcessor:
        """The processor matching `HfMmFlamingoForConditionalGeneration.from_vision_text_pretrained`."""
        tokenizer = prepare_flamingo_tokenizer(AutoTokenizer.from_pretrained(text_model_name_or_path))
        return cls(AutoImageProcessor.from_pretrained(vision_model_name_or_path), tokenizer, chat_template)

    def __call__(self, images=None, text=None, interleaved=None, **kwargs):
        if interleaved is not None:
            if images is not None or text is not None:
                raise ValueError("Pass either `interleaved` or `images` and `text`, not both.")
            text, images = self.from_interleaved(interleaved)
        return super().__call__(images=images, text=text, **kwargs)

    def from_interleaved(self, samples: list[list]) -> tuple[list[str], list[list]]:
        """Samples of interleaved strings and images -> (texts with one `<image>` per image, images per sample)."""
        texts, images = [], []
        for index, sample in enumerate(samples):
            if isinstance(sample, str) or not hasattr(sample, "__iter__"):
                raise TypeError(f"interleaved[{index}] must be a list of strings and images, got {type(sample).__name__}.")  # fmt: skip
            parts, sample_images = [], []
            for item in sample:
                if isinstance(item, str):
                    parts.append(item)
                else:
                    parts.append(self.image_token)
                    sample_images.append(item)
            texts.append("".join(parts))
            images.append(sample_images)
        return texts, images

    def few_shot_prompt(self, demos: list[tuple], query_image, query_prefix: str = "") -> tuple[str, list]:
        """Flamingo's k-shot prompt: `<image>{text}<|endofchunk|>` per (image, text) demo, then the query image and
        `query_prefix` (e.g. "Output:"), for the model to continue. Returns (text, images)."""
        chunks = [f"{self.image_token}{text}{self.end_of_chunk}" for _, text in demos]
        return "".join(chunks) + f"{self.image_token}{query_prefix}", [image for image, _ in demos] + [query_image]


__all__ = ["HfMmFlamingoProcessor"]
