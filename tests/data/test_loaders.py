"""Loaders: LLaVA-JSON / ShareGPT / Hub datasets into canonical images + messages, safe paths, loud errors."""

import json
import logging
import os
import re

import numpy as np
import PIL.Image
import pytest
from datasets import Dataset, Features, Image, List, Value
from trl.data_utils import prepare_multimodal_messages

from hf_mm.data import LoadReport, canonical_features, from_hf_dataset, load_llava_json, load_sharegpt

IMG = {"type": "image", "text": None}  # how Arrow hands an image part back (one struct for every part)


def text(s: str) -> dict:
    return {"type": "text", "text": s}


def write_png(path, color, size=(5, 4), mode="RGB") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = PIL.Image.new(mode, size, color)
    image.save(path)
    return np.asarray(image.convert("RGB"))


def write_json(path, records, jsonl=False) -> str:
    with open(path, "w") as f:
        if jsonl:
            f.write("\n".join(json.dumps(r) for r in records) + "\n")
        else:
            json.dump(records, f)
    return str(path)


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "images"
    write_png(root / "a.png", (255, 0, 0))
    write_png(root / "sub" / "b.png", (0, 0, 255), size=(3, 6))
    return root


def llava(id_, image, *turns):
    record = {"id": id_, "conversations": [{"from": f, "value": v} for f, v in turns]}
    if image is not None:
        record["image"] = image
    return record


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def test_llava_multi_turn_two_images_in_order(tmp_path, root):
    record = llava(
        "r0",
        ["a.png", "sub/b.png"],
        ("system", "Be brief."),
        ("human", "<image>\nCompare this with <image>\nplease."),
        ("gpt", "Red vs blue."),
        ("human", "Which is taller?"),
        ("gpt", "The second."),
    )
    ds = load_llava_json(write_json(tmp_path / "d.json", [record]), root)
    assert ds[0]["messages"] == [
        {"role": "system", "content": [text("Be brief.")]},
        {"role": "user", "content": [IMG, text("Compare this with "), IMG, text("please.")]},
        {"role": "assistant", "content": [text("Red vs blue.")]},
        {"role": "user", "content": [text("Which is taller?")]},
        {"role": "assistant", "content": [text("The second.")]},
    ]
    assert [im.size for im in ds[0]["images"]] == [(5, 4), (3, 6)]  # the order of the "image" list


def test_llava_without_placeholder_puts_image_at_start_of_first_user_turn(tmp_path, root):
    record = llava("r0", "a.png", ("system", "S"), ("human", "What is it?"), ("gpt", "Red."))
    ds = load_llava_json(write_json(tmp_path / "d.json", [record]), root)
    assert ds[0]["messages"][1] == {"role": "user", "content": [IMG, text("What is it?")]}
    assert len(ds[0]["images"]) == 1


def test_llava_trailing_placeholder_and_text_only_record(tmp_path, root):
    records = [
        llava("r0", "a.png", ("human", "What is this?\n<image>"), ("gpt", "Red.")),
        llava("r1", None, ("human", "Hi"), ("gpt", "Hello")),
    ]
    ds = load_llava_json(write_json(tmp_path / "d.json", records), root)
    assert ds[0]["messages"][0]["content"] == [text("What is this?\n"), IMG]
    assert ds[1]["images"] == []
    assert ds[1]["messages"][0]["content"] == [text("Hi")]


def test_llava_jsonl(tmp_path, root):
    records = [
        llava("r0", "a.png", ("human", "<image>\nColour?"), ("gpt", "Red")),
        llava("r1", "sub/b.png", ("human", "<image>Colour?"), ("gpt", "Blue")),
    ]
    ds = load_llava_json(write_json(tmp_path / "d.jsonl", records, jsonl=True), root)
    assert len(ds) == 2
    assert [m[1]["content"][0]["text"] for m in ds["messages"]] == ["Red", "Blue"]
    assert ds[1]["messages"][0]["content"] == [IMG, text("Colour?")]


@pytest.mark.parametrize("style", ["messages", "conversations"])
def test_sharegpt_both_styles(tmp_path, root, style):
    turns = [("user", "human", "<image>First <image>second?"), ("assistant", "gpt", "Red, blue.")]
    if style == "messages":
        record = {"messages": [{"role": r, "content": c} for r, _, c in turns]}
    else:
        record = {"conversations": [{"from": f, "value": c} for _, f, c in turns]}
    record |= {"images": ["a.png", "sub/b.png"], "system": "Be brief."}
    ds = load_sharegpt(write_json(tmp_path / "d.json", [record]), root)
    assert ds[0]["messages"] == [
        {"role": "system", "content": [text("Be brief.")]},
        {"role": "user", "content": [IMG, text("First "), IMG, text("second?")]},
        {"role": "assistant", "content": [text("Red, blue.")]},
    ]
    assert [im.size for im in ds[0]["images"]] == [(5, 4), (3, 6)]


