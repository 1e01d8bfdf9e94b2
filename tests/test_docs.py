"""The repository's documents point only at what the repository holds: every relative Markdown
link (and its #anchor) resolves, and every file path quoted in code (`shared/kafka.py`,
`../Dockerfile`) names a file or folder inside the repository."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Paths that exist only once something ran (`make run`, `make app`) or on the reader's machine.
GENERATED = ("var/", "services/ticketing/webapp/dist/", "test-artifacts/", ".venv/", ".env")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
FENCE = re.compile(r"^\s*(```|~~~)")
# A code span that is a file path: a folder and a name, or a name with a document/code suffix.
PATH_LIKE = re.compile(
    r"^(\.\./)*[\w.\-]+(/[\w.\-]+)*/?$"
    r"|^[\w.\-]+\.(md|py|ya?ml|toml|json|sql|txt|js|html|css|sh|cfg|ini)$"
)
SUFFIXES = (".md", ".py", ".yml", ".yaml", ".toml", ".json", ".sql", ".txt", ".js", ".sh")


def _documents() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


def _prose(document: Path) -> list[tuple[int, str]]:
    """(line number, text) outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(document.read_text().splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchors(document: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered."""
    seen: dict[str, int] = {}
    found = set()
    for _, line in _prose(document):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))  # a link's text
        slug = re.sub(r"[^\w\- ]", "", text.replace("`", "").strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _inside(path: Path) -> bool:
    return path.resolve().is_relative_to(ROOT)


def link_problem(document: Path, target: str) -> str | None:
    """Why a relative link does not resolve inside the repository (None when it does)."""
    if re.match(r"^[a-z][a-z0-9+.\-]*:", target, re.IGNORECASE):
        return None  # https:, mailto: … (not a file of the repository)
    name, _, anchor = target.partition("#")
    path = (document.parent / unquote(name)).resolve() if name else document
    if not _inside(path):
        return f"{target}: outside the repository"
    if not path.exists():
        return f"{target}: no such file"
    if anchor and path.suffix == ".md" and anchor.lower() not in anchors(path):
        return f"{target}: {path.relative_to(ROOT)} has no heading #{anchor}"
    return None


def path_problem(document: Path, span: str) -> str | None:
    """Why a quoted path is not in the repository (None when it is, or is no path of it).

    A span is taken for a path of the repository when it climbs (`../x`, from the document),
    ends with a file suffix, or starts with a folder the repository has (`shared/`, `docs/`), as
    seen from its root or from the document; `apache/kafka` or `GET /v1/keys` are not."""
    if not PATH_LIKE.match(span):
        return None
    relative = span.startswith("../")
    bases = (document.parent,) if relative else (ROOT, document.parent)
    first = span.removeprefix("./").split("/")[0]
    if not (relative or span.endswith(SUFFIXES) or any((b / first).is_dir() for b in bases)):
        return None
    if "/" not in span:
        # A bare file name (`settings.py`, `README.md`): somewhere in the repository.
        return None if any(ROOT.glob(f"**/{span}")) else f"`{span}`: no such file"
    for base in bases:
        path = (base / span).resolve()
        if not _inside(path):
            return f"`{span}`: outside the repository"
        if path.exists() or f"{path.relative_to(ROOT)}/".startswith(GENERATED):
            return None
    return f"`{span}`: no such file or folder"


def _problems(document: Path) -> list[str]:
    problems = []
    for number, line in _prose(document):
        without_code = CODE_SPAN.sub("", line)
        for target in LINK.findall(without_code):
            if (problem := link_problem(document, target)) is not None:
                problems.append(f"{document.relative_to(ROOT)}:{number}: {problem}")
        for span in CODE_SPAN.findall(line):
            if (problem := path_problem(document, span.strip())) is not None:
                problems.append(f"{document.relative_to(ROOT)}:{number}: {problem}")
    return problems


def test_the_readme_and_docs_are_checked() -> None:
    names = {str(document.relative_to(ROOT)) for document in _documents()}
    assert {"README.md", "docs/architecture.md", "docs/benchmarks.md"} <= names


@pytest.mark.parametrize("document", _documents(), ids=lambda d: str(d.relative_to(ROOT)))
def test_every_relative_link_resolves_inside_the_repository(document: Path) -> None:
    assert _problems(document) == []


class TestTheChecker:
    """The checker itself, on documents written for it."""

    def test_a_link_out_of_the_repository_is_refused(self, tmp_path: Path) -> None:
        assert link_problem(ROOT / "README.md", "../shared/DESIGN.md") == (
            "../shared/DESIGN.md: outside the repository"
        )
        assert path_problem(ROOT / "README.md", "../shared/STYLE.md") == (
            "`../shared/STYLE.md`: outside the repository"
        )

    def test_a_missing_file_or_heading_is_refused(self) -> None:
        readme = ROOT / "README.md"
        assert link_problem(readme, "docs/nowhere.md") == "docs/nowhere.md: no such file"
        assert link_problem(readme, "docs/architecture.md#no-such-heading") == (
            "docs/architecture.md#no-such-heading: docs/architecture.md has no heading "
            "#no-such-heading"
        )
        assert path_problem(readme, "shared/nowhere.py") == (
            "`shared/nowhere.py`: no such file or folder"
        )

    def test_what_resolves_is_accepted(self) -> None:
        infra = ROOT / "infra" / "README.md"
        assert link_problem(ROOT / "README.md", "infra/README.md") is None
        assert link_problem(infra, "../README.md#using-it") is None
        assert path_problem(infra, "../Dockerfile") is None
        assert path_problem(ROOT / "README.md", "https://example.org/x.md") is None
        assert path_problem(ROOT / "README.md", "var/logs/payments.log") is None

    def test_anchors_follow_github(self, tmp_path: Path) -> None:
        document = tmp_path / "x.md"
        document.write_text("# CityPass\n## What `make run` gives you\n## Notes\n## Notes\n")
        assert anchors(document) == {"citypass", "what-make-run-gives-you", "notes", "notes-1"}


def test_make_help_and_the_benchmarks_agree_on_how_long_make_bench_takes() -> None:
    help_line = re.search(r"^bench:.*## (.*)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert help_line is not None
    duration = re.search(r"\d+(?:–\d+)? min", help_line.group(1))
    assert duration is not None, help_line.group(1)
    reproduce = re.search(
        r"^make bench .*?$\n(?:^ +#.*$\n)*", (ROOT / "docs" / "benchmarks.md").read_text(), re.M
    )
    assert reproduce is not None
    assert duration.group(0) in reproduce.group(0)
