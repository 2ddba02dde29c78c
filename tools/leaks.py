"""What must never reach students or readers, and a scan of any folder for it.

The secrets are the lines of the instructor sources that the student material leaves out:

- in ``solutions/segmentation/*.ipynb``: the ``### BEGIN/END SOLUTION`` regions, the ``### BEGIN/END HIDDEN TESTS``
  regions, and the instructor answers (markdown cells marked as solutions);
- in ``labcode/``: the ``# BEGIN SOLUTION`` / ``# END SOLUTION`` exercise regions (see ``tools/release.py``);
- the hidden tests, which live in the grader's judge (``tools/grading/judge.py``): its code lines.

Lines that say nothing on their own (short, punctuation) and lines that also appear in the public text of the
sources (a ``with torch.no_grad():``) are not secrets. Markdown lines count also as rendered (without backticks,
emphasis and ``$``). :func:`find_leaks` looks for the secrets in every file of a folder: text files as they are,
notebooks with their sources *and outputs*, HTML pages as the text a reader sees, images by their hash.

What the solutions *print and draw* is secret too: :func:`secret_outputs` takes the executed solution notebooks
(:func:`execute_solutions`) and keeps the lines of their outputs (streams, ``text/plain``, ``text/html`` as read,
``text/markdown``) and the hashes of their images (:func:`image_key`) that a run of the student release does not
show; merged into the secrets of :func:`secret_lines`, they are looked for by :func:`find_leaks` like any line.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_REGIONS = [("### BEGIN SOLUTION", "### END SOLUTION"), ("### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")]
TEXT_SUFFIXES = {".py", ".md", ".txt", ".json", ".yml", ".yaml", ".cfg", ".toml", ".html", ".ipynb", ".js", ".css",
                 ".csv", ".sh", ".rst", ".tex", ""}
#: Image files and notebook image outputs, compared by the hash of their bytes.
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}
IMAGE_MIMES = {"image/png", "image/jpeg", "image/gif"}
#: Text outputs of a notebook, compared line by line (HTML as a reader sees it).
TEXT_MIMES = ("text/plain", "text/html", "text/markdown")


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
                parts += output_texts(output) + output_images(output)
        return " \n ".join(squash(part) for part in parts)
    if path.suffix == ".html":
        from bs4 import BeautifulSoup

        soup = BeautifulSoup(raw, "html.parser")
        return squash(soup.get_text(" ")) + " \n " + squash(soup.get_text())
    return squash(raw) + " \n " + " \n ".join(squash(line) for line in raw.splitlines())


def find_leaks(folder: Path, secrets: dict[str, set[str]] | None = None) -> list[str]:
    """``"file: line (from source)"`` for every secret line (or image key) found in a file under ``folder``.

    Args:
        folder: what to scan (a built site, a release, a distribution).
        secrets: secret lines by source, :func:`secret_lines` when ``None``; add :func:`secret_outputs` to them to
            look for the solutions' outputs too.
    """
    secrets = secret_lines() if secrets is None else secrets
    found = []
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        text = readable_text(path)
        if text is None and path.suffix.lower() in IMAGE_SUFFIXES:
            text = image_key(path.read_bytes())
        if text is None:
            continue
        rel = path.relative_to(folder)
        found += [f"{rel}: {line!r} (from {source})" for source, lines in secrets.items() for line in sorted(lines)
                  if line in text]
    return found


# --------------------------------------------------------------------------------------------------------------------
# Outputs: what the solutions print and draw
# --------------------------------------------------------------------------------------------------------------------

def image_key(data: bytes) -> str:
    """How an image is compared: ``"image sha256:<hex digest of its bytes>"``."""
    return f"image sha256:{hashlib.sha256(data).hexdigest()}"


def output_texts(output: Mapping) -> list[str]:
    """The text lines a reader sees of one notebook output (errors left out: they show no result)."""
    if output.get("output_type") == "error":
        return []
    chunks = [output.get("text", "")] if output.get("output_type") == "stream" else []
    data = output.get("data", {})
    for mime in TEXT_MIMES:
        if mime == "text/plain" and (IMAGE_MIMES | {"image/svg+xml"}) & set(data):
            continue  # the repr of a figure ("<Figure size 640x480 with 1 Axes>"), not what it shows
        if mime in data:
            value = data[mime] if isinstance(data[mime], str) else "".join(data[mime])
            if mime == "text/html":
                from bs4 import BeautifulSoup

                value = BeautifulSoup(value, "html.parser").get_text("\n")
            chunks.append(value)
    text = "\n".join(chunk if isinstance(chunk, str) else "".join(chunk) for chunk in chunks)
    return [squash(line) for line in text.splitlines() if squash(line)]


def output_images(output: Mapping) -> list[str]:
    """:func:`image_key` of each image of one notebook output (PNG, JPEG, GIF: base64; SVG: its text)."""
    keys = []
    for mime, value in output.get("data", {}).items():
        value = value if isinstance(value, str) else "".join(value)
        if mime in IMAGE_MIMES:
            keys.append(image_key(base64.b64decode(value)))
        elif mime == "image/svg+xml":
            keys.append(image_key(value.encode("utf-8")))
    return keys


def output_fingerprints(nb) -> set[str]:
    """The meaningful text lines and the image keys of what an executed notebook shows (progress bars, on standard
    error or as widgets, left out: they change from run to run)."""
    found = set()
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("name") == "stderr" or "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
                continue
            found |= {line for line in output_texts(output) if meaningful(line)}
            found |= set(output_images(output))
    return found


def secret_outputs(solved: Mapping[str, object], released: Iterable[object]) -> dict[str, set[str]]:
    """What the executed solution notebooks show that a run of the student release does not, by notebook.

    Args:
        solved: executed solution notebooks (nbformat nodes) by stem.
        released: executed student notebooks: their outputs (the data, the figures that need no answer) are public.

    Returns:
        ``{"outputs of solutions/segmentation/<stem>.ipynb": lines and image keys}``, ready to merge into
        :func:`secret_lines`'s answer for :func:`find_leaks`.
    """
    public = set().union(*(output_fingerprints(nb) for nb in released))
    public_text = "\n".join(public)
    secrets = {}
    for stem, nb in solved.items():
        lines = {line for line in output_fingerprints(nb) if line not in public
                 and (line.startswith("image sha256:") or line not in public_text)}
        secrets[f"outputs of solutions/segmentation/{stem}.ipynb"] = lines
    return secrets


def execute_solutions(datadir: Path, *, stems: Iterable[str] | None = None, timeout: int = 60,
                      repo: Path = REPO) -> dict:
    """Run solution notebooks in a scratch folder next to the instructor library, to learn what they show.

    Each cell may run ``timeout`` seconds (a longer one, such as a training, is stopped and shows nothing). Only the
    leak scan runs the solutions; the site's pages come from the student release (``tools/site_notebooks.py``).

    Args:
        datadir: data set the notebooks read (a small generated one keeps this quick).
        stems: notebooks to run (all of ``solutions/segmentation`` when ``None``).
        timeout: seconds per cell.
        repo: repository holding ``solutions/`` and ``labcode/``.

    Returns:
        The executed notebooks (nbformat nodes) by stem.

    Raises:
        FileNotFoundError: a notebook asked for is not in ``solutions/segmentation``.
    """
    from tools.site_notebooks import SHOWN_WORKDIR, execute, replace_paths

    source = repo / "solutions" / "segmentation"
    names = sorted(p.stem for p in source.glob("*.ipynb")) if stems is None else list(stems)
    executed = {}
    with tempfile.TemporaryDirectory(prefix="solutions-run-") as tmp:
        work = Path(tmp) / "segmentation"
        work.mkdir()
        shutil.copytree(repo / "labcode", work / "labcode", ignore=shutil.ignore_patterns("__pycache__"))
        env = {"LABCODE_DATADIR": str(datadir), "LABCODE_DATA_HOME": str(Path(tmp) / "data_home"),
               "LABCODE_REFERENCE_MODEL": None, "NBGRADER_EXECUTION": None, "CUDA_VISIBLE_DEVICES": "",
               "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
        for stem in names:
            path = source / f"{stem}.ipynb"
            if not path.is_file():
                raise FileNotFoundError(f"no solution notebook {path}")
            shutil.copy(path, work / path.name)
            executed[stem] = execute(work / path.name, work, timeout, env)
            for cell in executed[stem].cells:  # the scratch folder printed as the pages print it
                replace_paths(cell.get("outputs", []), {str(work.resolve()): SHOWN_WORKDIR, str(work): SHOWN_WORKDIR})
    return executed