def test_round_trip_images_and_messages(tmp_path, root):
    pixels = write_png(root / "rgba.png", (10, 20, 30, 128), size=(7, 3), mode="RGBA")
    record = llava("r0", ["rgba.png", "a.png"], ("human", "<image> and <image>"), ("gpt", "ok"))
    ds = load_llava_json(write_json(tmp_path / "d.json", [record]), root)
    assert ds.features == canonical_features("RGB")
    # Through Arrow on disk and back: same messages, same pixels, converted to image_mode.
    ds.save_to_disk(str(tmp_path / "saved"))
    again = Dataset.load_from_disk(str(tmp_path / "saved"))
    assert again[0]["messages"] == ds[0]["messages"]
    images = again[0]["images"]
    assert all(isinstance(im, PIL.Image.Image) and im.mode == "RGB" for im in images)
    np.testing.assert_array_equal(np.asarray(images[0]), pixels)
    np.testing.assert_array_equal(np.asarray(images[1]), np.full((4, 5, 3), (255, 0, 0), dtype=np.uint8))
    # image_mode=None keeps the file's own mode.
    raw = load_llava_json(write_json(tmp_path / "d2.json", [record]), root, image_mode=None)
    assert raw[0]["images"][0].mode == "RGBA"


def test_output_feeds_trl_prepare_multimodal_messages(tmp_path, root):
    record = llava("r0", ["a.png", "sub/b.png"], ("human", "<image> vs <image>"), ("gpt", "ok"))
    sample = load_llava_json(write_json(tmp_path / "d.json", [record]), root)[0]
    filled = prepare_multimodal_messages(sample["messages"], sample["images"])
    assert [p["image"] for p in filled[0]["content"] if p["type"] == "image"] == sample["images"]


def test_each_distinct_image_is_opened_once(tmp_path, root, monkeypatch):
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    records = [llava(f"r{i}", "a.png", ("human", "<image>?"), ("gpt", "x")) for i in range(3)]
    records.append(llava("r3", "./sub/../a.png", ("human", "<image>?"), ("gpt", "x")))  # same file, other spelling
    ds = load_llava_json(write_json(tmp_path / "d.json", records), root)
    assert opened == [str(root / "a.png")]
    assert len(ds) == 4


# ---------------------------------------------------------------------------------------------------------------
# Safe paths


@pytest.fixture
def outside(tmp_path):
    path = tmp_path / "secret.png"
    write_png(path, (0, 255, 0))
    return path


@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink", "symlinked_dir"])
def test_paths_outside_root_are_refused_without_opening(tmp_path, root, outside, kind, monkeypatch):
    if kind == "dotdot":
        rel = "sub/../../secret.png"
    elif kind == "absolute":
        rel = str(outside)
    elif kind == "symlink":
        os.symlink(outside, root / "link.png")
        rel = "link.png"
    else:
        os.symlink(tmp_path, root / "up")
        rel = "up/secret.png"
    opened = []
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: opened.append(str(fp)) or real_open(fp, *a, **k))
    records = [
        llava("ok", "a.png", ("human", "<image>"), ("gpt", "x")),
        llava("evil", rel, ("human", "<image>"), ("gpt", "x")),
    ]
    with pytest.raises(ValueError) as info:
        load_llava_json(write_json(tmp_path / "d.json", records), root)
    message = str(info.value)
    assert "record 1 (id 'evil')" in message
    assert repr(rel) in message and str(root) in message and "outside image_root" in message
    assert ("symlink" in message) == kind.startswith("symlink")
    assert all("secret" not in path for path in opened)


def test_absolute_path_and_symlinks_inside_root_are_accepted(tmp_path, root):
    os.symlink(root / "sub" / "b.png", root / "alias.png")
    os.symlink(root, tmp_path / "root_link")  # image_root itself reached through a symlink, as on many clusters
    images = [str(tmp_path / "root_link" / "a.png"), "alias.png"]
    record = llava("r0", images, ("human", "<image><image>"), ("gpt", "x"))
    ds = load_llava_json(write_json(tmp_path / "d.json", [record]), tmp_path / "root_link")
    assert [im.size for im in ds[0]["images"]] == [(5, 4), (3, 6)]


# ---------------------------------------------------------------------------------------------------------------
# Errors


def test_missing_file_names_index_and_file(tmp_path, root):
    records = [llava("r0", "a.png", ("human", "<image>"), ("gpt", "x")), llava(7, "nope.png", ("human", "x"))]
    with pytest.raises(ValueError, match=r"record 1 \(id 7\): field 'image': image file 'nope.png' not found"):
        load_llava_json(write_json(tmp_path / "d.json", records), root)


