"""One shape for every workload: the shared descent options, the registry of workloads, choosing settings on
validation, the sizing rule, the sampler base, the options objects, and a package that imports nothing outside
itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from ebt_vision.core import defaults
from ebt_vision.core.config import TASKS, ConfigError, config_class, training_recipe
from ebt_vision.core.errors import InputError
from ebt_vision.core.inference import Thinking
from ebt_vision.core.sampling import ShardedSampler
from ebt_vision.core.sizing import ParameterCount, matched_size
from ebt_vision.experiments import selection
from ebt_vision.image.files import from_pixels
from ebt_vision.image.objective import DenoisingObjective

REPO = Path(__file__).resolve().parents[1]


def test_thinking_resolves_the_trained_steps_and_refuses_what_no_descent_can_take():
    assert Thinking().steps(trained=3) == 3 and Thinking(num_steps=0).steps(trained=3) == 0
    Thinking(num_steps=defaults.MAX_STEPS, n_candidates=defaults.MAX_CANDIDATES, momentum=0.5).check()
    bad = [
        (Thinking(num_steps=defaults.MAX_STEPS + 1), "num_steps"),
        (Thinking(n_candidates=0), "n_candidates"),
        (Thinking(step_scale=0.0), "step_scale"),
        (Thinking(momentum=1.0), "momentum"),
        (Thinking(langevin_noise=-1.0), "langevin_noise"),
        (Thinking(start_noise=-0.1), "start_noise"),
    ]
    for thinking, message in bad:
        with pytest.raises(InputError, match=message):
            thinking.check(trained=2)


def test_infer_is_the_one_test_time_descent_and_clamps_as_trained(tiny_cfg):
    objective = DenoisingObjective(tiny_cfg).eval()
    torch.nn.init.normal_(objective.model.head.out.weight, std=10.0)  # steep: steps leave [-1, 1] unless clamped
    noisy = torch.rand(2, 3, 16, 16) * 2 - 1
    plain = objective.infer(noisy, noisy, Thinking(num_steps=3, final_energy=False))
    assert len(plain.candidates) == 4 and plain.forward_passes == 3  # the trained step count was 2: num_steps wins
    assert plain.final.abs().max() > 1  # descent.clamp_candidate is off in the tiny config
    clamped = objective.infer(noisy, noisy, Thinking(num_steps=3, clamp=True))
    assert clamped.final.abs().max() <= 1 and clamped.forward_passes == 4  # with the final energy
    scaled = objective.infer(noisy, noisy, Thinking(num_steps=1, step_scale=0.0001, final_energy=False))
    assert (scaled.final - noisy).abs().max() < (plain.candidates[1] - noisy).abs().max()


def test_every_task_names_its_config_and_recipe_and_the_recipe_is_found_by_task():
    for task, entry in TASKS.items():
        assert config_class(task)().task == task
        recipe = training_recipe(task, entry.models[0])
        assert callable(recipe) and recipe.__module__ == f"ebt_vision.{task}.training"
        assert entry.models[0] == "ebt"
    with pytest.raises(ConfigError, match="not a text model"):
        training_recipe("text", "dit")
    with pytest.raises(ConfigError, match="unknown task"):
        training_recipe("audio", "ebt")


def test_selection_averages_groups_and_quotes_the_validation_choice_on_test():
    def row(split, steps, psnr, image, sigma=25):
        return {"eval_split": split, "sigma": sigma, "method": "ebt", "steps": steps, "image": image, "psnr": psnr,
                "passes": steps}  # fmt: skip

    rows = [row("validation", 1, 20.0, "a"), row("validation", 1, 22.0, "b"), row("validation", 2, 21.5, "a"),
            row("validation", 2, 21.5, "b"), row("test", 1, 30.0, "c"), row("test", 2, 25.0, "c"),
            row("validation", 1, 10.0, "a", sigma=50), row("test", 1, 9.0, "c", sigma=50)]  # fmt: skip
    averaged = selection.average(rows, ("eval_split", "sigma", "method", "steps"), ("psnr",), keep=("passes",))
    first = averaged[0]
    assert first == {"eval_split": "validation", "sigma": 25, "method": "ebt", "steps": 1, "passes": 1, "psnr": 21.0,
                     "images": 2}  # fmt: skip
    chosen = selection.choose(averaged, lambda r: r["sigma"], ("method", "steps"), ("sigma",))
    assert chosen[25].validation["steps"] == 2 and chosen[25].test["psnr"] == 25.0  # never the test-best 1 step
    assert chosen[50].test["psnr"] == 9.0
    lowest = selection.best_on_validation(averaged, lambda r: r["sigma"], "psnr", lowest=True)
    assert lowest[25]["steps"] == 1  # ties and lower-is-better: the first best in row order
    assert "images" not in selection.average(rows, ("steps",), ("psnr",), count=None)[0]


def test_the_sizing_rule_matches_the_count_by_width_and_depth():
    def build(depth: int, width: int) -> nn.Module:  # 99 parameters outside the blocks, width^2 per block
        return nn.Sequential(nn.Linear(10, 9), *[nn.Linear(width, width, bias=False) for _ in range(depth)])

    count = ParameterCount(build)
    assert count(3, 8) == 99 + 3 * 64 == sum(p.numel() for p in build(3, 8).parameters())
    assert matched_size(build, 99 + 4 * 16**2, depth=4, heads=2, max_width=64, depths=(3, 4, 5)) == (4, 2, 8)
    # no width of a multiple of 4 comes within 2% at depth 4 (or 3); at depth 5, width 20 is exact; heads: the
    # divisor of 20 nearest 3 (2 and 4 tie: the first)
    assert matched_size(build, 99 + 5 * 20**2, depth=4, heads=3, max_width=64, depths=(3, 4, 5)) == (5, 2, 10)
    # a depth the caller does not allow is never chosen: the closest count among the allowed ones
    depth, heads, head_dim = matched_size(build, 99 + 5 * 20**2, depth=4, heads=1, max_width=64, depths=(4,))
    assert depth == 4 and head_dim in (20, 24)


def test_a_sharded_sampler_slices_one_global_batch_and_resumes():
    class Counting(ShardedSampler):
        def sample(self) -> torch.Tensor:
            return torch.rand(self.global_batch, generator=self.generator)[self.mine]

    whole = Counting(batch_size=4, seed=3).sample()
    halves = [Counting(batch_size=2, seed=3, shard=s, shards=2).sample() for s in (0, 1)]
    assert torch.equal(torch.cat(halves), whole)
    sampler = Counting(batch_size=2, seed=3)
    state = sampler.state_dict()
    first = next(iter(sampler))
    sampler.load_state_dict(state)
    assert torch.equal(sampler.sample(), first)
    with pytest.raises(ValueError, match="shard"):
        Counting(batch_size=2, shard=2, shards=2)


def test_one_reader_converts_pixels_for_every_caller():
    grey16 = from_pixels(torch.tensor([[0, 65535]], dtype=torch.int32).numpy().astype("uint16"))
    assert grey16.bit_depth == 16 and grey16.grey and grey16.rgb.shape == (3, 1, 2)
    assert grey16.rgb[:, 0, 0].tolist() == [-1.0] * 3 and grey16.rgb[:, 0, 1].tolist() == [1.0] * 3
    rgba = from_pixels(torch.full((1, 1, 4), 255, dtype=torch.uint8).numpy())
    assert rgba.alpha is not None and rgba.rgb.flatten().tolist() == [1.0] * 3


def test_the_options_objects_hold_the_shared_defaults():
    from ebt_vision.app.image_view import StorySettings
    from ebt_vision.experiments.image.evaluation import EvalOptions
    from ebt_vision.image.schedule import StepSchedule
    from ebt_vision.text.generate import Sampling

    assert EvalOptions().sigmas == defaults.SIGMAS and EvalOptions().stem == "denoise_eval"
    with pytest.raises(InputError, match="best-of-N"):
        StorySettings(best_of=defaults.APP_MAX_BEST_OF + 1).check()
    with pytest.raises(InputError, match="max_new_tokens"):
        Sampling(max_new_tokens=0).check()
    schedule = StepSchedule([5.0, 50.0], [1, 4], [0.75, 1.5], [30.0, 20.0], [5.0, 50.0])
    base = Thinking(final_energy=False)
    assert schedule.thinking(45.0, base) == Thinking(num_steps=4, step_scale=1.5, final_energy=False)


def test_the_package_imports_nothing_from_the_repository_folders_around_it():
    code = (
        "import sys, ebt_vision.cli, ebt_vision.app.demo, ebt_vision.experiments.image.compare.run; "
        "from ebt_vision.cli.parser import build_parser; build_parser(); "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'apps', 'eval', 'tests', 'scripts'}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
