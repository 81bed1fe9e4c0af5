"""Photos, noise and metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from ebt_vision.core.errors import InputError
from ebt_vision.core.metrics import psnr, ssim
from ebt_vision.image import data
from ebt_vision.image.config import DataConfig
from ebt_vision.image.files import from_pixels, read_image
from ebt_vision.image.noise import NoiseLevel, add_gaussian_noise, alphas_cumprod, level_to_timestep

skimage = pytest.importorskip("skimage", reason="scikit-image (a dependency) ships the held-out photos")


def test_psnr_matches_a_hand_computed_value():
    target = torch.zeros(1, 3, 16, 16)  # pixel value 127.5 -> 128 after rounding
    prediction = target.clone()
    prediction[0, 0, 0, 0] = 10 / 127.5  # 137.5 -> 138: one pixel off by 10 levels
    mse = 10**2 / (3 * 16 * 16)
    assert psnr(prediction, target).item() == pytest.approx(10 * math.log10(255**2 / mse), rel=1e-5)
    assert ssim(target, target).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="shape"):
        psnr(prediction, target[:, :, :2])
    with pytest.raises(ValueError, match="at least"):
        ssim(target[:, :, :4, :4], target[:, :, :4, :4])


def test_gaussian_noise_has_the_requested_pixel_sigma():
    clean = torch.zeros(1, 3, 256, 256)
    noisy = add_gaussian_noise(clean, 25.0, torch.Generator().manual_seed(0))
    measured = (noisy * 127.5).std().item()
    assert measured == pytest.approx(25.0, rel=0.02)


def test_diffusion_levels_follow_the_paper_protocol():
    alphas = alphas_cumprod()
    assert level_to_timestep(0.1) == 99 and level_to_timestep(0.2) == 199
    assert math.sqrt(alphas[99]) == pytest.approx(0.947, abs=1e-3)
    assert math.sqrt(1 - alphas[99]) == pytest.approx(0.321, abs=1e-3)
    assert math.sqrt(alphas[199]) == pytest.approx(0.812, abs=1e-3)
    clean = torch.ones(2, 3, 64, 64)
    noisy = NoiseLevel("diffusion", torch.tensor([0.1, 0.2])).add_to(clean, torch.Generator().manual_seed(0))
    assert noisy[0].mean().item() == pytest.approx(0.947, abs=0.02)
    assert noisy[1].std().item() == pytest.approx(0.584, abs=0.02)
    with pytest.raises(ValueError):
        level_to_timestep(1.5)


def test_held_out_splits_are_fixed_disjoint_and_never_trained_on():
    test, validation = data.held_out_photos(split="test"), data.held_out_photos(split="validation")
    assert [p.name for p in test] == list(data.TEST_PHOTOS) and len(validation) >= 1
    held_out = test + validation
    training = data.packaged_training_photos()
    names = [p.name for p in held_out]
    assert len(set(names)) == len(names) and not set(names) & {p.name for p in training}

    def fingerprint(image):  # 16x16 thumbnail: catches the same photo under another name or a near-duplicate
        return torch.nn.functional.interpolate(image[None], size=(16, 16), mode="area")[0]

    for train_photo in training:
        for test_photo in held_out:
            distance = (fingerprint(train_photo.image) - fingerprint(test_photo.image)).abs().mean().item()
            assert distance > 0.05, f"{train_photo.name} looks like held-out {test_photo.name}"


def test_excluded_duplicates_really_are_duplicates():
    """Guards the exclusion list: skimage's cat() is chelsea(); the motorcycle pair is a stereo twin."""
    assert np.array_equal(skimage.data.cat(), skimage.data.chelsea())
    left, right, _ = skimage.data.stereo_motorcycle()
    assert np.abs(left.astype(int) - right.astype(int)).mean() < 40


@pytest.mark.skipif(not data.OPENCV_DATA.is_dir(), reason="Debian package opencv-doc not installed")
def test_opencv_photos_are_loaded():
    names = {p.name for p in data.packaged_training_photos()}
    assert sum(n.startswith("opencv:") for n in names) >= 15


def test_folder_loader_reads_images_and_rejects_corrupt_files(tmp_path):
    Image.fromarray(skimage.data.coffee()).save(tmp_path / "a.png")
    Image.fromarray(skimage.data.camera()).save(tmp_path / "b.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    photos = data.folder_photos(tmp_path)
    assert [p.name for p in photos] == ["a.png", "b.jpg"]
    assert photos[1].image.shape == (3, 512, 512) and photos[1].image.min() >= -1 and photos[1].image.max() <= 1
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not really a png")
    with pytest.raises(ValueError, match="broken.png"):
        data.folder_photos(tmp_path)
    with pytest.raises(InputError, match="not found"):
        data.folder_photos(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        data.folder_photos(tmp_path / "empty")


def test_non_image_file_gives_a_clear_error(tmp_path):
    path = tmp_path / "photo.png"
    path.write_text("hello")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(path)


def test_crop_sampler_is_reproducible_and_resumable():
    photos = [data.Photo("coffee", from_pixels(skimage.data.coffee()).rgb)]
    cfg = DataConfig(crop_size=16, batch_size=4)
    first = data.CropSampler(photos, cfg, seed=3)
    first.sample()
    state = first.state_dict()
    expected = first.sample()
    second = data.CropSampler(photos, cfg, seed=99)
    second.load_state_dict(state)
    again = second.sample()
    assert torch.equal(again.noisy, expected.noisy) and torch.equal(again.clean, expected.clean)
    assert torch.equal(again.noise.value, expected.noise.value)
    sigma = expected.noise.sigma
    assert expected.noisy.shape == expected.clean.shape == (4, 3, 16, 16) and sigma.shape == (4,)
    assert (sigma >= 0).all() and (sigma <= 55).all() and expected.noise.kind == "gaussian"
