"""Streaming data that never sits in memory whole: WebDataset-style tar shards, read lazily with `datasets`'
`webdataset` loader, as a `datasets.IterableDataset` that hf_mm's SFT, DPO and contrastive trainers take as is.

A shard is a tar of samples, each a group of files sharing a key: `{key}.png` (or .jpg / .jpeg / .webp) and
`{key}.json`, whose object holds `messages` (SFT), `prompt`/`chosen`/`rejected` (DPO) or `text` (a caption, for
contrastive training). `write_shards` writes them from hf_mm samples.

Many processes: with `accelerator_config.dispatch_batches=False`, accelerate gives each rank its own disjoint set of
shards (`IterableDataset.shard`, as `datasets.distributed.split_dataset_by_node` does when the shard count divides
by the world size) instead of one rank reading everything and sending slices, which fails on multimodal batches.
TRL's SFT and DPO trainers set it for a streaming dataset; hf_mm's trainers set it too (the contrastive and
Q-Former trainers are plain Trainers). Use a shard count that is a multiple of the number of processes.

Resuming mid-epoch: the stream is read in a fixed order (shards sorted, samples in tar order), and Trainer skips
the batches a checkpoint already trained on, so a resumed run repeats and skips nothing.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Sequence
from pathlib import Path

from datasets import IterableDataset, load_dataset

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "webp")
SUPERVISION_KEYS = ("messages", "prompt", "chosen", "rejected", "text")


def write_shards(
    samples: list[dict], folder: str | os.PathLike, per_shard: int, keys: str | Sequence[str] = "messages"
) -> list[Path]:
    """Write hf_mm samples (one image each, in `images`) as tar shards of `per_shard` samples under `folder`:
    `{key}.png` plus `{key}.json` holding the sample's `keys` ("messages"; ("prompt", "chosen", "rejected");
    "text" for a caption). Returns the shards."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    unknown = [key for key in keys if key not in SUPERVISION_KEYS]
    if unknown or not keys:
        raise ValueError(f"keys={keys!r}: each must be one of {SUPERVISION_KEYS}, which stream_shards reads back.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for start in range(0, len(samples), per_shard):
        path = folder / f"shard-{start // per_shard:05d}.tar"
        with tarfile.open(path, "w") as tar:
            for index in range(start, min(start + per_shard, len(samples))):
                sample, key = samples[index], f"{index:08d}"
                if len(sample["images"]) != 1:
                    raise ValueError(f"Sample {index} has {len(sample['images'])} images; a shard sample holds one.")
                image = io.BytesIO()
                sample["images"][0].save(image, format="PNG")
                _add(tar, f"{key}.png", image.getvalue())
                _add(tar, f"{key}.json", json.dumps({field: sample[field] for field in keys}).encode())
        shards.append(path)
    return shards


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def stream_shards(root: str | os.PathLike, pattern: str = "*.tar") -> IterableDataset:
    """The shards matching `pattern` inside `root`, in name order, as a streaming dataset of hf_mm samples:
    `images` (a one-image list), the json's supervision fields, and `key` (the sample's key). A shard that resolves
    outside `root` (through `..` or a symlink) is refused."""
    real_root = Path(os.path.realpath(root))
    if not real_root.is_dir():
        raise ValueError(f"root={str(root)!r} is not a directory. Fix: pass the folder that holds the shards.")
    shards = sorted(real_root.glob(pattern))
    for shard in shards:
        if not Path(os.path.realpath(shard)).is_relative_to(real_root):
            raise ValueError(
                f"Shard {str(shard)!r} resolves to {os.path.realpath(shard)!r}, outside root {str(real_root)!r}; "
                "refused. Fix: keep the shards inside root."
            )
    if not shards:
        raise ValueError(f"No shard matches pattern={pattern!r} in {str(real_root)!r}.")
    stream = load_dataset("webdataset", data_files={"train": [str(s) for s in shards]}, split="train", streaming=True)
    return stream.map(_to_sample, remove_columns=list(stream.column_names or []))


def _to_sample(row: dict) -> dict:
    images = [row[ext] for ext in IMAGE_EXTENSIONS if row.get(ext) is not None]
    if len(images) != 1 or not isinstance(row.get("json"), dict):
        raise ValueError(
            f"Shard sample {row.get('__key__')!r} of {row.get('__url__')!r} needs one image "
            f"({'/'.join(IMAGE_EXTENSIONS)}) and a .json object; it has {len(images)} image(s) and json="
            f"{type(row.get('json')).__name__}."
        )
    fields = {key: row["json"][key] for key in SUPERVISION_KEYS if key in row["json"]}
    if not fields:
        raise ValueError(f"Shard sample {row['__key__']!r}: its .json has none of {SUPERVISION_KEYS}.")
    return {"images": images, **fields, "key": row["__key__"]}
