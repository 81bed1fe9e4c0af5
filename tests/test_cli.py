"""The command line as a new user meets it (issue 26): several overrides after one --set, --help that states each
default once and only when it says something, --threads on every command, a start-up that imports no heavy package
before a command needs it, one statement of the Quick start's size and time, and the CLI reference generated from
the parser."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ebt_vision.cli import main
from ebt_vision.cli.parser import COMMANDS, build_parser

REPO = Path(__file__).resolve().parents[1]
NAMES = [name for name, *_ in COMMANDS]


def _subparser(name: str):
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices[name]


@pytest.mark.parametrize("command", ["train", "compare", "quickstart", "ablate", "video", "text", "probe", "paper"])
def test_set_takes_several_pairs_and_repeats(command):
    args = build_parser().parse_args([command, "--set", "train.steps=5", "data.batch_size=4", "--set", "seed=1"])
    assert args.set == ["train.steps=5", "data.batch_size=4", "seed=1"]
    assert build_parser().parse_args([command]).set == []


@pytest.mark.parametrize("name", NAMES)
def test_help_states_each_default_once_and_only_when_it_says_something(name):
    text = _subparser(name).format_help()
    flat = re.sub(r"\s+", " ", text)
    for bad in ("(default: None)", "(default: )", "(default: True)", "(default: False)", "(default: [])"):
        assert bad not in flat, f"{name} --help shows {bad}"
    for option in re.split(r"\n  (?=-)", text):  # one option's help at a time
        assert not re.search(r"default[^)]*\)\s*\(default:", option), f"{name}: a default stated twice: {option}"
    assert "--threads" in text


def test_required_output_shows_no_default():
    text = re.sub(r"\s+", " ", _subparser("denoise").format_help())
    assert re.search(r"--output OUTPUT output folder(?! \(default)", text)


def test_threads_option_sets_torch_threads(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    before, omp = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    try:
        # an input refused from its header: the command ends before any model loads, --threads already applied
        assert main(["denoise", str(tmp_path / "empty.png"), "-o", str(tmp_path / "out"), "--threads", "1"]) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp


def _imported_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    return set(done.stdout.split())


def test_start_up_imports_no_heavy_package():
    """`ebt-vision --help` and parsing any command import neither torch nor the heavy packages; the EBT denoise path
    does not import diffusers (the DiT's), gradio, decord or tokenizers."""
    parsed = _imported_after("from ebt_vision.cli.parser import build_parser\nbuild_parser().parse_args(['demo'])")
    assert not parsed & {"torch", "diffusers", "gradio", "decord", "tokenizers", "timm"}
    denoise = _imported_after("import ebt_vision.image.denoise_files, ebt_vision.image.objective")
    assert not denoise & {"diffusers", "gradio", "decord", "tokenizers"}


def _minutes_and_models(text: str) -> tuple[str, str]:
    flat = re.sub(r"\s+", " ", text)
    minutes = re.search(r"about (\d+) minutes", flat)
    models = re.search(r"\b(three|four|five) ~?0\.16M-parameter", flat, re.IGNORECASE)
    assert minutes and models, flat[:500]
    return minutes.group(1), models.group(1).lower()


def test_quickstart_size_and_time_are_stated_the_same_everywhere():
    """--help, configs/quickstart.yaml and the README said ~12 min, about 10 minutes with three models, and four
    models in 644 s."""
    statements = {
        "quickstart --help": _minutes_and_models(_subparser("quickstart").format_help()),
        "configs/quickstart.yaml": _minutes_and_models((REPO / "configs" / "quickstart.yaml").read_text()),
        "README.md": _minutes_and_models((REPO / "README.md").read_text()),
    }
    assert len(set(statements.values())) == 1, statements


def test_cli_reference_documents_every_option_of_every_command_once():
    from ebt_vision.cli.reference import cli_reference

    text = cli_reference()
    for name in NAMES:
        section = text.split(f"## `ebt-vision {name}`", 1)[1].split("\n## ", 1)[0]
        for action in _subparser(name)._actions:
            if action.option_strings and action.dest != "help":
                pattern = rf"`{re.escape(action.option_strings[0])}[ `,]"
                assert len(re.findall(pattern, section)) == 1, (name, action.option_strings)
