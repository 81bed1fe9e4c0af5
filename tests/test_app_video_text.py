"""The app's video and text tabs without a browser: their views (ebt_vision.app.video_view,
ebt_vision.app.text_view) and handlers on tiny untrained checkpoints written to tmp_path; missing checkpoints and
bad inputs give clear messages (see test_app_browser.py for the same tabs in a browser)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from ebt_vision.app import video_view
from ebt_vision.app.demo import TextTab, VideoTab, build_app
from ebt_vision.app.image_tab import ImageTab
from ebt_vision.app.text_tab import open_text_tab
from ebt_vision.app.text_view import continue_prompt, energy_html, text_summary
from ebt_vision.app.video_tab import open_video_tab
from ebt_vision.core import defaults
from ebt_vision.core.checkpoint import save_pretrained_folder, save_weights
from ebt_vision.core.config import from_dict
from ebt_vision.core.errors import InputError
from ebt_vision.core.inference import Thinking
from ebt_vision.image.objective import DenoisingObjective
from ebt_vision.text.baseline import TransformerPlusPlusObjective
from ebt_vision.text.corpora import Document
from ebt_vision.text.generate import Sampling
from ebt_vision.text.objective import TextEBTObjective
from ebt_vision.text.system2 import think
from ebt_vision.text.tokenizer import BPETokenizer
from ebt_vision.video.dit import VideoDiTObjective
from ebt_vision.video.moving_mnist import digits_folder
from ebt_vision.video.objective import VideoObjective
from ebt_vision.video.plain import PlainVideoObjective
from ebt_vision.video.rollout import copy_last_frame
from tests.test_video import write_mjpeg_avi

TINY_VIDEO = {
    "task": "video",
    "name": "tiny-video",
    "model": {"patch_size": 4, "width": 16, "depth": 1, "heads": 2},
    "descent": {"num_steps": 2, "step_size": 5.0},
    "data": {"frames": 6, "context_frames": 3, "frame_size": 16, "test_clips": 4, "validation_clips": 4},
}
TINY_TEXT = {
    "task": "text",
    "model": {"width": 16, "depth": 1, "heads": 2, "vocab_size": 260, "context_length": 16},
    "data": {"vocab_size": 260, "seq_len": 16},
    "descent": {"step_size": 300.0},
}
needs_digits = pytest.mark.skipif(not (digits_folder() / "0.json").is_file(), reason="MNIST digits not unpacked")


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_video_checkpoints(folder: Path) -> dict[str, Path]:
    """Untrained tiny video EBT (with a non-zero energy head, so maps are not flat), plain transformer and DiT."""
    cfg = from_dict(TINY_VIDEO)
    ebt = VideoObjective(cfg)
    torch.nn.init.normal_(ebt.model.head.out.weight)
    models = {"ebt": ebt, "transformer": PlainVideoObjective(cfg), "dit": VideoDiTObjective(cfg)}
    return {kind: save_pretrained_folder(model, cfg, folder / f"video-{kind}") for kind, model in models.items()}


def tiny_text_checkpoints(folder: Path) -> dict[str, Path]:
    """Untrained tiny text EBT and Transformer++, each folder with the same small BPE tokenizer."""
    cfg = from_dict(TINY_TEXT)
    tokenizer = BPETokenizer.train([Document("speech", "The state of our Union is strong. " * 20)], 260)
    ebt = TextEBTObjective(cfg)
    torch.nn.init.normal_(ebt.model.head.weight)
    paths = {}
    for kind, model in (("ebt", ebt), ("transformer", TransformerPlusPlusObjective(cfg))):
        paths[kind] = save_pretrained_folder(model, cfg, folder / f"text-{kind}")
        tokenizer.save(paths[kind])
    return paths


@pytest.fixture(scope="module")
def video_paths(tmp_path_factory):
    return tiny_video_checkpoints(tmp_path_factory.mktemp("video"))


@pytest.fixture(scope="module")
def text_paths(tmp_path_factory):
    return tiny_text_checkpoints(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def video_tab(video_paths):
    # uploads meet the samples' EBT (''), whatever real-footage model the checkout ships (tested on its own below)
    return VideoTab(video_paths["ebt"], video_paths["transformer"], video_paths["dit"], "")


def write_avi(path: Path, frames: int) -> Path:
    """48x64 frames, as the video tests use: decord 0.6 fails to decode some sizes straight to 16 px (e.g. 32x96)."""
    rng = np.random.default_rng(0)
    return write_mjpeg_avi(path, (rng.random((frames, 48, 64, 3)) * 255).astype(np.uint8))


# --- library views ------------------------------------------------------------------------------------------------


def test_video_story_records_steps_maps_baselines_and_costs(video_paths):
    ebt = VideoObjective.from_pretrained(video_paths["ebt"]).eval()
    plain = PlainVideoObjective.from_pretrained(video_paths["transformer"]).eval()
    clip = torch.rand(6, 1, 16, 16) * 2 - 1
    baselines = {"copy-last": copy_last_frame, "transformer": plain.rollout}
    story = video_view.predict_story(ebt, clip[:3], 3, clip[3:], num_steps=3, best_of=2, baselines=baselines)
    assert story.steps.shape == (3, 4, 1, 16, 16) and story.energy_maps.shape == (3, 4, 4)
    assert torch.equal(story.steps[:, -1], story.ebt.predictions)  # the last step is the prediction
    assert np.allclose(story.energies, story.energy_maps.sum(dim=(1, 2)).tolist(), rtol=1e-4)
    assert (story.ebt.forward_passes, story.ebt.backward_passes) == (2 * 4, 2 * 3)  # best-of-2: 3 steps + final
    assert [c.name for c in story.baselines] == ["copy-last", "transformer"]
    assert len(story.ebt.psnrs) == 3 and all(len(c.psnrs) == 3 for c in story.baselines)
    strip = video_view.comparison_strip(story)
    assert strip.dtype == np.uint8 and strip.shape[2] == 3
    assert strip.shape[0] > 3 * video_view.TILE_SIDE  # truth, EBT and two baselines, each at least a tile high
    steps = video_view.steps_strip(story)
    assert steps.shape[0] > 5 * video_view.TILE_SIDE  # start, 3 steps and the truth
    maps = video_view.energy_map_frames(story)
    assert len(maps) == 3 and all(len(caption) <= 30 for _, caption in maps) and "t+1" in maps[0][1]
    figure = video_view.horizon_figure(story)
    assert len(figure.axes) == 2  # PSNR and energy
    legend = figure.axes[0].get_legend()
    assert len(legend.get_texts()) == 4  # EBT, copy-last, transformer and the energy line
    summary = video_view.story_summary(story)
    assert "8 forward + 6 backward passes per frame" in summary and "no network" in summary


def test_video_story_without_truth_and_bad_settings(video_paths):
    ebt = VideoObjective.from_pretrained(video_paths["ebt"]).eval()
    context = torch.rand(3, 1, 16, 16) * 2 - 1
    story = video_view.predict_story(ebt, context, 2)
    assert story.truth is None and story.ebt.psnrs is None
    with_truth = video_view.predict_story(ebt, context, 2, truth=context[:2])
    rows = video_view.steps_strip(with_truth).shape[0] - video_view.steps_strip(story).shape[0]
    assert rows == video_view.TILE_SIDE + 2 * video_view.BORDER  # the truth row only when the truth is known
    assert len(video_view.horizon_figure(story).axes) == 1  # energy alone
    for kwargs, message in (({"horizon": 0}, "horizon"), ({"num_steps": 0}, "steps"), ({"best_of": 9}, "best-of")):
        with pytest.raises(InputError, match=message):
            video_view.predict_story(ebt, context, **{"horizon": 2, **kwargs})
    with pytest.raises(InputError, match="holds 1 frames after the context"):
        video_view.predict_story(ebt, context, 2, truth=context[:1])


def test_video_uploads_are_read_limited_and_refused_clearly(tmp_path, monkeypatch):
    video = write_avi(tmp_path / "walk.avi", 8)
    clip, notes = video_view.load_video_upload(video, 6, 16, 1)
    assert clip.shape == (6, 1, 16, 16) and clip.min() >= -1 and clip.max() <= 1 and "frames 0-5 of 8" in notes[0]
    with pytest.raises(InputError, match="walk.avi has 8 frames"):  # too short: read_clip's message
        video_view.load_video_upload(video, 10, 16, 1)
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(InputError, match="broken.mp4"):
        video_view.load_video_upload(corrupt, 6, 16, 1)
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    with pytest.raises(InputError, match="not a video file"):
        video_view.load_video_upload(text, 6, 16, 1)
    monkeypatch.setattr(defaults, "APP_MAX_VIDEO_BYTES", 100)
    with pytest.raises(InputError, match="limit"):
        video_view.load_video_upload(video, 6, 16, 1)


def test_passes_per_token_are_the_descents_own(text_paths):
    """The summary's pass counts are what ``think`` runs for one token: S + 1 energies and S gradients per start."""
    ebt = TextEBTObjective.from_pretrained(text_paths["ebt"]).eval()
    tokenizer = BPETokenizer.load(text_paths["ebt"])
    story = continue_prompt(ebt, tokenizer, "The state", Sampling(max_new_tokens=3), Thinking(3, n_candidates=2))
    prediction = think(ebt, torch.tensor([tokenizer.encode("The state")]), Thinking(num_steps=3, n_candidates=2))
    trajectory = prediction.trajectory  # all N starts descend as one batch: passes of the batch
    assert story.ebt_passes == (3, 3 * 2 * trajectory.forward_passes, 3 * 2 * trajectory.backward_passes)
    assert "3 context encodings + 24 forward + 18 backward passes" in text_summary(story)


