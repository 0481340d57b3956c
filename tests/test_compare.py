"""`hf-mm compare --quick` end to end on a cut budget: every run recorded, the table, JSON and PNG agree."""

import json

import PIL.Image

from hf_mm.cli import main


def test_compare_writes_a_consistent_table_json_and_plot(tmp_path):
    out = tmp_path / "compare"
    bridges = ["linear", "qwen_adapter", "gated_cross_attn"]  # two LLaVA prefix bridges, then Flamingo's
    main(["compare", "--quick", "--steps", "2", "--train-samples", "32", "--eval-samples", "4", "--seeds", "0", "1",
          "--families", "llava", "flamingo", "--bridges", *bridges[:2], "--output-dir", str(out)])  # fmt: skip
    result = json.loads((out / "results.json").read_text())
    assert len(result["runs"]) == len(bridges) * 2 and [row["bridge"] for row in result["rows"]] == bridges
    assert [row["family"] for row in result["rows"]] == ["llava", "llava", "flamingo"]
    table = (out / "table.md").read_text()
    for row in result["rows"]:
        runs = [run for run in result["runs"] if run["bridge"] == row["bridge"]]
        assert row["score"] == sum(run["score"] for run in runs) / 2 and row["seeds"] == 2
        assert row["score_min"] <= row["score"] <= row["score_max"] <= 1
        assert f"| `{row['bridge']}` | shapes_vqa | {row['score']:.3f}" in table
        assert f"| {row['trainable_params']:,} | {row['visual_tokens']} |" in table
        assert row["memory_mb"] > 0 and row["step_s"] > 0
    tokens = {row["bridge"]: row["visual_tokens"] for row in result["rows"]}
    assert tokens == {"linear": 64, "qwen_adapter": 16, "gated_cross_attn": 16}  # 64 patches; 16 queries / latents
    params = {row["bridge"]: row["trainable_params"] for row in result["rows"]}
    assert len(set(params.values())) == 3  # each bridge adds its own parameters to the same trainable LM
    with PIL.Image.open(out / "plot.png") as image:
        assert image.format == "PNG" and image.width > 400 and image.height > 200
