"""`hf-mm export-transformers`: each mapping is loaded in a fresh process in which `import hf_mm` raises, through the
Auto classes (and transformers' own processor), and must give hf_mm's logits to 1e-5 in fp32 on a padded batch
(two images in one sample where the class takes several) and the same greedy tokens. Models without an exact
native equivalent are refused, naming the remote-code way."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

import hf_mm
from hf_mm import testing as T
from hf_mm.cli import main
from hf_mm.export import NotExportable, to_transformers
from tests.convert.test_blip2_parity import reference_blip2
from tests.modeling.helpers import tiny_clip
from tests.modeling.qwen_reference import IMAGE, START, TEXT, VIDEO, VISION
from tests.modeling.qwen_reference import inputs as qwen_inputs

TOLERANCE = 1e-5
NEW_TOKENS = 5

# Runs in a fresh interpreter: hf_mm is blocked, so only transformers' own classes can load the checkpoint.
NATIVE = r"""
import json, sys
sys.modules["hf_mm"] = None  # `import hf_mm` raises ImportError from here on
import torch, PIL.Image
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForImageTextToText, AutoProcessor
folder, request_path, out = sys.argv[1:4]
request = json.load(open(request_path))
auto = AutoModel if request["auto"] == "AutoModel" else AutoModelForImageTextToText
model = auto.from_pretrained(folder).eval()
if request.get("texts") is not None:
    processor = AutoProcessor.from_pretrained(folder)
    processor.tokenizer.padding_side = request["padding_side"]
    images = [PIL.Image.open(path).convert("RGB") for path in request["images"]]
    inputs = dict(processor(images=images, text=request["texts"], padding=True, return_tensors="pt"))
else:
    inputs = load_file(request["inputs"])
results = {}
with torch.no_grad():
    outputs = model(**inputs)
    results["logits"] = outputs.logits if hasattr(outputs, "logits") else outputs.logits_per_image
    if request["generate"]:
        results["tokens"] = model.generate(**inputs, max_new_tokens=request["new_tokens"], do_sample=False)
results.update({"input_ids": inputs["input_ids"]})
save_file({k: v.contiguous() for k, v in results.items()}, out)
print(type(model).__name__)
"""


def run_natively(tmp_path, folder, request: dict) -> tuple[str, dict]:
    (tmp_path / "request.json").write_text(json.dumps({**request, "new_tokens": NEW_TOKENS}))
    out = tmp_path / "native.safetensors"
    done = subprocess.run([sys.executable, "-c", NATIVE, str(folder), str(tmp_path / "request.json"), str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1], load_file(out)


def export(tmp_path, model, processor) -> str:
    model.save_pretrained(tmp_path / "hf_mm")
    if processor is not None:
        processor.save_pretrained(tmp_path / "hf_mm")
    main(["export-transformers", str(tmp_path / "hf_mm"), str(tmp_path / "native")])
    return str(tmp_path / "native")


def sharpen(model):
    with torch.no_grad():  # away from the initial values, so a wrong mapping would show in the logits
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return model.eval()


def through_processor(tmp_path, texts, images, padding_side: str) -> dict:
    """A request for the native side to build its inputs with transformers' own processor (images as PNG files)."""
    paths = [str(tmp_path / f"image{i}.png") for i in range(len(images))]
    for image, path in zip(images, paths):
        image.save(path)
    return {"auto": "AutoModelForImageTextToText", "texts": texts, "padding_side": padding_side, "images": paths,
            "generate": True}  # fmt: skip


@pytest.mark.parametrize("vision", ["clip", "siglip"])
def test_llava_exports_to_llava_for_conditional_generation(tmp_path, vision):
    config = T.tiny_llava_config(vision=vision)
    model = sharpen(hf_mm.HfMmLlavaForConditionalGeneration(config))
    processor = T.tiny_llava_processor(config, vision=vision)
    folder = export(tmp_path, model, processor)
    texts = ["<image>first <image>second: which is brighter?", "<image>what is this?"]
    images = [image.convert("RGB") for image in T.random_images(3)]
    name, native = run_natively(tmp_path, folder, through_processor(tmp_path, texts, images, "left"))
    processor.tokenizer.padding_side = "left"
    inputs = dict(processor(images=images, text=texts, padding=True, return_tensors="pt"))
    assert name == "LlavaForConditionalGeneration"
    assert torch.equal(native["input_ids"], inputs["input_ids"])  # transformers' processor expands the same way
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    keep = inputs["attention_mask"].bool()
    assert (native["logits"][keep] - logits[keep]).abs().max() <= TOLERANCE
    assert torch.equal(native["tokens"], tokens)


