"""Autograding with nbgrader, end to end, in a scratch course folder.

Scenarios (each with its own student): a submission made from the solutions gets full marks on every notebook; the
untouched release gets 0 on every autograded cell and the run still completes; a student who fetched the release
through an exchange and submitted it back with one wrong block in the library loses exactly that block's points; an
infinite loop in one cell is interrupted at the per-cell timeout and the other cells are still graded.

The notebooks run on a small generated data set (``LABCODE_DATADIR``) with ``PYTHONPATH`` pointing at the instructor
library: grading must still use the student's ``labcode/`` copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from tools import release

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
ASSIGNMENT = "segmentation"
COURSE_ID = "segmentation-lab"
STEMS = sorted(p.stem for p in SOURCE.glob("*.ipynb"))


# --------------------------------------------------------------------------------------------------------------------
# A scratch course
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """Course root with the sources, the generated release, its gradebook and an exchange folder.

    Its ``nbgrader_config.py`` loads the repository's and only moves the folders, so the command-line tools run in it
    with the course's real configuration.
    """
    root = tmp_path_factory.mktemp("course")
    shutil.copytree(SOURCE, root / "solutions" / ASSIGNMENT)
    release.build_release(root / "notebooks", db_url=f"sqlite:///{root / 'gradebook.db'}")
    (root / "exchange").mkdir()
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"load_subconfig({str(REPO / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        f"c.Exchange.root = {str(root / 'exchange')!r}\n"
        f"c.Exchange.cache = {str(root / 'cache')!r}\n"
    )
    return root


@pytest.fixture
def grading_env(monkeypatch, synth_root):
    monkeypatch.setenv("LABCODE_DATADIR", str(synth_root))
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the instructor library is importable, yet must not be used
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")


def nbgrader_api(course: Path, **config_values):
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    config = release.load_course_config()
    config.CourseDirectory.root = str(course)
    config.Exchange.root = str(course / "exchange")
    for key, value in config_values.items():
        section, name = key.split("__")
        config[section][name] = value
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


def autograde(course: Path, student: str, notebook: str | None = None, **config_values) -> dict:
    values = dict(config_values)
    if notebook:
        values["CourseDirectory__notebook_id"] = notebook
    with release.venv_on_path():
        result = nbgrader_api(course, **values).autograde(ASSIGNMENT, student, force=True, create=True)
    assert result["success"], result.get("log", "") + str(result.get("error", ""))
    return result


def grades(course: Path, student: str) -> dict[str, dict]:
    """grade_id -> notebook, kind (``auto`` for test cells, ``manual`` for written answers), score, max score."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}", COURSE_ID) as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                out[grade.name] = {"notebook": notebook.name, "kind": "auto" if grade.cell.cell_type == "code"
                                   else "manual", "score": grade.auto_score, "max": grade.max_score}
    return out


def solved(student_nb: Path, stem: str) -> None:
    """Fill the answer cells of a student notebook with the instructor's answers (as a diligent student would)."""
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source for c in nbformat.read(SOURCE / f"{stem}.ipynb", 4).cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    nb = nbformat.read(student_nb, as_version=4)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    nbformat.write(nb, student_nb)


def solve_everything(folder: Path) -> None:
    for stem in STEMS:
        solved(folder / f"{stem}.ipynb", stem)
    shutil.rmtree(folder / "labcode")
    shutil.copytree(REPO / "labcode", folder / "labcode", ignore=shutil.ignore_patterns("__pycache__"))


def new_submission(course: Path, student: str) -> Path:
    folder = course / "submitted" / student / ASSIGNMENT
    shutil.copytree(course / "notebooks" / ASSIGNMENT, folder)
    return folder


def error_cells(course: Path, student: str, stem: str) -> dict[int, str]:
    """Index -> exception name of the cells of an autograded notebook that ended in an error."""
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{stem}.ipynb", as_version=4)
    return {i: out.ename for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
            for out in cell.outputs if out.output_type == "error"}


# --------------------------------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------------------------------

def test_solution_submission_gets_full_marks_on_every_notebook(course, grading_env):
    solve_everything(new_submission(course, "sol"))
    started = time.perf_counter()
    autograde(course, "sol")
    elapsed = time.perf_counter() - started
    got = grades(course, "sol")
    auto = {k: g for k, g in got.items() if g["kind"] == "auto"}
    assert {g["notebook"] for g in got.values()} == set(STEMS)
    assert {g["notebook"] for g in auto.values()} == set(STEMS), "every notebook has autograded tests"
    assert all(g["score"] == g["max"] > 0 for g in auto.values()), {k: g for k, g in auto.items()
                                                                    if g["score"] != g["max"]}
    assert all(g["score"] is None for g in got.values() if g["kind"] == "manual")  # written answers: by hand
    for stem in STEMS:
        assert error_cells(course, "sol", stem) == {}, f"{stem} does not run cleanly"
    print(f"\nautograding the 7 solution notebooks took {elapsed:.0f} s "
          f"({sum(g['max'] for g in auto.values()):.0f} autograded points)")


