"""The motion diagnostic (``experiments.video.change``): the cosine between a model's predicted change from the last
frame and the true change, and the damping factor chosen on validation, checked against predictors whose answer is
known: the truth itself, its mirror image about the last frame, and the last frame (copy-last)."""

from __future__ import annotations

import pytest

from ebt_vision.core.config import from_dict
from ebt_vision.experiments.video.change import ChangeOptions, body, change_rows, choose_damping
from ebt_vision.video.data import held_out
from ebt_vision.video.rollout import Rollout

from .test_video import TINY, needs_digits


class KnownPredictor:
    """Predicts the next held-out frame as last + ``factor`` * (truth - last) (1: the truth, -1: its mirror, 2: twice
    the true change)."""

    def __init__(self, cfg, split: str, factor: float) -> None:
        self.cfg, self.factor = cfg, factor
        self.clips = held_out(cfg, split)[1]

    def rollout(self, context, horizon, *settings, **options):  # any model kind's call
        k = self.cfg.data.context_frames
        match = [int((self.clips[:, :k] == c).flatten(1).all(1).nonzero()[0]) for c in context]
        last, truth = self.clips[match, k - 1], self.clips[match, k]
        return Rollout((last + self.factor * (truth - last))[:, None], 1, 0)  # not clamped: the cosine is exact


@needs_digits
@pytest.mark.parametrize(("factor", "cosine", "best"), [(1.0, 1.0, 1.0), (-1.0, -1.0, 0.0), (2.0, 1.0, 0.5)])
def test_cosine_and_damping_of_known_predictors(factor, cosine, best):
    rows = change_rows(
        "transformer", KnownPredictor(from_dict(TINY), "validation", factor), "validation", ChangeOptions(), None
    )
    assert {r["damping"] for r in rows} >= {0.0, 0.5, 1.0} and len({r["change_cosine"] for r in rows}) == 1
    assert rows[0]["change_cosine"] == pytest.approx(cosine, abs=0.02)
    assert min(rows, key=lambda r: r["mse"])["damping"] == best  # half of a twice-too-far change is the truth
    copy_last = next(r["mse"] for r in rows if r["damping"] == 0.0)
    assert copy_last > 0 and all(r["mse"] <= copy_last + 1e-6 for r in rows if factor > 0 and r["damping"] <= 1)
    chosen = {"transformer": {"damping": best, "test_mse": 1.0, "test_mse_undamped": 2.0, "copy_last_test_mse": 3.0,
                              "test_change_cosine": cosine, "validation_change_cosine": cosine}}  # fmt: skip
    assert "| transformer |" in body(rows, chosen)


@needs_digits
def test_each_model_is_chosen_on_its_own_validation_rows_and_quoted_on_its_own_test_rows():
    cfg = from_dict(TINY)
    rows = []
    for kind, factor in (("transformer", -1.0), ("ebt", 2.0)):  # the mirror image of the change, twice the change
        for split in ("validation", "test"):
            rows += change_rows(kind, KnownPredictor(cfg, split, factor), split, ChangeOptions(), None)
    chosen = choose_damping(rows)
    assert chosen["ebt"]["damping"] == 0.5 and chosen["ebt"]["test_mse"] < 1e-6
    assert chosen["transformer"]["damping"] == 0.0
    assert chosen["transformer"]["test_mse"] == chosen["transformer"]["copy_last_test_mse"] > 0
    assert chosen["transformer"]["test_change_cosine"] == pytest.approx(-1.0, abs=1e-4)
