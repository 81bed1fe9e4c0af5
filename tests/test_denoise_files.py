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
    run = denoise_files(objective, [images], out, DenoiseOptions(steps=2), progress=False)
    names = sorted(str(p.relative_to(out)) for p in run.written)
    assert names == ["grey.png.ebt.png", "grey16.png.ebt.png", "rgb.png.ebt.png", "rgb16.tif.ebt.tif",
                     "rgba.png.ebt.png", "sub/photo.jpg.ebt.png"]  # fmt: skip
    assert run.results == 6 and not run.failed and not run.summary()
    grey = iio.imread(out / "grey.png.ebt.png")
    assert grey.shape == (32, 48) and grey.dtype == np.uint8
    rgba_in, rgba_out = iio.imread(images / "rgba.png"), iio.imread(out / "rgba.png.ebt.png")
    assert rgba_out.shape == (32, 48, 4) and np.array_equal(rgba_out[..., 3], rgba_in[..., 3])  # alpha untouched
    assert not np.array_equal(rgba_out[..., :3], rgba_in[..., :3])  # the colour was denoised
    deep = tifffile.imread(out / "rgb16.tif.ebt.tif")
    assert deep.dtype == np.uint16 and deep.shape == (32, 48, 3)
    assert len(np.unique(deep)) > 256  # real 16-bit values, not 8-bit ones scaled up
    grey16 = read_image(out / "grey16.png.ebt.png")
    assert grey16.bit_depth == 16 and grey16.grey and read_image(images / "grey16.png").bit_depth == 16


