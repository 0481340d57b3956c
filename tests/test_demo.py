"""The learning demo, shortened (`--preset quick`): the model must beat chance by a wide margin after training."""

from hf_mm.demo import main

# Chance on the held-out colour/shape mix: half the questions have 6 colours, half 3 shapes -> (1/6 + 1/3) / 2.
CHANCE = 0.25
MARGIN = 0.15


def test_quick_demo_learns_and_reloads(tmp_path, capsys):
    result = main(["--preset", "quick", "--output-dir", str(tmp_path / "demo")])
    printed = capsys.readouterr().out
    assert result["before"]["overall"] <= CHANCE
    assert result["after"]["overall"] >= CHANCE + MARGIN, result["after"]
    assert "reloaded as HfMmLlavaForConditionalGeneration" in printed
    assert (tmp_path / "demo" / "model.safetensors").exists()
