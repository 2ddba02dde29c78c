"""What students see of their grading: feedback without hidden tests, solutions or instructor answers, for everyone.

nbgrader's feedback is the autograded notebook rendered to HTML. By default it shows each test cell whole, hidden
tests included, and each failed test's full traceback, which quotes the failing (possibly hidden) line. The
:class:`SafeFeedback` preprocessor, put first in ``GenerateFeedback.preprocessors`` by the course configuration,
therefore

- removes the hidden-test regions from every cell that is not a student's answer (what remains is the visible
  test); a marker without its end removes the rest of the cell, and never stops the feedback;
- reduces every error to one line, ``ExceptionName: message``: for a failed test, the hint its verdict gives;
- withholds any output that quotes a line of a hidden test, or the first 32 characters of one (a submission could
  print the code it was tested with; IPython keeps it in ``In``);
- makes the notebook inert again (:func:`tools.grading.sanitize.sanitize_notebook`; autograding already did, this
  covers notebooks graded before it did) and caps the outputs it renders (:mod:`tools.grading.outputs`).

The autograded notebook itself is not changed; the gradebook keeps the scores. Solutions never reach feedback:
the autograded notebook holds the student's own answers, and nbgrader's record of the answer cells holds the
release's stubs, not the instructor's answers.

:func:`generate` makes the feedback of a whole class so that one notebook that cannot be rendered (unreadable,
too large, or failing in nbgrader) costs only its own page: it is reported with its reason and skipped, and every
other page is written (and released, when asked).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

from tools.grading.course import tools_on_path
from tools.grading.outputs import MIB, OutputBudget, OutputLimits
from tools.grading.sanitize import sanitize_notebook

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
WITHHELD = "[output withheld from the feedback: it quotes a hidden test]\n"
#: Lines shorter than this are too common (``else:``, ``)``) to reveal anything.
MIN_LINE = 12
#: A hidden line counts as quoted when its beginning this long (code, before any hint message) appears.
PREFIX = 32
#: What a feedback page renders of outputs (autograding already bounded them; this bounds older notebooks too).
RENDERED = OutputLimits(cell_bytes=2 * MIB, notebook_bytes=8 * MIB)
#: An autograded notebook file larger than this is not rendered (autograding keeps them far smaller).
MAX_NOTEBOOK_BYTES = 32 * MIB


def _answer(cell: NotebookNode) -> bool:
    return bool(cell.get("metadata", {}).get("nbgrader", {}).get("solution"))


def hidden_lines(nb: NotebookNode) -> set[str]:
    """The stripped lines of the notebook's hidden tests that do not also appear outside them."""
    hidden, visible = set(), set()
    for cell in nb.cells:
        if _answer(cell):  # a student's answer is never a hidden test, whatever markers it prints
            continue
        inside = False
        for line in cell.source.splitlines():
            if BEGIN in line:
                inside = True
            elif END in line:
                inside = False
            elif len(line.strip()) >= MIN_LINE:
                (hidden if inside else visible).add(line.strip())
    return hidden - visible


def remove_hidden_regions(source: str) -> str:
    """``source`` without its hidden-test regions (markers included); an unclosed region runs to the end."""
    kept, inside = [], False
    for line in source.splitlines(keepends=True):
        if BEGIN in line:
            inside = True
        elif END in line:
            inside = False
        elif not inside:
            kept.append(line)
    return "".join(kept)


def _texts(output: NotebookNode) -> list[str]:
    if output.output_type == "stream":
        return [output.get("text", "")]
    if output.output_type == "error":
        return [output.get("evalue", ""), *output.get("traceback", [])]
    return [str(value) for value in output.get("data", {}).values()]


def cap_outputs(nb: NotebookNode, limits: OutputLimits = RENDERED) -> NotebookNode:
    """Cut each code cell's outputs to ``limits`` (per cell, per notebook), with the grader's note where cut."""
    budget = OutputBudget(limits)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        budget.start_cell()
        kept = []
        for output in cell.get("outputs", []):
            msg = budget.admit({"msg_type": output.get("output_type"), "content": dict(output)})
            if msg is not None:
                kept.append(NotebookNode(msg["content"]))
        note = budget.note()
        cell.outputs = kept + ([note] if note is not None else [])
    return nb


