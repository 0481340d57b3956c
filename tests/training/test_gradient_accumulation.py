"""Gradient accumulation trains exactly like the same global batch (transformers' loss contract).

One SGD step (no clipping, constant LR) of batch 4 against batch 2 x 2 accumulation, on samples of different
lengths: the updated weights agree to 1e-5 and the logged loss is equal. Through transformers' Trainer for every
generative family, and through hf_mm's SFT and DPO trainers.

Before the fix, the heads dropped `num_items_in_batch` while `forward` took **kwargs, so Trainer stopped dividing by
the accumulation steps: LLaVA logged 11.73 against 5.88 and the weights moved by up to 1.25 (lr 1) away from the
full batch.
"""

import copy

import pytest
import torch
from transformers import Trainer, TrainingArguments

from tests.conformance.testers import PrefixVLMTester, QwenVLTester
from tests.training.helpers import CONFIG, dpo_args, preference_dataset, sft_args

STEP = dict(learning_rate=0.5, optim="sgd", max_grad_norm=0.0, lr_scheduler_type="constant", max_steps=1, seed=0)
STEP.update(logging_steps=1, report_to=[], save_strategy="no", disable_tqdm=True, use_cpu=True)


def samples(family: str, n: int = 4) -> tuple[type, object, list[dict]]:
    """(model class, config, n samples of one image and different text lengths)."""
    from tests.conformance.testers import generative_cases

    model_class, config, _ = generative_cases()[family]
    if family == "blip2":  # the Q-Former's dropout would draw different masks for 4 x 1 and 2 x 2
        config.qformer_config.hidden_dropout_prob = config.qformer_config.attention_probs_dropout_prob = 0.0
    if family == "qwen2_5_vl":
        tester = QwenVLTester(None, lambda: config, batch_size=n)
    else:
        tokens = {"llava": 16, "blip2": 4, "flamingo": 1}[family]
        tester = PrefixVLMTester(None, lambda: config, tokens, batch_size=n)
    torch.manual_seed(1)
    _, batch = tester.prepare_config_and_inputs_for_common()
    per_image = batch["pixel_values"].shape[0] // n
    rows = []
    for i in range(n):
        length = batch["input_ids"].shape[1] - 2 * i  # every sample a different length
        row = {"input_ids": batch["input_ids"][i, :length], "pixel_values": batch["pixel_values"][i * per_image : (i + 1) * per_image]}  # fmt: skip
        if "image_grid_thw" in batch:
            row["image_grid_thw"] = batch["image_grid_thw"][i : i + 1]
        rows.append(row)
    return model_class, config, rows


def collate(config, placeholder_ids):
    def collate_fn(rows: list[dict]) -> dict:
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), config.text_config.pad_token_id)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row["input_ids"])], mask[i, : len(row["input_ids"])] = row["input_ids"], 1
        labels = ids.masked_fill(mask == 0, -100).masked_fill(torch.isin(ids, torch.tensor(placeholder_ids)), -100)
        batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
        for key in ("pixel_values", "image_grid_thw"):
            if key in rows[0]:
                batch[key] = torch.cat([r[key] for r in rows])
        return batch

    return collate_fn


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def one_step(trainer_factory, model, batch_size, accumulation, tmp_path):
    trainer = trainer_factory(model, batch_size, accumulation, tmp_path / f"b{batch_size}x{accumulation}")
    trainer.train()
    loss = next(log["loss"] for log in trainer.state.log_history if "loss" in log)
    return trainer.model, loss


