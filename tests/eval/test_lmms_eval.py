"""lmms-eval's own CLI evaluates a trained hf_mm model on a local task built from the synthetic suite (no Hub): the
score it writes equals hf_mm's scorer on the same samples, and so does every answer."""

import glob
import json
import os
import subprocess
import sys

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from hf_mm.eval import evaluate, predict
from hf_mm.eval.lmms import HfMmLmms, write_task
from tests.training.helpers import quick_demo_held_out

pytest.importorskip("lmms_eval", reason="the `eval` extra (make install puts it in the dev venv)")


@pytest.fixture(scope="module")
def trained(quick_demo_model):
    model = AutoModelForImageTextToText.from_pretrained(quick_demo_model).eval()
    return model, AutoProcessor.from_pretrained(quick_demo_model), quick_demo_model


def test_lmms_eval_cli_scores_as_hf_mm_does(trained, tmp_path):
    model, processor, root = trained
    samples = quick_demo_held_out(16)
    task = write_task(samples, tmp_path / "task")
    metrics, answers = run_lmms_eval(root, tmp_path / "task", task, tmp_path / "out", limit=len(samples))
    ours = predict(model, processor, samples)
    expected = evaluate(ours, samples)["overall"]
    print(f"lmms-eval score {metrics['score,none']:.4f}; hf_mm's scorer {expected:.4f} on {len(samples)} samples")
    assert answers == [answer.split("\n")[0] for answer in ours]  # lmms-eval stops at "\n"; hf_mm keeps it
    assert metrics["score,none"] == pytest.approx(expected) and expected > 0.3  # chance: 1/6 colours, 1/3 shapes


def test_loglikelihood_prefers_the_right_answer_and_refuses_unknown_model_args(trained, tmp_path):
    model, processor, root = trained
    adapter = HfMmLmms(pretrained=str(root))
    sample = quick_demo_held_out(1)[0]
    question = sample["messages"][0]["content"][-1]["text"]
    right, right_greedy = adapter._score(sample["images"], question, sample["answer"])
    wrong, _ = adapter._score(sample["images"], question, "no such answer")
    assert right < wrong
    with pytest.raises(TypeError, match="takes no model_args \\['temperature'\\]"):
        HfMmLmms(pretrained=str(root), temperature=0.2)


def run_lmms_eval(model_dir, task_dir, task, out_dir, limit):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LMMS_EVAL_DATASETS_CACHE": str(out_dir / "cache"),
           "HF_HOME": str(out_dir / "hf"), "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    command = [sys.executable, "-m", "lmms_eval", "--model", "hf_mm", "--model_args", f"pretrained={model_dir},device=cpu",
               "--tasks", task, "--include_path", str(task_dir), "--batch_size", "1", "--limit", str(limit),
               "--output_path", str(out_dir), "--log_samples", "--verbosity", "DEBUG", "--seed", "0",
               "--process_docs_parallel", "1"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    (results,) = glob.glob(str(out_dir / "**" / "*_results.json"), recursive=True)
    (logged,) = glob.glob(str(out_dir / "**" / f"*_samples_{task}.jsonl"), recursive=True)
    rows = sorted((json.loads(line) for line in open(logged)), key=lambda row: row["doc_id"])
    answers = [row["filtered_resps"] for row in rows]
    return json.load(open(results))["results"][task], [a[0] if isinstance(a, list) else a for a in answers]


def test_multi_round_generation_answers_each_round_in_its_whole_conversation(trained, monkeypatch):
    model, processor, root = trained
    adapter = HfMmLmms(pretrained=str(root))
    sample = quick_demo_held_out(1)[0]
    adapter.task_dict = {"t": {"test": [{"images": sample["images"]}]}}
    follow_up = "What shape is it?"
    prompts = []

    def recording_predict(model, processor, samples, *args, turns=1, **kwargs):
        prompts.append(processor.apply_chat_template(samples[0]["messages"][:turns], add_generation_prompt=True))
        return predict(model, processor, samples, *args, turns=turns, **kwargs)

    def doc_to_text(doc, previous_output, round_idx, previous_round_info):
        return None, follow_up, round_idx >= 2, previous_output, None

    class Request:
        args = ("What colour is the shape?", {"max_new_tokens": 8}, lambda doc: doc["images"], doc_to_text, 0, "t",
                "test")  # fmt: skip

    monkeypatch.setattr("hf_mm.eval.lmms.predict", recording_predict)
    (joined,) = adapter.generate_until_multi_round([Request()])
    first = joined.split("\n")[0]
    assert len(prompts) == 2 and follow_up not in prompts[0]
    assert prompts[1].startswith(prompts[0]) and first in prompts[1] and follow_up in prompts[1]
