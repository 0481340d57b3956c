"""Hub publishing through the real huggingface_hub client against the loopback server (tests/hub_server.py).

A run trains a tiny LLaVA with LoRA through `hf-mm sft --push_to_hub`, scores its held-out split and pushes at a
checkpoint and at the end. The tests then check the card's numbers against the config, the trainer state and an
independent re-evaluation; download the repo and load it where only `import hf_mm` runs; load the adapter back onto
its base with PEFT; and grep everything written, stored and logged for the token.
"""

import contextlib
import json
import logging
import os
import re
import subprocess
import sys

import pytest
import torch
import transformers
import yaml
from huggingface_hub import ModelCard, snapshot_download
from packaging import version
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from hf_mm import (
    HfMmBlip2ForConditionalGeneration,
    HfMmFlamingoForConditionalGeneration,
    HfMmLlavaForConditionalGeneration,
    hub,
)
from hf_mm import testing as T
from hf_mm.cli import main
from hf_mm.data import synthetic
from hf_mm.eval import evaluate, predict
from hf_mm.roles import role_parameters
from tests.hub_server import HubServer, point_client_at
from tests.training.helpers import CPU

SECRET = "hf_loopbackSecretToken0123456789"
ONE_LINE_ADAPTERS_KEEP_MODULES_TO_SAVE = version.parse(transformers.__version__) >= version.parse("5.20")
REPO = "tester/tiny-vlm"
RECIPE = "recipes/llava15_align.yaml"
EVAL = dict(n=6, seed=0, image_size=32, split="test")


@pytest.fixture(scope="module")
def hub_server(tmp_path_factory):
    with HubServer() as server, pytest.MonkeyPatch.context() as monkeypatch:
        point_client_at(monkeypatch, server.url, cache_dir=tmp_path_factory.mktemp("hf-cache"))
        monkeypatch.setenv("HF_TOKEN", SECRET)
        yield server


@contextlib.contextmanager
def captured_output(path):
    """Python's stdout/stderr, fds 1 and 2 and every log record at DEBUG, into `path` (the run's output, to grep)."""
    root_logger = logging.getLogger()
    level = root_logger.level
    saved = [os.dup(1), os.dup(2)]
    with open(path, "a") as sink, contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        handler = logging.StreamHandler(sink)
        root_logger.addHandler(handler)
        root_logger.setLevel(logging.DEBUG)
        os.dup2(sink.fileno(), 1), os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sink.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            root_logger.removeHandler(handler)
            root_logger.setLevel(level)


@pytest.fixture(scope="module")
def trained(hub_server, tmp_path_factory):
    """`hf-mm sft` with LoRA, scoring and --push_to_hub (checkpoint pushes every 2 steps, the final push at the end).
    Returns (output_dir, server, the run's captured output and logs, the root of every file the run wrote)."""
    root = tmp_path_factory.mktemp("hub-run")
    vision = T.save_tiny_vision_tower(root / "vision")
    text = T.save_tiny_causal_lm(root / "text")
    out = root / "run"
    data = ["--dataset_format", "synthetic", "--synthetic_train_samples", "8", "--synthetic_eval_samples", "6",
            "--synthetic_image_size", "32", "--score_eval", "true"]  # fmt: skip
    train = ["--max_steps", "3", "--per_device_train_batch_size", "2", "--logging_steps", "1", "--stage", "instruct",
             "--use_peft", "true", "--lora_r", "4", "--lora_alpha", "8", "--save_strategy", "steps", "--save_steps", "2"]  # fmt: skip
    hub_args = ["--push_to_hub", "true", "--hub_model_id", REPO, "--hub_strategy", "every_save"]
    cpu = [arg for arg in CPU if arg not in ("--save_strategy", "no")]
    with captured_output(root / "output.log"):
        main(["sft", "--config", RECIPE, *cpu, *data, *train, *hub_args, "--output_dir", str(out),
              "--vision_model_name_or_path", vision, "--text_model_name_or_path", text])  # fmt: skip
    return out, hub_server, (root / "output.log").read_text(), root


