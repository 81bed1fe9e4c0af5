"""Early stopping (train.early_stopping): validation at every checkpoint, the best weights kept, exact resume, training
left as it would be without validation, and the video models' validation score."""

from __future__ import annotations

import csv
import json
import time

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

from ebt_vision.core.config import ConfigError, from_dict
from ebt_vision.core.early_stopping import EarlyStopping
from ebt_vision.core.objective import StepOutput
from ebt_vision.core.train import train

from . import test_landscape as landscape
from .conftest import TINY
from .test_video import TINY as TINY_VIDEO
from .test_video import needs_digits


class Stream(landscape.Stream):
    """The landscape tests' resumable stream (crashes on request), of noisy 3-vector targets."""

    def batch(self, generator: torch.Generator):
        return torch.randn(3, generator=generator)


class Toy(nn.Module):
    """Regress a weight vector onto noisy targets; the loss also draws from the global generator, so a validation
    that disturbed training's random numbers would change the weights."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))

    def forward(self, batch) -> StepOutput:
        loss = ((self.weight - batch - 0.1 * torch.randn(3)) ** 2).mean()
        return StepOutput(loss, {"loss": loss.detach()})

    def param_groups(self, optim):
        return [{"params": [self.weight]}]


class Scripted:
    """A validation function with a script of scores; it keeps the weights it was shown and draws random numbers."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.seen = list(scores), []

    def __call__(self, model: nn.Module) -> float:
        assert not model.training  # scored in eval mode
        self.seen.append(model.weight.detach().clone())
        torch.rand(5)  # must not shift training's random stream
        return self.scores[len(self.seen) - 1]


def cfg(**train):
    return from_dict({**TINY, "train": {**TINY["train"], "steps": 20, "checkpoint_every": 2, **train}})


def run(folder, config, validate=None, stream=None, resume=False):
    torch.manual_seed(0)
    model, stream = Toy(), stream or Stream()
    result = train(model, stream, config, folder, resume, stream, False, validate)
    return model, result


def rows(folder):
    with (folder / "validation.csv").open() as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def test_the_counter_finds_bests_and_stops_after_patience():
    stopping = EarlyStopping(patience=2)
    assert [stopping.record(s, v) for s, v in ((2, 5.0), (4, 3.0), (6, float("nan")), (8, 3.0))] == [
        True, True, False, False
    ]  # fmt: skip
    assert (stopping.best, stopping.best_step, stopping.stopped) == (3.0, 4, True)
    assert not EarlyStopping(patience=0).record(1, float("inf"))  # patience 0 scores but never stops


def test_training_stops_after_patience_and_keeps_the_best_weights(tmp_path):
    validate = Scripted([5.0, 3.0, 4.0, 4.5, 1.0])  # best at step 4, no better at 6 and 8: stop at 8
    model, result = run(tmp_path / "run", cfg(early_stopping=2), validate)
    assert result.step == 8 and len(validate.seen) == 4 and result.best_step == 4
    assert [r["step"] for r in rows(tmp_path / "run")] == [2, 4, 6, 8]
    assert [r["best"] for r in rows(tmp_path / "run")] == [5.0, 3.0, 3.0, 3.0]
    saved = load_file(tmp_path / "run" / "model.safetensors")["weight"]
    assert torch.equal(saved, validate.seen[1]) and torch.equal(model.weight.detach(), validate.seen[1])
    last = load_file(tmp_path / "run" / "checkpoints" / "step_0000008" / "model.safetensors")["weight"]
    assert not torch.equal(saved, last)  # the last weights are not what the run keeps
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as handle:
        extra = json.loads(handle.metadata()["extra"])
    assert (extra["validation_best_step"], extra["validation_best"], extra["stopped_early"]) == (4, 3.0, True)
    assert (tmp_path / "run" / "validation.png").is_file()
    _, again = run(tmp_path / "run", cfg(early_stopping=2), Scripted([0.0] * 9), resume=True)
    assert again.step == 8 and again.best_step == 4  # a stopped run stays stopped when resumed


def test_reports_say_which_step_early_stopping_kept():
    from ebt_vision.experiments.contenders import Contender
    from ebt_vision.experiments.video.report import steps_kept

    assert steps_kept(Contender("ebt", torch.nn.Identity(), 250, 1.0, 1, kept_step=50)) == (
        "250 (weights of step 50, the best on validation)"
    )
    assert steps_kept(Contender("ebt", torch.nn.Identity(), 250, 1.0, 1)) == "250"
    assert steps_kept(Contender("ebt", torch.nn.Identity(), 250, 1.0, 1, kept_step=250)) == "250"