def test_blip2_exports_to_blip2_for_conditional_generation(tmp_path):
    # transformers' BLIP-2 takes one image per sample, so the batch has one in each (right-padded: its processor
    # inserts the query placeholders before padding, ours after, and both agree on the right).
    reference, reference_processor = reference_blip2("opt")
    model, processor = hf_mm.convert.from_transformers_blip2(reference, reference_processor)
    folder = export(tmp_path, model, processor)
    texts = ["question: which shape is red? answer:", "what is it?"]
    images = [image.convert("RGB") for image in T.random_images(2)]
    name, native = run_natively(tmp_path, folder, through_processor(tmp_path, texts, images, "right"))
    processor.tokenizer.padding_side = "right"
    inputs = dict(processor(images=images, text=["<image>" + t for t in texts], padding=True, return_tensors="pt"))
    assert name == "Blip2ForConditionalGeneration" and torch.equal(native["input_ids"], inputs["input_ids"])
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    keep = inputs["attention_mask"].bool()
    assert (native["logits"][keep] - logits[keep]).abs().max() <= TOLERANCE
    assert torch.equal(native["tokens"][:, -NEW_TOKENS:], tokens[:, -NEW_TOKENS:])


def test_qwen2_5_vl_exports_to_qwen2_5_vl_for_conditional_generation(tmp_path):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(vision_config=VISION, text_config=TEXT, image_token_id=IMAGE, video_token_id=VIDEO,
                              vision_start_token_id=START)  # fmt: skip
    model, _ = hf_mm.convert.from_transformers_qwen2_5_vl(sharpen(Qwen2_5_VLForConditionalGeneration(config)))
    folder = export(tmp_path, model, None)
    inputs = qwen_inputs("padded_two_images")  # two images of different sizes in one sample, left padding
    save_file(inputs, tmp_path / "inputs.safetensors")
    request = {"auto": "AutoModelForImageTextToText", "inputs": str(tmp_path / "inputs.safetensors"), "generate": True}
    name, native = run_natively(tmp_path, folder, request)
    with torch.no_grad():
        logits = model(**inputs).logits
        tokens = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False)
    keep = inputs["attention_mask"].bool()
    assert name == "Qwen2_5_VLForConditionalGeneration"
    assert (native["logits"][keep] - logits[keep]).abs().max() <= TOLERANCE
    assert torch.equal(native["tokens"], tokens)


def test_clip_exports_to_clip_model(tmp_path):
    model, _ = hf_mm.from_transformers_clip(tiny_clip())
    folder = export(tmp_path, model, None)
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(3, 300, (3, 7), generator=generator),
              "pixel_values": torch.randn(2, 3, 32, 32, generator=generator)}  # fmt: skip
    save_file(inputs, tmp_path / "inputs.safetensors")
    request = {"auto": "AutoModel", "inputs": str(tmp_path / "inputs.safetensors"), "generate": False}
    name, native = run_natively(tmp_path, folder, request)
    with torch.no_grad():
        expected = model(**inputs).logits_per_image
    assert name == "CLIPModel" and (native["logits"] - expected).abs().max() <= TOLERANCE


@pytest.mark.parametrize(
    "build, reason",
    [
        (lambda: T.tiny_model_and_processor("llava", bridge_type="perceiver"), "bridge_type='perceiver'"),
        (lambda: T.tiny_model_and_processor("blip2"), "not BLIP-2's own"),
        (lambda: T.tiny_model_and_processor("flamingo"), "transformers has no class for 'hf_mm_flamingo'"),
        (lambda: (hf_mm.HfMmQwen2_5_VLForConditionalGeneration(T.tiny_qwen2_5_vl_config(text="llama")), None),
         "Qwen2_5_VL's text model is Qwen2"),
    ],
    ids=["perceiver", "blip2_own_tower", "flamingo", "qwen_vit_with_llama"],
)  # fmt: skip
def test_models_without_an_exact_equivalent_are_refused_naming_remote_code(tmp_path, build, reason, capsys):
    model, processor = build()
    with pytest.raises(NotExportable, match="hf-mm push") as refused:
        to_transformers(model, processor)
    assert reason in str(refused.value)
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(SystemExit, match="Not exported"):
        main(["export-transformers", str(tmp_path / "src"), str(tmp_path / "dst")])
    assert not (tmp_path / "dst").exists()  # nothing approximate is written