def test_tokens_are_coloured_by_energy_with_a_legend():
    page = energy_html("Hi <b>", ["a", " <x>", "\n", "z"], [0.0, 1.0, 2.0, 3.0])
    assert "Hi &lt;b&gt;" in page and "&lt;x&gt;" in page  # user text is escaped, never markup
    colours = re.findall(r"background:(#[0-9a-f]{6});color:(#[0-9a-f]{3})", page)
    assert len(colours) == 4 and len({c for c, _ in colours}) == 4  # one colour per energy
    assert colours[0][1] == "#000" and colours[-1][1] == "#fff"  # readable on pale and on dark backgrounds
    assert 'title="energy 3"' in page and "linear-gradient" in page and "uncertainty" in page
    with pytest.raises(ValueError, match="energies"):
        energy_html("p", ["a"], [])


# --- handlers -----------------------------------------------------------------------------------------------------


@needs_digits
def test_video_tab_handler_on_a_sample_and_an_upload(video_tab, tmp_path):
    assert "mmnist-test-0" in video_tab.samples and all(c.shape == (6, 1, 16, 16) for c in video_tab.samples.values())
    context, comparison, descent, maps, figure, summary = video_tab.run("mmnist-test-0", None, 3, 2, 1, 2, 0)
    assert all(a.dtype == np.uint8 and a.ndim == 3 for a in (context, comparison, descent)) and len(maps) == 3
    assert comparison.shape[0] > descent.shape[0] - video_tab.cfg.descent.num_steps * video_view.TILE_SIDE
    for name in ("mmnist-test-0", "EBT", "copy-last", "transformer", "DiT 2 DDIM", "mean PSNR", "test-split"):
        assert name in summary
    assert figure is not None
    upload = write_avi(tmp_path / "mine.avi", 5)
    out = video_tab.run("mmnist-test-0", str(upload), 2, 1, 1, 1, 0)  # the upload wins; 3 + 2 frames suffice
    assert "your upload mine.avi" in out[-1] and len(out[3]) == 2
    with pytest.raises(InputError, match="mine.avi has 5 frames"):
        video_tab.run("mmnist-test-0", str(upload), 3, 1, 1, 1, 0)
    with pytest.raises(InputError, match="pick a sample"):
        video_tab.run(None, None, 3, 2, 1, 2, 0)


