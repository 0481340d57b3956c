"""The benchmark harness runs end to end on the CPU (the `smoke` preset) and writes the rows it prints.

No timing is asserted: the numbers belong to `benchmarks/`; this checks the harness is whole and its rows honest
(each pair was checked to compute the same outputs before timing, or the run raises)."""

import json

from benchmarks.run import markdown
from hf_mm.cli import main

IDS = [
    "P1-llava",
    "P1-qwen2_5_vl",
    "P1-clip",
    "P1-blip2",
    "P2-llava",
    "P3-qwen2_5_vit",
    "P4-qlora",
    "P5-llava",
    "P8-memory",
    "P8-speed",
]


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


def test_mfu_counts_six_flops_per_parameter_and_token():
    import torch

    from benchmarks.measures import throughput

    model = torch.nn.Linear(10, 10)  # 110 parameters
    inputs = {"input_ids": torch.zeros(2, 5), "attention_mask": torch.tensor([[1] * 5, [1, 1, 1, 0, 0]])}
    result = throughput(model, inputs, seconds=2.0, device_name="NVIDIA H200")
    assert result["tokens_per_s"] == 4.0  # 8 real tokens in 2 s
    assert result["mfu"] == 6 * 110 * 8 / 2.0 / 989e12
    assert throughput(model, inputs, 2.0, "Some Unknown GPU")["mfu"] is None


def test_the_gpu_sft_benchmark_runs_at_its_smoke_size(tmp_path):
    """`benchmarks/gpu.sh`'s packed-SFT step (it has not run on a GPU yet) runs end to end on CPU when shrunk."""
    from benchmarks.gpu_sft import main as gpu_sft

    result = gpu_sft(["--smoke", "--steps", "1", "--out", str(tmp_path / "sft.json")])
    assert result["tokens_per_s"] > 0 and result["mfu"] is None  # no GPU peak to divide by on CPU
    assert 0 < result["lm_parameters"] < result["parameters"] and result["tower_tflops_per_gpu"] > 0
    assert json.loads((tmp_path / "sft.json").read_text())["step_seconds"] == result["step_seconds"]
