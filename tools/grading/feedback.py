"""What students see of their grading: feedback without hidden tests, solutions or instructor answers.

nbgrader's feedback is the autograded notebook rendered to HTML. By default it shows each test cell whole, hidden
tests included, and each failed test's full traceback, which quotes the failing (possibly hidden) line. The
:class:`SafeFeedback` preprocessor, put first in ``GenerateFeedback.preprocessors`` by the course configuration,
therefore

- removes the hidden-test regions from every cell (what remains is the visible test the student already had);
- reduces every error to one line, ``ExceptionName: message``: for a failed test, the hint its assertion gives;
- withholds any output that quotes a line of a hidden test, or the first 32 characters of one (a submission could
  print the code it was tested with; IPython keeps it in ``In``).

The autograded notebook itself is not changed; the gradebook keeps the scores. Solutions never reach feedback:
the autograded notebook holds the student's own answers, and nbgrader's record of the answer cells holds the
release's stubs, not the instructor's answers.
"""

from __future__ import annotations

from nbconvert.exporters.exporter import ResourcesDict
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests, NbGraderPreprocessor

BEGIN, END = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"
WITHHELD = "[output withheld from the feedback: it quotes a hidden test]\n"
#: Lines shorter than this are too common (``else:``, ``)``) to reveal anything.
MIN_LINE = 12
#: A hidden line counts as quoted when its beginning this long (code, before any hint message) appears.
PREFIX = 32


def hidden_lines(nb: NotebookNode) -> set[str]:
    """The stripped lines of the notebook's hidden tests that do not also appear outside them."""
    hidden, visible = set(), set()
    for cell in nb.cells:
        inside = False
        for line in cell.source.splitlines():
            if BEGIN in line:
                inside = True
            elif END in line:
                inside = False
            elif len(line.strip()) >= MIN_LINE:
                (hidden if inside else visible).add(line.strip())
    return hidden - visible


def _texts(output: NotebookNode) -> list[str]:
    if output.output_type == "stream":
        return [output.get("text", "")]
    if output.output_type == "error":
        return [output.get("evalue", ""), *output.get("traceback", [])]
    return [str(value) for value in output.get("data", {}).values()]


class SafeFeedback(NbGraderPreprocessor):
    """Strip hidden tests, shorten errors to their message, withhold outputs quoting hidden tests."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        secret = hidden_lines(nb)
        clear = ClearHiddenTests(enforce_metadata=False)
        for cell in nb.cells:
            clear._remove_hidden_test_region(cell)
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
        return nb, resources
