"""Padding-free packing: the gate is that packed and unpacked batches give the same per-token loss on the same
samples (<= 1e-5 in fp32), for every family that packs; plus the packing layout itself and the SFT wiring."""

import pytest
import torch

from hf_mm import HfMmBlip2ForConditionalGeneration, HfMmFlamingoForConditionalGeneration
from hf_mm import HfMmLlavaForConditionalGeneration as Llava
from hf_mm import testing as T
from hf_mm.cli import main
from hf_mm.data import synthetic
from hf_mm.modeling.qwen2_5_vl.mrope import mrope_position_ids, packed_mrope_position_ids
from hf_mm.training.collators import IGNORE_INDEX, VisionSFTCollator
from hf_mm.training.packing import VisionPackingCollator, best_fit_decreasing
from tests.training.helpers import CPU, TINY_DATA


def _samples(multi_image: bool) -> list[dict]:
    """Mixed lengths: short answers, longer questions, one or two images per sample."""
    samples = synthetic.shapes_vqa(3, image_size=32) + synthetic.ocr(2, image_size=32)
    if multi_image:
        samples += synthetic.compare_counts(2, image_size=32)
    return samples


def _open_gates(model):
    for block in model.model.bridge.gated_cross_attn:
        torch.nn.init.constant_(block.attn_gate, 0.7), torch.nn.init.constant_(block.ff_gate, 0.3)
    return model


CASES = {
    "llava-mlp": (lambda: Llava(T.tiny_llava_config("clip", "llama")), lambda c: T.tiny_llava_processor(c), True),
    "llava-perceiver-qwen2": (
        lambda: Llava(T.tiny_llava_config("siglip", "qwen2", "perceiver")),
        lambda c: T.tiny_llava_processor(c, "siglip"),
        False,
    ),
    "blip2": (
        lambda: HfMmBlip2ForConditionalGeneration(T.tiny_blip2_config()),
        lambda c: T.tiny_blip2_processor(c),
        True,
    ),
    "flamingo": (
        lambda: _open_gates(HfMmFlamingoForConditionalGeneration(T.tiny_flamingo_config())),
        lambda c: T.tiny_flamingo_processor(),
        True,
    ),
}


def _losses(model, batch: dict) -> torch.Tensor:
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs).logits.float()
    per_token = torch.nn.functional.cross_entropy(
        logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE_INDEX, reduction="none"
    )
    return per_token[labels[:, 1:] != IGNORE_INDEX]  # row-major: sample order within each row


def _check_packing(model, processor, samples, max_length) -> float:
    """Packed per-token losses equal the same samples' unpacked losses; returns the max |difference|."""
    plain = VisionSFTCollator(processor)
    packer = VisionPackingCollator(processor, max_length=max_length)
    packed_batch = packer(samples)
    assert "attention_mask" not in packed_batch and packed_batch["use_cache"] is False
    lengths = [plain.encode(s)["input_ids"].shape[-1] for s in samples]
    rows = best_fit_decreasing(lengths, max_length)
    assert packed_batch["input_ids"].shape[0] == len(rows) and packer.tokens == sum(lengths)
    if max_length is None:
        assert len(rows) == 1 and packer.padding_tokens == 0  # one row: no padding at all
    order = [index for row in rows for index in row]  # the packed rows' sample order
    expected = torch.cat([_losses(model, plain([samples[i]])) for i in order])
    got = _losses(model, packed_batch)
    assert got.shape == expected.shape
    delta = (got - expected).abs().max().item()
    assert delta <= 1e-5
    return delta


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("max_length", [None, 160])
def test_packed_and_unpacked_give_the_same_per_token_loss(case, max_length):
    build, processor_for, multi_image = CASES[case]
    torch.manual_seed(0)
    model = build().eval()
    _check_packing(model, processor_for(model.config), _samples(multi_image), max_length)


@pytest.mark.parametrize("max_length", [None, 160])
def test_qwen2_5_vl_packs_with_m_rope_restarting_per_sample(tmp_path, max_length):
    from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig, HfMmQwen2_5_VLForConditionalGeneration
    from hf_mm.processing import HfMmQwen2_5_VLProcessor

    text = T.save_tiny_causal_lm(tmp_path / "qwen2", "qwen2")
    vision = HfMmQwen2_5_ViTConfig(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32,
                                   fullatt_block_indexes=[1])  # fmt: skip
    torch.manual_seed(0)
    model = HfMmQwen2_5_VLForConditionalGeneration.from_vision_text_pretrained(None, text, vision_config=vision)
    processor = HfMmQwen2_5_VLProcessor.from_vision_text_pretrained(None, text)
    samples = _samples(True)
    _check_packing(model.eval(), processor, samples, max_length)
    # RoPE only sees offsets, so the loss alone cannot tell per-sample ids from ids running on across the row:
    # check the 3D ids themselves equal what each sample gets alone (positions stay small, as in training).
    batch, plain = VisionPackingCollator(processor, max_length=max_length)(samples), VisionSFTCollator(processor)
    merge = model.config.vision_config.spatial_merge_size
    packed = packed_mrope_position_ids(batch["mm_token_type_ids"], batch["image_grid_thw"], None, None,
                                       batch["position_ids"], merge)  # fmt: skip
    rows = best_fit_decreasing([plain.encode(s)["input_ids"].shape[-1] for s in samples], max_length)
    for r, row in enumerate(rows):
        start = 0
        for index in row:
            alone = plain([samples[index]])
            ids, _ = mrope_position_ids(alone["mm_token_type_ids"], alone["image_grid_thw"], None, None, None, merge)
            end = start + ids.shape[-1]
            assert torch.equal(packed[:, r, start:end], ids[:, 0]), (r, index)
            start = end


def test_without_the_restarts_samples_would_leak_into_each_other():
    """The check above is not vacuous: the same row with plain positions (no restarts) changes the loss."""
    torch.manual_seed(0)
    config = T.tiny_llava_config()
    model, processor = Llava(config).eval(), T.tiny_llava_processor(config)
    samples = _samples(False)
    batch = VisionPackingCollator(processor)(samples)
    leaky = dict(batch, position_ids=torch.arange(batch["input_ids"].shape[1])[None])
    assert (_losses(model, batch) - _losses(model, leaky)).abs().max() > 1e-3


def test_best_fit_decreasing_respects_capacity_and_keeps_every_sample():
    lengths = [50, 120, 30, 90, 60, 10, 100]
    rows = best_fit_decreasing(lengths, 160)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 160 for row in rows) and len(rows) == 3  # 460 tokens, 3 rows


def test_packing_refuses_what_it_cannot_pack_yet():  # InstructBLIP's per-sample Q-Former instructions
    from hf_mm.processing import HfMmBlip2Processor

    config = T.tiny_blip2_config(instruction_aware=True)
    processor = T.tiny_blip2_processor(config)
    assert isinstance(processor, HfMmBlip2Processor) and processor.instruction_aware
    with pytest.raises(ValueError, match="instruction-aware .* packing=False"):
        VisionPackingCollator(processor)


def test_sft_cli_trains_with_packing(tmp_path, capsys):
    vision, text = T.save_tiny_vision_tower(tmp_path / "v"), T.save_tiny_causal_lm(tmp_path / "t")
    out = tmp_path / "packed"
    main(["sft", "--config", "recipes/llava15_align.yaml", *CPU, *TINY_DATA, "--packing", "true", "--max_length", "512",
          "--output_dir", str(out), "--vision_model_name_or_path", vision, "--text_model_name_or_path", text])  # fmt: skip
    assert "finished 2 steps" in capsys.readouterr().out and (out / "model.safetensors").exists()