def _card_numbers(card: str) -> list[str]:
    """Numbers a reader sees: outside the YAML header, code blocks and `identifiers`."""
    body = card.split("---", 2)[2]
    body = re.sub(r"```.*?```", " ", body, flags=re.S)
    body = re.sub(r"`[^`]*`", " ", body)
    return re.findall(r"(?<![\w.])\d+(?:,\d{3})*(?:\.\d+)?(?:e-?\d+)?(?![\w])", body)


def test_card_numbers_equal_config_trainer_and_a_re_evaluation(trained):
    out = trained[0]
    card = (out / "README.md").read_text()
    config = json.loads((out / "base" / "config.json").read_text())
    state = json.loads((out / "trainer_state.json").read_text())
    adapter = json.loads((out / "adapter_config.json").read_text())
    base = AutoModelForImageTextToText.from_pretrained(out / "base")
    roles = {role: sum(p.numel() for _, p in params) for role, params in role_parameters(base).items()}
    model = PeftModel.from_pretrained(base, out)
    samples = synthetic.shapes_vqa(**EVAL)
    expected_score = evaluate(predict(model, AutoProcessor.from_pretrained(out), samples, max_new_tokens=32), samples)
    adapter_size = sum(t.numel() for t in load_file(out / "adapter_model.safetensors").values())
    learning_rate = float(yaml.safe_load(open(RECIPE))["learning_rate"])
    loss = next(entry["train_loss"] for entry in state["log_history"] if "train_loss" in entry)
    v, t = config["vision_config"], config["text_config"]
    expected = {
        *(f"{n:,}" for n in roles.values()), f"{sum(roles.values()):,}", f"{adapter_size:,}",
        str(v["hidden_size"]), str(v["num_hidden_layers"]), str(v["image_size"]), str(v["patch_size"]),
        str(t["hidden_size"]), str(t["num_hidden_layers"]), str(t["vocab_size"]),
        str(config.get("bridge_hidden_size") or t["hidden_size"]),
        str(state["global_step"]), str(learning_rate), str(state["train_batch_size"]), "1",  # lr, batch, processes
        str(round(loss, 4)), str(adapter["r"]), str(adapter["lora_alpha"]), str(adapter["lora_dropout"]),
        str(round(expected_score["overall"], 4)), str(EVAL["n"]),
    }  # fmt: skip
    found = _card_numbers(card)
    assert set(found) <= expected, f"numbers on the card that come from nowhere: {set(found) - expected}"
    assert expected <= set(found), f"values missing from the card: {expected - set(found)}"
    assert state["global_step"] == 3 and f"{sum(roles.values()):,}" in card
    # The model-index holds the same score, as an EvalResult that round-trips.
    (result,) = ModelCard(card).data.eval_results
    assert result.metric_type == "exact_match" and result.metric_value == round(expected_score["overall"], 4)
    assert result.dataset_type == "hf_mm-synthetic/shapes_vqa" and result.dataset_split == "test"
    for role, status in (
        ("vision tower", "frozen"),
        ("bridge", "trained"),
        ("language model", "trained through LoRA"),
    ):
        assert re.search(rf"\| {role} \| [\d,]+ \| {status} \|", card), role


