"""The documentation's links hold: every relative link in README.md, CHANGELOG.md and docs/*.md reaches a file
and, with a #fragment, an anchor in it; every `docs/<page>.md#<anchor>` cited in code and config resolves the same
way; and the README stays a front door (at most 300 lines)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]

README_MAX_LINES = 300
CODE_PATTERNS = ["*.py", "*.sbatch", "*.sh", "Makefile", "config.yml", "pytest.ini"]

MARKDOWN_LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
EXPLICIT_ANCHOR = re.compile(r"""<a\b[^>]*?\b(?:id|name)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
FENCE = re.compile(r"^ {0,3}(```|~~~)")
CODE_CITATION = re.compile(r"\bdocs/([A-Za-z0-9_.-]+\.md)#([A-Za-z0-9_-]+)")


def tracked(*patterns: str) -> list[Path]:
    """The tracked files matching git pathspecs (the index, so new files count once they are added)."""
    out = subprocess.run(["git", "ls-files", "--", *patterns], cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [PROJECT_ROOT / line for line in out.splitlines() if line]


def doc_files() -> list[Path]:
    files = {PROJECT_ROOT / "README.md", PROJECT_ROOT / "CHANGELOG.md", *(PROJECT_ROOT / "docs").glob("*.md")}
    files.update(path for path in tracked("docs/*.md", "README.md", "CHANGELOG.md"))
    return sorted(path for path in files if path.is_file())


def without_code(text: str) -> list[str]:
    """The lines of a Markdown text outside fenced code blocks, with inline code spans blanked out."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return lines


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation other than '-' and '_' dropped, spaces to
    '-'."""
    text = re.sub(r"<[^>]+>", "", heading)                      # inline HTML
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)      # links keep their text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)                        # \w keeps letters (also non-ASCII), digits, _
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: explicit <a id/name> tags and heading slugs (duplicates get -1, -2)."""
    text = path.read_text(encoding="utf-8")
    found = set(EXPLICIT_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            slug = github_slug(match.group(2))
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link that is not an absolute URL or a mail address."""
    links = []
    for number, line in enumerate(without_code(path.read_text(encoding="utf-8")), start=1):
        for target in MARKDOWN_LINK.findall(line) + HTML_LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("//"):
                continue
            links.append((number, target))
    return links


def problem(source: Path, target: str) -> str | None:
    """Why a relative link from `source` does not resolve, or None when it does."""
    file_part, _, fragment = target.partition("#")
    destination = (source.parent / unquote(file_part)).resolve() if file_part else source
    if not destination.exists():
        return f"{destination.relative_to(PROJECT_ROOT) if destination.is_relative_to(PROJECT_ROOT) else destination}"\
               " does not exist"
    if fragment:
        if destination.is_dir() or destination.suffix.lower() != ".md":
            return f"#{fragment} points into {destination.name}, which is not a Markdown file"
        if unquote(fragment) not in anchors(destination):
            return f"{destination.relative_to(PROJECT_ROOT)} has no anchor #{fragment}"
    return None


def test_the_docs_are_found():
    names = {path.relative_to(PROJECT_ROOT).as_posix() for path in doc_files()}
    assert {"README.md", "CHANGELOG.md", "docs/differences.md"} <= names


@pytest.mark.parametrize("path", doc_files(), ids=lambda path: path.relative_to(PROJECT_ROOT).as_posix())
def test_every_relative_link_resolves(path):
    broken = [f"{path.relative_to(PROJECT_ROOT)}:{line}: ({target}) {why}"
              for line, target in relative_links(path) if (why := problem(path, target))]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_every_docs_citation_in_code_and_config_resolves():
    broken, cited = [], 0
    for path in tracked(*CODE_PATTERNS):
        if not path.is_file():
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
            for page, fragment in CODE_CITATION.findall(line):
                cited += 1
                target = f"{page}#{fragment}"
                why = problem(PROJECT_ROOT / "docs" / "index", target)  # resolved as from a file inside docs/
                if why:
                    broken.append(f"{path.relative_to(PROJECT_ROOT)}:{number}: docs/{target}: {why}")
    assert not broken, "citations of the docs that do not resolve:\n" + "\n".join(broken)


def test_readme_is_a_front_door():
    lines = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_the_checks_catch_what_they_should(tmp_path):
    """The resolver itself: a heading slug, an explicit anchor, a missing file and a missing anchor."""
    page = PROJECT_ROOT / "docs" / "differences.md"
    assert problem(page, "differences.md#thresholds-on-validation") is None
    assert problem(page, "#thresholds-on-validation") is None
    assert problem(page, "no-such-page.md") is not None
    assert problem(page, "differences.md#no-such-anchor") is not None
    assert github_slug("Step 3: `deep_fake_detect.py`") == "step-3-deep_fake_detectpy"
    assert github_slug("The app's speed, precision and memory") == "the-apps-speed-precision-and-memory"
    assert relative_links_of("see [x](a.md#b), ![p](i.png), `[not](c.md)`, [web](https://x.org)", tmp_path) == \
        ["a.md#b", "i.png"]


def relative_links_of(text: str, folder: Path) -> list[str]:
    path = folder / "page.md"
    path.write_text(text, encoding="utf-8")
    return [target for _, target in relative_links(path)]
