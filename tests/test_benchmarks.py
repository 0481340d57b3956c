"""The benchmark harness runs end to end on the CPU (the `smoke` preset) and writes the rows it prints.

No timing is asserted: the numbers belong to `benchmarks/`; this checks the harness is whole and its rows honest
(each pair was checked to compute the same outputs before timing, or the run raises)."""

import json

from benchmarks.run import markdown
from hf_mm.cli import main

IDS = ["P1-llava", "P1-qwen2_5_vl", "P1-clip", "P1-blip2", "P2-llava", "P3-qwen2_5_vit", "P4-qlora", "P5-llava"]


def test_smoke_preset_writes_every_measure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(["bench", "--preset", "smoke", "--out", str(out)])
    rows = json.loads(out.read_text())
    assert [row["id"] for row in rows] == IDS
    for row in rows:
        assert row["hf_mm"] > 0 and row["reference"] > 0 and row["ratio"] > 0 and row["target"] and row["device"]
        if row["id"].startswith("P1"):
            assert abs(row["ratio"] - row["hf_mm"] / row["reference"]) < 0.5 * row["ratio"]  # a median of ratios
            assert row["spread"][0] <= row["ratio"] <= row["spread"][1]
    p4 = rows[IDS.index("P4-qlora")]
    assert p4["ratio"] == p4["hf_mm"] / p4["reference"] < 1  # 4-bit weights are smaller, whatever the timing
    assert rows[IDS.index("P5-llava")]["tower_calls"] == 1  # the vision tower runs once per generate()
    printed = capsys.readouterr().out
    assert markdown(rows, "smoke") in printed
