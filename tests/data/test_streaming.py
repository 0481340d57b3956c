"""Streaming WebDataset-style shards (`hf_mm.data.streaming`) through hf_mm's SFT, DPO and contrastive trainers:
- the shards stream in a fixed order, the samples intact; a shard outside its root is refused;
- 2 processes (accelerate, gloo) each read their own shards: disjoint samples whose union is every sample;
- a run killed mid-epoch and resumed with `latest` trains on exactly the samples an uninterrupted run trains on,
  in the same order: nothing repeated, nothing skipped;
- DPO trains on streamed preference pairs as it does in memory: the reward margin rises.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys

import pytest
import torch
from transformers import TrainingArguments

from hf_mm import HfMmClipModel, HfMmLlavaForConditionalGeneration
from hf_mm import testing as T
from hf_mm.data import synthetic
from hf_mm.data.streaming import stream_shards, write_shards
from hf_mm.testing import tiny_llava_processor
from hf_mm.training.contrastive import HfMmContrastiveTrainer
from hf_mm.training.setup import prepare_model
from hf_mm.training.sft import HfMmSFTTrainer
from tests.training.helpers import CONFIG, sft_args

ROOT = pathlib.Path(__file__).parents[2]


def samples(n: int) -> list[dict]:
    return synthetic.shapes_vqa(n, seed=0, image_size=32)


class Recording:
    """Appends the keys of every batch it trains on (not those a resume skips) to `record`, one line per step."""

    def __init__(self, *args, record: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.record, collate = record, self.data_collator
        self.data_collator = lambda rows: {**collate(rows), "sample_keys": torch.tensor([int(r["key"]) for r in rows])}

    def training_step(self, model, inputs, *args, **kwargs):
        keys = inputs.pop("sample_keys").tolist()
        with open(self.record, "a") as handle:
            handle.write(
                json.dumps({"rank": self.args.process_index, "step": self.state.global_step + 1, "keys": keys}) + "\n"
            )
        return super().training_step(model, inputs, *args, **kwargs)


class RecordingSFTTrainer(Recording, HfMmSFTTrainer):
    pass


class RecordingContrastiveTrainer(Recording, HfMmContrastiveTrainer):
    pass


def train(shards: str, out: str, record: str, max_steps: int, kill_at: int | None = None, resume=None) -> None:
    """SFT on the streamed shards, batch 2, a checkpoint every 2 steps; SIGKILL as step `kill_at` begins."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step + 1 == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    torch.manual_seed(0)
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), "instruct")
    args = sft_args(pathlib.Path(out), output_dir=out, max_steps=max_steps, per_device_train_batch_size=2,
                    save_strategy="steps", save_steps=2, use_cpu=True)  # fmt: skip
    trainer = RecordingSFTTrainer(model=model, args=args, processing_class=tiny_llava_processor(CONFIG),
                               train_dataset=stream_shards(shards), stage="instruct", record=record,
                               callbacks=[Kill()] if kill_at else [])  # fmt: skip
    trainer.train(resume_from_checkpoint=resume)


def train_contrastive(shards: str, out: str, record: str, max_steps: int) -> None:
    """CLIP-style contrastive training on streamed (image, caption) shards, batch 2; plain Trainer underneath, so
    hf_mm (not TRL) is what makes each rank read its own shards."""
    torch.manual_seed(0)
    args = TrainingArguments(output_dir=out, max_steps=max_steps, per_device_train_batch_size=2, use_cpu=True,
                             report_to=[], save_strategy="no", disable_tqdm=True)  # fmt: skip
    trainer = RecordingContrastiveTrainer(model=HfMmClipModel(T.tiny_clip_config()), args=args,
                                          processing_class=T.tiny_clip_processor(), train_dataset=stream_shards(shards),
                                          record=record)  # fmt: skip
    trainer.train()


def read(record) -> list[dict]:
    return [json.loads(line) for line in pathlib.Path(record).read_text().splitlines()]


def test_shards_stream_in_order_intact_and_inside_their_root(tmp_path):
    data = samples(10)
    assert len(write_shards(data, tmp_path / "shards", per_shard=4)) == 3
    rows = list(stream_shards(tmp_path / "shards"))
    assert [row["key"] for row in rows] == [f"{i:08d}" for i in range(10)]
    assert rows[3]["messages"][1] == data[3]["messages"][1]
    assert rows[3]["images"][0].tobytes() == data[3]["images"][0].convert("RGB").tobytes()
    write_shards(data[:2], tmp_path / "outside", per_shard=2)
    (tmp_path / "shards" / "shard-99999.tar").symlink_to(tmp_path / "outside" / "shard-00000.tar")
    with pytest.raises(ValueError, match="outside root"):
        stream_shards(tmp_path / "shards")


