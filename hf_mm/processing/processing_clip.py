"""HfMmClipProcessor: a dual encoder's image processor + its text tower's tokenizer.

Texts and images are independent inputs (no placeholders). Choices written down:
- A tokenizer without a pad token (a causal LM's) pads with its EOS token; the model pools the last *non-padding*
  token, so right padding is safe.
- Images must be PIL images, numpy arrays or torch tensors, as in every hf_mm processor.
"""

from __future__ import annotations

from transformers import AutoTokenizer, ProcessorMixin

from ..modeling.compat import AutoImageProcessor
from ..tokens import set_pad_token
from .inputs import prepare_images


class HfMmClipProcessor(ProcessorMixin):
    r"""image_processor: the vision tower's image processor. tokenizer: the text tower's tokenizer."""

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        if tokenizer is not None:
            set_pad_token(tokenizer)
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_vision_text_pretrained(
        cls, vision_model_name_or_path: str, text_model_name_or_path: str
    ) -> HfMmClipProcessor:
        """The processor matching `HfMmClipModel.from_vision_text_pretrained` on the same two checkpoints."""
        return cls(
            image_processor=AutoImageProcessor.from_pretrained(vision_model_name_or_path),
            tokenizer=AutoTokenizer.from_pretrained(text_model_name_or_path),
        )

    def prepare_inputs_layout(self, images=None, text=None, videos=None, audio=None, **kwargs):
        images = prepare_images(images)  # before transformers can open strings as paths or fetch them as URLs
        return super().prepare_inputs_layout(images=images, text=text, videos=videos, audio=audio, **kwargs)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "pixel_values"]


__all__ = ["HfMmClipProcessor"]
