"""BLIP-2's two stages: the recipes through the CLI, and a learning check on the synthetic suite.

Learning check (stated margins; chance is 10% for ITC R@1 and VQA over ten digits, 50% for ITM):
- stage 1, 800 steps on digits with templated captions, a random frozen tower: ITC R@1 >= chance + 20 points in
  both directions, ITM pairwise accuracy (the matching caption scored above a non-matching one) >= chance + 10.
- stage 2, 300 steps with only the Q-Former and projection training, into a frozen LM pretrained here on text (a
  caption stands where the image will): held-out digits VQA exact match >= chance + 20 points.
"""

import pytest
import torch
from datasets import Dataset
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    BertConfig,
    BertForMaskedLM,
    TrainingArguments,
)

from hf_mm import testing as T
from hf_mm.apps.demo import answer
from hf_mm.cli import main
from hf_mm.data import synthetic
from hf_mm.data.captions import TRAIN_TEMPLATES, caption, digit_pairs
from hf_mm.eval import evaluate
from hf_mm.modeling.blip2 import HfMmBlip2ForConditionalGeneration, HfMmBlip2ForImageTextRetrieval
from hf_mm.processing import HfMmBlip2Processor, prepare_tokenizer
from hf_mm.training.contrastive import HfMmContrastiveTrainer
from hf_mm.training.qformer import QFormerCollator, evaluate_stage1
from hf_mm.training.setup import prepare_model
from tests.training.helpers import CPU, TINY_DATA, train_align

CHANCE = 0.1


