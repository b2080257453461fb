"""A reader of the repository can open everything it cites: no file cites the developer-only research notes or
a folder outside the repository, and every "docs/<page>.md §N" citation names a page and a numbered section that
exist."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
OUTSIDE = re.compile(r"research/[\w-]+\.md|research[ \n]+(?:notes, )?[\w-]+\.md|\.\./shared\b|/work/shared\b"
                     r"|shared/(?:research|data|spec)\b")
CITATION = re.compile(r"docs/([\w-]+\.md)")
SECTION = r"§(\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?"
FIRST_SECTION = re.compile(r"`?[ \t]*\n?[ \t]*(?:#[ \t]*)?" + SECTION)
NEXT_SECTION = re.compile(r",[ \t]*\n?[ \t]*" + SECTION)


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if listed.returncode != 0 or not listed.stdout:
        pytest.skip("not a git checkout")
    files = []
    for name in listed.stdout.split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.resolve() != THIS and not name.startswith("sharingan/data/splits/"):
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


def _numbered_sections(page: Path) -> set[str]:
    """Section numbers of a docs page: headings like `## 3. KITTI` or `### 2.4 Attention pool`."""
    return set(re.findall(r"^#{2,4} (\d+(?:\.\d+)?)[. ]", page.read_text(encoding="utf-8"), re.MULTILINE))


def test_nothing_cites_the_research_notes_or_folders_outside_the_repository():
    offenders = []
    for path in _tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    # a citation broken over two lines ("research" at a line end)
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(r"research\s*\n\s*(?:#\s*)?[\w-]+\.md", text):
            offenders.append(f"{path.relative_to(ROOT)}: {match[0]!r}")
    assert not offenders, "\n".join(offenders)


def test_every_docs_citation_names_an_existing_page_and_section():
    broken, checked = [], 0
    for path in _tracked_text_files():
        text = path.read_text(encoding="utf-8")
        for match in CITATION.finditer(text):
            page = ROOT / "docs" / match[1]
            where = f"{path.relative_to(ROOT)}: docs/{match[1]}"
            first = FIRST_SECTION.match(text, match.end())
            if first is None:  # a page named without a section (may be an output path, e.g. a published report)
                continue
            if not page.is_file():
                broken.append(f"{where}: no such page")
                continue
            sections, numbers, end = _numbered_sections(page), [first.groups()], first.end()
            while (more := NEXT_SECTION.match(text, end)):
                numbers.append(more.groups())
                end = more.end()
            for low, high in numbers:
                checked += 1
                for number in filter(None, (low, high)):
                    if number not in sections:
                        broken.append(f"{where} §{number}: no such section (has {sorted(sections)})")
    assert checked > 50  # the scan does find the citations
    assert not broken, "\n".join(broken)


def test_the_reference_pages_are_numbered_as_cited():
    for name in ("ref-sharingan.md", "ref-ldznet.md", "formats.md", "protocols.md"):
        sections = _numbered_sections(ROOT / "docs" / name)
        assert len(sections) >= 6, (name, sections)
