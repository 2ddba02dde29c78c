"""What must never reach students or readers, and a scan of any folder for it.

The secrets are the lines of the instructor sources that the student material leaves out:

- in ``solutions/segmentation/*.ipynb``: the ``### BEGIN/END SOLUTION`` regions, the ``### BEGIN/END HIDDEN TESTS``
  regions, and the instructor answers (markdown cells marked as solutions);
- in ``labcode/``: the ``# BEGIN SOLUTION`` / ``# END SOLUTION`` exercise regions (see ``tools/release.py``);
- the hidden tests, which live in the grader's judge (``tools/grading/judge.py``): its code lines.

Lines that say nothing on their own (short, punctuation) and lines that also appear in the public text of the
sources (a ``with torch.no_grad():``) are not secrets. Markdown lines count also as rendered (without backticks,
emphasis and ``$``). :func:`find_leaks` looks for the secrets in every file of a folder: text files as they are,
notebooks with their sources *and outputs*, HTML pages as the text a reader sees.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_REGIONS = [("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")]
TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".yml", ".yaml", ".cfg", ".toml", ".html", ".ipynb", ".js", ".css",
                 ".csv", ".sh", ".rst", ".tex", ""}


def squash(text: str) -> str:
    """Whitespace runs to one space: text compared the way a reader sees it, whatever the wrapping."""
    return re.sub(r"\s+", " ", text).strip()


def unmarked(text: str) -> str:
    """Markdown as rendered: without backticks, emphasis stars and ``$`` of inline maths."""
    return re.sub(r"[`*$]", "", text)


def meaningful(line: str, minimum: int = 12) -> bool:
    """Whether a line says something on its own (long enough, with letters)."""
    text = squash(line)
    return len(text.replace(" ", "")) >= minimum and re.search(r"[A-Za-z]", text) is not None


def split_notebook_regions(source: str) -> tuple[list[str], list[str]]:
    """(lines inside solution or hidden-test regions, lines outside them) of one notebook cell."""
    inside, outside, end = [], [], None
    for line in source.splitlines():
        stripped = line.strip()
        if end is None:
            begun = [e for b, e in NOTEBOOK_REGIONS if stripped.startswith(b)]
            if begun:
                end = begun[0]
            else:
                outside.append(line)
        elif stripped.startswith(end):
            end = None
        else:
            inside.append(line)
    return inside, outside


#: Where the hidden tests live (the grader's judge): none of its code may reach students or readers.
JUDGE_SOURCES = ("tools/grading/judge.py",)
#: What runs in the submission's kernel while it is graded (the probes, with the tests' inputs): not secret.
PUBLIC_SOURCES = ("tools/grading/probe.py",)


def code_lines(text: str) -> list[str]:
    """The lines of a Python source that hold code: without comments and docstrings."""
    import ast

    documented = set()
    for node in ast.walk(ast.parse(text)):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(
                getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value, str):
            documented |= set(range(body[0].lineno, body[0].end_lineno + 1))
    return [line for n, line in enumerate(text.splitlines(), start=1)
            if n not in documented and not line.strip().startswith("#")]


def secret_lines(repo: Path = REPO) -> dict[str, set[str]]:
    """The secret lines of the instructor sources, by source file (relative to ``repo``)."""
    from nbformat import read

    from tools.release import find_regions

    secret: dict[str, set[str]] = {}
    public: list[str] = []
    for path in sorted((repo / "solutions").rglob("*.ipynb")):
        lines = set()
        for cell in read(path, as_version=4).cells:
            is_answer = cell.cell_type == "markdown" and cell.metadata.get("nbgrader", {}).get("solution", False)
            inside, outside = (cell.source.splitlines(), []) if is_answer else split_notebook_regions(cell.source)
            minimum = 12
            if cell.cell_type == "markdown":  # prose: longer lines only, also as rendered
                inside, minimum = inside + [unmarked(line) for line in inside], 30
            lines |= {squash(line) for line in inside if meaningful(line, minimum)}
            public += [squash("\n".join(outside)), squash(unmarked("\n".join(outside)))]
        secret[str(path.relative_to(repo))] = lines
    for path in sorted((repo / "labcode").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        regions = find_regions(text, str(path))
        inside_numbers = {n for r in regions for n in range(r.begin, r.end + 1)}
        lines = text.splitlines()
        secret[str(path.relative_to(repo))] = {squash(line) for n, line in enumerate(lines, start=1)
                                               if n in inside_numbers and meaningful(line)
                                               and not line.strip().startswith("#")}
        public.append(squash("\n".join(line for n, line in enumerate(lines, start=1) if n not in inside_numbers)))
    for path in PUBLIC_SOURCES:  # what the submission may see: the probes and the tests' inputs
        if (repo / path).is_file():
            public.append(squash((repo / path).read_text(encoding="utf-8")))
    already = "\n".join(set().union(*secret.values()))  # a line of a solution too is reported as the solution's
    for path in JUDGE_SOURCES:  # the hidden tests: the judge's code (its docstrings and comments describe it)
        if (repo / path).is_file():
            secret[path] = {squash(line) for line in code_lines((repo / path).read_text(encoding="utf-8"))
                            if meaningful(line) and squash(line) not in already}
    public_text = "\n".join(public)  # a secret line found anywhere in there (even re-wrapped) is public after all
    return {source: {line for line in lines if line not in public_text} for source, lines in secret.items()}


def readable_text(path: Path) -> str | None:
    """What a person can read of a file, squashed; ``None`` for binary files (images, fonts...)."""
    if path.suffix not in TEXT_SUFFIXES:
        return None
    try:
        raw = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None
    if path.suffix == ".ipynb":
        import nbformat

        nb = nbformat.reads(raw, as_version=4)
        parts = []
        for cell in nb.cells:
            parts += [cell.source, *cell.source.splitlines()]
            for output in cell.get("outputs", []):
                parts += [output.get("text", ""), output.get("evalue", ""), *output.get("traceback", [])]
                parts += [str(value) for value in output.get("data", {}).values()]
        return " \n ".join(squash(part) for part in parts)
    if path.suffix == ".html":
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(raw, "html.parser")
        return squash(soup.get_text(" ")) + " \n " + squash(soup.get_text())
    return squash(raw) + " \n " + " \n ".join(squash(line) for line in raw.splitlines())


def find_leaks(folder: Path, secrets: dict[str, set[str]] | None = None) -> list[str]:
    """``"file: line (from source)"`` for every secret line found in a file under ``folder``."""
    secrets = secret_lines() if secrets is None else secrets
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        text = readable_text(path)
        if text is None:
            continue
        rel = path.relative_to(folder)
        found += [f"{rel}: {line!r} (from {source})" for source, lines in secrets.items() for line in sorted(lines)
                  if line in text]
    return found
