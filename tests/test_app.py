"""The demo's library functions and the Gradio handler, without a browser (see test_app_browser.py for one)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ebt_vision.app import image_view
from ebt_vision.app.demo import ImageTab, build_app
from ebt_vision.app.image_view import StorySettings, denoise_story, load_upload, prepare_image, story_frames
from ebt_vision.app.video_view import load_video_upload
from ebt_vision.core import defaults
from ebt_vision.core.checkpoint import save_weights
from ebt_vision.core.errors import InputError
from ebt_vision.core.inference import Thinking
from ebt_vision.image.dit import DiTObjective
from ebt_vision.image.objective import DenoisingObjective


@pytest.fixture
def objective(tiny_cfg):
    objective = DenoisingObjective(tiny_cfg).eval()
    torch.nn.init.normal_(objective.model.head.out.weight)  # a non-zero energy, so maps and gradients are not flat
    return objective


@pytest.fixture
def checkpoints(tmp_path, tiny_cfg, objective):
    ebt, dit = tmp_path / "ebt.safetensors", tmp_path / "dit.safetensors"
    save_weights(objective, tiny_cfg, ebt)
    save_weights(DiTObjective(tiny_cfg), tiny_cfg, dit)
    return ebt, dit


def test_story_has_every_step_with_maps_psnr_and_the_dit(tiny_cfg, objective):
    image = torch.rand(3, 32, 48) * 2 - 1
    dit = DiTObjective(tiny_cfg).eval()
    story = denoise_story(objective, image, StorySettings(sigma=30, steps=3, best_of=2, dit_steps=4), dit=dit)
    assert len(story.candidates) == 4 and len(story.energies) == 4 and len(story.psnrs) == 4
    assert len(story.energy_maps) == 4 and all(m.shape == (8, 12) for m in story.energy_maps)
    assert len(story.gradient_maps) == 3 and all(m.shape == (32, 48) and (m >= 0).all() for m in story.gradient_maps)
    assert story.forward_passes == 2 * 4 and story.backward_passes == 2 * 3  # best-of-2, 3 steps + final energy
    assert story.dit.shape == image.shape and story.dit_forward_passes == 4 and story.dit_psnr is not None
    frames = story_frames(story)
    assert len(frames) == 4 + 4 + 3  # candidates, energy maps, and |dE/dx| where a step was taken
    assert frames[0][0].shape == (32, 48, 3) and all(f.dtype == np.uint8 and f.shape[2] == 3 for f, _ in frames)
    assert frames[1][0].shape[1] > 48  # a map is drawn with its colour bar beside it
    assert "energy map" in frames[1][1] and "dB" in frames[3][1] and all(len(c) <= 40 for _, c in frames)
    summary = image_view.story_summary(story)
    assert "forward" in summary and "DiT" in summary
    figure = image_view.story_figure(story)
    assert len(figure.axes) == 2  # energy and PSNR axes


def test_the_story_energy_is_the_descent_energy(objective):
    """The per-step energy the UI plots is the energy the descent minimised (same tiled energy)."""
    image = torch.rand(3, 32, 32) * 2 - 1
    story = denoise_story(objective, image, StorySettings(sigma=20, steps=2))
    from ebt_vision.image.inference import denoise

    trajectory, _ = denoise(objective, story.noisy[None], Thinking(2))
    assert np.allclose(story.energies, trajectory.energies[:, 0].tolist(), rtol=1e-4, atol=1e-4)


def test_adaptive_story_has_a_steps_map_that_matches_the_descent(objective):
    image = torch.rand(3, 32, 48) * 2 - 1
    story = denoise_story(objective, image, StorySettings(sigma=30, steps=4, adaptive=0.3))
    assert story.steps_map.shape == (8, 12) and len(story.energy_maps) == 5
    assert 0 <= float(story.steps_map.min()) and float(story.steps_map.max()) <= 4
    uniform = denoise_story(objective, image, StorySettings(sigma=30, steps=4))
    assert uniform.steps_map is None and story.forward_passes == uniform.forward_passes + 2  # the probe step
    frames = story_frames(story)
    assert "steps per patch" in frames[-1][1] and "adaptive" in image_view.story_summary(story)
    with pytest.raises(InputError, match="best-of-N 1"):
        denoise_story(objective, image, StorySettings(sigma=30, steps=4, best_of=2, adaptive=0.1))


@pytest.mark.parametrize(
    "kwargs, message",
    [({"sigma": 150}, "sigma"), ({"steps": 0}, "steps"), ({"best_of": 9}, "best-of"), ({"step_scale": 0}, "scale")],
)
def test_out_of_range_settings_give_clear_errors(objective, kwargs, message):
    with pytest.raises(InputError, match=message):
        denoise_story(objective, torch.zeros(3, 32, 32), StorySettings(**kwargs))


def test_uploads_are_checked_downscaled_and_cropped(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.fromarray((np.random.default_rng(0).random((500, 803, 3)) * 255).astype(np.uint8)).save(big)
    image, notes = load_upload(big)
    assert max(image.shape[1:]) <= defaults.APP_MAX_SIDE and image.shape[1] % 4 == 0 and image.shape[2] % 4 == 0
    assert "downscaled from 803x500" in notes[0]
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(InputError, match="corrupt.png"):
        load_upload(corrupt)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_upload(text)
    monkeypatch.setattr(defaults, "APP_MAX_IMAGE_BYTES", 100)
    with pytest.raises(InputError, match="limit"):
        load_upload(big)
    with pytest.raises(InputError, match="NaN"):
        prepare_image(torch.full((3, 16, 16), float("nan")))
    with pytest.raises(InputError, match="at least"):
        prepare_image(torch.zeros(3, 4, 64))


def test_image_tab_handler_outputs(checkpoints, tmp_path):
    ebt, dit = checkpoints
    tab = ImageTab(ebt, dit)
    clean, noisy, gallery, result, dit_image, figure, summary = tab.run("skimage:coffee", None, 25, 2, 1.0, 1, 3)
    assert clean.shape == noisy.shape == result.shape == dit_image.shape and clean.shape[2] == 3
    assert max(clean.shape[:2]) <= 256 and len(gallery) == 3 + 3 + 2  # 3 candidates, 3 energy maps, 2 gradients
    assert "3 forward passes" in summary and "sample photo skimage:coffee" in summary and figure is not None
    photo = tmp_path / "photo.jpg"
    Image.fromarray((np.random.default_rng(1).random((40, 60, 3)) * 255).astype(np.uint8)).save(photo)
    out = tab.run("skimage:coffee", str(photo), 10, 1, 1.0, 1, 0)  # the upload wins over the selected sample
    assert out[0].shape == (40, 60, 3) and "your upload photo.jpg" in out[6]
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    with pytest.raises(InputError, match="notes.txt is not an image"):  # never silently the sample instead
        tab.run("skimage:coffee", str(notes), 10, 1, 1.0, 1, 0)
    with pytest.raises(InputError, match="pick a sample"):
        tab.run(None, None, 25, 2, 1.0, 1, 3)
    assert ImageTab(ebt, None).run("skimage:coffee", None, 25, 1, 1.0, 1, 3)[4] is None  # no DiT checkpoint


def test_image_tab_takes_its_steps_from_the_step_schedule(checkpoints):
    from ebt_vision.image.schedule import StepSchedule

    ebt, _ = checkpoints
    out = ImageTab(ebt, None).run("skimage:coffee", None, 25, 2, 1.0, 1, 0, auto_steps=True)
    assert "no step schedule" in out[6] and len(out[2]) == 3 + 3 + 2  # without one: the slider's 2 steps
    StepSchedule([5.0, 120.0], [1, 4], [0.5, 1.5], [0.0, 0.0], [5.0, 120.0]).save(Path(ebt).parent)
    tab = ImageTab(ebt, None)
    light = tab.run("skimage:coffee", None, 2, 3, 1.0, 1, 0, auto_steps=True)
    heavy = tab.run("skimage:coffee", None, 100, 3, 1.0, 1, 0, auto_steps=True)
    assert "schedule says 1 step at step scale 0.5" in light[6] and len(light[2]) == 2 + 2 + 1
    assert "schedule says 4 steps at step scale 1.5" in heavy[6] and len(heavy[2]) == 5 + 5 + 4
    assert len(tab.run("skimage:coffee", None, 100, 3, 1.0, 1, 0)[2]) == 4 + 4 + 3  # unchecked: the sliders


def test_app_builds_offline_with_the_image_tab_wired(checkpoints):
    app = build_app(ImageTab(*checkpoints))
    labels = {getattr(block, "label", None) for block in app.blocks.values()}
    assert {"Sample photo (held out)", "EBT result", "DiT result", "Energy and PSNR per step"} <= labels
    assert any(getattr(block, "elem_id", None) == "denoise-button" for block in app.blocks.values())
    assert len(app.fns) >= 1  # the Denoise click is bound to the handler


def test_gradient_maps_recovered_from_the_steps_match_autograd(objective):
    from ebt_vision.image.tiling import TiledEnergy

    story = denoise_story(objective, torch.rand(3, 32, 32) * 2 - 1, StorySettings(sigma=20, steps=2, step_scale=0.5))
    energy = TiledEnergy(objective.model, objective.cfg.data.crop_size)
    for k, candidate in enumerate(story.candidates[:-1]):
        x = candidate[None].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(story.noisy[None], x).sum(), x)
        assert torch.allclose(story.gradient_maps[k], grad[0].abs().sum(dim=0), rtol=1e-3, atol=1e-5)
    with torch.no_grad():  # the energy maps recorded during the descent are the maps of its candidates
        for k, candidate in enumerate(story.candidates):
            expected = energy.patch_energy_map(story.noisy[None], candidate[None])[0]
            torch.testing.assert_close(story.energy_maps[k], expected, rtol=1e-4, atol=1e-5)


def test_upload_errors_name_the_file_never_the_server_folder(tmp_path):
    """Issue 27: the app's video error showed the server's temporary path."""
    folder = tmp_path / "gradio" / "0123abcd"
    folder.mkdir(parents=True)
    corrupt = folder / "holiday.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    with pytest.raises(InputError) as error:
        load_upload(corrupt)
    assert "holiday.png" in str(error.value) and str(folder) not in str(error.value)
    video = folder / "holiday.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(InputError) as error:
        load_video_upload(video, 6, 16, 1)
    assert "holiday.mp4" in str(error.value) and str(folder) not in str(error.value)


def test_the_app_deletes_its_files_and_runs_models_on_its_own_threads(checkpoints, tmp_path, monkeypatch):
    """Issue 27: the app kept every upload, rejected ones included; its memory grew with Gradio's thread pool."""
    from gradio_client import Client, handle_file

    from ebt_vision.app.image_tab import DEFAULTS

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "cache"))
    app = build_app(ImageTab(*checkpoints), workers=2, delete_cache=(1, 1))
    assert app._queue.max_size == 64 and app._queue.default_concurrency_limit == 2
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(app.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
        notes = tmp_path / "notes.png"
        notes.write_text("not an image")
        request = {**DEFAULTS, "upload": handle_file(str(notes))}
        with pytest.raises(Exception, match="notes.png is not an image") as error:
            client.predict(*request.values(), api_name="/denoise")
        assert str(tmp_path / "cache") not in str(error.value)
        assert list((tmp_path / "cache").rglob("notes.png"))  # uploaded ...
        deadline = time.monotonic() + 30
        while list((tmp_path / "cache").rglob("notes.png")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not list((tmp_path / "cache").rglob("notes.png"))  # ... and swept
        assert "EBT**: 2 descent steps" in client.predict(*DEFAULTS.values(), api_name="/denoise")[-1]
        assert any(thread.name.startswith("ebt-model") for thread in threading.enumerate())
    finally:
        app.close()


def test_pictures_in_gradios_cache_are_replaced_whole_never_rewritten_in_place(tmp_path, monkeypatch):
    """Two users who get the same picture at once: Gradio rewrote the cached file in place while the first user's
    download read it (measured under load: a download cut short)."""
    from gradio import processing_utils

    from ebt_vision.app.common import write_cache_files_atomically

    monkeypatch.setattr(processing_utils, "save_pil_to_cache", processing_utils.save_pil_to_cache)  # restored after
    write_cache_files_atomically()
    picture = Image.fromarray((np.random.default_rng(2).random((64, 64, 3)) * 255).astype(np.uint8))
    path = Path(processing_utils.save_pil_to_cache(picture, str(tmp_path)))
    whole = path.read_bytes()
    with open(path, "rb") as download:  # one user's download, under way
        assert Path(processing_utils.save_pil_to_cache(picture, str(tmp_path))) == path  # another user, same picture
        assert os.fstat(download.fileno()).st_ino != path.stat().st_ino  # a new file took the name ...
        assert download.read() == whole == path.read_bytes()  # ... and the download still reads its whole file
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_output_pictures_are_stored_losslessly(monkeypatch, tmp_path):
    """The app's pictures reach the browser with the model's exact pixels (Gradio's WebP default is lossy: a
    denoising demo must not show a codec's artefacts on top of the result)."""
    from gradio import processing_utils

    from ebt_vision.app.common import write_cache_files_atomically

    monkeypatch.setattr(processing_utils, "save_pil_to_cache", processing_utils.save_pil_to_cache)  # restored after
    write_cache_files_atomically()
    pixels = (np.random.default_rng(3).random((48, 40, 3)) * 255).astype(np.uint8)
    for fmt in ("webp", "png"):
        path = Path(processing_utils.save_pil_to_cache(Image.fromarray(pixels), str(tmp_path), format=fmt))
        assert path.suffix == f".{fmt}"
        np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), pixels)
