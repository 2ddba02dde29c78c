"""What students get back: the feedback filter, on notebooks made by hand, and the course's feedback settings."""

from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_notebook, new_output

from tools import release
from tools.grading.feedback import (
    MAX_NOTEBOOK_BYTES,
    WITHHELD,
    SafeFeedback,
    check_notebook,
    failure_reason,
    hidden_lines,
    remove_hidden_regions,
)

TEST = '''assert isinstance(result, int), "result should be an integer"
### BEGIN HIDDEN TESTS
assert result == secret_answer(41) + 1, "result is not the answer for other inputs"
### END HIDDEN TESTS'''


def graded_notebook(outputs_of_test, outputs_of_answer=()):
    nb = new_notebook()
    answer = new_code_cell("result = 42", outputs=list(outputs_of_answer))
    answer.metadata["nbgrader"] = {"grade_id": "answer", "solution": True, "grade": False, "locked": False}
    test = new_code_cell(TEST, outputs=list(outputs_of_test))
    test.metadata["nbgrader"] = {"grade_id": "test", "solution": False, "grade": True, "locked": True, "points": 1}
    nb.cells = [answer, test]
    return nb


def feedback(nb):
    return SafeFeedback().preprocess(nb, {})[0]


def test_hidden_tests_are_removed_and_an_error_keeps_only_its_hint():
    failure = new_output("error", ename="AssertionError", evalue="result is not the answer for other inputs",
                         traceback=["Traceback (most recent call last)",
                                    "----> 3 assert result == secret_answer(41) + 1, \"result is not the answer\""])
    out = feedback(graded_notebook([failure]))
    test = out.cells[1]
    assert "BEGIN HIDDEN TESTS" not in test.source and "secret_answer" not in test.source
    assert test.source.startswith("assert isinstance(result, int)")
    assert test.outputs[0].traceback == ["AssertionError: result is not the answer for other inputs"]
    assert "secret_answer" not in nbformat.writes(out)


def test_outputs_quoting_a_hidden_test_are_withheld():
    # A submission printing the code it was tested with (IPython keeps it in `In`).
    leak = new_output("stream", name="stdout", text="assert result == secret_answer(41) + 1, \"result is not ...\n")
    harmless = new_output("stream", name="stdout", text="my own print\n")
    out = feedback(graded_notebook([], outputs_of_answer=[leak, harmless]))
    assert [o.get("text") for o in out.cells[0].outputs] == [WITHHELD, "my own print\n"]


def test_lines_shared_with_the_visible_part_are_not_secret():
    nb = graded_notebook([])
    nb.cells[1].source = TEST.replace("### BEGIN HIDDEN TESTS", "### BEGIN HIDDEN TESTS\nassert isinstance(result, "
                                                                  "int), \"result should be an integer\"")
    assert hidden_lines(nb) == {'assert result == secret_answer(41) + 1, "result is not the answer for other inputs"'}


def test_the_course_configuration_filters_feedback_and_sandboxes_autograding():
    config = release.load_course_config()
    assert config.GenerateFeedback.preprocessors[0] is SafeFeedback
    names = [cls.__name__ for cls in config.Autograde.autograde_preprocessors]
    # executed in the sandbox, judged, then made inert before anything is saved or rendered
    assert names.index("SandboxedExecute") < names.index("SanitizeSubmission") == names.index("SaveAutoGrades") - 1
    assert "JudgeVerdicts" not in names or names.index("JudgeVerdicts") < names.index("SanitizeSubmission")
    assert "LimitOutput" in names and config.OverwriteCells.add_missing_cells is True


def test_hidden_regions_are_removed_even_when_a_marker_is_unclosed_or_stray():
    assert remove_hidden_regions("a\n### BEGIN HIDDEN TESTS\nsecret\n### END HIDDEN TESTS\nb\n") == "a\nb\n"
    assert remove_hidden_regions("a\n### BEGIN HIDDEN TESTS\nsecret\nmore\n") == "a\n"
    assert remove_hidden_regions("a\n### END HIDDEN TESTS\nb") == "a\nb"


def test_a_failed_nbgrader_call_is_reported_by_its_last_exception():
    log = ("[GenerateFeedbackApp | ERROR] There was an error processing assignment\nTraceback (most recent call "
           "last):\n  File \"x.py\", line 1\nnbformat.reader.NotJSONError: Notebook does not appear to be JSON\n"
           "[GenerateFeedbackApp | ERROR] nbgrader.apps.baseapp.NbGraderException: Please see the error log\n")
    assert failure_reason({"log": log}) == "nbformat.reader.NotJSONError: Notebook does not appear to be JSON"
    assert failure_reason({}) == "nbgrader failed without a message"


def test_an_unreadable_or_oversized_notebook_is_refused_before_nbgrader_reads_it(tmp_path):
    good = tmp_path / "good.ipynb"
    nbformat.write(graded_notebook([]), good)
    assert check_notebook(good) is None
    (tmp_path / "bad.ipynb").write_text("{not json")
    assert "bad.ipynb cannot be read as a notebook" in check_notebook(tmp_path / "bad.ipynb")
    huge = tmp_path / "huge.ipynb"
    with huge.open("wb") as out:
        out.truncate(MAX_NOTEBOOK_BYTES + 1)
    assert "over the 32 MiB a feedback page renders" in check_notebook(huge)


def test_every_hint_of_the_courses_hidden_tests_reaches_the_feedback():
    # Each hidden assertion's message is what a student sees when it fails: the filter must never withhold it.
    import ast

    for path in sorted(release.REPO.joinpath("solutions", "segmentation").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
        for cell in tests:
            hidden = cell.source.split("### BEGIN HIDDEN TESTS")[-1].split("### END HIDDEN TESTS")[0]
            for node in ast.walk(ast.parse(hidden)):
                if not isinstance(node, ast.Assert):
                    continue
                assert node.msg is not None, f"{path.name}: a hidden assertion without a hint: {ast.unparse(node)}"
                message = node.msg.value if isinstance(node.msg, ast.Constant) else \
                    "".join(part.value for part in node.msg.values if isinstance(part, ast.Constant)) \
                    if isinstance(node.msg, ast.JoinedStr) else ast.unparse(node.msg)
                failure = new_output("error", ename="AssertionError", evalue=message, traceback=["..."])
                graded = nbformat.from_dict({**nb, "cells": [{**cell, "outputs": [failure]}]})
                shown = feedback(graded).cells[0].outputs[0]
                assert shown.output_type == "error" and shown.evalue == message, (path.name, message)
