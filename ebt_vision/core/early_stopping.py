"""Validation during training and early stopping (``train.early_stopping``), for tasks with a validation split.

At every checkpoint the training loop scores the model (the averaged weights when ``train.ema_decay`` is on) with the
task's validation function, lower is better. A new best is saved as ``best.safetensors`` in the run folder; after
``patience`` checkpoints without one, training stops, and the run's model is the best one. Every score goes to
``validation.csv`` and ``validation.png``; the counters travel in the training checkpoint, so a resumed run stops
where an uninterrupted one would.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import nn

from .reports import curve_plot

Validate = Callable[[nn.Module], float]  # the model (in eval mode) -> its validation error, lower is better
BEST_FILE = "best.safetensors"


@dataclass
class EarlyStopping:
    """The best validation score so far, where it was reached, and how many validations since found nothing better;
    ``stopped`` once ``patience`` (> 0) validations in a row did not improve on the best."""

    patience: int
    best: float = math.inf
    best_step: int = 0
    stale: int = 0
    stopped: bool = False

    def record(self, step: int, score: float) -> bool:
        """Fold in the score at ``step`` -> whether it is a new best. A non-finite score never is."""
        if math.isfinite(score) and score < self.best:
            self.best, self.best_step, self.stale = score, step, 0
            return True
        self.stale += 1
        self.stopped = self.patience > 0 and self.stale >= self.patience
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key in ("best", "best_step", "stale", "stopped"):
            setattr(self, key, state[key])

    def summary(self) -> dict:
        """What the trained model's metadata records."""
        return {"validation_best": self.best, "validation_best_step": self.best_step, "stopped_early": self.stopped}


class ValidationLog:
    """``validation.csv`` (step, score, best so far) and its ``validation.png`` curve; a resumed run keeps the rows
    up to its checkpoint."""

    def __init__(self, run_dir: Path, resume_step: int) -> None:
        self.path = run_dir / "validation.csv"
        self.rows: list[dict[str, float]] = []
        if resume_step > 0 and self.path.is_file():
            with self.path.open(newline="", errors="replace") as handle:
                for row in csv.DictReader(handle):
                    try:
                        parsed = {key: float(value) for key, value in row.items()}
                    except (TypeError, ValueError):  # a run killed mid-write leaves half a line
                        continue
                    if parsed["step"] <= resume_step:
                        self.rows.append(parsed)
        self._write()

    def append(self, step: int, score: float, best: float) -> None:
        self.rows.append({"step": step, "validation": score, "best": best})
        self._write()

    def _write(self) -> None:
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["step", "validation", "best"])
            writer.writeheader()
            writer.writerows(self.rows)

    def plot(self) -> Path | None:
        if not self.rows:
            return None
        curves = [("validation error", [r["validation"] for r in self.rows], {"marker": "o"}),
                  ("best so far", [r["best"] for r in self.rows], {"linestyle": "--"})]  # fmt: skip
        steps = [r["step"] for r in self.rows]
        return curve_plot(self.path.with_name("validation.png"), steps, curves, "validation error (lower is better)")
