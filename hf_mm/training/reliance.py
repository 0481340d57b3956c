"""`VisionRelianceCallback`: catch a run that collapses to text-only behaviour while it trains.

Every `every` steps it measures `hf_mm.eval.vision_reliance` on held-out samples (the answer loss with matched and
with shuffled images) on the live model, and logs `vision/matched_loss`, `vision/shuffled_loss` and `vision/gap`
into the trainer's log history and, when the run reports to TensorBoard, into its log folder. After `warmup`
steps, a gap below `min_gap` for `patience` checks in a row logs a warning that says what to look at. Works with
every hf_mm trainer (SFT, DPO, GRPO, and plain transformers Trainers of hf_mm models).
"""

from __future__ import annotations

import logging

from transformers import TrainerCallback

from ..eval.reliance import vision_reliance

logger = logging.getLogger(__name__)


class VisionRelianceCallback(TrainerCallback):
    def __init__(self, processor, samples: list[dict], every: int = 50, warmup: int = 100, min_gap: float = 0.05,
                 patience: int = 2, batch_size: int = 16):  # fmt: skip
        self.processor, self.samples, self.batch_size = processor, samples, batch_size
        self.every, self.warmup, self.min_gap, self.patience = every, warmup, min_gap, patience
        self.history: list[dict] = []
        self.low_checks, self.warned, self._writer = 0, False, None

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every or not state.is_world_process_zero:
            return
        metrics = vision_reliance(model, self.processor, self.samples, self.batch_size)
        row = {f"vision/{key}": round(value, 6) for key, value in metrics.items()}
        self.history.append({"step": state.global_step, **metrics})
        state.log_history.append({**row, "step": state.global_step})
        self._tensorboard(args, row, state.global_step)
        if state.global_step < self.warmup:
            return
        self.low_checks = self.low_checks + 1 if metrics["gap"] < self.min_gap else 0
        if self.low_checks >= self.patience and not self.warned:
            self.warned = True
            logger.warning(
                "The model is not using its images: at step %d, held-out answer loss with shuffled images is %.4f "
                "against %.4f with the right ones (gap %.4f < %.3f for %d checks). Check that the bridge is "
                "trainable and its learning rate is not zero, that the images reach the model (not blank, not "
                "dropped by the collator), and that the vision features are not zeroed or detached.",
                state.global_step, metrics["shuffled_loss"], metrics["matched_loss"], metrics["gap"],
                self.min_gap, self.low_checks,
            )  # fmt: skip

    def _tensorboard(self, args, row: dict, step: int) -> None:
        if "tensorboard" not in (args.report_to or []):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=args.logging_dir)
        for key, value in row.items():
            self._writer.add_scalar(key, value, step)
        self._writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self._writer is not None:
            self._writer.close()


__all__ = ["VisionRelianceCallback"]