def test_uploads_use_a_real_footage_ebt_when_one_is_shipped_else_say_so(video_tab, video_paths, tmp_path):
    upload = str(write_avi(tmp_path / "street.avi", 6))
    digits_only = VideoTab(video_paths["ebt"], video_paths["transformer"], video_paths["dit"], "")  # none for uploads
    summary = digits_only.run(None, upload, 2, 1, 1, 1, 0)[-1]
    assert "no real-footage video EBT is shipped" in summary and "transformer" in summary
    shipped = VideoTab(video_paths["ebt"], video_paths["transformer"], video_paths["dit"])  # finds the shipped one
    assert (
        "checkpoints/video-real-s" in shipped.upload_note and shipped.upload_objective.cfg.data.source == "real-clips"
    )
    real = VideoTab(video_paths["ebt"], video_paths["transformer"], video_paths["dit"], video_paths["ebt"])
    assert real.upload_objective is not real.objective
    summary = real.run(None, upload, 2, 1, 1, 1, 0)[-1]
    assert "uploads use the real-footage video EBT" in summary
    assert "copy-last" in summary and "**transformer**" not in summary  # the samples' baselines stay with them
    assert "**transformer**" in real.run("mmnist-test-0", None, 2, 1, 1, 1, 0)[-1]


def test_missing_or_mismatched_checkpoints_give_messages_not_failures(tmp_path, video_paths):
    message = open_video_tab(tmp_path / "nowhere")
    assert isinstance(message, str) and "nowhere" in message and "ebt-vision train --config" in message
    assert "--video-checkpoint" in message
    message = open_text_tab(tmp_path / "nowhere")
    assert isinstance(message, str) and "configs/text-cpu.yaml" in message and "--text-checkpoint" in message
    wrong = from_dict({**TINY_VIDEO, "data": {**TINY_VIDEO["data"], "frame_size": 32}})
    save_weights(PlainVideoObjective(wrong), wrong, tmp_path / "plain32.safetensors")
    tab = VideoTab(video_paths["ebt"], tmp_path / "plain32.safetensors", tmp_path / "no-dit")
    assert tab.transformer is None and tab.dit is None
    assert any("32 px frames" in note for note in tab.notes) and any("--video-dit-checkpoint" in n for n in tab.notes)
    assert not any("left out" in n for n in VideoTab(video_paths["ebt"], "", "").notes)  # '' leaves them out quietly


