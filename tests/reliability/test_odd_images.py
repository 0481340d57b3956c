"""Odd images through every processor: converted, resized or refused with an error naming the image's index."""

import io

import numpy as np
import PIL.Image
import pytest
import torch

from hf_mm import testing as T
from hf_mm.processing import HfMmQwen2_5_VLProcessor
from hf_mm.processing.inputs import prepare_images


def _images() -> dict[str, PIL.Image.Image]:
    rng = np.random.default_rng(0)
    rgb = PIL.Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    sixteen = PIL.Image.fromarray(rng.integers(0, 65535, (40, 60), dtype=np.uint16))
    buffer = io.BytesIO()
    rgb.save(buffer, format="PNG")
    truncated = PIL.Image.open(io.BytesIO(buffer.getvalue()[: len(buffer.getvalue()) // 2]))  # lazy: fails on load
    return {
        "1x1": PIL.Image.new("RGB", (1, 1), "red"), "huge": PIL.Image.new("RGB", (4096, 3072), "blue"),
        "grayscale": rgb.convert("L"), "rgba": rgb.convert("RGBA"), "palette": rgb.convert("P"),
        "cmyk": rgb.convert("CMYK"), "16-bit": sixteen, "wide": PIL.Image.new("RGB", (1200, 3)),
        "tall": PIL.Image.new("RGB", (3, 1200)), "truncated": truncated,
    }  # fmt: skip


def _processors():
    llava = T.tiny_llava_config()
    blip2 = T.tiny_blip2_config()
    qwen = HfMmQwen2_5_VLProcessor.from_vision_text_pretrained(None, T.save_tiny_causal_lm(_tmp() / "lm", "qwen2"))
    return {"llava": T.tiny_llava_processor(llava), "blip2": T.tiny_blip2_processor(blip2),
            "flamingo": T.tiny_flamingo_processor(), "qwen2_5_vl": qwen}  # fmt: skip


def _tmp():
    import tempfile
    from pathlib import Path

    return Path(tempfile.mkdtemp())


PROCESSORS = _processors()
# Qwen2.5-VL's smart_resize refuses aspect ratios above 200 (as the reference does), naming the sample.
REFUSED = {("qwen2_5_vl", "wide"), ("qwen2_5_vl", "tall")}


@pytest.mark.parametrize("family", sorted(PROCESSORS))
@pytest.mark.parametrize("kind", sorted(_images()))
def test_each_odd_image_is_converted_or_refused_by_index(family, kind):
    processor = PROCESSORS[family]
    image = _images()[kind]
    ok = T.random_images(1)[0]
    token = processor.image_token if hasattr(processor, "image_token") else "<image>"
    if family == "qwen2_5_vl":
        token = "<|vision_start|><|image_pad|><|vision_end|>"
    text = f"{token} first {token} second"
    if kind == "truncated" or (family, kind) in REFUSED:
        reason = "cannot be decoded" if kind == "truncated" else "aspect ratio 400 > max_aspect_ratio=200"
        with pytest.raises(ValueError, match=rf"images\[1\]:? .*{reason}"):
            processor(images=[[ok, image]], text=[text], return_tensors="pt")
        return
    out = processor(images=[[ok, image]], text=[text], return_tensors="pt")
    pixels = out["pixel_values"]
    assert torch.isfinite(pixels).all() and pixels.shape[0] >= 2
    if kind == "16-bit":  # scaled to 8 bits, not clipped at 255 (which would turn almost every pixel white)
        (converted,) = prepare_images([image])
        values = np.asarray(converted)
        assert converted.mode == "L" and values.min() < 30 and values.max() > 225 and 100 < values.mean() < 155


@pytest.mark.parametrize("kind", sorted(_images()))
def test_the_clip_processor_converts_or_refuses_each_odd_image_by_index(kind):
    from hf_mm import HfMmClipProcessor

    processor = HfMmClipProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer())
    images = [T.random_images(1)[0], _images()[kind]]
    if kind == "truncated":
        with pytest.raises(ValueError, match=r"images\[1\] cannot be decoded"):
            processor(images=images, text=["a", "b"], padding=True, return_tensors="pt")
        return
    out = processor(images=images, text=["a", "b"], padding=True, return_tensors="pt")
    assert out["pixel_values"].shape[0] == 2 and torch.isfinite(out["pixel_values"]).all()