class SafeFeedback(NbGraderPreprocessor):
    """Strip hidden tests, shorten errors to their message, withhold outputs quoting hidden tests, make the notebook
    inert and its outputs bounded."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        secret = hidden_lines(nb)
        for cell in nb.cells:
            if not _answer(cell):
                cell.source = remove_hidden_regions(cell.source)
            if cell.cell_type != "code":
                continue
            outputs = []
            for output in cell.get("outputs", []):
                if output.output_type == "error":  # the traceback quotes the failing line: keep the message only
                    message = f"{output.ename}: {output.evalue}" if output.evalue else output.ename
                    output = NotebookNode(output_type="error", ename=output.ename, evalue=output.evalue,
                                          traceback=[message])
                if any(line[:PREFIX] in text for text in _texts(output) for line in secret):
                    output = NotebookNode(output_type="stream", name="stderr", text=WITHHELD)
                outputs.append(output)
            cell.outputs = outputs
        return cap_outputs(sanitize_notebook(nb)), resources


# --------------------------------------------------------------------------------------------------------------------
# A class's feedback, one notebook's failure at a time
# --------------------------------------------------------------------------------------------------------------------

@dataclass
class FeedbackReport:
    """What :func:`generate` did.

    Attributes:
        written: per student, the notebooks (stems) whose feedback page was written.
        failed: per (student, notebook), why no page was written.
        released: the students whose feedback was put in the exchange.
        release_failed: per student, why the release failed.
    """

    written: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    released: list[str] = field(default_factory=list)
    release_failed: dict[str, str] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return sum(len(stems) for stems in self.written.values())

    def lines(self) -> list[str]:
        """A summary to print: counts, then one line per failure."""
        out = [f"feedback: {self.pages} page(s) for {len(self.written)} student(s), {len(self.failed)} failed"]
        out += [f"  no feedback for {student} / {stem}: {reason}" for (student, stem), reason in
                sorted(self.failed.items())]
        if self.released or self.release_failed:
            out.append(f"released to {len(self.released)} student(s), {len(self.release_failed)} failed")
            out += [f"  not released to {student}: {reason}" for student, reason in sorted(self.release_failed.items())]
        return out


def check_notebook(path: Path) -> str | None:
    """Why the autograded notebook ``path`` cannot be rendered (too large, unreadable), or ``None``."""
    size = path.stat().st_size
    if size > MAX_NOTEBOOK_BYTES:
        return f"{path.name} is {size // MIB} MiB, over the {MAX_NOTEBOOK_BYTES // MIB} MiB a feedback page renders"
    try:
        nb = json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as err:
        return f"{path.name} cannot be read as a notebook ({type(err).__name__}: {str(err)[:200]})"
    if not isinstance(nb, dict) or not isinstance(nb.get("cells"), list):
        return f"{path.name} cannot be read as a notebook (no list of cells)"
    return None


def failure_reason(outcome: dict) -> str:
    """The most telling line of a failed nbgrader API call: the last exception it logged."""
    text = f"{outcome.get('log', '')}\n{outcome.get('error', '')}"
    found = [line.strip() for line in text.splitlines()
             if re.match(r"^[\w.]*(Error|Exception|Exit)\b", line.strip()) and "NbGraderException" not in line]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    reason = found[-1] if found else (lines[-1] if lines else "nbgrader failed without a message")
    return reason[:300]


def _pages(course, student: str) -> set[str]:
    folder = course.folder("feedback", student)
    return {p.stem for p in folder.glob("*.html")} if folder.is_dir() else set()


def generate(course, release: bool = False) -> FeedbackReport:
    """Write (and release) the feedback of every autograded notebook that can be rendered; report the others.

    The class goes through nbgrader in one call (students with an unrenderable notebook excluded); a student whose
    pages are then incomplete is done again one notebook at a time, so that a failure is pinned on its notebook.

    Args:
        course: the :class:`tools.grading.course.Course`.
        release: also put the feedback in the exchange (``nbgrader release_feedback``), student by student on failure.

    Returns:
        The report: pages written, and each notebook or release that failed with its reason.
    """
    report = FeedbackReport()
    expected: dict[str, list[str]] = {}
    for student in sorted(p.name for p in (course.root / "autograded").iterdir()) \
            if (course.root / "autograded").is_dir() else []:
        notebooks = sorted(course.folder("autograded", student).glob("*.ipynb"))
        for path in notebooks:
            reason = check_notebook(path)
            if reason is not None:
                report.failed[(student, path.stem)] = reason
                (course.folder("feedback", student) / f"{path.stem}.html").unlink(missing_ok=True)  # a stale page
        expected[student] = [p.stem for p in notebooks if (student, p.stem) not in report.failed]
    expected = {student: stems for student, stems in expected.items() if stems or
                any(key[0] == student for key in report.failed)}
    if not expected:
        return report
    troubled = sorted({student for student, _ in report.failed})
    with tools_on_path():
        whole = {"CourseDirectory.student_id_exclude": ",".join(troubled)} if troubled else {}
        course.api(**whole).generate_feedback(course.assignment, force=True)
        for student, stems in expected.items():
            done = _pages(course, student)
            for stem in stems:
                if stem in done:
                    continue
                outcome = course.api(**{"CourseDirectory.notebook_id": stem}).generate_feedback(
                    course.assignment, student_id=student, force=True)
                if not outcome["success"] or stem not in _pages(course, student):
                    report.failed[(student, stem)] = failure_reason(outcome)
            written = sorted(_pages(course, student) & set(stems))
            if written:
                report.written[student] = written
        if release and report.written:
            _release(course, report)
    return report


def _release(course, report: FeedbackReport) -> None:
    outcome = course.api().release_feedback(course.assignment)
    if outcome["success"]:
        report.released = sorted(report.written)
        return
    for student in sorted(report.written):
        outcome = course.api().release_feedback(course.assignment, student_id=student)
        if outcome["success"]:
            report.released.append(student)
        else:
            report.release_failed[student] = failure_reason(outcome)
