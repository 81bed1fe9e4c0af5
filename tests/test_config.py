from __future__ import annotations

import pytest

from ebt_vision.core.config import ConfigError, dump_yaml, from_dict, load_config
from ebt_vision.image.config import PRESETS


def test_scientific_notation_is_read_as_float(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 3e-4\n")
    cfg = load_config(path)
    assert cfg.optim.lr == pytest.approx(3e-4) and isinstance(cfg.optim.lr, float)


def test_unknown_keys_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="learning_rate"):
        load_config(path)
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict({"modle": {}})


@pytest.mark.parametrize(
    "values, message",
    [
        ({"train": {"steps": "many"}}, "integer"),
        ({"train": {"steps": 2.5}}, "integer"),
        ({"descent": {"learn_step_size": "yes"}}, "true/false"),
        ({"optim": {"lr": "fast"}}, "number"),
        ({"model": 3}, "mapping"),
        ({"optim": {"betas": [0.9]}}, "list of 2"),
    ],
)
def test_wrong_types_are_rejected(values, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(values)


@pytest.mark.parametrize(
    "values",
    [
        {"descent": {"num_steps": 0}},
        {"descent": {"step_size": -1.0}},
        {"model": {"width": 30, "heads": 4}},
        {"data": {"crop_size": 30}},
        {"data": {"sigma_min": 60, "sigma_max": 50}},
        {"model": {"attention": "flash"}},
        {"train": {"grad_accumulation": 0}},
        {"train": {"compile": True}, "descent": {"checkpoint_steps": True}},
    ],
)
def test_out_of_range_settings_are_rejected(values):
    with pytest.raises(ConfigError):
        from_dict(values)


def test_overrides_presets_and_round_trip(tmp_path):
    cfg = load_config(None, ["preset=EBT-M/4", "descent.num_steps=3", "optim.lr=1e-3"])
    assert cfg.model.width == PRESETS["EBT-M/4"]["width"] and cfg.descent.num_steps == 3
    assert cfg.optim.lr == pytest.approx(1e-3)
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_yaml(cfg))
    assert load_config(path) == cfg
    with pytest.raises(ConfigError, match="preset"):
        from_dict({"preset": "EBT-XXL"})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
