"""The learning demo, shortened (`--preset quick`): the model must beat chance by a wide margin after training."""

import dataclasses

import PIL.Image
import PIL.ImageDraw
import pytest
from huggingface_hub import ModelCard

from hf_mm.apps.demo import PRESETS, main, scene_words
from hf_mm.data import synthetic

# Chance on the held-out colour/shape mix: half the questions have 6 colours, half 3 shapes -> (1/6 + 1/3) / 2.
CHANCE = 0.25
MARGIN = 0.15
TEXT_ONLY_MARGIN = 0.10  # the quick run measured 58.3% against 28.1% with the scenes shuffled
IN_WORDS = 0.8  # the quick run's LM stage 0 answered 92.7% of questions about scenes written as words


def test_quick_demo_learns_and_reloads(tmp_path, capsys):
    result = main(["--preset", "quick", "--output-dir", str(tmp_path / "demo")])
    printed = capsys.readouterr().out
    # The LM's stage 0 learnt the task in words: with the scene as words it answers far above chance.
    assert result["lm_in_words"] >= IN_WORDS, result["lm_in_words"]
    assert result["before"]["overall"] <= CHANCE
    after = result["after"]["overall"]
    assert after >= CHANCE + MARGIN, result["after"]
    # The same questions about other scenes: what the text alone gives. The model must have learnt to look.
    assert after >= result["text_only"]["overall"] + TEXT_ONLY_MARGIN, (result["after"], result["text_only"])
    assert set(result["after"]["per_question_type"]) == {"shapes_vqa/colour", "shapes_vqa/shape"}
    assert "reloaded as HfMmLlavaForConditionalGeneration" in printed
    assert (tmp_path / "demo" / "model.safetensors").exists()
    card = ModelCard.load(tmp_path / "demo" / "README.md")
    (measured,) = card.data.eval_results
    assert (measured.task_type, measured.metric_type) == ("visual-question-answering", "exact_match")
    assert measured.metric_value == round(after, 4) and measured.dataset_split == "test"


def test_scene_words_name_each_block_by_the_object_filling_most_of_it():
    # The LM's stage 0 reads scenes as words in place of the image: one word per image token's block, raster order.
    (scene,) = synthetic.shapes_vqa(1, seed=3, image_size=64, question_types=("colour",))
    scene["images"] = [PIL.Image.new("RGB", (64, 64), (255, 255, 255))]
    draw = PIL.ImageDraw.Draw(scene["images"][0])
    draw.rectangle([0, 0, 19, 9], fill=synthetic.PALETTE["red"])  # 16 x 10 px in block 0, 4 x 10 in block 1
    draw.rectangle([40, 40, 47, 47], fill=synthetic.PALETTE["blue"])  # inside block 10 (row 2, column 2)
    scene["meta"]["shapes"] = [
        {"shape": "square", "colour": "red", "box": [0, 0, 20, 10]},
        {"shape": "circle", "colour": "blue", "box": [40, 40, 48, 48]},
    ]
    words = scene_words(scene, cell=16).split()
    assert len(words) == 16
    assert words[0] == words[1] == "redsquare" and words[10] == "bluecircle"
    assert set(words) - {"redsquare", "bluecircle"} == {"empty"} and words.count("empty") == 13


def test_quick_clip_demo_learns_digits_from_captions(tmp_path, capsys):
    from hf_mm.apps.demo_clip import main as clip_main

    result = clip_main(["--preset", "quick", "--output-dir", str(tmp_path / "clip")])
    # Chance is 10% (ten digits); the quick run measured 87% zero-shot with unseen templates.
    assert result["before"]["zero_shot_top1"] < 0.2
    assert result["after"]["zero_shot_top1"] >= 0.5, result["after"]
    assert result["after"]["image_to_text/R@1"] >= 0.5
    assert "the zero-shot pipeline on a held-out" in capsys.readouterr().out


def test_a_preset_whose_scene_words_would_not_match_the_image_tokens_is_refused():
    with pytest.raises(ValueError, match="scene_cell=12 must divide"):
        dataclasses.replace(PRESETS["full"], scene_cell=12)
    with pytest.raises(ValueError, match="set scene_cell=8"):
        dataclasses.replace(PRESETS["full"], bridge_type="mlp2x_gelu")
    dataclasses.replace(PRESETS["full"], bridge_type="mlp2x_gelu", scene_cell=8)  # one word per patch: accepted
    with pytest.raises(ValueError, match="lm_caption_fraction=0 must be in"):
        dataclasses.replace(PRESETS["full"], lm_caption_fraction=0)
