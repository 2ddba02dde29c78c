"""The site's notebook pages (tools/site_notebooks.py), the leak scan of outputs (tools/leaks.py), and the width of
every notebook code line.

The pages are the student release run on a CPU: cells that need no answer keep their outputs, cells that failed or
that report on an answer lose them, and placeholders give way to a note for the reader. The leak scan looks for what
the solutions print and draw as well as for their lines.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools import leaks, site_notebooks
from tools.release import STUDENT_NOTE

REPO = Path(__file__).resolve().parents[1]
#: Code lines of a notebook fit the site's page (and a laptop's editor) without scrolling.
MAX_LINE = 88

PNG_RED = base64.b64encode(b"\x89PNG\r\n\x1a\n red pixels").decode()
PNG_BLUE = base64.b64encode(b"\x89PNG\r\n\x1a\n blue pixels").decode()


def graded(cell, grade_id: str, *, solution: bool, grade: bool):
    cell.metadata["nbgrader"] = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
                                 "solution": solution, "task": False, **({"points": 1} if grade else {})}
    return cell


def executed_student_notebook():
    """What a run of a student notebook looks like: outputs of data cells, an answer stub's error, progress bars."""
    cells = [
        new_markdown_cell(f"# 9. A notebook\n\n{STUDENT_NOTE}\n\nWhat it is about."),
        new_code_cell("print(os.getcwd())", outputs=[
            new_output("stream", name="stdout", text="/tmp/site-notebooks-x/segmentation/labcode\n")]),
        new_code_cell("show_data()", outputs=[
            new_output("stream", name="stderr", text="100%|#####| 3/3\n"),
            new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "a"},
                                             "text/plain": "HBox()"}),
            new_output("display_data", data={"image/png": PNG_BLUE, "text/plain": "<Figure>"}),
            new_output("stream", name="stdout", text="28 images in area 1\n")]),
        graded(new_code_cell("def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\n\n\nanswer = f(1)",
                             outputs=[new_output("error", ename="NotImplementedError", evalue="", traceback=[])]),
               "answer_f", solution=True, grade=False),
        graded(new_code_cell("assert answer == 2, f\"got {answer}\"", outputs=[
            new_output("error", ename="NameError", evalue="name 'answer' is not defined", traceback=[])]),
               "test_f", solution=False, grade=True),
        new_code_cell("print('uses the answer')\nplot(answer)", outputs=[
            new_output("stream", name="stdout", text="uses the answer\n"),
            new_output("error", ename="NameError", evalue="name 'answer' is not defined", traceback=[])]),
        graded(new_markdown_cell("YOUR ANSWER HERE"), "answer_why", solution=True, grade=True),
    ]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                              "language": "python"}})


def test_a_page_keeps_what_needs_no_answer_and_replaces_the_placeholders():
    executed = executed_student_notebook()
    before = nbformat.writes(executed)
    page, report = site_notebooks.readable_page(executed, "09_x", {"/tmp/site-notebooks-x/segmentation": "~/lab"})
    assert nbformat.writes(executed) == before, "the executed notebook is left as it was"
    nbformat.validate(page)
    title, setup, data, answer, test, dependent, written = page.cells

    assert STUDENT_NOTE not in title.source and site_notebooks.READER_NOTE in title.source
    assert title.source.startswith("# 9. A notebook") and title.source.endswith("What it is about.")
    assert [o["text"] for o in setup.outputs] == ["~/lab/labcode\n"], "the scratch folder is shown as a student's"
    # the figure and the printed data stay; the progress bar (stderr, widget) goes
    assert [o["output_type"] for o in data.outputs] == ["display_data", "stream"]
    assert data.outputs[0]["data"]["image/png"] == PNG_BLUE and data.outputs[1]["text"] == "28 images in area 1\n"
    # the answer: the placeholder lines become one note, the rest of the cell stays; no output
    assert answer.source == f"def f(x):\n    {site_notebooks.CODE_NOTE}\n\n\nanswer = f(1)"
    assert answer.outputs == [] and test.outputs == [] and dependent.outputs == []
    assert test.source == 'assert answer == 2, f"got {answer}"'
    assert written.source == site_notebooks.ANSWER_NOTE
    assert answer.metadata["nbgrader"]["grade_id"] == "answer_f", "nbgrader metadata kept"
    assert report.kept == [1, 2] and report.dropped == [3, 4, 5] and report.notes == [3, 6]
    text = nbformat.writes(page)
    for placeholder in ("YOUR CODE HERE", "YOUR ANSWER HERE", "NotImplementedError", "Error"):
        assert placeholder not in text, placeholder