def test_stage1_then_stage2_recipes_run_and_load(tmp_path, capsys):
    vision = T.save_tiny_vision_tower(tmp_path / "vision", "vit")
    lm = T.save_tiny_causal_lm(tmp_path / "lm")
    tokenizer = T.tiny_tokenizer()  # a tiny BERT (with its tokenizer) for the Q-Former to start from, as in BLIP-2
    bert = BertConfig(vocab_size=len(tokenizer), hidden_size=T.HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    BertForMaskedLM(bert).save_pretrained(tmp_path / "bert")
    tokenizer.save_pretrained(tmp_path / "bert")
    stage1, stage2 = tmp_path / "stage1", tmp_path / "stage2"
    main([
        "qformer", "--config", "recipes/blip2_stage1.yaml", "--vision_model_name_or_path", vision,
        "--qformer_name_or_path", str(tmp_path / "bert"), "--num_query_tokens", "4",
        "--digits_train_pairs", "32", "--max_steps", "3", "--per_device_train_batch_size", "8",
        "--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--output_dir", str(stage1),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert "itc/image_to_text/R@1" in printed and "itm/accuracy" in printed
    assert HfMmBlip2ForImageTextRetrieval.from_pretrained(stage1).config.num_query_tokens == 4

    main(["sft", "--config", "recipes/blip2_stage2.yaml", *CPU, *TINY_DATA, "--stage1_name_or_path", str(stage1),
          "--text_model_name_or_path", lm, "--output_dir", str(stage2)])  # fmt: skip
    model = AutoModelForImageTextToText.from_pretrained(stage2).eval()
    processor = AutoProcessor.from_pretrained(stage2)
    assert isinstance(model, HfMmBlip2ForConditionalGeneration) and isinstance(processor, HfMmBlip2Processor)
    reference = HfMmBlip2ForImageTextRetrieval.from_pretrained(stage1)
    # align trained the Q-Former; the tower stayed frozen.
    assert torch.equal(model.model.vision_tower.state_dict()["embeddings.cls_token"],
                       reference.vision_tower.state_dict()["embeddings.cls_token"])  # fmt: skip
    assert not torch.equal(model.model.bridge.query_tokens, reference.bridge.query_tokens)
    inputs = processor(images=T.random_images(1), text="<image>what is it?", return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=3, do_sample=False).shape[1] == inputs["input_ids"].shape[1] + 3


# --- learning --------------------------------------------------------------------------------------------------------


def _qformer_tokenizer(train_pairs):
    return T.tiny_tokenizer(corpus=[pair["text"] for pair in train_pairs[:500]] + T.DEFAULT_CORPUS, vocab_size=300)


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    """A 64-wide, 2-layer Q-Former with 8 queries trained 800 steps on a random frozen CLIP tower."""
    root = tmp_path_factory.mktemp("blip2")
    train = digit_pairs(4000)
    tokenizer = _qformer_tokenizer(train)
    qformer = T.tiny_qformer_config(
        vocab_size=len(tokenizer), hidden_size=64, num_attention_heads=4, intermediate_size=256,
        cross_attention_frequency=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = HfMmBlip2ForImageTextRetrieval(T.tiny_blip2_config("clip", num_query_tokens=8, qformer_config=qformer))
    processor = HfMmBlip2Processor.from_blip2_config(
        model.config, T.tiny_image_processor("clip"), prepare_tokenizer(T.tiny_tokenizer()), tokenizer
    )
    held_out = digit_pairs(300, split="test")
    before = evaluate_stage1(model, processor, held_out)
    model = prepare_model(model, "align")
    args = TrainingArguments(
        output_dir=str(root / "run"), max_steps=800, per_device_train_batch_size=32, learning_rate=2e-3,
        lr_scheduler_type="cosine", warmup_steps=0.05, report_to="none", save_strategy="no", use_cpu=True,
        disable_tqdm=True, logging_steps=100,
    )  # fmt: skip
    collator = QFormerCollator(processor)
    HfMmContrastiveTrainer(model=model, args=args, processing_class=processor, train_dataset=Dataset.from_list(train),
                           stage="align", data_collator=collator).train()  # fmt: skip
    after = evaluate_stage1(model, processor, held_out)
    model.save_pretrained(root / "stage1")
    processor.save_pretrained(root / "stage1")
    return root, before, after


@pytest.mark.slow
def test_stage1_itc_and_itm_beat_chance(stage1):
    _, before, after = stage1
    print(f"BLIP-2 stage 1 on held-out digits: before {before}, after {after}")
    for direction in ("image_to_text", "text_to_image"):
        assert after[f"itc/{direction}/R@1"] >= CHANCE + 0.2, after
    assert after["itm/pairwise_accuracy"] >= 0.5 + 0.1, after
    assert after["itm/pairwise_accuracy"] > before["itm/pairwise_accuracy"] + 0.1


def _caption_chat(rng):
    """A caption stands where the image will be: "the digit seven. What digit is this?" -> "7"."""
    label = rng.randrange(10)
    user = [{"type": "text", "text": caption(label, rng.choice(TRAIN_TEMPLATES)) + ". "},
            {"type": "text", "text": synthetic.DIGITS_QUESTION}]  # fmt: skip
    return [{"role": "user", "content": user}, {"role": "assistant", "content": str(label)}]


@pytest.mark.slow
def test_stage2_vqa_beats_chance_with_the_llm_frozen(stage1):
    root = stage1[0]
    lm = T.train_tiny_causal_lm(root / "lm", _caption_chat)  # frozen in stage 2, as a real LLM
    model = HfMmBlip2ForConditionalGeneration.from_stage1(root / "stage1", lm)
    processor = HfMmBlip2Processor.from_stage1(root / "stage1", lm)
    lm_weights = {k: v.clone() for k, v in model.model.language_model.state_dict().items()}
    held_out = synthetic.digits(200, image_size=32, split="test")

    def exact_match():
        questions = [sample["messages"][0]["content"][-1]["text"] for sample in held_out]
        predictions = answer(model.eval(), processor, [sample["images"][0] for sample in held_out], questions)
        return evaluate(predictions, held_out)["overall"]

    before = exact_match()
    model = train_align(model, processor, synthetic.digits(4000, image_size=32), root / "stage2")
    after = exact_match()
    print(f"BLIP-2 stage 2 digits VQA exact match: {before:.1%} -> {after:.1%} (chance {CHANCE:.0%})")
    assert after >= CHANCE + 0.2
    for name, value in model.model.language_model.state_dict().items():
        assert torch.equal(value, lm_weights[name]), name  # the LLM stayed frozen
