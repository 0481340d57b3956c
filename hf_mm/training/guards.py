"""Guards every hf_mm trainer carries: one writer per output folder, and a stop on the first non-finite loss.

- `OutputDirLock`: the main process of a run holds an exclusive `flock` on `output_dir/.hf_mm.lock` from the start
  of `train()` until it exits. A second run aimed at the same folder fails at once, naming the holder's pid, instead
  of interleaving checkpoints. The kernel drops the lock when the holder dies, even by SIGKILL, so resuming after a
  crash is never blocked by a stale lock file.
- `TrainingGuardsMixin.compute_loss`: a NaN or inf loss raises `FloatingPointError` naming the step, before that
  step's update and before any checkpoint of it, so the last checkpoint on disk is the last good one.
"""

import fcntl
import os
from pathlib import Path

import torch
from transformers.trainer_utils import get_last_checkpoint

LOCK_NAME = ".hf_mm.lock"
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


class TrainingGuardsMixin:
    """For Trainer subclasses: the output-folder lock around `train()` and the finite-loss check."""

    def train(self, *args, **kwargs):
        if self.is_world_process_zero():
            lock_output_dir(self.args.output_dir)
        return super().train(*args, **kwargs)

    def compute_loss(self, model, inputs, *args, **kwargs):
        result = super().compute_loss(model, inputs, *args, **kwargs)
        self.check_finite_loss(result[0] if isinstance(result, tuple) else result)
        return result

    def check_finite_loss(self, loss: torch.Tensor) -> None:
        """Raise on a NaN / inf loss (trainers that define their own `compute_loss` call this from it)."""
        if not torch.isfinite(loss.detach()).all():
            folder = self.args.output_dir
            last = get_last_checkpoint(folder) if os.path.isdir(folder) else None
            raise FloatingPointError(
                f"The training loss is {loss.detach().float().item()} at step {self.state.global_step + 1}; "
                "training stopped before that step's update. The last good checkpoint is "
                f"{last or 'none (none was saved yet)'}: resume from it with a lower learning rate, or inspect "
                "this step's batch."
            )