def test_a_graded_test_cell_that_passes_shows_no_output_either():
    executed = executed_student_notebook()
    executed.cells[4].outputs = [new_output("stream", name="stdout", text="all checks passed\n")]
    page, report = site_notebooks.readable_page(executed, "09_x")
    assert page.cells[4].outputs == [] and 4 in report.dropped


def test_the_pages_are_made_from_a_release_only(tmp_path: Path):
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_x.ipynb").write_text(nbformat.writes(new_notebook()))
    with pytest.raises(site_notebooks.SiteNotebookError, match="is not a student release"):
        site_notebooks.build_site_notebooks(tmp_path / "out", release=tmp_path / "solutions", datadir=tmp_path)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_pages_of_a_small_release_are_run_and_written(tmp_path: Path, capfd):
    # A release of one notebook (with its labcode/ copy): run by a real kernel, written to a folder that replaces
    # the one there (a stale page goes, the symbolic link of an older layout too).
    release = tmp_path / "release"
    (release / "labcode").mkdir(parents=True)
    (release / "labcode" / "__init__.py").write_text("def stub():\n    raise NotImplementedError('question 9.1')\n")
    nb = executed_student_notebook()
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells[1].source = "import os, sys\nprint(os.getcwd())\nprint('stray', file=sys.stderr)"
    nb.cells[2].source = "import labcode\nprint(os.environ['LABCODE_DATADIR'])"
    nb.cells[5].source = "print('before')\nlabcode.stub()"
    (release / "09_x.ipynb").write_text(nbformat.writes(nb))
    out = tmp_path / "book" / "segmentation"
    out.parent.mkdir()
    out.symlink_to(release)
    reports = site_notebooks.build_site_notebooks(out, release=release, datadir=tmp_path / "data", timeout=60)
    assert not out.is_symlink() and sorted(p.name for p in out.iterdir()) == ["09_x.ipynb"]
    page = nbformat.read(out / "09_x.ipynb", as_version=4)
    assert [o["text"] for o in page.cells[1].outputs] == [f"{site_notebooks.SHOWN_WORKDIR}\n"]
    assert [o["text"] for o in page.cells[2].outputs] == [f"{tmp_path / 'data'}\n"]
    assert page.cells[5].outputs == [], "a cell that failed shows nothing, not even what it printed first"
    assert [r.stem for r in reports] == ["09_x"] and reports[0].kept == [1, 2]
    assert not (release / "09_x.ipynb").read_text().count("before\\n"), "the release itself is not touched"
    # The kernel's own output (it inherits this process's stderr) has no warning for the book's build log: its
    # channels are encrypted.
    said = capfd.readouterr().err
    assert "WARNING" not in said and "ERROR" not in said, said


# --------------------------------------------------------------------------------------------------------------------
# The leak scan of outputs
# --------------------------------------------------------------------------------------------------------------------

def solved_and_released():
    """An executed solution notebook and the executed student notebook of the same cells."""
    released = executed_student_notebook()
    solved = executed_student_notebook()
    solved.cells[3].outputs = []
    solved.cells[5].outputs = [
        new_output("stream", name="stdout", text="uses the answer\nthe answer is 2, of course\n"),
        new_output("display_data", data={"image/png": PNG_RED, "text/html": "<b>score of the answer</b>: 0.875",
                                         "text/plain": "<Figure>"})]
    return solved, released


