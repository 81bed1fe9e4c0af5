"""Finding the project's own files (shipped checkpoints, configs) wherever a command runs."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UserError

# The checkout the package runs from (an editable install or the repository itself).
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def resolve_path(path: str | Path, what: str = "file", error: type[UserError] = UserError) -> Path:
    """``path`` as given (absolute, or relative to the working directory), else relative to the project checkout:
    ``checkpoints/ebt-image-s`` and ``configs/quickstart.yaml`` work from any directory."""
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute():
        return path
    shipped = PROJECT_ROOT / path
    if shipped.exists():
        return shipped
    raise error(f"{what} not found: {path} (looked in {Path.cwd()} and in {PROJECT_ROOT})")


def data_root() -> Path:
    """Where ``scripts/fetch-data.sh`` unpacks the real data: ``$EBT_VISION_DATA``, else ``<checkout>/data``."""
    return Path(os.environ.get("EBT_VISION_DATA", PROJECT_ROOT / "data"))


def debian_file(path: str) -> Path | None:
    """A file or folder of a Debian package: where the package installed it (``/usr/share/...``), else where
    ``scripts/fetch-data.sh`` unpacked it; None when neither has it."""
    for candidate in (Path("/") / path, data_root() / "debian" / path):
        if candidate.exists():
            return candidate
    return None