def test_untouched_release_gets_zero_and_the_run_completes(course, grading_env):
    # The notebooks built on the library exercises: the UNet, the training run, the evaluation of a trained model.
    graded = ["03_unet", "05_training", "06_inference_onnx"]
    new_submission(course, "blank")
    autograde(course, "blank", notebook="0[356]_*")
    auto = [g for g in grades(course, "blank").values() if g["kind"] == "auto" and g["notebook"] in graded]
    assert {g["notebook"] for g in auto} == set(graded)
    assert all(g["score"] == 0 for g in auto), auto
    for stem in graded:
        assert (course / "autograded" / "blank" / ASSIGNMENT / f"{stem}.ipynb").is_file()
    unet = nbformat.read(course / "autograded" / "blank" / ASSIGNMENT / "03_unet.ipynb", as_version=4)
    messages = [out.evalue for cell in unet.cells if cell.cell_type == "code" for out in cell.outputs
                if out.output_type == "error"]
    assert "UNetConvBlock layers: write it (see notebook 03_unet.ipynb)" in messages  # the student's stub ran
    assert "Decoder first and last layers: write it (see notebook 03_unet.ipynb)" in messages


def nbgrader_cli(*args: str, cwd: Path) -> str:
    result = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), *args], cwd=cwd, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"nbgrader {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_fetch_submit_collect_then_one_wrong_block_loses_exactly_its_points(course, grading_env, tmp_path):
    exchange = ["--course", COURSE_ID, f"--Exchange.root={course / 'exchange'}", f"--Exchange.cache={tmp_path}/cache"]
    nbgrader_cli("release_assignment", ASSIGNMENT, cwd=course)
    home = tmp_path / "bob"
    home.mkdir()
    nbgrader_cli("fetch_assignment", ASSIGNMENT, *exchange, cwd=home)
    work = home / ASSIGNMENT
    assert sorted(p.stem for p in work.glob("*.ipynb")) == STEMS and (work / "labcode" / "unet.py").is_file()

    # Bob answers everything, but his UNetConvBlock.forward skips block2: right shapes, wrong values.
    solve_everything(work)
    unet = work / "labcode" / "unet.py"
    correct = "features = self.block2(self.block1(x))"
    assert correct in unet.read_text()
    unet.write_text(unet.read_text().replace(correct, "features = self.block1(x)"))
    (work / "runs").mkdir()
    (work / "runs" / "huge.pt").write_bytes(b"0" * 1000)  # left out of the submission by the course's ignore list
    nbgrader_cli("submit", ASSIGNMENT, "--student=bob", *exchange, cwd=home)
    nbgrader_cli("collect", ASSIGNMENT, cwd=course)
    collected = course / "submitted" / "bob" / ASSIGNMENT
    assert "features = self.block1(x)" in (collected / "labcode" / "unet.py").read_text()
    assert not (collected / "runs").exists()

    autograde(course, "bob", notebook="03_unet")
    got = {k: g for k, g in grades(course, "bob").items() if g["notebook"] == "03_unet" and g["kind"] == "auto"}
    assert got["test_unet_conv_block_forward"]["score"] == 0
    others = {k: g for k, g in got.items() if k != "test_unet_conv_block_forward"}
    assert len(others) == 6 and all(g["score"] == g["max"] for g in others.values()), others


def test_infinite_loop_times_out_its_cell_and_the_rest_is_graded(course, grading_env):
    folder = new_submission(course, "loop")
    solve_everything(folder)
    nb = nbformat.read(folder / "04_metrics_losses.ipynb", as_version=4)
    looping = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "answer_wall_accuracy")
    looping.source = "while True:\n    pass"
    nbformat.write(nb, folder / "04_metrics_losses.ipynb")
    started = time.perf_counter()
    autograde(course, "loop", notebook="04_metrics_losses", ExecutePreprocessor__timeout=10)
    assert time.perf_counter() - started < 120
    got = {k: g for k, g in grades(course, "loop").items() if g["notebook"] == "04_metrics_losses"
           and g["kind"] == "auto"}
    assert got.pop("test_wall_accuracy")["score"] == 0
    assert got and all(g["score"] == g["max"] for g in got.values()), got
    errors = error_cells(course, "loop", "04_metrics_losses")
    index = next(i for i, c in enumerate(nbformat.read(
        course / "autograded" / "loop" / ASSIGNMENT / "04_metrics_losses.ipynb", 4).cells)
        if c.metadata.get("nbgrader", {}).get("grade_id") == "answer_wall_accuracy")
    assert errors[index] in ("CellTimeoutError", "KeyboardInterrupt"), errors
    assert errors[index + 1] == "NameError"  # its test cell: wall_accuracy was never set
    assert len(errors) == 2, errors
