"""torch.compile of a LLaVA training step breaks no graph in hf_mm's own code: the breaks `torch._dynamo.explain`
reports are those of transformers' `LlavaForConditionalGeneration` holding the same weights (`to_transformers`),
each raised inside transformers or torch. The image-count check was `int(mask.sum())` in hf_mm, a host sync and a
break of its own (8 breaks against the reference's 6); it is a `torch._check` now, as in the reference (7 against 6:
the remaining difference is dynamo skipping a frame, with no break reason of its own)."""

import torch

from hf_mm.export import to_transformers
from tests.conformance.testers import generative_cases


def break_reasons(model, inputs: dict) -> tuple[int, list[tuple[str, str]]]:
    """(graph break count, [(innermost file, first line of the reason)] per break)."""
    torch._dynamo.reset()
    explained = torch._dynamo.explain(model)(**inputs)
    reasons = [
        (reason.user_stack[-1].filename.split("site-packages/")[-1], reason.reason.splitlines()[0])
        for reason in explained.break_reasons
    ]
    return explained.graph_break_count, reasons


def test_a_compiled_training_step_breaks_no_graph_in_hf_mm_code():
    model_class, config, inputs = generative_cases()["llava"]
    torch.manual_seed(0)
    model = model_class(config).train()
    reference = to_transformers(model)[0].train()
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    batch = {**inputs, "labels": labels.masked_fill(labels == config.image_token_id, -100)}
    (ours, our_reasons), (theirs, their_reasons) = break_reasons(model, batch), break_reasons(reference, batch)
    print(f"graph breaks: hf_mm {ours}, transformers {theirs}; reasons: {our_reasons}")
    assert not [reason for reason in our_reasons if "/hf_mm/" in reason[0]]
    assert sorted(set(our_reasons)) == sorted(set(their_reasons))