def test_push_is_one_commit_that_loads_where_only_hf_mm_is_imported(trained, tmp_path):
    out, server = trained[:2]
    commits = server.commits(REPO)
    assert [c["message"] for c in commits[1:]] == [
        "Checkpoint at step 2",
        "Checkpoint at step 3",
        "Trained with hf-mm sft: 3 steps",
    ]
    files = server.files(REPO)  # the client skips files whose content the checkpoint commits already hold
    assert {"README.md", "hf_mm_training.json"} <= set(commits[-1]["added"])
    expected = {"README.md", "adapter_config.json", "adapter_model.safetensors", "chat_template.jinja",
                "processor_config.json", "tokenizer.json", "hf_mm_training.json", "trainer_state.json"}  # fmt: skip
    assert expected <= set(files) and not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    # The fresh composition the adapter was trained on is published once, as its own repo, and named as the base.
    assert [c["message"] for c in server.commits(f"{REPO}-base")[1:]] == ["Upload hf_mm_llava model with hf_mm"]
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= set(server.files(f"{REPO}-base"))
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == f"{REPO}-base"

    # Merge locally, push the merged model with hf_mm.hub.push, and load it in a fresh process through Auto*.
    base = AutoModelForImageTextToText.from_pretrained(out / "base")
    merged = PeftModel.from_pretrained(base, out).merge_and_unload().eval()
    processor = AutoProcessor.from_pretrained(out)
    hub.push((merged, processor), "tester/merged")
    local = snapshot_download("tester/merged", local_dir=tmp_path / "download")
    assert (tmp_path / "download" / "README.md").is_file() and local
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape?"}]}],
        add_generation_prompt=True,
    )
    inputs = processor(images=T.random_images(1), text=[prompt], return_tensors="pt")
    with torch.no_grad():
        inputs["expected"] = merged(**inputs).logits
    save_file({k: v.contiguous() for k, v in inputs.items()}, tmp_path / "inputs.safetensors")
    script = (
        "import sys, torch, hf_mm\n"
        "from safetensors.torch import load_file\n"
        "from transformers import AutoModelForImageTextToText\n"
        "model = AutoModelForImageTextToText.from_pretrained(sys.argv[1]).eval()\n"
        "inputs = load_file(sys.argv[2]); expected = inputs.pop('expected')\n"
        "with torch.no_grad():\n"
        "    print('max|diff|', (model(**inputs).logits - expected).abs().max().item())\n"
        "card = open(sys.argv[3]).read()\n"
        "exec(card.split('```python\\n', 1)[1].split('```', 1)[0])  # the card's own usage snippet\n"
    )
    done = subprocess.run([sys.executable, "-c", script, "tester/merged", str(tmp_path / "inputs.safetensors"),
                           str(tmp_path / "download" / "README.md")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max|diff| 0.0" in done.stdout


def test_adapter_loads_back_onto_its_base_with_peft(trained):
    out = trained[0]
    base = AutoModelForImageTextToText.from_pretrained(f"{REPO}-base")
    model = PeftModel.from_pretrained(base, REPO).eval()
    one_line = AutoModelForImageTextToText.from_pretrained(REPO).eval()  # transformers resolves the base itself
    local = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(out / "base"), out).eval()
    processor = AutoProcessor.from_pretrained(REPO)
    inputs = processor(images=T.random_images(1), text=["<image> a question"], return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, local(**inputs).logits)
        # transformers before 5.20 (5.16.1 checked) loads the LoRA weights in the one-line form but re-initialises
        # the adapter's `modules_to_save` (the trained bridge), reporting them MISSING: README, "Compatibility".
        if ONE_LINE_ADAPTERS_KEEP_MODULES_TO_SAVE:
            assert torch.equal(one_line(**inputs).logits, local(**inputs).logits)
    card = ModelCard.load(REPO)
    assert card.data.library_name == "peft" and f'from_pretrained("{REPO}-base")' in card.text


def test_the_token_is_sent_but_never_written_or_logged(trained):
    _, server, logs, root = trained
    commit_requests = server.requests_to("/commit/")
    assert commit_requests and all(r.header("authorization") == f"Bearer {SECRET}" for r in commit_requests)
    assert "Pushed" in logs, logs[-2000:]  # the capture holds the run's output ...
    assert re.search(
        r"Not uploading \d+ file\(s\) \(pickles, logs, old cards\): .*training_args.bin", logs
    )  # and logs
    assert SECRET not in logs
    written = [*root.rglob("*"), *(p for cache in root.parent.glob("hf-cache*") for p in cache.rglob("*"))]
    assert any(path.name == "model.safetensors" for path in written)  # the downloads are among them
    for path in written:
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for name, content in server.files(REPO).items():
        assert SECRET.encode() not in content, name


def test_model_and_processor_push_to_hub_work_as_in_transformers(hub_server):
    config = T.tiny_llava_config()
    model, processor = HfMmLlavaForConditionalGeneration(config).eval(), T.tiny_llava_processor(config)
    model.push_to_hub("tester/plain")
    processor.push_to_hub("tester/plain")
    loaded = AutoModelForImageTextToText.from_pretrained("tester/plain").eval()
    inputs = AutoProcessor.from_pretrained("tester/plain")(
        images=T.random_images(1), text=["<image> hi"], return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.equal(loaded(**inputs).logits, model(**inputs).logits)


def test_pickle_only_folders_and_command_line_tokens_are_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "hf_mm_llava"}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not unpickled")
    with pytest.raises(ValueError, match=r"weights only as pickle files \(pytorch_model.bin\)"):
        hub.push(tmp_path, "tester/x")
    with pytest.raises(ValueError, match="hub_token .* HF_TOKEN"):
        main(["sft", "--config", RECIPE, *CPU, "--hub_token", "hf_x", "--output_dir", str(tmp_path)])


FAMILIES = {
    "llava": lambda: HfMmLlavaForConditionalGeneration(T.tiny_llava_config("siglip", "qwen2", "pixel_shuffle")),
    "flamingo": lambda: HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config()),
    "blip2": lambda: HfMmBlip2ForConditionalGeneration(T.tiny_blip2_config()),
    "qwen2_5_vl": lambda: _qwen2_5_vl(),
}