def assert_same_step(trainer_factory, model, tmp_path):
    full, full_loss = one_step(trainer_factory, copy.deepcopy(model), 4, 1, tmp_path)
    accumulated, accumulated_loss = one_step(trainer_factory, copy.deepcopy(model), 2, 2, tmp_path)
    moved = max((a - b).abs().max().item() for a, b in zip(full.parameters(), model.parameters()))
    assert moved > 1e-3  # the step really trained
    for (name, a), b in zip(full.named_parameters(), accumulated.parameters()):
        assert torch.allclose(b, a, atol=1e-5, rtol=0), (
            name,
            (b - a).abs().max().item(),
            a.flatten()[:3],
            b.flatten()[:3],
        )
    assert accumulated_loss == pytest.approx(full_loss, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("family", ["llava", "blip2", "flamingo", "qwen2_5_vl"])
def test_trainer_accumulation_equals_the_global_batch(family, tmp_path):
    model_class, config, rows = samples(family)
    torch.manual_seed(0)
    model = model_class(config)
    if family == "flamingo":
        for block in model.model.bridge.gated_cross_attn:
            block.attn_gate.data.fill_(0.5)
    collate_fn = collate(config, list(model.placeholder_token_ids()))

    def trainer(model, batch_size, accumulation, out):
        args = TrainingArguments(str(out), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, remove_unused_columns=False, **STEP)  # fmt: skip
        return Trainer(model=model, args=args, train_dataset=Rows(rows), data_collator=collate_fn)

    assert_same_step(trainer, model, tmp_path)


def varied_sft_dataset():
    """Eight image-question-answer rows whose questions and answers differ in length."""
    from datasets import Dataset

    from hf_mm.testing import random_images

    rows = []
    for i, image in enumerate(random_images(4, seed=2)):
        question = [{"type": "image"}, {"type": "text", "text": "what colour is the shape?"[: 6 + 5 * i]}]
        answer = [{"type": "text", "text": " ".join(["red", "blue", "green", "a small square"][: i + 1])}]
        rows.append({"images": [image], "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})  # fmt: skip
    return Dataset.from_list(rows)


def test_sft_trainer_accumulation_equals_the_global_batch(tmp_path):
    from hf_mm import HfMmLlavaForConditionalGeneration
    from hf_mm.testing import tiny_llava_processor
    from hf_mm.training.sft import HfMmSFTTrainer

    torch.manual_seed(0)
    model = HfMmLlavaForConditionalGeneration(CONFIG)

    def trainer(model, batch_size, accumulation, out):
        step = {k: v for k, v in STEP.items() if k not in ("use_cpu",)}
        args = sft_args(out, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **step)
        return HfMmSFTTrainer(model=model, args=args, processing_class=tiny_llava_processor(CONFIG),
                              train_dataset=varied_sft_dataset(), stage="full")  # fmt: skip

    assert_same_step(trainer, model, tmp_path)


def test_dpo_trainer_accumulation_equals_the_global_batch(tmp_path):
    from hf_mm import HfMmLlavaForConditionalGeneration
    from hf_mm.testing import tiny_llava_processor
    from hf_mm.training.dpo import HfMmDPOTrainer

    torch.manual_seed(0)
    model = HfMmLlavaForConditionalGeneration(CONFIG)
    data = preference_dataset(4)

    def trainer(model, batch_size, accumulation, out):
        step = {k: v for k, v in STEP.items() if k not in ("use_cpu",)}
        args = dpo_args(out, per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **step)
        return HfMmDPOTrainer(model=model, args=args, processing_class=tiny_llava_processor(CONFIG),
                              train_dataset=data, stage="full")  # fmt: skip

    assert_same_step(trainer, model, tmp_path)


@pytest.mark.parametrize("loss_type", ["infonce", "sigmoid"])
def test_contrastive_trainer_accumulation_equals_the_global_batch(loss_type, tmp_path):
    """Gradient caching: the 2 x 2 window sees the same negatives as the batch of 4 (per-micro-batch losses would
    not: the assertion below fails without `grad_cache.py`)."""
    from datasets import Dataset

    from hf_mm import HfMmClipModel, HfMmClipProcessor
    from hf_mm.apps.demo_clip import ClipDemoPreset, build_towers
    from hf_mm.data.captions import digit_pairs
    from hf_mm.training.contrastive import HfMmContrastiveTrainer

    towers = build_towers(tmp_path / "towers", ClipDemoPreset(hidden=32, layers=1))
    model = HfMmClipModel.from_vision_text_pretrained(*towers, projection_dim=16, text_pooling="mean", loss_type=loss_type)  # fmt: skip
    for module in model.modules():  # dropout would draw different masks for 4 x 1 and 2 x 2
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    processor = HfMmClipProcessor.from_vision_text_pretrained(*towers)
    pairs = digit_pairs(4)
    for i, pair in enumerate(pairs):  # captions of different lengths
        pair["text"] = pair["text"] + " and more" * i
    data = Dataset.from_list(pairs)

    def trainer(model, batch_size, accumulation, out):
        args = TrainingArguments(str(out), per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation, **STEP)  # fmt: skip
        return HfMmContrastiveTrainer(model=model, args=args, processing_class=processor, train_dataset=data)

    assert_same_step(trainer, model, tmp_path)
