"""The learning rate step by step, for `--lr_schedule cosine`: a linear warm-up, then a cosine decay to
zero over the phase's epochs. (`--lr_schedule plateau`, the other rule, halves the rate after epochs
without a better dev score: training/bookkeeping.py.)

The rate is a function of the optimizer's step count, which is saved with every checkpoint, so a
resumed run continues the same curve.
"""
from __future__ import annotations

import math

import keras


def cosine_learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """The rate of step `step` (counting from 0): peak * (step + 1) / warmup_steps during the warm-up,
    then peak * (1 + cos(pi * progress)) / 2, progress going from 0 to 1 over the remaining steps."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


class CosineSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before every training step (Keras's fit calls it; a hand-written
    loop calls `before_step`)."""

    def __init__(self, optimizer, peak: float, total_steps: int, warmup_steps: int = 0):
        super().__init__()
        self.optimizer, self.peak, self.total_steps, self.warmup_steps = optimizer, peak, total_steps, warmup_steps

    def before_step(self) -> float:
        rate = cosine_learning_rate(int(self.optimizer.iterations.numpy()), self.total_steps, self.warmup_steps,
                                    self.peak)
        self.optimizer.learning_rate.assign(rate)
        return rate

    def on_train_batch_begin(self, batch, logs=None):
        self.before_step()
