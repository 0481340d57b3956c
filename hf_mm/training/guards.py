"""Guards every hf_mm trainer carries: one writer per output folder, and a stop on the first non-finite loss.

- `OutputDirLock`: the main process of a run holds an exclusive `flock` on `output_dir/.hf_mm.lock` from the start
  of `train()` until it exits. A second run aimed at the same folder fails at once, naming the holder's pid, instead
  of interleaving checkpoints. The kernel drops the lock when the holder dies, even by SIGKILL, so resuming after a
  crash is never blocked by a stale lock file.
- `TrainingGuardsMixin.compute_loss`: a NaN or inf loss raises `FloatingPointError` naming the step, before that
  step's update and before any checkpoint of it, so the last checkpoint on disk is the last good one.
- Checkpoints that survive a kill. Trainer writes `checkpoint-N` file by file, so a run killed while saving leaves a
  folder that looks like a checkpoint and is not one. Once every file of it is written (and before older
  checkpoints are rotated away), `COMPLETE_NAME` is written into it atomically, listing each file's size.
  `resume_from_checkpoint="latest"` (and `True`) picks the newest complete checkpoint and reports the incomplete ones,
  which are never loaded and never deleted; an explicit path must be complete. A save that fails (a full disk)
  raises, naming the incomplete folder and the newest complete checkpoint, which it left intact.
"""

import fcntl
import json
import logging
import os
import re
from pathlib import Path

import torch
from transformers.trainer_utils import rotate_checkpoints

from .fsdp import gather_output_embeddings

logger = logging.getLogger(__name__)

LOCK_NAME = ".hf_mm.lock"
COMPLETE_NAME = "hf_mm_checkpoint_complete.json"
LATEST = "latest"
_HELD: dict[str, int] = {}  # resolved folder -> file descriptor holding its lock, for this process's lifetime