def _qwen2_5_vl():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from hf_mm.convert.qwen2_5_vl import from_transformers_qwen2_5_vl
    from tests.modeling.qwen_reference import IMAGE, START, TEXT, VIDEO, VISION

    config = Qwen2_5_VLConfig(vision_config=VISION, text_config=TEXT, image_token_id=IMAGE, video_token_id=VIDEO,
                              vision_start_token_id=START)  # fmt: skip
    return from_transformers_qwen2_5_vl(Qwen2_5_VLForConditionalGeneration(config))[0]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_template_renders_from_the_checkpoint(family, tmp_path):
    model = FAMILIES[family]()
    model.save_pretrained(tmp_path)
    card = str(hub.model_card(tmp_path, "tester/x"))
    roles = {role: sum(p.numel() for _, p in params) for role, params in role_parameters(model).items()}
    for role, count in roles.items():
        assert re.search(rf"\| {hub.ROLE_NAMES[role]} \| {count:,} \| not recorded \|", card), role
    assert f"| total | {sum(roles.values()):,} |" in card
    assert "None" not in card and "  ," not in card and "No evaluation was recorded." in card
    assert f"hidden size {model.config.text_config.hidden_size}" in card and model.config.model_type in card


def test_cli_push_and_adapters_on_unpublished_bases(hub_server, tmp_path, capsys):
    config = T.tiny_llava_config()
    HfMmLlavaForConditionalGeneration(config).save_pretrained(tmp_path / "base")
    T.tiny_llava_processor(config).save_pretrained(tmp_path / "base")
    main(["push", str(tmp_path / "base"), "tester/cli-base"])
    assert "Pushed" in capsys.readouterr().out and "README.md" in hub_server.files("tester/cli-base")
    base = AutoModelForImageTextToText.from_pretrained(tmp_path / "base")
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["bridge"]))
    lora.save_pretrained(tmp_path / "adapter")  # names the local folder as its base
    with pytest.raises(ValueError, match="trained on the local folder base/, which nobody else can load"):
        hub.push(tmp_path / "adapter", "tester/cli-adapter")
    main(["push", str(tmp_path / "adapter"), "tester/cli-adapter", "--base-repo", "tester/cli-base"])
    files = hub_server.files("tester/cli-adapter")
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == "tester/cli-base"
    reloaded = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained("tester/cli-base"), "tester/cli-adapter"
    )
    assert reloaded.peft_config["default"].r == 2
