"""A saved hf_mm checkpoint loads through transformers' Auto* API and pipelines with nothing but `import hf_mm`."""

import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file
from transformers import pipeline

from hf_mm import HfMmLlavaForConditionalGeneration
from hf_mm import testing as T


@pytest.fixture(scope="module")
def saved_llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("llava")
    config = T.tiny_llava_config("siglip", "qwen2", "pixel_shuffle")
    torch.manual_seed(0)
    model = HfMmLlavaForConditionalGeneration(config).eval()
    processor = T.tiny_llava_processor(config, "siglip")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, model, processor


def test_auto_classes_load_in_a_fresh_process_with_only_import_hf_mm(saved_llava, tmp_path):
    path, model, processor = saved_llava
    inputs = processor(
        images=T.random_images(2), text=["<image> hi", "<image> there!"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        save_file({"logits": model(**inputs).logits, **inputs}, str(tmp_path / "expected.safetensors"))
    script = textwrap.dedent(f"""
        import torch
        from safetensors.torch import load_file
        from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText,
                                  AutoProcessor)
        import hf_mm

        path, data = {str(path)!r}, load_file({str(tmp_path / "expected.safetensors")!r})
        expected = data.pop("logits")
        assert AutoConfig.from_pretrained(path).model_type == "hf_mm_llava"
        assert type(AutoProcessor.from_pretrained(path)).__name__ == "HfMmLlavaProcessor"
        assert type(AutoModel.from_pretrained(path)).__name__ == "HfMmLlavaModel"
        for auto in (AutoModelForImageTextToText, AutoModelForCausalLM):
            model = auto.from_pretrained(path).eval()
            with torch.no_grad():
                assert torch.equal(model(**data).logits, expected), auto.__name__
        print("auto-ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "auto-ok" in result.stdout, result.stderr[-3000:]


def test_image_text_to_text_pipeline_answers(saved_llava):
    path, model, processor = saved_llava
    pipe = pipeline("image-text-to-text", model=str(path))
    messages = [{"role": "user", "content": [{"type": "image", "image": T.random_images(1)[0]},
                                             {"type": "text", "text": "what is it?"}]}]  # fmt: skip
    chat = pipe(text=messages, max_new_tokens=5, do_sample=False)
    reply = chat[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and isinstance(reply["content"], str)
    # The pipeline's answer is the model's own greedy continuation of the same prompt.
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=T.random_images(1), text=prompt, return_tensors="pt")
    ids = model.generate(**inputs, max_new_tokens=5, do_sample=False)[0, inputs["input_ids"].shape[1] :]
    assert reply["content"] == processor.decode(ids, skip_special_tokens=True)

    plain = pipe(images=T.random_images(2), text=["<image> a", "<image> b"], max_new_tokens=3, do_sample=False)
    assert [out["input_text"] for out in plain] == ["<image> a", "<image> b"]
    assert all(out["generated_text"].startswith(out["input_text"]) for out in plain)
