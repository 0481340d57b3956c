"""`make demo`: compose a VLM from two saved towers, save it, reload it through transformers' Auto* API, generate.

Everything is tiny and random (no Hub access); the point is the full path a user takes with real checkpoints:
`from_vision_text_pretrained` on two folders -> `save_pretrained` -> `AutoModelForImageTextToText.from_pretrained`.
"""

import argparse
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from . import HfMmLlavaForConditionalGeneration, HfMmLlavaProcessor
from . import testing as T


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output-dir", default="demo_output/llava", help="where the composed model is saved")
    parser.add_argument("--bridge-type", default="mlp2x_gelu")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    with tempfile.TemporaryDirectory() as towers:
        vision = T.save_tiny_vision_tower(Path(towers) / "vision", "siglip")
        text = T.save_tiny_causal_lm(Path(towers) / "text", "qwen2")
        print(f"1. saved a tiny SigLIP tower and a tiny Qwen2 LM under {towers}")
        model = HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(
            vision, text, bridge_type=args.bridge_type
        )
        processor = HfMmLlavaProcessor.from_vision_text_pretrained(vision, text, bridge_type=args.bridge_type)
    print(f"2. composed hf_mm_llava with a {args.bridge_type} bridge: {model.num_parameters():,} parameters")

    model.save_pretrained(args.output_dir)
    processor.save_pretrained(args.output_dir)
    print(f"3. saved to {args.output_dir}: {sorted(p.name for p in Path(args.output_dir).iterdir())}")

    model = AutoModelForImageTextToText.from_pretrained(args.output_dir).eval()
    processor = AutoProcessor.from_pretrained(args.output_dir)
    print(f"4. reloaded with AutoModelForImageTextToText -> {type(model).__name__}")

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=T.random_images(1), text=prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    print(f"5. generated (untrained, so it is noise): {answer!r} after {n_image} image tokens")


if __name__ == "__main__":
    main()
