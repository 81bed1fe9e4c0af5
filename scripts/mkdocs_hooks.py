"""MkDocs hooks of the documentation site (``mkdocs.yml``): the committed reports become pages of the site, and
pages hold generated parts that cannot drift from the code or the reports:

- ``<!-- generated: cli -->``: the command-line reference, from the parser (``ebt_vision.cli.reference``);
- ``<!-- generated: config -->``: the configuration reference, from the config dataclasses;
- ``<!-- generated: headline -->``: the headline table, from ``reports/denoise_eval.json`` (as in the README);
- ``<!-- include: reports/NAME.md -->``: a report's text (its title and metadata list left out, its headings one
  level down, its pictures linked from the page's folder).
"""

from __future__ import annotations

import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

REPORT_FILES = ("*.md", "*.png", "*.gif")
INCLUDE = re.compile(r"<!-- include: (reports/[\w./-]+\.md) -->")


def on_files(files, config):
    """Every report (Markdown, its plots and GIFs, the archive's too) is served under ``reports/``."""
    for pattern in REPORT_FILES:
        for path in sorted((REPO / "reports").rglob(pattern)):
            uri = path.relative_to(REPO).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File(uri, str(REPO), config["site_dir"], config["use_directory_urls"]))
    return files


def _included(uri: str, page_uri: str) -> str:
    """A report's body as part of the page at ``page_uri``."""
    text = (REPO / uri).read_text()
    body = [line for line in text.splitlines() if not line.startswith("# ") and not line.startswith("- **")]
    folder = posixpath.dirname(uri)
    here = posixpath.dirname(page_uri)

    def link(match: re.Match) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:|^#|^/", target):
            return match.group(0)
        return f"{match.group(1)}({posixpath.relpath(posixpath.join(folder, target), here or '.')})"

    out = "\n".join(("#" + line) if line.startswith("#") else line for line in body).strip()
    return re.sub(r"(!?\[[^\]]*\])\(([^)\s]+)\)", link, out)


def on_page_markdown(markdown, page, config, files):
    if "<!-- generated: cli -->" in markdown:
        from ebt_vision.cli.reference import cli_reference

        markdown = markdown.replace("<!-- generated: cli -->", cli_reference())
    if "<!-- generated: config -->" in markdown:
        from ebt_vision.core.config_docs import config_reference

        markdown = markdown.replace("<!-- generated: config -->", config_reference())
    if "<!-- generated: headline -->" in markdown:
        from ebt_vision.experiments.headline import headline_table

        markdown = markdown.replace("<!-- generated: headline -->", headline_table(REPO / "reports"))
    return INCLUDE.sub(lambda m: _included(m.group(1), page.file.src_uri), markdown)
