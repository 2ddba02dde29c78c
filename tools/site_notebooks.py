"""The notebook pages of the course site: the student release, run on the generated data set, made readable.

``make book`` runs this script before ``jupyter-book build``. It copies the student release
(``notebooks/segmentation/``: the notebooks with their stubs and the stripped ``labcode/``, never the solutions) to a
scratch folder, runs every notebook there on a CPU with the generated data set (each cell under a time limit), and
writes the pages the book shows into ``book/segmentation/`` (generated, ignored by git). For each notebook:

- cells that do not depend on a student's answer keep what they printed and drew (data, figures, tables);
- cells that failed (an exercise not written yet, a model not trained yet, the time limit) show no output, and
  neither do the graded test cells and the answer cells, whose outputs would be a student's work;
- the placeholders of the answer cells give way to a short note for the reader: in code cells, the
  ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` lines become :data:`CODE_NOTE`; a markdown answer cell
  becomes :data:`ANSWER_NOTE`;
- the students' note under the title (``tools.release.STUDENT_NOTE``) becomes :data:`READER_NOTE`;
- progress bars (widgets, standard error) are left out, and the paths printed by the setup cell are shown as a
  student's copy has them (:data:`SHOWN_WORKDIR`, :data:`SHOWN_DATA_HOME`).

Usage::

    python tools/site_notebooks.py                       # notebooks/segmentation -> book/segmentation
    python tools/site_notebooks.py --datadir DIR --out OUT --timeout 60
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from tools.release import STUDENT_NOTE  # noqa: E402  (the note this page replaces)

RELEASE = REPO / "notebooks" / "segmentation"
OUT = REPO / "book" / "segmentation"
#: Seconds one cell may run; a cell that needs more (training a model) is stopped and shown without output.
CELL_TIMEOUT = 120

#: Under the title of every page, in place of the students' note.
READER_NOTE = ("*This page is the notebook of the students' copy of the lab, run on a CPU with the generated data set. "
               "Where students write code or an answer, a note stands in its place; cells that need that work, and "
               "the test cells that check it, are shown without output.*")
#: In an answer code cell, in place of ``# YOUR CODE HERE`` and ``raise NotImplementedError()``.
CODE_NOTE = "# Students write this part in their copy of the notebook."
#: A markdown answer cell, in place of ``YOUR ANSWER HERE``.
ANSWER_NOTE = "*Students write their answer here, in their copy of the notebook.*"
#: Where the setup cell says the notebook runs, as in a student's copy (the scratch folder is shown as this).
SHOWN_WORKDIR = "~/segmentation-lab/segmentation"
#: Where a student's copy keeps the generated data set (the repository's copy is shown as this).
SHOWN_DATA_HOME = "~/.cache/labcode"

PLACEHOLDER_LINES = ("# YOUR CODE HERE", "raise NotImplementedError()")
ANSWER_PLACEHOLDER = "YOUR ANSWER HERE"
#: Outputs never shown: interactive widgets (progress bars) need a live kernel.
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


class SiteNotebookError(Exception):
    """The pages cannot be made (no release, a notebook that cannot be read); names the folder or file."""


@dataclass
class PageReport:
    """What one page shows: the code cells (indices) with outputs and without, and the answer cells replaced."""

    stem: str
    kept: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    notes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    #: The notebook as its run left it, before it became a page (what the leak scan counts as public outputs).
    executed: object = field(default=None, repr=False, compare=False)

    def summary(self) -> str:
        return (f"{self.stem}: {len(self.kept)} code cells with outputs, {len(self.dropped)} without, "
                f"{len(self.notes)} answers replaced by a note, {self.seconds:.0f} s")


def nbgrader_info(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def is_answer(cell) -> bool:
    """A cell where students write (an nbgrader solution cell)."""
    return bool(nbgrader_info(cell).get("solution"))


def is_test(cell) -> bool:
    """A graded read-only test cell (its outputs report on a student's answer)."""
    info = nbgrader_info(cell)
    return bool(info.get("grade")) and not info.get("solution") and cell.cell_type == "code"


def code_placeholder_replaced(source: str) -> str:
    """An answer code cell with its placeholder lines replaced by :data:`CODE_NOTE` (indentation kept)."""
    lines, out = source.splitlines(), []
    for line in lines:
        stripped = line.strip()
        if stripped in PLACEHOLDER_LINES:
            indent = line[: len(line) - len(line.lstrip())]
            if not (out and out[-1] == indent + CODE_NOTE):
                out.append(indent + CODE_NOTE)
        else:
            out.append(line)
    return "\n".join(out)


def kept_outputs(outputs: list) -> list:
    """The outputs a reader sees of a cell that ran without error: no widgets, no standard error."""
    kept = []
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            continue
        if WIDGET_MIME in output.get("data", {}):
            continue
        kept.append(output)
    return kept


def replace_paths(outputs: list, paths: dict[str, str]) -> None:
    """Replace each absolute path of ``paths`` (longest first) by what the page shows, in text outputs, in place."""
    ordered = sorted(paths.items(), key=lambda kv: -len(kv[0]))

    def swap(text):
        if isinstance(text, list):
            text = "".join(text)
        for old, new in ordered:
            text = text.replace(old, new)
        return text

    for output in outputs:
        if "text" in output:
            output["text"] = swap(output["text"])
        for mime in ("text/plain", "text/html", "text/markdown"):
            if mime in output.get("data", {}):
                output["data"][mime] = swap(output["data"][mime])


def readable_page(executed, stem: str, paths: dict[str, str] | None = None):
    """The page of one executed student notebook (a copy): see the module's docstring for what changes.

    Args:
        executed: the student notebook after its run (nbformat node); left unchanged.
        stem: its name, for the report.
        paths: absolute paths printed by the run and what the page shows instead.

    Returns:
        ``(page, report)``: the notebook to publish and a :class:`PageReport`.
    """
    page = copy.deepcopy(executed)
    report = PageReport(stem)
    title_cell = next((c for c in page.cells if c.cell_type == "markdown" and not nbgrader_info(c)), None)
    if title_cell is not None:
        title_cell.source = title_cell.source.replace(STUDENT_NOTE, READER_NOTE)
    for index, cell in enumerate(page.cells):
        cell.metadata.pop("execution", None)
        if cell.cell_type == "markdown":
            if is_answer(cell):
                cell.source = ANSWER_NOTE if cell.source.strip() == ANSWER_PLACEHOLDER else cell.source
                report.notes.append(index)
            continue
        if cell.cell_type != "code":
            continue
        if is_answer(cell):
            cell.source = code_placeholder_replaced(cell.source).strip("\n")
            report.notes.append(index)
        failed = any(output.get("output_type") == "error" for output in cell.outputs)
        if failed or is_answer(cell) or is_test(cell):
            cell.outputs = []
        else:
            cell.outputs = kept_outputs(cell.outputs)
            replace_paths(cell.outputs, paths or {})
        cell.execution_count = None
        for output in cell.outputs:
            if "execution_count" in output:
                output["execution_count"] = None
        (report.kept if cell.outputs else report.dropped).append(index)
    page.metadata.pop("widgets", None)
    return page, report


def execute(path: Path, workdir: Path, timeout: int, env: dict[str, str | None]):
    """Run the notebook at ``path`` in ``workdir`` (errors recorded, each cell stopped after ``timeout`` seconds).

    ``env`` is set for the kernel (a ``None`` value unsets the variable).

    Returns:
        The executed notebook (nbformat node).
    """
    import nbclient
    import nbformat
    from traitlets.config import Config

    nb = nbformat.read(str(path), as_version=4)
    saved = {key: os.environ.get(key) for key in env}
    for key, value in env.items():  # the kernel inherits this process's environment
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        # The kernel talks over TCP on localhost, encrypted with CurveZMQ keys that the kernel manager makes for it
        # (ipykernel declares the support): nothing to eavesdrop, and no warning of ipykernel's in the book's build.
        encrypted = Config({"KernelManager": {"transport_encryption": "required"}})
        client = nbclient.NotebookClient(nb, config=encrypted, timeout=timeout, allow_errors=True,
                                         interrupt_on_timeout=True, kernel_name="python3",
                                         resources={"metadata": {"path": str(workdir)}})
        client.execute()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return nb


def generated_datadir() -> Path:
    """The course's generated data set (made on first use), whatever ``$LABCODE_DATADIR`` says."""
    from labcode.synth import ensure_default_dataset

    return ensure_default_dataset(progress=False)


def build_site_notebooks(out: Path = OUT, *, release: Path = RELEASE, datadir: Path | None = None,
                         timeout: int = CELL_TIMEOUT, stems: list[str] | None = None) -> list[PageReport]:
    """Run the student release and write its readable pages into ``out`` (replaced as a whole).

    Args:
        out: folder of the pages (``book/segmentation``); only the notebooks are written there.
        release: the student release (notebooks and their ``labcode/`` copy); never the solutions.
        datadir: data set the notebooks run on (the generated one when ``None``).
        timeout: seconds each cell may run.
        stems: notebooks to publish (all of the release when ``None``).

    Returns:
        One :class:`PageReport` per notebook, in name order.

    Raises:
        SiteNotebookError: ``release`` holds no notebook or no ``labcode/`` copy, or a notebook is asked that is
            not in it.
    """
    import nbformat

    release, out = Path(release), Path(out)
    notebooks = sorted(release.glob("*.ipynb"))
    if not notebooks or not (release / "labcode" / "__init__.py").is_file():
        raise SiteNotebookError(f"{release} is not a student release (notebooks and labcode/): run make release")
    if stems is not None:
        missing = sorted(set(stems) - {p.stem for p in notebooks})
        if missing:
            raise SiteNotebookError(f"{release} has no notebook {', '.join(missing)}")
        notebooks = [p for p in notebooks if p.stem in stems]
    shown = {}
    if datadir is None:  # shown where a student's copy makes it
        datadir = generated_datadir()
        shown[str(datadir)] = f"{SHOWN_DATA_HOME}/{datadir.name}"
    datadir = Path(datadir)
    env = {"LABCODE_DATADIR": str(datadir), "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), "NO_ALBUMENTATIONS_UPDATE": "1",
           "ORT_DISABLE_TELEMETRY": "1", "CUDA_VISIBLE_DEVICES": "", "NBGRADER_EXECUTION": None}
    reports = []
    with tempfile.TemporaryDirectory(prefix="site-notebooks-") as tmp:
        work = Path(tmp) / "segmentation"
        shutil.copytree(release, work, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "runs",
                                                                     "my_photo*"))
        staging = Path(tmp) / "pages"
        staging.mkdir()
        # nothing written to the user's cache, no model found there: the pages show what a fresh copy shows
        env["LABCODE_DATA_HOME"] = str(Path(tmp) / "data_home")
        shown |= {str(work.resolve()): SHOWN_WORKDIR, str(work): SHOWN_WORKDIR}
        for path in notebooks:
            started = time.perf_counter()
            executed = execute(work / path.name, work, timeout, env)
            for cell in executed.cells:  # paths as a student's copy prints them, in the run and on the page
                replace_paths(cell.get("outputs", []), shown)
            page, report = readable_page(executed, path.stem)
            report.seconds, report.executed = time.perf_counter() - started, executed
            nbformat.validate(page)
            (staging / path.name).write_text(nbformat.writes(page) + "\n", encoding="utf-8")
            reports.append(report)
        if out.is_symlink() or out.is_file():
            out.unlink()
        elif out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(staging, out)
    return reports


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release", type=Path, default=RELEASE, help="the student release (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of the pages (default: %(default)s)")
    parser.add_argument("--datadir", type=Path, default=None, help="data set (default: the generated one)")
    parser.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="seconds per cell (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        reports = build_site_notebooks(args.out, release=args.release, datadir=args.datadir, timeout=args.timeout)
    except SiteNotebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for report in reports:
        print(report.summary())
    print(f"pages written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

