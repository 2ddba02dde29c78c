"""nbgrader preprocessors that put the judge between the student's kernel and the gradebook.

In the autograde pipeline (:func:`tools.grading.kernel.autograde_preprocessors`):

1. :class:`InsertProbes`, before execution: each graded test cell keeps only the release's code (no hidden test
   reaches the kernel), and a probe cell is inserted after it; ``labcode_probe.py`` (:mod:`tools.grading.probe`) is
   copied next to the notebook for the probe cells to import.
2. The notebook runs in the sandboxed kernel (:class:`tools.grading.kernel.SandboxedExecute`).
3. :class:`JudgeVerdicts`, after execution: the probe cells are removed (with anything the submission printed while
   it was being judged), their evidence is judged by :mod:`tools.grading.judge`, and each graded test cell's outputs
   become exactly the verdict: "Passed (n / n points)", an error ``TestFailed: <hint>``, or "Not scored" with a
   partial-credit value of 0. nbgrader's ``SaveAutoGrades`` then records the points from these outputs, as it does
   for any test cell, so the gradebook, the feedback and the CSV export work as before.

Whatever the kernel did, only the judge's verdicts decide points: a hook that hides errors, a patched assertion or a
module shadowing numpy change what the student's kernel shows, never the outputs the gradebook reads.
"""

from __future__ import annotations

import os
import shutil
import traceback
from pathlib import Path

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import v4
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor
from traitlets import Bool, Unicode

from tools.grading import judge, probe

PROBE_FILE = "labcode_probe.py"
#: Cell metadata of an inserted probe cell.
PROBE_KEY, GRADE_KEY = probe.CELL_KEY, "labcode_grade_id"


class GraderOnly(NbGraderPreprocessor):
    """Refuse a plain ``nbgrader autograde`` (or Formgrader's button): grading goes through the course's grader.

    The grader (``make grade``, ``python -m tools.grading``) takes only the files a submission may hold and grades
    each notebook on its own; nbgrader alone would give the kernel whatever lies beside the notebooks and let one
    broken notebook zero the others. The worker sets ``GraderOnly.worker = True``.
    """

    worker = Bool(False, help="Set by the course's grading worker.").tag(config=True)

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        if not self.worker:
            raise RuntimeError("this course is graded with `make grade` (python -m tools.grading run), or one student "
                               "with `python -m tools.grading autograde --student=NAME`, not with a plain nbgrader "
                               "autograde: see the instructors' page")
        return nb, resources


def is_test_cell(cell: NotebookNode) -> bool:
    """A graded code cell: an autograded test."""
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def probe_cell(grade_id: str) -> NotebookNode:
    source = (f"# Inserted by the grader: records what {grade_id} needs (judged outside this kernel).\n"
              f"import labcode_probe\nlabcode_probe.emit({grade_id!r}, globals())")
    return v4.new_code_cell(source=source, metadata={PROBE_KEY: True, GRADE_KEY: grade_id})


class InsertProbes(NbGraderPreprocessor):
    """Release-only test cells, each followed by the probe cell of its test; the probe module beside the notebook."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        folder = Path(resources.get("metadata", {}).get("path") or os.getcwd())
        shutil.copyfile(probe.__file__, folder / PROBE_FILE)
        clear = ClearHiddenTests(enforce_metadata=False)
        cells = []
        for cell in nb.cells:
            if cell.metadata.get(PROBE_KEY):  # a probe cell a submission brought along is not the grader's
                continue
            cells.append(cell)
            if is_test_cell(cell):
                clear._remove_hidden_test_region(cell)
                cells.append(probe_cell(cell.metadata["nbgrader"]["grade_id"]))
        nb.cells = cells
        return nb, resources


def evidence_of(cell: NotebookNode) -> dict | None:
    """The last evidence payload a probe cell emitted for its own test (``None`` when there is none)."""
    found = None
    for output in cell.get("outputs", []):
        payload = output.get("data", {}).get(probe.MIME) if output.get("output_type") in (
            "display_data", "execute_result") else None
        if isinstance(payload, dict) and payload.get("grade_id") == cell.metadata.get(GRADE_KEY):
            found = payload.get("evidence")
    return found


def verdict_outputs(verdict: judge.Verdict, points: float) -> list[NotebookNode]:
    """The outputs that tell nbgrader (and the student) the verdict."""
    if verdict.passed:
        return [v4.new_output("stream", name="stdout", text=f"Passed ({points:g} / {points:g} points).\n")]
    if not verdict.scored:
        return [v4.new_output("stream", name="stdout", text=f"Not scored: {verdict.hint} (0 / {points:g} points).\n"),
                v4.new_output("execute_result", data={"text/plain": "0"}, execution_count=None)]
    return [v4.new_output("error", ename="TestFailed", evalue=verdict.hint, traceback=[f"TestFailed: {verdict.hint}"])]


#: Errors that the grader itself puts in a cell when the kernel could not run it to the end.
STOPS = {"KernelDied": "the kernel stopped before this test could be judged",
         "CellTimeoutError": "this test or the probe after it ran past the time limit of a cell"}


def interruption(*cells: NotebookNode | None) -> str:
    """Why the kernel could not produce a test's evidence, when it was stopped ("" otherwise)."""
    for cell in cells:
        for output in (cell or {}).get("outputs", []):
            if output.get("output_type") == "error" and output.get("ename") in STOPS:
                return f"{STOPS[output['ename']]} ({output.get('evalue', '')})"
    return ""


class JudgeVerdicts(NbGraderPreprocessor):
    """Remove the probe cells, judge their evidence, make each test cell's outputs its verdict."""

    datadir = Unicode("", help="The data set the notebooks read (default: $LABCODE_DATADIR, else the generated "
                               "one).").tag(config=True)

    def context(self) -> judge.Context:
        datadir = self.datadir or os.environ.get("LABCODE_DATADIR", "")
        if not datadir:
            from labcode.synth import ensure_default_dataset

            datadir = str(ensure_default_dataset(progress=False))
        return judge.Context(datadir=Path(datadir))

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        evidence, probes, cells = {}, {}, []
        for cell in nb.cells:
            if cell.metadata.get(PROBE_KEY):
                evidence[cell.metadata.get(GRADE_KEY)] = evidence_of(cell)
                probes[cell.metadata.get(GRADE_KEY)] = cell
            else:
                cells.append(cell)
        nb.cells = cells
        context = self.context()
        verdicts = {}
        for cell in nb.cells:
            if not is_test_cell(cell):
                continue
            grade_id = cell.metadata["nbgrader"]["grade_id"]
            stopped = interruption(cell, probes.get(grade_id))
            try:
                verdict = judge.Verdict(False, stopped) if stopped and evidence.get(grade_id) is None else \
                    judge.judge(grade_id, evidence.get(grade_id), context)
            except Exception:  # noqa: BLE001 - malformed evidence never stops the grading of the others
                self.log.error("the judge failed on %s:\n%s", grade_id, traceback.format_exc())
                verdict = judge.Verdict(False, "the grader could not read this test's evidence (it is malformed)")
            cell.outputs = verdict_outputs(verdict, float(cell.metadata["nbgrader"].get("points", 0)))
            verdicts[grade_id] = {"passed": verdict.passed, "scored": verdict.scored, "hint": verdict.hint}
        resources["labcode_verdicts"] = verdicts
        folder = Path(resources.get("metadata", {}).get("path") or os.getcwd())
        (folder / PROBE_FILE).unlink(missing_ok=True)
        return nb, resources
