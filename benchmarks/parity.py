"""Parity deltas against transformers' own classes, on the installed transformers: max |delta| of the logits (or
embeddings) for each family, built and compared exactly as the parity tests do (their helpers are reused). Run it in
each venv of the version window to fill the README's compatibility table:

    .venv-tf5.16.1/bin/python -m benchmarks.parity
"""

import json

import torch
import transformers
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

import hf_mm
from tests.convert.test_blip2_parity import batch as blip2_batch
from tests.convert.test_blip2_parity import reference_blip2
from tests.convert.test_llava_parity import padded_batch_with_two_images, reference_llava
from tests.modeling.qwen_reference import IMAGE, START, TEXT, VIDEO, VISION
from tests.modeling.qwen_reference import inputs as qwen_inputs
from tests.modeling.test_clip import batch as clip_batch
from tests.modeling.test_clip import tiny_clip, tiny_siglip
from tests.modeling.test_qwen2_5_vit import GRID, pixels, reference_and_ours


def delta(expected: torch.Tensor, got: torch.Tensor) -> float:
    return (expected - got).abs().max().item()


def llava() -> float:
    reference, ref_processor = reference_llava()
    model, processor = hf_mm.convert.from_transformers_llava(reference, ref_processor)
    return delta(reference(**padded_batch_with_two_images(ref_processor)).logits,
                 model(**padded_batch_with_two_images(processor)).logits)  # fmt: skip


def blip2() -> float:
    reference, ref_processor = reference_blip2("opt")
    model, processor = hf_mm.convert.from_transformers_blip2(reference, ref_processor)
    ref_inputs = blip2_batch(ref_processor, with_placeholder=False, padding_side="right")
    return delta(reference(**ref_inputs).logits, model(**blip2_batch(processor, padding_side="right")).logits)


def qwen2_5_vl() -> float:
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(
        vision_config=VISION, text_config=TEXT, image_token_id=IMAGE, video_token_id=VIDEO, vision_start_token_id=START
    )
    reference = Qwen2_5_VLForConditionalGeneration(config).eval()
    ours = hf_mm.convert.qwen2_5_vl.from_transformers_qwen2_5_vl(reference)[0]
    worst = 0.0
    for kind in ("one_image", "two_images", "padded_batch", "video"):
        keep = qwen_inputs(kind)["attention_mask"].bool()
        worst = max(worst, delta(reference(**qwen_inputs(kind)).logits[keep], ours(**qwen_inputs(kind)).logits[keep]))
    return worst


def qwen2_5_vit_fp64() -> float:
    reference, ours, merger = reference_and_ours()
    return delta(reference(pixels(), grid_thw=GRID).pooler_output, merger(ours(pixels(), GRID).last_hidden_state))


def clip(siglip: bool = False) -> float:
    reference = tiny_siglip() if siglip else tiny_clip()
    convert = hf_mm.from_transformers_siglip if siglip else hf_mm.from_transformers_clip
    model, _ = convert(reference)
    expected, got = reference(**clip_batch()), model(**clip_batch())
    return max(delta(expected.logits_per_text, got.logits_per_text), delta(expected.image_embeds, got.image_embeds))


def main() -> None:
    torch.manual_seed(0)
    with torch.no_grad():
        rows = {
            "llava": llava(),
            "blip2": blip2(),
            "qwen2_5_vl": qwen2_5_vl(),
            "qwen2_5_vit_fp64": qwen2_5_vit_fp64(),
            "clip": clip(),
            "siglip": clip(siglip=True),
        }
    print(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                      "max_abs_delta": {k: float(f"{v:.2e}") for k, v in rows.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