def test_corrupt_image_names_index_and_file(tmp_path, root):
    (root / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    record = {"messages": [{"role": "user", "content": "<image><image>"}], "images": ["a.png", "bad.png"]}
    with pytest.raises(ValueError, match=r"record 0: field 'images\[1\]': image file 'bad.png' does not decode"):
        load_sharegpt(write_json(tmp_path / "d.json", [record]), root)


def test_truncated_image_fails_at_load_unless_not_verified(tmp_path, root):
    write_png(root / "big.png", (1, 2, 3), size=(64, 64))
    data = (root / "big.png").read_bytes()
    (root / "big.png").write_bytes(data[: len(data) // 2])  # a valid header: only decoding finds the damage
    path = write_json(tmp_path / "d.json", [llava("r0", "big.png", ("human", "<image>"), ("gpt", "x"))])
    with pytest.raises(ValueError, match="'big.png' does not decode"):
        load_llava_json(path, root)
    assert len(load_llava_json(path, root, verify_images=False)) == 1


BAD_RECORDS = {
    "missing conversations": ({"id": "x", "image": "a.png"}, "field 'conversations': missing"),
    "unknown role": (llava("x", None, ("robot", "hi")), r"field 'conversations\[0\]\.from': unknown role 'robot'"),
    "non-string value": (llava("x", None, ("human", 3)), r"field 'conversations\[0\]\.value': expected a string"),
    "too many placeholders": (
        llava("x", "a.png", ("human", "<image> and <image>"), ("gpt", "x")),
        r"field 'image': 2 <image> placeholder\(s\) in the text but 1 image\(s\)",
    ),
    "placeholder without image": (
        llava("x", None, ("human", "<image>"), ("gpt", "x")),
        r"field 'image': 1 <image> placeholder\(s\) in the text but 0 image\(s\)",
    ),
    "placeholder in assistant turn": (
        llava("x", "a.png", ("human", "hi"), ("gpt", "<image>")),
        r"field 'conversations\[1\]\.value': image placeholder in an assistant turn",
    ),
    "image but no user turn": (llava("x", "a.png", ("gpt", "x")), "but no user turn"),
    "not an object": (["a", "b"], "field '<record>': expected a JSON object, got list"),
    "bad image value": (llava("x", 5, ("human", "x")), "field 'image': expected a path or a list of paths"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_malformed_records_raise_naming_index_field_and_fix(tmp_path, root, case):
    record, pattern = BAD_RECORDS[case]
    good = llava("g", "a.png", ("human", "<image>"), ("gpt", "x"))
    with pytest.raises(ValueError, match=pattern) as info:
        load_llava_json(write_json(tmp_path / "d.json", [good, good, record]), root)
    assert re.search(r"d\.json: record 2\b", str(info.value))
    assert "Fix: " in str(info.value)


def test_sharegpt_needs_exactly_one_dialogue_key(tmp_path, root):
    record = {"messages": [], "conversations": [], "images": []}
    with pytest.raises(ValueError, match="record 0: field 'messages': need exactly one of"):
        load_sharegpt(write_json(tmp_path / "d.json", [record]), root)


def test_skip_keeps_good_records_and_reports_bad_ones(tmp_path, root, caplog):
    (root / "bad.png").write_bytes(b"not an image")
    records = [
        llava("g0", "a.png", ("human", "<image>A"), ("gpt", "x")),
        llava("b1", "../x.png", ("human", "<image>"), ("gpt", "x")),
        llava("b2", "bad.png", ("human", "<image>"), ("gpt", "x")),
        llava("g3", None, ("human", "B"), ("gpt", "x")),
        llava("b4", "a.png", ("human", "<image><image>"), ("gpt", "x")),
    ]
    lines = [json.dumps(r) for r in records]
    lines.insert(3, "{not json")  # a JSON Lines line that does not parse is a bad record too (index 3)
    (tmp_path / "d.jsonl").write_text("\n".join(lines))
    with caplog.at_level(logging.WARNING, logger="hf_mm.data.loaders"):
        ds, report = load_llava_json(tmp_path / "d.jsonl", root, on_error="skip", return_report=True)
    assert [m[0]["content"][-1]["text"] for m in ds["messages"]] == ["A", "B"]
    assert isinstance(report, LoadReport)
    assert (report.n_records, report.n_loaded, report.n_skipped) == (6, 2, 4)
    for index, fragment in [(1, "outside image_root"), (2, "does not decode"), (3, "line 4 is not valid JSON")]:
        assert any(f"record {index}" in reason and fragment in reason for reason in report.skipped)
    assert "record 5 (id 'b4')" in report.skipped[3]
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "skipped 4 of 6 records" in warning.getMessage()
    assert "record 1 (id 'b1')" in warning.getMessage()


def test_all_skipped_gives_empty_canonical_dataset(tmp_path, root):
    path = write_json(tmp_path / "d.json", [llava("b", "missing.png", ("human", "x"))])
    ds, report = load_llava_json(path, root, on_error="skip", return_report=True)
    assert len(ds) == 0 and ds.features == canonical_features() and report.n_skipped == 1


def test_bad_options_and_files_raise(tmp_path, root):
    path = write_json(tmp_path / "d.json", [])
    with pytest.raises(ValueError, match=r"on_error='ignore' is not one of \('raise', 'skip'\)"):
        load_llava_json(path, root, on_error="ignore")
    with pytest.raises(ValueError, match="image_root .* is not a directory"):
        load_llava_json(path, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="expected a JSON list of records, got a dict"):
        load_llava_json(write_json(tmp_path / "o.json", {"a": 1}), root)


# ---------------------------------------------------------------------------------------------------------------
# Hub datasets


@pytest.fixture
def hub_images(root):
    return [str(root / "a.png"), str(root / "sub" / "b.png")]


def test_hf_trl_style_string_content_puts_images_before_first_user_text(hub_images):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Both?"}]
    ds = Dataset.from_dict({"images": [hub_images], "messages": [messages], "id": ["q"]})
    ds = ds.cast_column("images", List(Image()))
    out = from_hf_dataset(ds)
    assert out[0]["messages"] == [
        {"role": "system", "content": [text("S")]},
        {"role": "user", "content": [IMG, IMG, text("Both?")]},
    ]
    assert out[0]["id"] == "q" and [im.size for im in out[0]["images"]] == [(5, 4), (3, 6)]


def test_hf_single_image_column_with_placeholders(hub_images):
    messages = [[{"role": "user", "content": "Look: <image>\nwhat?"}, {"role": "assistant", "content": "Red"}]]
    ds = Dataset.from_dict({"image": hub_images[:1], "conversation": messages}).cast_column("image", Image())
    out = from_hf_dataset(ds, messages_column="conversation")
    assert set(out.column_names) == {"images", "messages"}
    assert out[0]["messages"][0]["content"] == [text("Look: "), IMG, text("what?")]
    np.testing.assert_array_equal(np.asarray(out[0]["images"][0]), np.full((4, 5, 3), (255, 0, 0), np.uint8))


def test_hf_typed_parts_pass_and_count_mismatch_raises(hub_images):
    typed = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "hi"}]}]
    ds = Dataset.from_dict({"images": [hub_images[:1], hub_images], "messages": [typed, typed]})
    ds = ds.cast_column("images", List(Image()))
    with pytest.raises(ValueError, match=r"record 1: field 'images': 1 <image> placeholder\(s\) .* but 2 image"):
        from_hf_dataset(ds)
    out, report = from_hf_dataset(ds, on_error="skip", return_report=True)
    assert len(out) == 1 and report.n_skipped == 1 and out[0]["messages"][0]["content"] == [IMG, text("hi")]


def test_hf_prompt_completion_pass_through(hub_images):
    prompt = [{"role": "user", "content": "<image>Colour?"}]
    completion = [{"role": "assistant", "content": "Red"}]
    features = Features(
        {
            "image": Image(),
            "prompt": List({"role": Value("string"), "content": Value("string")}),
            "completion": List({"role": Value("string"), "content": Value("string")}),
        }
    )
    ds = Dataset.from_dict(
        {"image": hub_images[:1], "prompt": [prompt], "completion": [completion]}, features=features
    )
    out = from_hf_dataset(ds)
    assert out[0]["prompt"] == prompt and out[0]["completion"] == completion and len(out[0]["images"]) == 1
    plain = Dataset.from_dict({"prompt": ["<image> x", "<image> y"], "completion": ["a", "b"]})
    plain = plain.add_column("images", [hub_images[:1], []]).cast_column("images", List(Image()))
    with pytest.raises(ValueError, match=r"record 1: field 'prompt': 1 <image> placeholder\(s\) in the prompt"):
        from_hf_dataset(plain)


def test_hf_needs_conversations_and_image_features():
    with pytest.raises(ValueError, match="no 'messages' column and no 'prompt'/'completion' pair"):
        from_hf_dataset(Dataset.from_dict({"text": ["x"]}))
    with pytest.raises(ValueError, match=r"Column 'images' holds .*not images.*cast_column"):
        from_hf_dataset(Dataset.from_dict({"images": [["a.png"]], "messages": [[{"role": "user", "content": "x"}]]}))