def test_a_crashed_run_resumes_to_the_same_stop_and_weights(tmp_path):
    scores = [5.0, 3.0, 4.0, 4.5, 1.0]
    straight, _ = run(tmp_path / "straight", cfg(early_stopping=2), Scripted(scores))
    with pytest.raises(landscape.Crash):
        run(tmp_path / "resumed", cfg(early_stopping=2), Scripted(scores), Stream(crash_at=7))
    resumed_validate = Scripted(scores[3:])  # the resumed run scores steps 8 on (its checkpoint holds step 6's)
    resumed, result = run(tmp_path / "resumed", cfg(early_stopping=2), resumed_validate, resume=True)
    assert result.step == 8 and torch.equal(resumed.weight, straight.weight)
    assert rows(tmp_path / "resumed") == rows(tmp_path / "straight")


def test_validation_scores_the_average_and_leaves_training_as_it_was(tmp_path):
    validate = Scripted([float(-i) for i in range(10)])  # always better: never stops, keeps the last
    _, result = run(tmp_path / "validated", cfg(steps=6, early_stopping=3, ema_decay=0.5), validate)
    _, plain = run(tmp_path / "plain", cfg(steps=6, ema_decay=0.5))
    assert result.step == plain.step == 6
    for step in (4, 6):  # the raw weights of every kept checkpoint match a run without validation
        name = f"checkpoints/step_{step:07d}/model.safetensors"
        assert torch.equal(
            load_file(tmp_path / "validated" / name)["weight"], load_file(tmp_path / "plain" / name)["weight"]
        )
    raw = load_file(tmp_path / "validated" / "checkpoints" / "step_0000006" / "model.safetensors")["weight"]
    final = load_file(tmp_path / "validated" / "model.safetensors")["weight"]
    assert torch.equal(final, validate.seen[-1]) and not torch.equal(final, raw)  # the average was scored and kept
    assert torch.equal(final, load_file(tmp_path / "plain" / "model.safetensors")["weight"])


def test_early_stopping_needs_a_validation_split_and_a_sane_patience(tmp_path):
    with pytest.raises(ConfigError, match="needs a validation split"):
        run(tmp_path / "run", cfg(early_stopping=2))
    with pytest.raises(ConfigError, match="early_stopping must be >= 0"):
        cfg(early_stopping=-1)


@needs_digits
def test_video_models_train_with_early_stopping_on_their_validation_clips(tmp_path):
    from ebt_vision.video.training import train_model, validation_error

    config = from_dict({**TINY_VIDEO, "train": {**TINY_VIDEO["train"], "steps": 4, "checkpoint_every": 2,
                                                "early_stopping": 1}})  # fmt: skip
    score = validation_error(config, clips=2)
    for kind in ("ebt", "transformer", "dit"):
        result = train_model(config, tmp_path / kind, kind, progress=False)
        scores = rows(tmp_path / kind)
        assert [r["step"] for r in scores] == [2, 4][: len(scores)] and result.step in (2, 4)
        assert all(r["validation"] > 0 for r in scores)  # OpenSTL MSE: summed squared error per frame
    from ebt_vision.video.loading import load_video_model

    model = load_video_model(tmp_path / "transformer", "transformer").eval()
    assert score(model) > 0


class Slow(Toy):
    """The toy model with a fixed cost per step, for the wall-clock budget."""

    def forward(self, batch) -> StepOutput:
        time.sleep(0.05)
        return super().forward(batch)


def test_a_time_budget_stops_training_and_saves_the_model_at_the_step_reached(tmp_path):
    torch.manual_seed(0)
    config = cfg(steps=1000, checkpoint_every=500, max_seconds=0.3)
    result = train(Slow(), Stream(), config, tmp_path / "run", False, None, False)
    assert 6 <= result.step < 40  # 0.3 s of 0.05 s steps, not the 1000 asked for
    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as handle:
        extra = json.loads(handle.metadata()["extra"])
    assert extra["step"] == result.step and "max_seconds=0.3" in extra["stopped"]
    assert (tmp_path / "run" / "checkpoints" / f"step_{result.step:07d}").is_dir()  # checkpointed where it stopped
    with (tmp_path / "run" / "metrics.csv").open() as handle:
        assert int(float(list(csv.DictReader(handle))[-1]["step"])) == result.step  # the stop step is logged
    again = train(Slow(), Stream(), cfg(steps=result.step + 3, checkpoint_every=500), tmp_path / "run", True, None,
                  False)  # fmt: skip
    assert again.step == result.step + 3  # resumable, and the limit is a setting a resumed run may drop
    with pytest.raises(ConfigError, match="max_seconds must be >= 0"):
        cfg(max_seconds=-1)
