"""lmms-eval adapter: `lmms-eval --model hf_mm --model_args pretrained=PATH` evaluates any hf_mm generative family.

Registered through the `lmms_eval.models` entry point (`manifests`), so lmms-eval finds it once hf_mm is installed
with the `eval` extra. It is a *simple* model in lmms-eval's terms (`is_simple`): it serves `generate_until`,
`loglikelihood` (and so multiple-choice tasks) and `generate_until_multi_round`.

Prompts are built exactly as `hf_mm.eval.predict` builds them (one user turn: the request's images, then its
text, with the generation prompt), so lmms-eval's scores equal hf_mm's own scorers on the same samples.
`write_task` turns samples of hf_mm's synthetic suite into a local lmms-eval task (a parquet file, a YAML and the
scorer), which needs no Hub.
"""

from __future__ import annotations

import os
import textwrap

import torch

from .generation import predict

try:  # lmms-eval is an optional dependency (`pip install hf-mm[eval]`)
    from lmms_eval.api.model import lmms as _LmmsBase
except ImportError:  # pragma: no cover - exercised only without the extra
    _LmmsBase = object


def manifests():
    """The `lmms_eval.models` entry point: hf_mm's model manifest."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id="hf_mm", simple_class_path="hf_mm.eval.lmms.HfMmLmms", aliases=("hf-mm",))]


def user_turn(images: list, text: str) -> dict:
    return {"role": "user", "content": [*({"type": "image"} for _ in images), {"type": "text", "text": text}]}


class HfMmLmms(_LmmsBase):
    """An hf_mm checkpoint (any generative family) behind lmms-eval's simple-model API."""

    is_simple = True

    def __init__(self, pretrained: str, device: str = "cpu", dtype: str = "float32", max_new_tokens: int = 32,
                 batch_size=1, max_batch_size=None, **kwargs):  # fmt: skip
        if kwargs:
            raise TypeError(f"hf_mm's lmms-eval model takes no model_args {sorted(kwargs)}; it takes pretrained, "
                            "device, dtype and max_new_tokens (batch_size comes from --batch_size).")  # fmt: skip
        super().__init__()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        import hf_mm  # noqa: F401  (registers the families with the Auto classes)

        self.model = AutoModelForImageTextToText.from_pretrained(pretrained, dtype=getattr(torch, dtype))
        self.model = self.model.to(device).eval()
        self.processor = AutoProcessor.from_pretrained(pretrained)
        self.max_new_tokens, self.batch_size_per_gpu = int(max_new_tokens), int(batch_size)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self.model.device

    def _visuals(self, doc_to_visual, task, split, doc_id) -> list:
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
        return [image.convert("RGB") for image in visuals]

    def _answer(self, images: list, messages: list[dict], gen_kwargs: dict) -> str:
        gen_kwargs = dict(gen_kwargs)
        until = gen_kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else until
        max_new_tokens = int(gen_kwargs.pop("max_new_tokens", self.max_new_tokens))
        sample = {"images": images, "messages": messages}
        text = predict(self.model, self.processor, [sample], max_new_tokens, batch_size=1, turns=len(messages))[0]
        for stop in until:
            text = text.split(stop)[0] if stop else text
        return text

    def generate_until(self, requests) -> list[str]:
        """Greedy answers, one per request, in order."""
        answers = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            images = self._visuals(doc_to_visual, task, split, doc_id)
            answers.append(self._answer(images, [user_turn(images, context)], gen_kwargs))
        return answers

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        """(mean negative log-likelihood of the continuation, whether greedy decoding gives it), per request:
        lmms-eval picks the lowest value among multiple-choice options."""
        results = []
        for request in requests:
            context, continuation, doc_to_visual, doc_id, task, split = request.args
            images = self._visuals(doc_to_visual, task, split, doc_id)
            doc = self.task_dict[task][split][doc_id]
            continuation = continuation if isinstance(continuation, str) else continuation(doc)
            results.append(self._score(images, context, continuation))
        return results

    def _score(self, images: list, context: str, continuation: str) -> tuple[float, bool]:
        prompt = self.processor.apply_chat_template([user_turn(images, context)], add_generation_prompt=True)
        batch = self.processor(images=[images] if images else None, text=[prompt], return_tensors="pt")
        target = self.processor.tokenizer(continuation, add_special_tokens=False, return_tensors="pt").input_ids
        input_ids = torch.cat([batch["input_ids"], target], dim=1)
        batch = {**batch, "input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        with torch.no_grad():
            logits = self.model(**{key: value.to(self.model.device) for key, value in batch.items()}).logits
        logits = logits[0, -target.shape[1] - 1 : -1].float()  # the positions that predict the continuation
        nll = torch.nn.functional.cross_entropy(logits, target[0].to(logits.device))
        return float(nll), bool((logits.argmax(-1).cpu() == target[0]).all())

    def generate_until_multi_round(self, requests) -> list[str]:
        """Multi-round tasks: each round's answer is appended to the conversation, and the task's `doc_to_text`
        gives the next user turn until it says the dialogue is over. Returns the rounds' answers joined."""
        outputs = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            doc = self.task_dict[task][split][doc_id]
            images = self._visuals(doc_to_visual, task, split, doc_id)
            messages, answers, info = [user_turn(images, context)], [], None
            for round_idx in range(1, 32):
                answers.append(self._answer(images, messages, gen_kwargs))
                visuals, text, terminal, _, info = doc_to_text(
                    doc, previous_output=answers, round_idx=round_idx, previous_round_info=info
                )
                if terminal:
                    break
                messages += [{"role": "assistant", "content": [{"type": "text", "text": answers[-1]}]},
                             {"role": "user", "content": [{"type": "text", "text": text}]}]  # fmt: skip
            outputs.append("\n".join(answers))
        return outputs


TASK_YAML = """\
task: {name}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {name}.parquet
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
generation_kwargs:
  max_new_tokens: {max_new_tokens}
  do_sample: false
  until: ["\\n"]
process_results: !function utils.process_results
metric_list:
  - metric: score
    aggregation: mean
    higher_is_better: true
metadata:
  version: 0.0
"""

TASK_UTILS = '''\
"""hf_mm's synthetic suite as an lmms-eval task: the question as the prompt, hf_mm's scorer as the metric."""
from hf_mm.eval import score


def doc_to_visual(doc):
    return [image.convert("RGB") for image in doc["images"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"score": score(doc["task"], results[0] if results else "", doc["answer"])}
'''


def write_task(samples: list[dict], folder: str | os.PathLike, name: str = "hf_mm_synthetic",
               max_new_tokens: int = 16) -> str:  # fmt: skip
    """Write `samples` (hf_mm's synthetic format) as a local lmms-eval task in `folder`, for `--include_path`.
    Returns the task name. The images are stored in the parquet file itself; nothing is fetched."""
    from datasets import Dataset, Features, Image, List, Value

    os.makedirs(folder, exist_ok=True)
    rows = {
        "images": [sample["images"] for sample in samples],
        "question": [sample["messages"][0]["content"][-1]["text"] for sample in samples],
        "answer": [str(sample["answer"]) for sample in samples],
        "task": [sample["task"] for sample in samples],
    }
    features = Features({"images": List(Image()), "question": Value("string"), "answer": Value("string"),
                         "task": Value("string")})  # fmt: skip
    Dataset.from_dict(rows, features=features).to_parquet(os.path.join(folder, f"{name}.parquet"))
    with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
        f.write(TASK_YAML.format(name=name, max_new_tokens=max_new_tokens))
    with open(os.path.join(folder, "utils.py"), "w") as f:
        f.write(textwrap.dedent(TASK_UTILS))
    return name


__all__ = ["HfMmLmms", "manifests", "write_task"]
