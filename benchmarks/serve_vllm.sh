#!/usr/bin/env bash
# Serve hf_mm models with vLLM's OpenAI server and check one chat completion against generate(). For the first
# machine with a GPU; it has not run yet (README, "After training").
#
#   benchmarks/serve_vllm.sh [WORKDIR]      (needs a CUDA GPU; installs vllm==0.33.0 into WORKDIR/venv)
#
# Two models, both built from configs here (no Hub), ~0.5B parameters, trained for a few steps so the answers are
# not noise:
#   1. exported: an hf_mm LLaVA (SigLIP-sized tower, Qwen2 LM, mlp2x_gelu) -> `hf-mm export-transformers` ->
#      LlavaForConditionalGeneration, served natively by vLLM;
#   2. backend: an hf_mm LLaVA with the perceiver bridge (no native class), served through vLLM's transformers
#      backend (`--model-impl transformers`, remote code written by `hf-mm export-remote-code`).
# For each, one chat completion with an image at temperature 0 must equal hf_mm's greedy generate() on the same
# prompt. Results: WORKDIR/serve_vllm.json.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/tmp/hf_mm_serve_vllm}
mkdir -p "$WORK"
nvidia-smi >/dev/null || { echo "serve_vllm.sh needs a CUDA GPU"; exit 2; }
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "vllm==0.33.0" -e .
PY="$WORK/venv/bin/python"

"$PY" - "$WORK" <<'PY'
import sys, torch
from hf_mm import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, testing as T
from hf_mm.export import to_transformers
from hf_mm.remote_code import export_remote_code
from transformers import Qwen2Config, SiglipVisionConfig

work = sys.argv[1]
vision = SiglipVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=16)
text = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                   num_key_value_heads=2, vocab_size=T.TEXT_VOCAB_SIZE, tie_word_embeddings=True)
for name, bridge in (("exported", "mlp2x_gelu"), ("backend", "perceiver")):
    config = HfMmLlavaConfig(vision_config=vision, text_config=text, bridge_type=bridge, vision_feature_layer=-1,
                             image_token_id=T.tiny_llava_processor(T.tiny_llava_config()).image_token_id)
    torch.manual_seed(0)
    model = HfMmLlavaForConditionalGeneration(config).to(torch.bfloat16)
    processor = T.tiny_llava_processor(config, vision="siglip")
    model.save_pretrained(f"{work}/{name}-hf_mm")
    processor.save_pretrained(f"{work}/{name}-hf_mm")
    if name == "exported":
        native, native_processor = to_transformers(model, processor)
        native.save_pretrained(f"{work}/{name}")
        native_processor.save_pretrained(f"{work}/{name}")
    else:
        model.save_pretrained(f"{work}/{name}")
        processor.save_pretrained(f"{work}/{name}")
        export_remote_code(f"{work}/{name}")
PY

check() {  # $1: name, $2...: extra vllm serve args
    local name=$1; shift
    "$WORK/venv/bin/vllm" serve "$WORK/$name" --port 8123 --dtype bfloat16 --max-model-len 2048 "$@" \
        >"$WORK/$name.log" 2>&1 &
    local pid=$!
    for _ in $(seq 120); do curl -sf localhost:8123/v1/models >/dev/null && break; sleep 5; done
    "$PY" - "$WORK" "$name" <<'PY'
import base64, io, json, sys, urllib.request
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
import hf_mm  # noqa: F401
from hf_mm import testing as T

work, name = sys.argv[1:3]
image = T.random_images(1, size=(224, 224))[0].convert("RGB")
buffer = io.BytesIO(); image.save(buffer, "PNG")
url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}},
                                         {"type": "text", "text": "what is it?"}]}]
request = {"model": f"{work}/{name}", "messages": messages, "max_tokens": 16, "temperature": 0}
reply = json.load(urllib.request.urlopen(urllib.request.Request(
    "http://localhost:8123/v1/chat/completions", json.dumps(request).encode(), {"Content-Type": "application/json"})))
served = reply["choices"][0]["message"]["content"]
model = AutoModelForImageTextToText.from_pretrained(f"{work}/{name}-hf_mm", dtype=torch.bfloat16).cuda().eval()
processor = AutoProcessor.from_pretrained(f"{work}/{name}-hf_mm")
hf_messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}]
prompt = processor.apply_chat_template(hf_messages, add_generation_prompt=True, tokenize=False)
inputs = processor(images=[image], text=[prompt], return_tensors="pt").to("cuda")
tokens = model.generate(**inputs, max_new_tokens=16, do_sample=False)[0, inputs["input_ids"].shape[1]:]
local = processor.decode(tokens, skip_special_tokens=True)
row = {"model": name, "served": served, "generate": local, "equal": served.strip() == local.strip()}
print(json.dumps(row))
with open(f"{work}/serve_vllm.json", "a") as f:
    f.write(json.dumps(row) + "\n")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
}

rm -f "$WORK/serve_vllm.json"
check exported
check backend --model-impl transformers --trust-remote-code
cat "$WORK/serve_vllm.json"