def test_the_descent_result_is_what_is_written(objective, images, tmp_path):
    from ebt_vision.image.inference import denoise

    run = denoise_files(objective, [images / "rgb.png"], tmp_path / "o", DenoiseOptions(steps=2), progress=False)
    (path,) = run.written
    trajectory, _ = denoise(objective, read_image(images / "rgb.png").rgb[None], Thinking(2))
    expected = ((trajectory.final[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(iio.imread(path).astype(int) - expected.astype(int)).max() <= 1


def test_without_steps_the_step_schedule_sets_them(objective, images, tmp_path):
    from ebt_vision.image.inference import denoise
    from ebt_vision.image.schedule import StepSchedule

    schedule = StepSchedule([0.0, 50.0], [1, 3], [0.5, 2.0], [0.0, 0.0], [0.0, 50.0])  # random pixels: heavy "noise"
    (path,) = denoise_files(objective, [images / "rgb.png"], tmp_path / "o", DenoiseOptions(schedule=schedule),
                            progress=False).written  # fmt: skip
    trajectory, _ = denoise(objective, read_image(images / "rgb.png").rgb[None], Thinking(3, step_scale=2.0))
    expected = ((trajectory.final[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(iio.imread(path).astype(int) - expected.astype(int)).max() <= 1
    (fixed,) = denoise_files(
        objective, [images / "rgb.png"], tmp_path / "p", DenoiseOptions(steps=1, schedule=schedule), progress=False
    ).written  # fmt: skip  (--steps wins over the schedule)
    assert np.abs(iio.imread(fixed).astype(int) - iio.imread(path).astype(int)).max() > 1


def test_earlier_results_are_kept_and_inputs_never_overwritten(objective, images, tmp_path):
    options = DenoiseOptions(steps=1)
    out = tmp_path / "out"
    denoise_files(objective, [images / "rgb.png"], out, options, progress=False)
    result = out / "rgb.png.ebt.png"
    before, stamp = result.read_bytes(), result.stat().st_mtime_ns
    again = denoise_files(objective, [images / "rgb.png", images / "grey.png"], out, options, progress=False)
    assert again.written == [out / "grey.png.ebt.png"] and again.kept == [result]  # the new one made, the old kept
    assert result.read_bytes() == before and result.stat().st_mtime_ns == stamp
    assert "kept 1 earlier result (pass --overwrite to redo it)" in again.summary()[0]
    redone = denoise_files(
        objective, [images / "rgb.png"], out, DenoiseOptions(steps=1, overwrite=True), progress=False
    )
    assert redone.written == [result] and not redone.kept
    # a result named like an input in the same folder is refused even with --overwrite, before any work
    (out / "rgb.png.ebt.png.ebt.png").write_bytes(b"")
    with pytest.raises(InputError, match="would overwrite the input"):
        denoise_files(objective, [result, out / "rgb.png.ebt.png.ebt.png"], out, DenoiseOptions(overwrite=True),
                      progress=False)  # fmt: skip


def test_inputs_of_one_name_give_distinct_results_or_are_refused_before_any_work(objective, tmp_path):
    """Issue 27: ``denoise a.png a.jpg -o out/`` wrote both to out/a.ebt.png; the first result was lost."""
    pixels = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", pixels)
    iio.imwrite(tmp_path / "a.jpg", 255 - pixels)
    out = tmp_path / "out"
    run = denoise_files(objective, [tmp_path / "a.png", tmp_path / "a.jpg"], out, DenoiseOptions(steps=1),
                        progress=False)  # fmt: skip
    assert run.written == [out / "a.png.ebt.png", out / "a.jpg.ebt.png"]
    assert not np.array_equal(iio.imread(run.written[0]), iio.imread(run.written[1]))
    for folder in ("x", "y"):  # the same name in two folders given as files: one result each is impossible
        (tmp_path / folder).mkdir()
        iio.imwrite(tmp_path / folder / "b.png", pixels)
    with pytest.raises(InputError, match="would both be written to"):
        denoise_files(objective, [tmp_path / "x" / "b.png", tmp_path / "y" / "b.png"], tmp_path / "o2",
                      DenoiseOptions(steps=1), progress=False)  # fmt: skip
    assert not (tmp_path / "o2").exists()  # refused before any work


def test_results_beside_their_inputs_are_not_taken_for_inputs(objective, images, tmp_path):
    denoise_files(objective, [images], images, DenoiseOptions(steps=1), progress=False)
    again = denoise_files(objective, [images], images, DenoiseOptions(steps=1), progress=False)
    assert not again.written and len(again.kept) == 6 and not again.failed
    nested = images / "denoised"
    denoise_files(objective, [images], nested, DenoiseOptions(steps=1, overwrite=True), progress=False)
    third = denoise_files(objective, [images], nested, DenoiseOptions(steps=1), progress=False)
    assert not third.written and len(third.kept) == 6


BAD_FILES = {
    "empty.png": (b"", "empty.png is empty"),
    "text.png": (b"just some notes, not a picture\n", "text.png is not an image"),
    "broken.png": (b"\x89PNG\r\n\x1a\nnot really a png", "cannot read"),
    "truncated.png": (None, "truncated.png"),  # a real PNG cut in half
}


def _bad_files(folder: Path) -> None:
    iio.imwrite(folder / "whole.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    for name, (content, _) in BAD_FILES.items():
        whole = (folder / "whole.png").read_bytes()
        (folder / name).write_bytes(content if content is not None else whole[: len(whole) // 2])
    (folder / "whole.png").rename(folder / "good.png")


def test_a_bad_file_in_a_batch_is_skipped_and_named_and_the_others_finish(objective, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _bad_files(folder)
    iio.imwrite(folder / "zz-last.png", rng.integers(0, 256, (32, 48, 3), dtype=np.uint8))  # after the bad ones
    run = denoise_files(objective, [folder], tmp_path / "out", DenoiseOptions(steps=1), progress=False)
    assert sorted(p.name for p in run.written) == ["good.png.ebt.png", "zz-last.png.ebt.png"]
    failed = {path.name: message for path, message in run.failed}
    assert set(failed) == set(BAD_FILES)
    for name, (_, expected) in BAD_FILES.items():
        assert expected in failed[name] and "\n" not in failed[name] and "pip install" not in failed[name]
    assert run.summary()[-1] == f"denoised 2 of {2 + len(BAD_FILES)} images; {len(BAD_FILES)} failed (named above)"


def test_missing_and_unsupported_inputs_give_one_clear_line(objective, tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        denoise_files(objective, [tmp_path / "missing.png"], tmp_path / "out", DenoiseOptions(), progress=False)
    (tmp_path / "anim.gif").write_bytes(b"GIF89a")
    run = denoise_files(objective, [tmp_path / "anim.gif"], tmp_path / "out", DenoiseOptions(), progress=False)
    assert "unsupported format '.gif'" in run.failed[0][1]


def test_float_images_and_bad_settings_are_refused(objective, tmp_path):
    tifffile.imwrite(tmp_path / "float.tif", rng.random((16, 16, 3), dtype=np.float32), photometric="rgb")
    run = denoise_files(objective, [tmp_path / "float.tif"], tmp_path / "out", DenoiseOptions(), progress=False)
    assert "float32 pixels are not supported" in run.failed[0][1]
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
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"rgb.png.ebt.png", "rgb.png.ebt-step1.png",
                                                              "rgb.png.ebt-energy.png"}  # fmt: skip
    energy_map = iio.imread(tmp_path / "out" / "rgb.png.ebt-energy.png")
    assert energy_map.shape[1] > 48 and energy_map.shape[2] == 3  # the map with its colour bar beside it
    dit = _run(["denoise", str(images / "grey.png"), "-o", "out", "--model", "dit", "--quiet"], tmp_path)
    assert dit.returncode == 0, dit.stderr
    assert iio.imread(tmp_path / "out" / "grey.png.dit.png").shape == (32, 48)
    again = _run(["denoise", str(images / "rgb.png"), "-o", "out"], tmp_path)  # kept, no model loaded
    assert again.returncode == 0 and "kept 1 earlier result (pass --overwrite to redo it)" in again.stderr
    evaluated = _run(["eval", "--limit", "1", "--max-side", "32", "--sigmas", "25", "--steps", "1", "--no-bm3d",
                      "--quiet"], tmp_path)  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr
    assert (tmp_path / "runs" / "eval" / "denoise_eval.md").is_file()  # a run folder, not the committed reports/


def test_denoise_command_checks_inputs_first_and_finishes_a_batch_with_a_bad_file(tmp_path):
    """Issue 27: input errors came after the ~20 s model load; one corrupt file stopped the batch (earlier results
    written) and the re-run was refused; an output folder that is a file gave a traceback."""
    folder = tmp_path / "in"
    folder.mkdir()
    _bad_files(folder)
    # every input bad from its header: each named, and no model is loaded (this checkpoint does not exist)
    bad = [str(folder / name) for name, (content, _) in BAD_FILES.items() if content is not None]
    refused = _run(["denoise", *bad, "-o", "out", "--checkpoint", "no/such/model"], tmp_path)
    assert refused.returncode == 1 and "no/such/model" not in refused.stderr, refused.stderr
    assert "empty.png is empty" in refused.stderr and "text.png is not an image" in refused.stderr
    assert "Traceback" not in refused.stderr and "pip install" not in refused.stderr
    (tmp_path / "a-file").write_text("")
    for out, message in (("a-file", "is a file; give a folder"), ("a-file/out", "a-file is a file")):
        done = _run(["denoise", str(folder / "good.png"), "-o", out], tmp_path)
        assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    batch = _run(["denoise", str(folder), "-o", "out", "--steps", "1", "--quiet"], tmp_path)
    assert batch.returncode == 1 and batch.stdout.split() == [str(Path("out") / "good.png.ebt.png")], batch.stderr
    lines = batch.stderr.strip().splitlines()
    assert len(lines) == len(BAD_FILES) + 1 and all(line.startswith("error: ") for line in lines[:-1])
    assert lines[-1] == f"denoised 1 of {1 + len(BAD_FILES)} images; {len(BAD_FILES)} failed (named above)"
    for name in BAD_FILES:
        (folder / name).unlink()
    rerun = _run(["denoise", str(folder), "-o", "out", "--steps", "1", "--quiet"], tmp_path)
    assert rerun.returncode == 0 and "kept 1 earlier result" in rerun.stderr and not rerun.stdout.strip()


def test_demo_command_takes_its_options_and_help():
    from ebt_vision.cli import build_parser

    args = build_parser().parse_args(["demo", "--checkpoint", "x", "--dit-checkpoint", "", "--port", "8000"])
    assert (args.checkpoint, args.dit_checkpoint, args.port, args.host) == ("x", "", 8000, "127.0.0.1")
    helped = _run(["demo", "--help"], REPO)
    assert helped.returncode == 0 and "--port" in helped.stdout and "(default: 7860)" in helped.stdout
    top = _run(["--help"], REPO)
    assert top.returncode == 0 and "``" not in top.stdout and "denoise" in top.stdout


def test_best_of_n_saves_the_steps_of_the_chosen_start(objective, images, tmp_path):
    """Issue 26: `--steps 4 --best-of 4 --save-steps` wrote no step images and said nothing."""
    out = tmp_path / "out"
    options = DenoiseOptions(steps=3, best_of=3, save_steps=True)
    run = denoise_files(objective, [images / "rgb.png"], out, options, progress=False)
    assert {p.name for p in run.written} == {"rgb.png.ebt.png", "rgb.png.ebt-step1.png", "rgb.png.ebt-step2.png"}
    assert not run.failed


def test_views_average_the_descent_over_mirror_images(objective, images, tmp_path):
    """``denoise --views N``: the written result is the descent on the energy averaged over N mirror images (checked
    against ``denoise`` with that tiling), its energy map that energy's, a different image than one view gives; a
    count that is not a group is refused."""
    from ebt_vision.image.inference import Tiling, denoise

    options = DenoiseOptions(steps=2, views=4, save_energy_map=True)
    run = denoise_files(objective, [images / "rgb.png"], tmp_path / "o", options, progress=False)
    energy_map, result = run.written
    noisy = read_image(images / "rgb.png").rgb[None]
    trajectory, _ = denoise(objective, noisy, Thinking(2), tiling=Tiling(views=4))
    expected = ((trajectory.final[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    assert np.abs(iio.imread(result).astype(int) - expected.astype(int)).max() <= 1
    (single,) = denoise_files(objective, [images / "rgb.png"], tmp_path / "p", DenoiseOptions(steps=2),
                              progress=False).written  # fmt: skip
    assert np.abs(iio.imread(single).astype(int) - iio.imread(result).astype(int)).max() > 1
    assert energy_map.name == "rgb.png.ebt-energy.png" and energy_map.stat().st_size > 0
    with pytest.raises(InputError, match="--views must be one of 1, 2, 4, 8"):
        denoise_files(objective, [images], tmp_path / "q", DenoiseOptions(views=3), progress=False)