# Contrastive, a plain Trainer underneath: TRL's SFT and DPO trainers set `dispatch_batches=False` themselves, so
# this is the path where hf_mm's own setting decides (without it, accelerate's dispatch mode crashes on the batch).
@pytest.mark.parametrize("recipe", ["contrastive"])
def test_two_processes_read_disjoint_shards_whose_union_is_everything(tmp_path, recipe):
    data = samples(16)
    if recipe == "contrastive":
        data = [{"images": sample["images"], "text": sample["answer"]} for sample in data]
    write_shards(data, tmp_path / "shards", per_shard=4, keys="messages" if recipe == "sft" else "text")
    record = tmp_path / "record.jsonl"  # 4 shards: 2 per rank, 8 samples = 4 steps of 2 each
    run = "train" if recipe == "sft" else "train_contrastive"
    code = (f"from tests.data.test_streaming import {run}; {run}({str(tmp_path / 'shards')!r}, "
            f"{str(tmp_path / 'out')!r}, {str(record)!r}, max_steps=4)")  # fmt: skip
    script = tmp_path / "run.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(ROOT)!r})\n{code}\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = {rank: [key for row in read(record) if row["rank"] == rank for key in row["keys"]] for rank in (0, 1)}
    assert len(seen[0]) == len(seen[1]) == 8
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(16))
    for rank in (0, 1):  # whole shards per rank (read by it), not batches dealt out by rank 0
        shards = {key // 4 for key in seen[rank]}
        assert len(shards) == 2 and sorted(seen[rank]) == sorted(4 * s + i for s in shards for i in range(4))


def test_a_kill_mid_epoch_then_resume_repeats_and_skips_nothing(tmp_path):
    write_shards(samples(12), tmp_path / "shards", per_shard=4)
    straight = tmp_path / "straight.jsonl"
    train(str(tmp_path / "shards"), str(tmp_path / "a"), str(straight), max_steps=6)
    killed, out = tmp_path / "killed.jsonl", str(tmp_path / "b")
    code = f"from tests.data.test_streaming import train; train({str(tmp_path / 'shards')!r}, {out!r}, {str(killed)!r}, 6, kill_at=4)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert [row["step"] for row in read(killed)] == [1, 2, 3]  # killed as step 4 began; checkpoint-2 is the last
    train(str(tmp_path / "shards"), out, str(killed), max_steps=6, resume="latest")
    resumed = read(killed)
    assert [row["step"] for row in resumed] == [1, 2, 3, 3, 4, 5, 6]  # step 3 is redone from checkpoint-2
    after = [row["keys"] for row in resumed[3:]]
    assert after == [row["keys"] for row in read(straight)[2:]]  # the same samples, in the same order
    assert sorted(k for keys in after for k in keys) == list(range(4, 12))


def test_dpo_trains_on_streamed_preference_pairs(tmp_path):
    from hf_mm.training.dpo import HfMmDPOTrainer
    from tests.training.helpers import dpo_args, preference_dataset

    pairs = list(preference_dataset(8))
    with pytest.raises(ValueError, match="keys=\\('answer',\\)"):
        write_shards(pairs, tmp_path / "bad", per_shard=4, keys="answer")
    write_shards(pairs, tmp_path / "shards", per_shard=4, keys=("prompt", "chosen", "rejected"))
    streamed = stream_shards(tmp_path / "shards")
    first = next(iter(streamed))
    assert first["chosen"] == pairs[0]["chosen"] and first["rejected"] == pairs[0]["rejected"]
    torch.manual_seed(0)
    model = prepare_model(HfMmLlavaForConditionalGeneration(CONFIG), "instruct")
    trainer = HfMmDPOTrainer(model=model, args=dpo_args(tmp_path, max_steps=24), processing_class=tiny_llava_processor(CONFIG),
                             train_dataset=streamed, stage="instruct")  # fmt: skip
    trainer.train()
    margins = [log["rewards/margins"] for log in trainer.state.log_history if "rewards/margins" in log]
    assert len(margins) == 24  # the 8 pairs stream again each epoch (2 steps of 4)
    assert abs(margins[0]) < 1e-3 and sum(margins[-4:]) / 4 > 0.3, margins  # as in memory (tests/training/test_dpo.py)
