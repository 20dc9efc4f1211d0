"""The README and docs/ link only inside the repository (or to upstream projects by URL):
every relative link names a file that is there, and none climbs out of the checkout."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def relative_links(page: Path) -> list[str]:
    return [
        target
        for target in LINK.findall(page.read_text(encoding="utf-8"))
        if not re.match(r"[a-z]+:", target) and not target.startswith("#")
    ]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_name_files_in_the_repository(page: Path) -> None:
    for target in relative_links(page):
        path = (page.parent / target.split("#", 1)[0]).resolve()
        assert path.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert path.exists(), f"{page.name} links to {target}, which is not there"


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {Path(t).name for t in relative_links(ROOT / "README.md")}
    pages = {p.name for p in PAGES[1:]}
    assert pages - linked == set(), "README.md has no link to these pages of docs/"
