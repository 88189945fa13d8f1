"""Every relative link in README.md and docs/*.md points to a file that exists (and, where it
names a heading, to a heading of that file): the README is short and sends the reader to docs/,
so a page moved or renamed must not leave a dead link behind."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: `[text](target)` and `![alt](target)`, the target up to a space (an optional title) or `)`.
_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, inline code spans blanked."""
    lines, fence = [], ""
    for line in text.splitlines():
        match = _FENCE.match(line)
        if match and (not fence or line.strip().startswith(fence)):
            fence = "" if fence else match.group(1)
            continue
        if not fence:
            lines.append(re.sub(r"`[^`]*`", "``", line))
    return lines


def _anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if _FENCE.match(line):
            fence = not fence
            continue
        heading = None if fence else _HEADING.match(line)
        if heading is None:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading.group(2).lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _links(page: Path) -> list[str]:
    return [m.group(1) for line in _prose(page.read_text(encoding="utf-8")) for m in _LINK.finditer(line)]


def test_the_pages_are_found() -> None:
    assert len(PAGES) > 5, PAGES
    assert any(_links(page) for page in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(page: Path) -> None:
    dead = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        where, _, anchor = target.partition("#")
        file = (page.parent / where).resolve() if where else page
        if not file.exists():
            dead.append(f"{target}: no such file {file}")
        elif not file.is_relative_to(ROOT):
            dead.append(f"{target}: outside the repository")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            dead.append(f"{target}: no heading #{anchor} in {file.relative_to(ROOT)}")
    assert not dead, f"{page.relative_to(ROOT)}: " + "; ".join(dead)


def test_no_page_names_a_path_outside_the_repository() -> None:
    """The docs stand on their own: no page sends the reader to a file outside the checkout."""
    outside = [
        f"{page.relative_to(ROOT)}: {line.strip()}"
        for page in PAGES
        for line in page.read_text(encoding="utf-8").splitlines()
        if re.search(r"/work/shared|\.\./shared/", line)
    ]
    assert not outside, outside