def lock_output_dir(output_dir: str | os.PathLike) -> None:
    """Take the folder's write lock for this process (a no-op if this process holds it already)."""
    folder = Path(output_dir).resolve()
    if str(folder) in _HELD:
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RuntimeError(
            f"output_dir={str(output_dir)!r} is being written by another process (pid {holder}). Two runs saving "
            "to one folder would interleave their checkpoints: choose another output_dir, or wait for that run."
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _HELD[str(folder)] = fd


def mark_complete(checkpoint: str | os.PathLike) -> None:
    """Record that every file of `checkpoint` is written: the marker lists their sizes, and appears atomically
    (written aside, flushed to disk, then renamed), so it is either whole or absent."""
    folder = Path(checkpoint)
    files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
    files.pop(COMPLETE_NAME, None)
    staging = folder / f".{COMPLETE_NAME}.tmp"
    with open(staging, "w") as handle:
        json.dump({"files": files}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, folder / COMPLETE_NAME)


def is_complete(checkpoint: str | os.PathLike) -> bool:
    """Whether `checkpoint` has its marker and every file the marker lists, at its recorded size."""
    marker = Path(checkpoint) / COMPLETE_NAME
    try:
        files = json.loads(marker.read_text())["files"]
    except (OSError, ValueError, KeyError):
        return False
    return all((Path(checkpoint) / name).is_file() and (Path(checkpoint) / name).stat().st_size == size
               for name, size in files.items())  # fmt: skip


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-N` folders of `output_dir`, oldest first."""
    found = [
        p for p in Path(output_dir).glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)
    ]
    return sorted(found, key=_step)


def newest_complete(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint in `output_dir`, or None."""
    return next((p for p in reversed(checkpoints(output_dir)) if is_complete(p)), None)


def latest_complete(output_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint in `output_dir` (None if there is none); logs every incomplete one newer than
    it, which is kept on disk for inspection and never loaded."""
    newest = newest_complete(output_dir)
    partial = [p.name for p in checkpoints(output_dir) if newest is None or _step(p) > _step(newest)]
    if partial:
        logger.warning(
            "%d incomplete checkpoint(s) in %s (%s): a run was stopped while saving them. They are not loaded and "
            "are left on disk; resuming from %s.", len(partial), output_dir, ", ".join(partial),
            newest or "the start (no complete checkpoint)",
        )  # fmt: skip
    return None if newest is None else str(newest)


def _step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("-")[1])


def resolve_resume(output_dir: str | os.PathLike, resume_from_checkpoint) -> str | None:
    """`resume_from_checkpoint` as Trainer should get it: "latest" or True -> the newest complete checkpoint (None
    when there is none), a path -> that path if it is complete, None/False -> None."""
    if resume_from_checkpoint in (None, False, ""):
        return None
    if resume_from_checkpoint is True or resume_from_checkpoint == LATEST:
        return latest_complete(output_dir)
    if not is_complete(resume_from_checkpoint):
        raise ValueError(
            f"resume_from_checkpoint={str(resume_from_checkpoint)!r} is not a complete hf_mm checkpoint (no valid "
            f"{COMPLETE_NAME}: it was being written when its run stopped, or hf_mm did not write it). Pass "
            f"'{LATEST}' to resume from the newest complete checkpoint in output_dir. If you know this folder is "
            f"whole, `hf_mm.training.guards.mark_complete(folder)` marks it."
        )
    return str(resume_from_checkpoint)


def read_shards_per_rank(args, train_dataset) -> None:
    """For a streaming `datasets.IterableDataset`: each rank reads its own shards (accelerate's `shard`, as
    `split_dataset_by_node` does), unless the caller chose `dispatch_batches` itself. accelerate's default for an
    iterable dataset is the opposite: rank 0 reads every sample and sends each rank its slice."""
    from datasets import IterableDataset

    if args is None or not isinstance(train_dataset, IterableDataset):
        return
    config = args.accelerator_config
    if getattr(config, "dispatch_batches", None) is None:
        config.dispatch_batches = False


class TrainingGuardsMixin:
    """For Trainer subclasses: the output-folder lock around `train()`, the finite-loss check, and checkpoints that
    survive a kill (see the module docstring)."""

    def __init__(self, *args, **kwargs):
        read_shards_per_rank(kwargs.get("args"), kwargs.get("train_dataset"))
        super().__init__(*args, **kwargs)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        if self.is_world_process_zero():
            lock_output_dir(self.args.output_dir)
        resume_from_checkpoint = resolve_resume(self.args.output_dir, resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _save_checkpoint(self, model, trial):
        """Trainer's save, then the completion marker, and only then the rotation of older checkpoints: at no
        moment is the newest complete checkpoint gone. A failed save (a full disk) raises naming both folders."""
        limit, self.args.save_total_limit = self.args.save_total_limit, None  # Trainer's own rotation: off
        run_dir = Path(self._get_output_dir(trial=trial))
        folder = run_dir / f"checkpoint-{self.state.global_step}"
        try:
            super()._save_checkpoint(model, trial)
        except OSError as error:
            newest = newest_complete(run_dir)
            raise OSError(
                error.errno,
                f"Saving {folder} failed: {error}. That folder is incomplete and will not be loaded; the newest "
                f"complete checkpoint, {newest or 'none'}, is intact. Free space (or lower save_total_limit) and "
                f"resume with --resume_from_checkpoint {LATEST}.",
            ) from error
        finally:
            self.args.save_total_limit = limit
        if self.args.should_save:
            mark_complete(folder)
            rotate_checkpoints(output_dir=str(run_dir), save_total_limit=limit,
                               best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=True)  # fmt: skip

    def compute_loss(self, model, inputs, *args, **kwargs):
        if self.is_fsdp_enabled:
            gather_output_embeddings(model)  # chunked losses read lm_head.weight directly: see training/fsdp.py
        result = super().compute_loss(model, inputs, *args, **kwargs)
        self.check_finite_loss(result[0] if isinstance(result, tuple) else result)
        return result

    def check_finite_loss(self, loss: torch.Tensor) -> None:
        """Raise on a NaN / inf loss (trainers that define their own `compute_loss` call this from it)."""
        if not torch.isfinite(loss.detach()).all():
            last = newest_complete(self.args.output_dir)  # a checkpoint a kill cut short is not a good one
            raise FloatingPointError(
                f"The training loss is {loss.detach().float().item()} at step {self.state.global_step + 1}; "
                "training stopped before that step's update. The last good checkpoint is "
                f"{last or 'none (none was saved yet)'}: resume from it with a lower learning rate, or inspect "
                "this step's batch."
            )
