"""``ebt-vision denoise`` on users' files, the command line from any directory, and models in the Hub layout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import torch

from ebt_vision.core.checkpoint import load_trained, save_pretrained_folder
from ebt_vision.core.errors import InputError
from ebt_vision.core.inference import Thinking
from ebt_vision.image.denoise_files import DenoiseOptions, denoise_files
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.files import read_image
from ebt_vision.image.objective import DenoisingObjective

REPO = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(0)


@pytest.fixture
def objective(tiny_cfg):
    objective = DenoisingObjective(tiny_cfg).eval()
    torch.nn.init.normal_(objective.model.head.out.weight)  # a non-zero energy, so the descent moves the pixels
    return objective


@pytest.fixture
def images(tmp_path) -> Path:
    """8- and 16-bit, grey, RGB and RGBA images, and a sub-folder, all 48x32."""
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    iio.imwrite(folder / "rgb.png", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    iio.imwrite(folder / "grey.png", rng.integers(0, 256, (32, 48), dtype=np.uint8))
    iio.imwrite(folder / "rgba.png", rng.integers(0, 256, (32, 48, 4), dtype=np.uint8))
    iio.imwrite(folder / "grey16.png", rng.integers(0, 65536, (32, 48), dtype=np.uint16))
    tifffile.imwrite(folder / "rgb16.tif", rng.integers(0, 65536, (32, 48, 3), dtype=np.uint16))
    iio.imwrite(folder / "sub" / "photo.jpg", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))
    return folder


def test_results_keep_grey_alpha_and_bit_depth(objective, images, tmp_path):
    out = tmp_path / "out"
    written = denoise_files(objective, [images], out, DenoiseOptions(steps=2), progress=False)
    names = sorted(str(p.relative_to(out)) for p in written)
    assert names == ["grey.ebt.png", "grey16.ebt.tif", "rgb.ebt.png", "rgb16.ebt.tif", "rgba.ebt.png",
                     "sub/photo.ebt.png"]  # fmt: skip
    grey = iio.imread(out / "grey.ebt.png")
    assert grey.shape == (32, 48) and grey.dtype == np.uint8
    rgba_in, rgba_out = iio.imread(images / "rgba.png"), iio.imread(out / "rgba.ebt.png")
    assert rgba_out.shape == (32, 48, 4) and np.array_equal(rgba_out[..., 3], rgba_in[..., 3])  # alpha untouched
    assert not np.array_equal(rgba_out[..., :3], rgba_in[..., :3])  # the colour was denoised
    deep = tifffile.imread(out / "rgb16.ebt.tif")
    assert deep.dtype == np.uint16 and deep.shape == (32, 48, 3)
    assert len(np.unique(deep)) > 256  # real 16-bit values, not 8-bit ones scaled up
    assert tifffile.imread(out / "grey16.ebt.tif").shape == (32, 48)
    assert read_image(images / "grey16.png").bit_depth == 16


def test_the_descent_result_is_what_is_written(objective, images, tmp_path):
    from ebt_vision.image.inference import denoise

    (path,) = denoise_files(objective, [images / "rgb.png"], tmp_path / "o", DenoiseOptions(steps=2), progress=False)
    trajectory, _ = denoise(objective, read_image(images / "rgb.png").rgb[None], Thinking(2))
    expected = ((trajectory.final[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(iio.imread(path).astype(int) - expected.astype(int)).max() <= 1


def test_without_steps_the_step_schedule_sets_them(objective, images, tmp_path):
    from ebt_vision.image.inference import denoise
    from ebt_vision.image.schedule import StepSchedule

    schedule = StepSchedule([0.0, 50.0], [1, 3], [0.5, 2.0], [0.0, 0.0], [0.0, 50.0])  # random pixels: heavy "noise"
    (path,) = denoise_files(objective, [images / "rgb.png"], tmp_path / "o", DenoiseOptions(schedule=schedule),
                            progress=False)  # fmt: skip
    trajectory, _ = denoise(objective, read_image(images / "rgb.png").rgb[None], Thinking(3, step_scale=2.0))
    expected = ((trajectory.final[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(iio.imread(path).astype(int) - expected.astype(int)).max() <= 1
    (fixed,) = denoise_files(
        objective, [images / "rgb.png"], tmp_path / "p", DenoiseOptions(steps=1, schedule=schedule), progress=False
    )  # fmt: skip  (--steps wins over the schedule)
    assert np.abs(iio.imread(fixed).astype(int) - iio.imread(path).astype(int)).max() > 1


def test_never_overwrites_inputs_or_earlier_results_unless_asked(objective, images, tmp_path):
    options = DenoiseOptions(steps=1)
    out = tmp_path / "out"
    denoise_files(objective, [images / "rgb.png"], out, options, progress=False)
    before = (out / "rgb.ebt.png").read_bytes()
    with pytest.raises(InputError, match="--overwrite"):
        denoise_files(objective, [images / "rgb.png"], out, options, progress=False)
    assert (out / "rgb.ebt.png").read_bytes() == before
    denoise_files(objective, [images / "rgb.png"], out, DenoiseOptions(steps=1, overwrite=True), progress=False)
    # a result named like an input in the same folder is refused even with --overwrite
    (out / "rgb.ebt.ebt.png").write_bytes(b"")
    trap = out / "rgb.ebt.png"
    with pytest.raises(InputError, match="overwrite an input"):
        denoise_files(objective, [trap, out / "rgb.ebt.ebt.png"], out, DenoiseOptions(overwrite=True), progress=False)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("broken.png", b"\x89PNG\r\n\x1a\nnot really a png", "cannot read"),
        ("anim.gif", b"GIF89a", "unsupported format"),
        ("missing.png", None, "no such"),
    ],
)
def test_bad_files_give_one_clear_error(objective, tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        denoise_files(objective, [path], tmp_path / "out", DenoiseOptions(), progress=False)


def test_float_images_and_bad_settings_are_refused(objective, tmp_path):
    tifffile.imwrite(tmp_path / "float.tif", rng.random((16, 16, 3), dtype=np.float32), photometric="rgb")
    with pytest.raises(InputError, match="float32 pixels are not supported"):
        denoise_files(objective, [tmp_path / "float.tif"], tmp_path / "out", DenoiseOptions(), progress=False)
    with pytest.raises(InputError, match="--steps"):
        denoise_files(objective, [tmp_path], tmp_path / "out", DenoiseOptions(steps=0), progress=False)
    with pytest.raises(InputError, match="EBT only"):
        denoise_files(
            DiTObjective(objective.cfg), [tmp_path], tmp_path / "o", DenoiseOptions(best_of=2), progress=False
        )


def test_models_round_trip_through_the_hub_layout(objective, tiny_cfg, tmp_path):
    objective.save_pretrained(tmp_path / "hub")  # huggingface_hub's mixin: config.json + model.safetensors
    loaded, _ = load_trained(tmp_path / "hub", DenoisingObjective, "an image EBT")
    again = DenoisingObjective.from_pretrained(save_pretrained_folder(objective, tiny_cfg, tmp_path / "ours"))
    for model in (loaded, again):
        assert model.cfg == tiny_cfg
        for (name, a), b in zip(objective.state_dict().items(), model.state_dict().values(), strict=True):
            assert torch.equal(a, b), name
    with pytest.raises(ValueError, match="config.json"):
        load_trained(tmp_path, DenoisingObjective, "an image EBT")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ebt_vision", *args], capture_output=True, text=True, cwd=cwd, env=env)


def test_console_commands_work_from_any_directory_with_the_shipped_models(images, tmp_path):
    done = _run(["denoise", str(images / "rgb.png"), "-o", "out", "--steps", "2", "--save-steps", "--save-energy-map",
                 "--quiet"], tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"rgb.ebt.png", "rgb.ebt-step1.png", "rgb.ebt-energy.png"}
    energy_map = iio.imread(tmp_path / "out" / "rgb.ebt-energy.png")
    assert energy_map.shape[1] > 48 and energy_map.shape[2] == 3  # the map with its colour bar beside it
    dit = _run(["denoise", str(images / "grey.png"), "-o", "out", "--model", "dit", "--quiet"], tmp_path)
    assert dit.returncode == 0, dit.stderr
    assert iio.imread(tmp_path / "out" / "grey.dit.png").shape == (32, 48)
    bad = _run(["denoise", str(images / "rgb.png"), "-o", "out"], tmp_path)
    assert bad.returncode == 2 and "--overwrite" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    evaluated = _run(["eval", "--limit", "1", "--max-side", "32", "--sigmas", "25", "--steps", "1", "--no-bm3d",
                      "--quiet"], tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "runs" / "eval" / "denoise_eval.md").is_file()  # a run folder, not the committed reports/


def test_demo_command_takes_its_options_and_help():
    from ebt_vision.cli import build_parser

    args = build_parser().parse_args(["demo", "--checkpoint", "x", "--dit-checkpoint", "", "--port", "8000"])
    assert (args.checkpoint, args.dit_checkpoint, args.port, args.host) == ("x", "", 8000, "127.0.0.1")
    helped = _run(["demo", "--help"], REPO)
    assert helped.returncode == 0 and "--port" in helped.stdout and "(default: 7860)" in helped.stdout
    top = _run(["--help"], REPO)
    assert top.returncode == 0 and "``" not in top.stdout and "denoise" in top.stdout
