"""Collapse to text-only behaviour is caught: `VisionRelianceCallback` warns when the held-out loss no longer depends
on the images (the bridge's output zeroed, or blank images), and stays quiet on a normal run, whose gap it logs;
`hf_mm.eval.vision_reliance` gives the same measure after training. `TaskScoreCallback` scores the live model at each
evaluation, and its scores reach the card's model-index."""

import logging

import PIL.Image
import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForImageTextToText, AutoProcessor

from hf_mm import hub
from hf_mm.data import synthetic
from hf_mm.eval import vision_reliance
from hf_mm.training.publish import TaskScoreCallback, score_split, training_record
from hf_mm.training.reliance import VisionRelianceCallback
from hf_mm.training.setup import prepare_model
from hf_mm.training.sft import HfMmSFTTrainer
from hf_mm.training.stages import get_stage
from tests.training.helpers import quick_demo_held_out, sft_args


def blank(samples: list[dict]) -> list[dict]:
    return [{**s, "images": [PIL.Image.new("RGB", image.size) for image in s["images"]]} for s in samples]


def train_with_callback(quick_demo_model, tmp_path, caplog, zero_bridge=False, blank_images=False):
    model = AutoModelForImageTextToText.from_pretrained(quick_demo_model)
    processor = AutoProcessor.from_pretrained(quick_demo_model)
    train, held_out = quick_demo_held_out(160, seed=3), quick_demo_held_out(24)
    if blank_images:
        train, held_out = blank(train), blank(held_out)
    if zero_bridge:
        model.model.bridge.register_forward_hook(lambda module, inputs, output: torch.zeros_like(output))
    callback = VisionRelianceCallback(processor, held_out, every=5, warmup=5, min_gap=0.05, patience=2)
    args = sft_args(tmp_path, max_steps=20, learning_rate=1e-4, per_device_train_batch_size=8)
    processor.tokenizer.padding_side = "right"
    trainer = HfMmSFTTrainer(model=prepare_model(model, "instruct"), args=args, processing_class=processor,
                             train_dataset=synthetic.to_dataset(train), stage="instruct", callbacks=[callback])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="hf_mm.training.reliance"):
        trainer.train()
    logged = [row for row in trainer.state.log_history if "vision/gap" in row]
    return callback, logged, model, processor, held_out


@pytest.mark.parametrize("failure", ["zero_bridge", "blank_images"])
def test_a_run_that_ignores_its_images_is_warned_about(quick_demo_model, tmp_path, caplog, failure):
    callback, logged, *_ = train_with_callback(quick_demo_model, tmp_path, caplog, **{failure: True})
    assert [row["step"] for row in logged] == [5, 10, 15, 20]
    assert all(abs(row["vision/gap"]) < 1e-6 for row in logged)  # the answers cannot depend on the images
    assert callback.warned and "The model is not using its images" in caplog.text


def test_a_normal_run_logs_its_gap_and_stays_quiet(quick_demo_model, tmp_path, caplog):
    callback, logged, model, processor, held_out = train_with_callback(quick_demo_model, tmp_path, caplog)
    print("gaps", [round(row["vision/gap"], 3) for row in logged])
    assert len(logged) == 4 and min(row["vision/gap"] for row in logged) > 0.05
    assert not callback.warned and "not using its images" not in caplog.text
    after = vision_reliance(model, processor, held_out)
    assert after["gap"] == pytest.approx(callback.history[-1]["gap"], abs=1e-6) and after["gap"] > 0.05


def test_task_scores_are_logged_at_each_evaluation_and_reach_the_card(quick_demo_model, tmp_path):
    model = AutoModelForImageTextToText.from_pretrained(quick_demo_model)
    processor = AutoProcessor.from_pretrained(quick_demo_model)
    eval_dataset = synthetic.to_dataset(quick_demo_held_out(24))
    scoring = TaskScoreCallback(processor, eval_dataset)
    args = sft_args(tmp_path, max_steps=10, learning_rate=1e-4, per_device_train_batch_size=8, eval_strategy="steps",
                    eval_steps=5, per_device_eval_batch_size=8)  # fmt: skip
    processor.tokenizer.padding_side = "right"
    trainer = HfMmSFTTrainer(model=prepare_model(model, "instruct"), args=args, processing_class=processor,
                             train_dataset=synthetic.to_dataset(quick_demo_held_out(80, seed=3)),
                             eval_dataset=eval_dataset, stage="instruct", callbacks=[scoring])  # fmt: skip
    trainer.train()
    logged = [row for row in trainer.state.log_history if "score/shapes_vqa/exact_match" in row]
    assert [row["step"] for row in logged] == [5, 10]
    assert scoring.latest == score_split(trainer.model, processor, eval_dataset)  # the live model, as it ended
    record = training_record(trainer, "sft", "instruct", get_stage("instruct"), {"model": str(quick_demo_model)},
                             ["hf_mm-synthetic/shapes_vqa"], scoring.latest)  # fmt: skip
    trainer.save_model(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    hub.write_training_record(tmp_path / "model", record)
    card = ModelCard.load(hub.save_model_card(tmp_path / "model"))
    (result,) = card.data.eval_results
    assert (result.metric_type, result.metric_value) == ("exact_match", logged[-1]["score/shapes_vqa/exact_match"])
