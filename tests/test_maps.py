"""Energy maps readable as uncertainty (issue 26): colour-bar labels that differ however narrow the range, and a
plain note when the spread is too small to mean anything."""

from __future__ import annotations

import torch

from ebt_vision.app.text_view import energy_html
from ebt_vision.core.maps import distinct_labels, range_labels, render_map, spread_note


def test_colour_bar_labels_are_distinct_on_a_narrow_range():
    labels = range_labels(-1.1012, -1.0998, 3)  # the video tab read -1.1 / -1.1 / -1.1
    assert len(set(labels)) == 3 and labels[0] == "-1.0998" and labels[-1] == "-1.1012"
    assert range_labels(0.0, 100.0, 3) == ["100", "50", "0"]
    assert len(set(distinct_labels([-2565.71, -2597.66, -2598.61]))) == 3
    assert len(set(distinct_labels([-1.10123, -1.10127, -1.1019]))) == 3


def test_a_negligible_spread_is_said_plainly():
    flat = -1.1 + 1e-5 * torch.rand(8, 8)
    assert "too small to mean anything" in spread_note(flat, "per-patch energies")
    assert spread_note(torch.linspace(-2, 2, 64).reshape(8, 8), "per-patch energies") is None
    picture = render_map(flat, "energy")  # still drawn, with labels that differ
    assert picture.ndim == 3 and picture.shape[2] == 3
    text = energy_html("A prompt", ["a", "b", "c"], [0.50001, 0.50002, 0.50003])
    assert "too small to mean anything" in text and "of the energy's size" in text
