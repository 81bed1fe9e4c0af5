"""The documentation (issue 26): a short README whose headline table is the report's, and a MkDocs site that builds
strictly (no broken links or references) and renders in a real browser (headless Chromium, as the app's browser
test drives it)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ebt_vision.experiments.headline import BEGIN, END, headline_table, readme_with_table

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

try:
    import mkdocs  # noqa: F401
    import mkdocstrings  # noqa: F401
except ImportError:  # pragma: no cover - depends on the environment
    mkdocs = None


def test_readme_is_a_front_door():
    assert len(README.splitlines()) <= 300
    for must in ("## Quick start", "mkdocs serve", "docs/", "reports/denoise_eval"):
        assert must in README, must


def test_readme_headline_table_is_the_reports():
    """The README's headline table is generated from reports/denoise_eval.json (python scripts/readme-table.py)."""
    assert BEGIN in README and END in README
    assert readme_with_table(README, REPO / "reports") == README, "run python scripts/readme-table.py"
    assert headline_table(REPO / "reports") in README


def test_headline_dit_steps_are_chosen_on_validation_not_test(tmp_path):
    """The headline's DiT column quotes the test PSNR of the step count that was best on the validation photos, even
    where another step count did better on test."""
    import json

    def row(split, method, steps, psnr):
        return {"eval_split": split, "method": method, "sigma": 25.0, "split": "id", "steps": steps, "psnr": psnr,
                "ssim": 0.5}  # fmt: skip

    test = [row("test", "noisy", 0, 20.0), row("test", "cbm3d", 0, 33.0), row("test", "ebt_auto", 2, 30.0),
            row("test", "dit_ddim", 1, 31.0), row("test", "dit_ddim", 5, 32.0)]  # fmt: skip
    validation = [row("validation", "dit_ddim", 1, 29.5), row("validation", "dit_ddim", 5, 29.0)]
    (tmp_path / "denoise_eval.json").write_text(json.dumps({"rows": test}))
    (tmp_path / "denoise_eval_validation.json").write_text(json.dumps({"rows": validation}))
    line = headline_table(tmp_path).splitlines()[2]
    assert "31.00 / 0.500 (1 steps)" in line and line.endswith("| -1.00 dB |"), line


def test_python_api_examples_run(tmp_path, monkeypatch, one_thread):
    """The Python API guide's example and the README's denoise lines run as written (on a small photo), so a changed
    signature cannot leave them behind."""
    from PIL import Image
    from skimage import data

    guide = (REPO / "docs" / "guides" / "python-api.md").read_text()
    code = re.search(r"```python\n(.*?)```", guide, re.S).group(1).replace("model.push_to_hub", "#")
    monkeypatch.chdir(tmp_path)
    Image.fromarray(data.astronaut()[:64, :64]).save("photo.png")
    found: dict = {}
    exec(code, found)
    assert len(found["trajectory"].candidates) == 5 and found["energy_map"].shape == (1, 16, 16)
    start = README.index("from ebt_vision.core.inference import Thinking")
    readme: dict = {"noisy": found["noisy"]}
    exec(README[start : README.index("```", start)], readme)
    assert len(readme["trajectory"].candidates) == 5


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if mkdocs is None:
        pytest.skip("mkdocs/mkdocstrings not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    started = time.perf_counter()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=REPO,
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    print(f"mkdocs build --strict: {time.perf_counter() - started:.1f} s")
    return out


def test_site_builds_strictly_with_generated_pages(site):
    cli = (site / "cli.html").read_text()
    from ebt_vision.cli.parser import COMMANDS

    for name, *_ in COMMANDS:
        assert f"ebt-vision {name}" in cli
    assert "--threads" in cli and "descent.num_steps" in (site / "guides" / "configuration.html").read_text()
    assert "minimize_energy" in (site / "api" / "core.html").read_text()  # the API reference from the docstrings
    assert (site / "reports" / "denoise_eval.html").is_file() and (site / "reports" / "denoise_eval.png").is_file()


def test_site_in_a_real_browser(site, tmp_path):
    from tests.test_app_browser import CHROMIUM, sync_playwright

    if CHROMIUM is None or sync_playwright is None:
        pytest.skip("Chromium or playwright not installed")
    folders = [tmp_path] + ([Path(os.environ["EBT_SCREENSHOT_DIR"])] if os.environ.get("EBT_SCREENSHOT_DIR") else [])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        for name, url, expected in (
            ("docs-home", "index.html", "Where the EBT stands"),
            ("docs-guide", "guides/denoise.html", "Denoise your photos"),
        ):
            page.goto((site / url).as_uri(), wait_until="load")
            page.get_by_role("heading", name=expected).first.wait_for(timeout=30_000)
            assert page.locator("nav").get_by_text("Guides").first.is_visible()
            broken = page.evaluate("[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            assert broken == 0, f"{url}: {broken} pictures did not load"
            if name == "docs-home":
                assert page.locator("table").first.get_by_text("CBM3D").count() >= 1  # the generated headline table
            for folder in folders:
                folder.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(folder / f"{name}.png"), full_page=True)
            assert (tmp_path / f"{name}.png").stat().st_size > 30_000
        browser.close()
