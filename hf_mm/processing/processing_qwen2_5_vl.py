"""HfMmQwen2_5_VLProcessor: the Qwen2.5-VL image processor + any LM's tokenizer + vision runs in the text.

Each image is `<|vision_start|><|image_pad|><|vision_end|>` in the text (the chat template writes it), and the
processor expands its `<|image_pad|>` into one token per merged 2x2 patch block, t * h * w / 4, read from
`image_grid_thw`; videos likewise with `<|video_pad|>`. It returns `input_ids`, `attention_mask`, `pixel_values`,
`image_grid_thw` (and `pixel_values_videos`, `video_grid_thw`, `second_per_grid_ts`), plus `mm_token_type_ids`
(0 text, 1 image, 2 video), from which the model builds M-RoPE ids. Truncation never cuts a vision run: a sample
that would lose placeholders raises, naming it.
"""

from __future__ import annotations

import re

import numpy as np
from transformers import AutoTokenizer, BatchFeature, ProcessorMixin
from transformers.processing_utils import MultiModalData

from ..modeling.compat import AutoImageProcessor
from ..tokens import QWEN_VISION_TOKENS, prepare_qwen_tokenizer
from .image_processing_qwen2_5_vl import HfMmQwen2_5_VLImageProcessor
from .inputs import prepare_images

VISION_TOKENS = QWEN_VISION_TOKENS


class HfMmQwen2_5_VLProcessor(ProcessorMixin):
    r"""image_processor: `HfMmQwen2_5_VLImageProcessor`. tokenizer: the LM's, prepared by `prepare_qwen_tokenizer`."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        missing = [t for t in VISION_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"The tokenizer lacks {missing}; call prepare_qwen_tokenizer(tokenizer) first.")
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        super().__init__(image_processor, tokenizer, chat_template=chat_template or tokenizer.chat_template, **kwargs)

    @classmethod
    def from_vision_text_pretrained(cls, vision_model_name_or_path: str | None, text_model_name_or_path: str):
        """The processor matching `HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained`: the tower
        folder's image processor (or the default one) and the LM's tokenizer with the vision tokens added."""
        images = HfMmQwen2_5_VLImageProcessor()
        if vision_model_name_or_path is not None:
            try:
                images = AutoImageProcessor.from_pretrained(vision_model_name_or_path)
            except OSError:  # a tower saved without its image processor uses the default one
                pass
        return cls(
            image_processor=images,
            tokenizer=prepare_qwen_tokenizer(AutoTokenizer.from_pretrained(text_model_name_or_path)),
        )

    def _expand(self, text: list[str], token: str, counts: list[int]) -> list[str]:
        """Each `token` placeholder -> its input's run of `count` tokens, in order across the batch."""
        counts, out = list(counts), []
        for index, sample in enumerate(text):
            pieces = sample.split(token)
            if len(pieces) - 1 > len(counts):
                raise ValueError(f"Sample {index} has more {token} placeholders than inputs were given.")
            runs, counts = counts[: len(pieces) - 1], counts[len(pieces) - 1 :]
            out.append(pieces[0] + "".join(token * n + piece for n, piece in zip(runs, pieces[1:])))
        if counts:
            raise ValueError(f"More inputs than {token} placeholders in the text; add one placeholder per input.")
        return out

    def replacement_offsets(self, text: list[str], counts: dict[str, list[int]]) -> list[list[dict]]:
        """Where each placeholder went, per sample, in transformers' `text_replacement_offsets` format: serving
        engines (vLLM) locate each image's run with it."""
        tokens = {"image": self.image_token, "video": self.video_token}
        pattern = "|".join(f"(?P<{kind}>{re.escape(token)})" for kind, token in tokens.items())
        queues, batch = {kind: iter(counts.get(kind, [])) for kind in tokens}, []
        for sample in text:
            shift, entries = 0, []
            for match in re.finditer(pattern, sample):
                replacement = tokens[match.lastgroup] * next(queues[match.lastgroup])
                start = match.start() + shift
                entries.append({"type": match.lastgroup, "span": match.span(), "text": match.group(),
                                "new_span": (start, start + len(replacement)), "replacement": replacement})  # fmt: skip
                shift += len(replacement) - len(match.group())
            batch.append(entries)
        return batch

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """Placeholders and patches per image of `image_sizes` (height, width), after `smart_resize`."""
        processor, tokens, patches = self.image_processor, [], []
        for height, width in image_sizes or []:
            resized = processor.resized_size(height, width)
            patches.append((resized[0] // processor.patch_size) * (resized[1] // processor.patch_size))
            tokens.append(patches[-1] // processor.merge_size**2)
        return MultiModalData(num_image_tokens=tokens, num_image_patches=patches) if image_sizes else MultiModalData()

    def __call__(self, images=None, text=None, videos=None, fps=None, **kwargs) -> BatchFeature:
        text = original = [text] if isinstance(text, str) else list(text or [])
        return_tensors = kwargs.pop("return_tensors", None)
        return_offsets = kwargs.pop("return_text_replacement_offsets", False)
        data, merge, counts = {}, self.image_processor.merge_size**2, {}
        if images is not None:
            images = prepare_images(images)
            data.update(self.image_processor(images=images, return_tensors="np"))
            counts["image"] = [int(np.prod(g)) // merge for g in data["image_grid_thw"]]
            text = self._expand(text, self.image_token, counts["image"])
        else:
            text = self._expand(text, self.image_token, [])  # placeholders without images: refused, by sample
        if videos is not None:
            fps = fps if isinstance(fps, (list, tuple)) else [fps] * len(videos)
            parts = [self.image_processor.process_video(video, rate) for video, rate in zip(videos, fps, strict=True)]
            for key in ("pixel_values_videos", "video_grid_thw", "second_per_grid_ts"):
                data[key] = np.concatenate([part[key] for part in parts])
            counts["video"] = [int(np.prod(g)) // merge for g in data["video_grid_thw"]]
            text = self._expand(text, self.video_token, counts["video"])
        else:
            text = self._expand(text, self.video_token, [])
        tokens = self.tokenizer(text, **kwargs)
        self._check_runs(text, tokens["input_ids"])
        ids = tokens["input_ids"]
        types = [[1 if t == self.image_token_id else 2 if t == self.video_token_id else 0 for t in row] for row in ids]
        out = BatchFeature(data={**tokens, **data, "mm_token_type_ids": types}, tensor_type=return_tensors)
        if return_offsets:
            out["text_replacement_offsets"] = self.replacement_offsets(original, counts)
        return out

    def _check_runs(self, text: list[str], input_ids) -> None:
        for index, (sample, ids) in enumerate(zip(text, input_ids)):
            for token, token_id in ((self.image_token, self.image_token_id), (self.video_token, self.video_token_id)):
                expected, found = sample.count(token), list(ids).count(token_id)
                if found != expected:
                    raise ValueError(
                        f"Sample {index}: truncation would cut its vision placeholders ({found} of {expected} "
                        f"{token} tokens kept). Vision tokens are never truncated: raise max_length or drop it."
                    )

    @property
    def model_input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"]
        return names + ["pixel_values_videos", "video_grid_thw", "second_per_grid_ts"]


__all__ = ["HfMmQwen2_5_VLProcessor", "VISION_TOKENS", "prepare_qwen_tokenizer"]
