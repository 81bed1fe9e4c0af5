"""Rewrite the README's headline table from reports/denoise_eval.json (ebt_vision.experiments.headline).

python scripts/readme-table.py           rewrite it in place
python scripts/readme-table.py --check   exit 1 when the README's table differs from the report
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ebt_vision.experiments.headline import readme_with_table  # noqa: E402


def main(argv: list[str]) -> int:
    readme = REPO / "README.md"
    text = readme.read_text()
    updated = readme_with_table(text, REPO / "reports")
    if "--check" in argv:
        if updated != text:
            print("README.md's headline table differs from reports/denoise_eval.json: python scripts/readme-table.py")
            return 1
        return 0
    if updated != text:
        readme.write_text(updated)
        print("README.md: headline table rewritten from reports/denoise_eval.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
