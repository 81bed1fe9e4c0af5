"""Upper bounds on the sizes a config may ask for, checked with the rest of a config before anything is built.

A config arrives from a YAML file, but also from a model folder's ``config.json`` or a weights file's metadata, which
anyone may have edited: ``model.width: 1048576`` or ``model.depth: 100000`` would otherwise try to allocate terabytes,
or loop for hours building blocks, before any error. The bounds sit far above anything this project trains (GPT-3's
trunk is 12,288 wide and 96 deep) and far below what exhausts a machine.

Sizes are found by their field name in any section (``model.width``, ``data.crop_size``), so each workload's own sizes
are bounded without the core importing its config.
"""

from __future__ import annotations

from typing import Any

# The largest value of a setting, by field name, whatever its section.
MAX_SIZE: dict[str, int] = {
    "width": 65_536,
    "depth": 1_024,
    "heads": 1_024,
    "mlp_ratio": 64,
    "channels": 64,
    "patch_size": 1_024,
    "vocab_size": 4_194_304,
    "context_length": 1_048_576,
    "seq_len": 1_048_576,
    "crop_size": 16_384,
    "frame_size": 16_384,
    "frames": 65_536,
}
# The weights a model may hold (float32: 16 GiB), estimated from the sizes before it is built.
MAX_WEIGHTS = 2**32


def estimated_weights(values: dict[str, Any]) -> int:
    """About how many numbers the model of a config (as ``to_dict`` gives it) allocates: its blocks (attention 4 W^2,
    MLP 2 r W^2, adaLN 6 W^2 each), token embedding and unembedding, patch embedding, and a position table."""
    model, data = values.get("model") or {}, values.get("data") or {}
    width, depth, ratio = model.get("width", 0), model.get("depth", 0), model.get("mlp_ratio", 0.0)
    patch = max(1, model.get("patch_size", 1))
    side = max(data.get("crop_size", 0), data.get("frame_size", 0)) // patch
    positions = max(model.get("context_length", 0), side * side * max(1, data.get("frames", 1)))
    pixels = 2 * model.get("channels", 0) * patch * patch
    per_token = 2 * model.get("vocab_size", 0) + pixels + positions
    return int(depth * (10 + 2 * ratio) * width * width + per_token * width)


def size_problem(values: dict[str, Any], where: str = "") -> str | None:
    """Why a config (as ``to_dict`` gives it) asks for more than these bounds allow (None when it does not)."""
    for key, value in values.items():
        name = f"{where}.{key}".lstrip(".")
        if isinstance(value, dict):
            problem = size_problem(value, name)
            if problem:
                return problem
        elif key in MAX_SIZE and isinstance(value, (int, float)) and value > MAX_SIZE[key]:
            return f"{name} = {value} is above the limit of {MAX_SIZE[key]:,} (ebt_vision.core.limits)"
    if where:
        return None
    weights = estimated_weights(values)
    if weights > MAX_WEIGHTS:
        return (
            f"the model would hold about {weights:.2e} weights, above the limit of {MAX_WEIGHTS:.2e} "
            "(16 GiB of float32; ebt_vision.core.limits): lower model.width, model.depth or the vocabulary/image size"
        )
    return None