def test_the_outputs_only_the_solutions_show_are_secrets():
    solved, released = solved_and_released()
    secrets = leaks.secret_outputs({"09_x": solved}, [released])
    # what the student's run shows too (data, its figure, what both print) is public; HTML counts as read
    assert secrets == {"outputs of solutions/segmentation/09_x.ipynb": {
        "the answer is 2, of course", "score of the answer", leaks.image_key(base64.b64decode(PNG_RED))}}


@pytest.mark.parametrize("planted", ["text", "image"])
def test_the_leak_scan_flags_a_solution_output_planted_in_a_page(planted: str, tmp_path: Path):
    solved, released = solved_and_released()
    secrets = leaks.secret_outputs({"09_x": solved}, [released])
    site = tmp_path / "site"
    (site / "_images").mkdir(parents=True)
    page, _ = site_notebooks.readable_page(released, "09_x")
    (site / "09_x.ipynb").write_text(nbformat.writes(page))
    (site / "_images" / "figure.png").write_bytes(base64.b64decode(PNG_BLUE))
    assert leaks.find_leaks(site, secrets) == [], "the student's own outputs are no leak"

    if planted == "text":  # a page showing what the solution printed
        page.cells[5].outputs = [new_output("stream", name="stdout", text="the answer is 2, of course\n")]
        (site / "09_x.ipynb").write_text(nbformat.writes(page))
        assert leaks.find_leaks(site, secrets) == [
            "09_x.ipynb: 'the answer is 2, of course' (from outputs of solutions/segmentation/09_x.ipynb)"]
    else:  # the solution's figure, as a notebook output and as the image file of a built page
        page.cells[5].outputs = [new_output("display_data", data={"image/png": PNG_RED})]
        (site / "09_x.ipynb").write_text(nbformat.writes(page))
        (site / "_images" / "other.png").write_bytes(base64.b64decode(PNG_RED))
        found = leaks.find_leaks(site, secrets)
        assert [line.split(":")[0] for line in found] == ["09_x.ipynb", "_images/other.png"], found
        assert all(leaks.image_key(base64.b64decode(PNG_RED)) in line for line in found)


# --------------------------------------------------------------------------------------------------------------------
# Code lines that fit the page
# --------------------------------------------------------------------------------------------------------------------

def notebook_paths() -> list[Path]:
    return sorted((REPO / "solutions" / "segmentation").glob("*.ipynb")) + \
        sorted((REPO / "notebooks" / "segmentation").glob("*.ipynb"))


def long_lines(path: Path) -> list[str]:
    """``"cell N, line M: L characters"`` for each code line longer than :data:`MAX_LINE`."""
    found = []
    for n, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
        if cell["cell_type"] != "code":
            continue
        for m, line in enumerate("".join(cell["source"]).splitlines(), start=1):
            if len(line) > MAX_LINE:
                found.append(f"cell {n}, line {m}: {len(line)} characters")
    return found


def test_the_line_check_finds_a_long_line(tmp_path: Path):
    path = tmp_path / "x.ipynb"
    path.write_text(nbformat.writes(new_notebook(cells=[new_markdown_cell("x" * 200), new_code_cell(
        "short = 1\n" + "y = " + "1 + " * 30 + "1\n" + "z" * MAX_LINE)])))
    assert long_lines(path) == [f"cell 1, line 2: {4 + 4 * 30 + 1} characters"]


@pytest.mark.parametrize("path", notebook_paths(), ids=lambda p: f"{p.parent.parent.name}/{p.stem}")
def test_every_notebook_code_line_fits_the_page(path: Path):
    assert not long_lines(path), f"{path.relative_to(REPO)}: code lines over {MAX_LINE} characters (the site " \
        f"scrolls them): {long_lines(path)}"
