"""Build the student release of the course: ``notebooks/segmentation/`` from ``solutions/`` and ``labcode/``.

``make release`` runs this script. It

1. runs ``nbgrader generate_assignment segmentation`` (configured by the repository's ``nbgrader_config.py``) in a
   scratch course folder, so that solution regions, hidden tests and instructor answers are removed from the
   notebooks and the graded cells (with their hidden tests) are recorded in the gradebook used for autograding;
2. normalises the generated notebooks (no outputs, stable JSON) and adds a note for students under each title
   (:data:`STUDENT_NOTE`: their copy, what to fill in). Nothing written into the student copy names an instructor
   path, marker or workflow step: students read these files;
3. copies the library into the assignment folder as ``labcode/``, with every exercise region replaced by a stub that
   raises ``NotImplementedError`` naming the notebook question. A region is delimited in ``labcode/*.py`` by::

       # BEGIN SOLUTION <notebook-stem>: <question title>
       ...the instructor's code...
       # END SOLUTION

   nbgrader does not touch ``.py`` files, hence this step. Since a notebook kernel starts in the assignment folder,
   ``import labcode`` there loads this student copy: students write the exercises in it, submit it with their
   notebooks, and autograding runs the notebooks (training included) on their code. Each Python file of the copy
   starts with :func:`library_header`, whose first words (``STUDENT_COPY_HEADER``) let the self-check tell a
   student copy from this library.

The output replaces ``<out>/segmentation`` entirely; running the script twice gives identical files. Then it writes
the students' distribution (:mod:`tools.distribution`), which always ships the reference model: without one (``make
reference`` trains it; ``make release`` runs that first) the script stops before writing anything.

Usage::

    python tools/release.py                   # regenerate notebooks/ (and gradebook.db)
    python tools/release.py --check           # exit 1 if notebooks/ differs from a fresh build
    python tools/release.py --out /tmp/rel --dist /tmp/dist   # build elsewhere
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import fnmatch
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from labcode.check import STUDENT_COPY_HEADER  # noqa: E402  (the self-check recognises student copies by it)

ASSIGNMENT = "segmentation"
LIBRARY = "labcode"
SOURCE_DIR = "solutions"
RELEASE_DIR = "notebooks"

BEGIN_RE = re.compile(r"^(?P<indent>[ \t]*)# BEGIN SOLUTION (?P<stem>[\w.-]+): (?P<title>\S.*?)\s*$")
END_RE = re.compile(r"^[ \t]*# END SOLUTION\s*$")
#: What is left of a marker line that is malformed (e.g. a missing title): caught instead of silently kept.
LOOSE_MARKER_RE = re.compile(r"^[ \t]*# (BEGIN|END) SOLUTION\b")


class ReleaseError(Exception):
    """The sources cannot be turned into a release (bad region markers, nbgrader failure); names the file."""


# --------------------------------------------------------------------------------------------------------------------
# Library exercise regions
# --------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Region:
    """One exercise region of a library file: 1-based line numbers of its markers and the lines between them."""

    path: str
    stem: str
    title: str
    indent: str
    begin: int
    end: int
    body: tuple[str, ...]


def find_regions(text: str, path: str = "<text>") -> list[Region]:
    """Parse the ``# BEGIN SOLUTION <stem>: <title>`` / ``# END SOLUTION`` regions of a Python source.

    Args:
        text: the file's content.
        path: its name, used in error messages.

    Raises:
        ReleaseError: nested, unterminated or unopened region, or a malformed marker line (``file:line`` named).
    """
    regions, current = [], None
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        begin, end = BEGIN_RE.match(line), END_RE.match(line)
        if begin:
            if current is not None:
                raise ReleaseError(f"{path}:{number}: BEGIN SOLUTION inside the region opened at line {current[0]}")
            current = (number, begin)
        elif end:
            if current is None:
                raise ReleaseError(f"{path}:{number}: END SOLUTION without a BEGIN SOLUTION before it")
            start, match = current
            regions.append(Region(path, match["stem"], match["title"], match["indent"], start, number,
                                  tuple(lines[start:number - 1])))
            current = None
        elif LOOSE_MARKER_RE.match(line):
            raise ReleaseError(f"{path}:{number}: malformed marker, expected '# BEGIN SOLUTION <notebook-stem>: "
                               f"<question title>' or '# END SOLUTION', got {line.strip()!r}")
    if current is not None:
        raise ReleaseError(f"{path}:{current[0]}: BEGIN SOLUTION without a matching END SOLUTION")
    return regions


def stub_lines(region: Region) -> list[str]:
    """The lines replacing ``region`` in the student copy: a pointer to the question and the ``raise``.

    The message starts with the question's title and its notebook (the self-check and the grader read it), then says
    what to do when another notebook meets the stub first (notebook 5 training a UNet not written yet, say).
    """
    where = f"see notebook {region.stem}.ipynb"
    message = (f"{region.title}: write it ({where}). This exercise of the library is not written yet, and "
               f"whatever uses it, in any notebook, waits for it: write it in notebook {region.stem} first, then run "
               "this again.")
    return [
        f'{region.indent}# EXERCISE "{region.title}" ({where}): replace the next line with your code.',
        f'{region.indent}raise NotImplementedError("{message}")',
    ]


def strip_regions(text: str, path: str = "<text>") -> str:
    """``text`` with each exercise region (markers included) replaced by :func:`stub_lines`."""
    regions = find_regions(text, path)
    lines = text.splitlines()
    out, next_line = [], 1
    for region in regions:
        out += lines[next_line - 1:region.begin - 1]
        out += stub_lines(region)
        next_line = region.end + 1
    out += lines[next_line - 1:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def library_header(relpath: str, has_exercises: bool) -> str:
    """Comment put at the top of each Python file of the student copy, in words for students.

    Args:
        relpath: the file in the library, e.g. ``labcode/unet.py``.
        has_exercises: whether the file holds exercise stubs.
    """
    lines = [f"{STUDENT_COPY_HEADER}: {relpath}, used by the lab's notebooks."]
    if has_exercises:
        lines.append("# The exercises in this file are yours: replace each `raise NotImplementedError` marked EXERCISE")
        lines.append("# with your code, as the notebook named there asks, and leave the rest as it is.")
    else:
        lines.append("# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).")
    return "\n".join(lines) + "\n"


def library_files(package: Path) -> list[Path]:
    """The files of the library package that go into the release, sorted (caches left out)."""
    return sorted(p for p in package.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo"))


def release_library(package: Path, dest: Path, notebook_stems: set[str]) -> dict[str, list[Region]]:
    """Copy ``package`` to ``dest`` with its exercise regions stubbed and a header on each Python file.

    Args:
        package: the instructor library (``labcode/``).
        dest: the student copy to create (must not exist).
        notebook_stems: the notebooks of the assignment; each region must name one of them.

    Returns:
        The regions found, by file (relative to the package's parent, e.g. ``labcode/unet.py``).
    """
    found: dict[str, list[Region]] = {}
    for src in library_files(package):
        rel = src.relative_to(package)
        relname = f"{package.name}/{rel.as_posix()}"
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.suffix != ".py":
            shutil.copyfile(src, target)
            continue
        text = src.read_text(encoding="utf-8")
        regions = find_regions(text, relname)
        for region in regions:
            if region.stem not in notebook_stems:
                raise ReleaseError(f"{relname}:{region.begin}: region names notebook {region.stem!r}, which is not "
                                   f"one of {', '.join(sorted(notebook_stems))}")
        if regions:
            found[relname] = regions
        target.write_text(library_header(relname, bool(regions)) + strip_regions(text, relname), encoding="utf-8")
    return found


# --------------------------------------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------------------------------------

def load_course_config():
    """The traitlets configuration of the repository's ``nbgrader_config.py``."""
    from traitlets.config.loader import PyFileConfigLoader

    return PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()


@contextlib.contextmanager
def venv_on_path() -> Iterator[None]:
    """nbgrader runs the ``alembic`` executable of the current environment: put its ``bin/`` first on PATH."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def generate_notebooks(source: Path, course_root: Path, db_url: str) -> Path:
    """Run ``nbgrader generate_assignment`` on ``source`` inside the scratch course folder ``course_root``.

    Returns:
        The folder of the generated student notebooks.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    shutil.copytree(source, course_root / SOURCE_DIR / ASSIGNMENT,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    config = load_course_config()
    config.CourseDirectory.root = str(course_root)
    config.CourseDirectory.db_url = db_url
    config.Exchange.root = str(course_root / "exchange")  # unused; keeps the API from probing the system's one
    (course_root / "exchange").mkdir(parents=True)
    config.NbGraderAPI.log_level = "WARN"
    with venv_on_path():
        api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
        result = api.generate_assignment(ASSIGNMENT, force=True, create=True)
    if not result["success"]:
        raise ReleaseError(f"nbgrader generate_assignment failed:\n{result.get('log', '')}\n{result.get('error', '')}")
    return course_root / RELEASE_DIR / ASSIGNMENT


#: The note under the title of every student notebook.
STUDENT_NOTE = ("*This notebook is your copy: run its cells from the top, write your code and answers in the cells "
                "marked `YOUR CODE HERE` or `YOUR ANSWER HERE`, and leave the read-only cells as they are.*")


def normalise_notebook(src: Path, dest: Path) -> None:
    """Write the generated notebook ``src`` to ``dest`` without outputs, with :data:`STUDENT_NOTE`, as stable JSON."""
    import nbformat

    nb = nbformat.read(str(src), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    first = next((c for c in nb.cells if c.cell_type == "markdown" and not c.metadata.get("nbgrader")), None)
    if first is None or not first.source.startswith("# "):
        raise ReleaseError(f"{src.name}: the first markdown cell must start with the notebook's '# title'")
    title, _, rest = first.source.partition("\n")
    first.source = f"{title}\n\n{STUDENT_NOTE}\n{rest}".rstrip("\n")
    nbformat.validate(nb)
    dest.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")


def check_titles(regions: dict[str, list[Region]], source: Path) -> None:
    """Each library region's title must appear in its notebook, so that the stub's message leads somewhere."""
    for relname, file_regions in regions.items():
        for region in file_regions:
            notebook = source / f"{region.stem}.ipynb"
            if region.title not in notebook.read_text(encoding="utf-8"):
                raise ReleaseError(f"{relname}:{region.begin}: question title {region.title!r} does not appear in "
                                   f"{SOURCE_DIR}/{ASSIGNMENT}/{notebook.name}")


# --------------------------------------------------------------------------------------------------------------------
# The whole release
# --------------------------------------------------------------------------------------------------------------------

def build_release(out: Path, *, db_url: str | None = None, repo: Path = REPO) -> Path:
    """Regenerate ``out/segmentation`` (notebooks and stubbed library) from the sources of ``repo``.

    Args:
        out: the release folder (``notebooks/`` of the repository by default in :func:`main`).
        db_url: gradebook receiving the assignment's graded cells (a scratch one when ``None``).
        repo: repository holding ``solutions/`` and ``labcode/``.

    Returns:
        The assignment folder written.
    """
    source = repo / SOURCE_DIR / ASSIGNMENT
    stems = {p.stem for p in source.glob("*.ipynb")}
    if not stems:
        raise ReleaseError(f"no notebook in {source}")
    dest = Path(out) / ASSIGNMENT
    with tempfile.TemporaryDirectory(prefix="release-") as tmp:
        tmp = Path(tmp)
        generated = generate_notebooks(source, tmp / "course", db_url or f"sqlite:///{tmp / 'gradebook.db'}")
        staging = tmp / "staging"
        staging.mkdir()
        for notebook in sorted(generated.glob("*.ipynb")):
            normalise_notebook(notebook, staging / notebook.name)
        for other in sorted(p for p in generated.rglob("*") if p.is_file() and p.suffix != ".ipynb"):
            target = staging / other.relative_to(generated)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(other, target)
        regions = release_library(repo / LIBRARY, staging / LIBRARY, stems)
        check_titles(regions, source)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, dest)
    return dest


def compare_trees(a: Path, b: Path) -> list[str]:
    """Relative paths that differ between two folders (missing on one side or different bytes).

    Files that running the notebooks in place writes (the course's ``CourseDirectory.ignore`` patterns: data sets,
    runs, caches, photos) are left out of the comparison.
    """
    ignored = list(load_course_config().CourseDirectory.ignore)

    def files(root: Path) -> set[str]:
        if not root.exists():
            return set()

        def kept(path: Path) -> bool:
            parts = path.relative_to(root).parts
            return not any(fnmatch.fnmatch(part, pattern) for part in parts for pattern in ignored)

        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and kept(p)}

    left, right = files(a), files(b)
    diffs = sorted(left ^ right)
    diffs += sorted(rel for rel in left & right if not filecmp.cmp(a / rel, b / rel, shallow=False))
    return diffs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python tools/release.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / RELEASE_DIR, help="release folder (default: notebooks/)")
    parser.add_argument("--db-url", default=None,
                        help="gradebook to record the assignment in (default: sqlite:///<repo>/gradebook.db; "
                             "a scratch one with --check)")
    parser.add_argument("--check", action="store_true",
                        help="build into a temporary folder and report the files that differ from --out")
    parser.add_argument("--dist", type=Path, default=REPO / "dist" / "student",
                        help="the students' distribution written from the release (default: dist/student)")
    parser.add_argument("--reference", type=Path, default=None,
                        help="the reference model shipped in the distribution, with its reference.json beside it "
                             "(default: the one `make reference` trains; the release is refused without one)")
    args = parser.parse_args(argv)
    try:
        if args.check:
            with tempfile.TemporaryDirectory(prefix="release-check-") as tmp:
                fresh = build_release(Path(tmp), db_url=args.db_url)
                diffs = compare_trees(fresh, args.out / ASSIGNMENT)
            if diffs:
                print(f"{args.out / ASSIGNMENT} is out of date ({len(diffs)} files differ); run `make release`:")
                print("\n".join(f"  {d}" for d in diffs))
                return 1
            print(f"{args.out / ASSIGNMENT} is up to date")
            return 0
        from tools.distribution import DistributionError, build_distribution, reference_model, shipped_info

        reference = args.reference or reference_model()
        shipped_info(reference)  # no reference model: refused before anything is written
        dest = build_release(args.out, db_url=args.db_url or f"sqlite:///{REPO / 'gradebook.db'}")
        dist = build_distribution(dest, args.dist, reference=reference,
                                  ignore=tuple(load_course_config().CourseDirectory.ignore))
    except (ReleaseError, DistributionError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    notebooks = sorted(p.name for p in dest.glob("*.ipynb"))
    library = [p for p in (dest / LIBRARY).rglob("*.py")]
    print(f"wrote {len(notebooks)} notebooks ({', '.join(notebooks)}) and {len(library)} library files to {dest}")
    print(f"wrote the students' distribution to {dist}, with the reference model {reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
