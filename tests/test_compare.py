"""`hf-mm compare --quick` end to end on a cut budget: every run recorded with its curve and its shuffled-image
control, each family trained as its paper trains it (the LM frozen in BLIP-2 and Flamingo), and the JSON, the table
and the plot agree."""

import json
import statistics
from pathlib import Path

import PIL.Image
import pytest

from hf_mm.apps.compare import ci95, describe, main, stage_steps, table, text_chats
from hf_mm.data import synthetic


def test_compare_writes_a_consistent_table_json_and_plot(tmp_path):
    out = tmp_path / "compare"
    bridges = ["linear", "qwen_adapter", "gated_cross_attn"]  # two LLaVA prefix bridges, then Flamingo's
    seeds = [0, 1, 2]
    result = main(["--quick", "--steps", "4", "--train-samples", "32", "--eval-samples", "6",
                   "--families", "llava", "flamingo", "--bridges", *bridges[:2], "--output-dir", str(out)])  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"] == result["rows"] and saved["seeds"] == seeds and saved["tasks"] == ["digits"]
    assert len(saved["runs"]) == len(bridges) * 3 and [row["bridge"] for row in saved["rows"]] == bridges
    table = (out / "table.md").read_text()
    for row in saved["rows"]:
        runs = [run for run in saved["runs"] if run["bridge"] == row["bridge"]]
        scores = [run["score"] for run in runs]
        assert row["score"] == pytest.approx(statistics.mean(scores)) and row["seeds"] == 3
        assert row["score_ci95"] == pytest.approx(4.303 * statistics.stdev(scores) / 3**0.5)  # t(0.975, df=2)
        assert row["score_shuffled_images"] == pytest.approx(statistics.mean(r["score_shuffled_images"] for r in runs))
        assert all(run["curve"][-1]["score"] == run["score"] for run in runs)  # the curve ends at the final score
        assert [point["step"] for point in row["curve"]] == [0, 2, 4]  # before training, then 2 curve points
        assert all(a["seconds"] < b["seconds"] for a, b in zip(row["curve"], row["curve"][1:]))
        lm = "trained" if row["lm_trained"] else "frozen"
        assert (
            f"| `{row['bridge']}` | digits | {row['score']:.3f} ± {row['score_ci95']:.3f} "
            f"| {row['score_shuffled_images']:.3f} | {lm} | {row['trainable_params']:,} "
            f"| {row['visual_tokens_per_image']} |"
        ) in table  # fmt: skip
        assert row["train_memory_mb"] > 0 and row["step_seconds"] > 0
        drawn = result["plotted"]["digits"][row["bridge"]]
        assert drawn["steps"] == [p["step"] for p in row["curve"]] and drawn["score"] == [
            p["score"] for p in row["curve"]
        ]
        assert drawn["seconds"] == pytest.approx([p["seconds"] for p in row["curve"]])
    by_bridge = {row["bridge"]: row for row in saved["rows"]}
    # LLaVA trains the LM in its second stage; Flamingo keeps it frozen throughout, and its trainable parameters are
    # its resampler and gated blocks alone.
    assert by_bridge["linear"]["lm_trained"] and not by_bridge["gated_cross_attn"]["lm_trained"]
    assert saved["runs"][0]["stages"] == [["align", 1], ["instruct", 3]]
    linear = saved["runs"][0]["trainable_params_per_stage"]
    assert linear["align"] < linear["instruct"]  # the LM joins in stage 2
    tokens = {row["bridge"]: row["visual_tokens_per_image"] for row in saved["rows"]}
    assert tokens == {"linear": 64, "qwen_adapter": 16, "gated_cross_attn": 16}  # 64 patches; 16 queries / latents
    pair = next(p for p in saved["pairwise"] if (p["a"], p["b"]) == ("linear", "gated_cross_attn"))
    differences = [a["score"] - b["score"] for a, b in zip(saved["runs"][:3], saved["runs"][6:])]  # seeds 0, 1, 2
    assert pair["difference"] == pytest.approx(statistics.mean(differences))
    assert pair["ci95"] == pytest.approx(ci95(differences)) and pair["significant"] == (
        abs(pair["difference"]) > pair["ci95"]
    )
    assert len(saved["pairwise"]) == 3  # every pair of the three bridges
    with PIL.Image.open(out / "plot.png") as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 400


def test_ci95_is_students_t_interval():
    assert ci95([0.5]) == 0.0
    assert ci95([0.2, 0.4]) == pytest.approx(12.706 * statistics.stdev([0.2, 0.4]) / 2**0.5)
    assert ci95([1.0] * 40) == 0.0


def test_schedules_freeze_the_lm_where_the_papers_do():
    assert stage_steps("llava", 200) == [("align", 50), ("instruct", 150)]
    assert stage_steps("blip2", 200) == [("align", 200)] and stage_steps("flamingo", 7) == [("align", 7)]
    assert stage_steps("llava", 2) == [("align", 1), ("instruct", 1)]  # every stage gets a step


def test_text_pretraining_puts_a_description_where_the_image_will_be():
    import random

    scene = synthetic.shapes_vqa(1, seed=3)[0]
    described = describe(scene, random.Random(0))
    for shape in scene["meta"]["shapes"]:
        assert f"a {shape['colour']} {shape['shape']}" in described
    chats = text_chats(["digits", "ocr"], n=4, seed=0)
    assert len(chats) == 8 and all(isinstance(chat[0]["content"], str) for chat in chats)
    assert any(chat[0]["content"].startswith("the text ") for chat in chats)


def test_qformer_stage1_row_is_reported_separately(tmp_path):
    out = tmp_path / "compare"
    result = main(["--quick", "--steps", "2", "--train-samples", "16", "--eval-samples", "4", "--seeds", "0",
                   "--families", "blip2", "--qformer-stage1-steps", "3", "--output-dir", str(out)])  # fmt: skip
    rows = {row["bridge"]: row for row in result["rows"]}
    assert list(rows) == ["qformer", "qformer_stage1"]
    assert rows["qformer_stage1"]["stage1_steps"] == 3 and rows["qformer_stage1"]["stage1_seconds"] > 0
    assert rows["qformer"]["stage1_steps"] == 0 and rows["qformer"]["stage1_seconds"] == 0
    assert not rows["qformer_stage1"]["lm_trained"]  # stage 2 keeps the LM frozen, as without stage 1
    assert "| `qformer_stage1` (+3 stage-1 steps) | digits |" in (out / "table.md").read_text()
    with pytest.raises(SystemExit):
        main(["--quick", "--qformer-stage1-steps", "-1", "--output-dir", str(out)])


def test_the_published_comparison_is_the_committed_run():
    # docs/bridges.md's table and its conclusions are drawn from docs/bridges-results.json: the table must be the one
    # that JSON renders, so a rerun cannot update one without the other.
    docs = Path(__file__).resolve().parents[1] / "docs"
    saved = json.loads((docs / "bridges-results.json").read_text())
    assert table(saved["rows"]).strip() in (docs / "bridges.md").read_text()
    assert {row["task"] for row in saved["rows"]} == {"digits", "shapes_vqa"} and saved["seeds"] == [0, 1, 2]
