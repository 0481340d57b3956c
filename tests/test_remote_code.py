"""`hf-mm export-remote-code`: a saved model loads with `trust_remote_code=True` in a process where importing hf_mm
is impossible, and computes what the hf_mm model computes. The processor comes back through AutoProcessor too."""

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from transformers import CLIPConfig, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from hf_mm import (
    HfMmBlip2ForConditionalGeneration,
    HfMmClipConfig,
    HfMmClipModel,
    HfMmClipProcessor,
    HfMmFlamingoForConditionalGeneration,
    HfMmLlavaForConditionalGeneration,
)
from hf_mm import testing as T
from hf_mm.cli import main
from hf_mm.convert.qwen2_5_vl import from_transformers_qwen2_5_vl
from tests.modeling.qwen_reference import IMAGE, START, TEXT, VIDEO, VISION, inputs

# Runs in a fresh interpreter: any attempt to import hf_mm fails, so only the exported files can serve the model.
LOADER = """
import importlib.abc, json, sys
class NoHfMm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "hf_mm" or name.startswith("hf_mm."):
            raise ImportError(f"{name} is blocked in this process")
sys.meta_path.insert(0, NoHfMm())
sys.path = [p for p in sys.path if p not in ("", ".")]  # and not the checkout (the process runs in a temp dir)
import torch, transformers
from safetensors.torch import load_file
folder, auto_class, output, with_processor = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
model = getattr(transformers, auto_class).from_pretrained(folder, trust_remote_code=True).eval()
inputs = load_file(folder + "/inputs.safetensors")
expected = inputs.pop("expected")
with torch.no_grad():
    got = getattr(model(**inputs), output)
report = {"class": type(model).__module__, "max_diff": (got - expected).abs().max().item()}
if with_processor:
    processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    request = json.load(open(folder + "/request.json"))
    images = [torch.zeros(3, 32, 32, dtype=torch.uint8)]
    again = processor(images=images, text=request["text"], return_tensors="pt", padding=True)
    report["processor_ids_equal"] = torch.equal(again["input_ids"], inputs["input_ids"])
report["hf_mm_imported"] = any(name.split(".")[0] == "hf_mm" for name in sys.modules)
print(json.dumps(report))
"""


def _clip():
    text = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2, vocab_size=T.TEXT_VOCAB_SIZE)).text_config  # fmt: skip
    model = HfMmClipModel(
        HfMmClipConfig(vision_config=T.tiny_vision_config("clip"), text_config=text, projection_dim=8)
    )
    return model, HfMmClipProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer())


def _case(family: str):
    """(model, processor or None, the Auto class that loads it)."""
    if family == "llava":
        config = T.tiny_llava_config("clip", "llama", "perceiver")
        return HfMmLlavaForConditionalGeneration(config), T.tiny_llava_processor(config), "AutoModelForImageTextToText"
    if family == "flamingo":
        model = HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config())
        for block in model.model.bridge.gated_cross_attn:  # open the gates, so the images matter
            torch.nn.init.constant_(block.attn_gate, 0.5)
        return model, T.tiny_flamingo_processor(), "AutoModelForImageTextToText"
    if family == "blip2":
        config = T.tiny_blip2_config()
        return HfMmBlip2ForConditionalGeneration(config), T.tiny_blip2_processor(config), "AutoModelForImageTextToText"
    if family == "clip":
        return (*_clip(), "AutoModel")
    config = Qwen2_5_VLConfig(vision_config=VISION, text_config=TEXT, image_token_id=IMAGE, video_token_id=VIDEO,
                              vision_start_token_id=START)  # fmt: skip
    return (
        from_transformers_qwen2_5_vl(Qwen2_5_VLForConditionalGeneration(config))[0],
        None,
        "AutoModelForImageTextToText",
    )


@pytest.mark.parametrize("family", ["llava", "flamingo", "blip2", "clip", "qwen2_5_vl"])
def test_exported_model_loads_without_hf_mm_and_matches(family, tmp_path):
    torch.manual_seed(0)
    model, processor, auto_class = _case(family)
    model.eval().save_pretrained(tmp_path)
    text = ["a photo of a cat", "a dog"] if family == "clip" else ["<image> what is this?"]
    if processor is not None:
        processor.save_pretrained(tmp_path)
        batch = dict(processor(images=[torch.zeros(3, 32, 32, dtype=torch.uint8)], text=text, return_tensors="pt",
                               padding=True))  # fmt: skip
    else:
        batch = inputs("one_image")
    output = "logits_per_image" if family == "clip" else "logits"
    with torch.no_grad():
        batch["expected"] = getattr(model(**batch), output)
    save_file({k: v.contiguous() for k, v in batch.items()}, tmp_path / "inputs.safetensors")
    (tmp_path / "request.json").write_text(json.dumps({"text": text}))
    main(["export-remote-code", str(tmp_path)])
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoConfig"].startswith("configuration_") and auto_class in config["auto_map"]
    argv = [str(tmp_path), auto_class, output, "1" if processor is not None else "0"]
    env = {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", LOADER, *argv], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["class"].startswith("transformers_modules.") and not report["hf_mm_imported"]
    assert report["max_diff"] <= 1e-5  # fp32; another process may reduce in another order (seen: 2.4e-7)
    if processor is not None:
        assert report["processor_ids_equal"]


def test_export_refuses_folders_that_are_not_hf_mm_models(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type='llama', which is not an hf_mm family"):
        main(["export-remote-code", str(tmp_path)])