def test_text_tab_handler_and_bad_prompts(text_paths):
    tab = TextTab(text_paths["ebt"], text_paths["transformer"])
    ebt, baseline, summary = tab.run("The state of our Union is", 5, 0.0, 2, 1, 0)
    assert ebt.count('title="energy') == 5 and 'id="ebt-tokens"' in ebt
    assert 'id="transformer-tokens"' in baseline and "Transformer++" in summary and "5 tokens" in summary
    assert tab.run("The state of our Union is", 5, 0.0, 2, 1, 0)[0] == ebt  # greedy is deterministic
    for prompt, message in (("", "empty"), ("   ", "empty"), ("x" * 5000, "limit is 4000")):
        with pytest.raises(InputError, match=message):
            tab.run(prompt, 5, 0.0, 2, 1, 0)
    with pytest.raises(InputError, match="new tokens"):
        tab.run("hello", 0, 0.0, 2, 1, 0)
    alone = TextTab(text_paths["ebt"], Path(text_paths["ebt"]).parent / "missing")
    _, baseline, summary = alone.run("hello", 2, 0.0, 1, 1, 0)
    assert "No Transformer++ text baseline at" in baseline and "Transformer++" not in summary


def test_app_builds_with_all_tabs_or_their_messages(tmp_path, tiny_cfg, video_tab, text_paths):
    save_weights(DenoisingObjective(tiny_cfg), tiny_cfg, tmp_path / "ebt.safetensors")
    image = ImageTab(tmp_path / "ebt.safetensors", None)
    app = build_app(image, video_tab, TextTab(text_paths["ebt"], None))
    ids = {getattr(block, "elem_id", None) for block in app.blocks.values()}
    assert {"denoise-button", "video-button", "text-button", "video-summary", "text-summary"} <= ids
    app = build_app(image, open_video_tab(tmp_path / "none"), open_text_tab(tmp_path / "none"))
    ids = {getattr(block, "elem_id", None) for block in app.blocks.values()}
    assert {"video-unavailable", "text-unavailable"} <= ids and "video-button" not in ids


def test_step_sliders_start_at_the_counts_chosen_on_validation(video_paths, tmp_path):
    import shutil

    import gradio as gr

    from ebt_vision.app.video_tab import build_video_tab
    from ebt_vision.video.loading import write_chosen_steps

    folders = {kind: Path(shutil.copytree(video_paths[kind], tmp_path / kind)) for kind in ("ebt", "dit")}
    write_chosen_steps(folders["ebt"], 3, "4 validation clips, video_mmnist.md")
    write_chosen_steps(folders["dit"], 2, "4 validation clips, video_mmnist.md")
    tab = VideoTab(folders["ebt"], "", folders["dit"], "")
    assert tab.steps == (3, "chosen on 4 validation clips, video_mmnist.md") and tab.dit_steps[0] == 2
    plain = VideoTab(video_paths["ebt"], "", video_paths["dit"], "")  # no record: the configured counts
    assert plain.steps == (plain.cfg.descent.num_steps, "as configured") != tab.steps
    assert plain.dit_steps == (plain.dit.cfg.dit.sampling_steps, "as configured") != tab.dit_steps
    with gr.Blocks() as app:
        build_video_tab(tab)
    sliders = {block.elem_id: block for block in app.blocks.values() if getattr(block, "elem_id", None)}
    assert sliders["video-ebt-steps"].value == 3 and "chosen on 4 validation clips" in sliders["video-ebt-steps"].label
    assert sliders["video-dit-steps"].value == 2
    (folders["ebt"] / "chosen_steps.json").write_text('{"steps": 0}')  # damaged: a note, the configured count
    damaged = VideoTab(folders["ebt"], "", "", "")
    assert damaged.steps[0] == damaged.cfg.descent.num_steps and any("damaged" in n for n in damaged.notes)
