"""Grading a class end to end, through the sandboxed parallel grader (``python -m tools.grading``).

Students, each with a submission of their own, graded together in a scratch course on the small generated data set:

- correct work: the instructor's answers (full marks), and the student's own forms of every exercise (full marks);
- the untouched release (0 on every test, and the run completes);
- a planted bug (loses exactly that test), an infinite loop (its cell is cut, the rest is graded);
- a deleted ``labcode/`` and one redirected to the instructor's files (0 on every test of code to write);
- the whole loop from the exchange: release, fetch, submit, one command that grades, gives feedback and exports.

Hostile submissions, a slurm cluster and the models are in ``test_grading_cluster.py``, attacks on the verdicts in
``test_grading_attacks.py``.

The grader's process has the instructor library importable (``PYTHONPATH``); the submissions must still never
reach it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.course import (
    ASSIGNMENT,
    REPO,
    STEMS,
    answer,
    auto_grades,
    cell_outputs,
    grader,
    keep_notebooks,
    make_course,
    new_submission,
    notebook_text,
    output_text,
    run_grader,
)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]

#: The tests of code students write in the library.
LIBRARY_TESTS = {"test_augmentation_pipeline", "test_unet_conv_block_layers", "test_unet_conv_block_forward",
                 "test_unet_encoder", "test_unet_up_block_layers", "test_unet_up_block_forward",
                 "test_unet_decoder", "test_class_weights_inverse"}


# --------------------------------------------------------------------------------------------------------------------
# Correct work, and none
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whole_class(tmp_path_factory, grading_env):
    course = make_course(tmp_path_factory.mktemp("course"))
    new_submission(course, "sol")
    metrics = new_submission(course, "own", own=True) / "labcode" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n\ndef macro_f1(*args, **kwargs):\n    return 1.0\n")
    new_submission(course, "blank", notebooks="blank", library="blank")
    done, results = run_grader(course)
    return course, done, results


def test_correct_work_gets_full_marks_in_the_instructors_and_in_the_students_own_form(whole_class):
    course, done, results = whole_class
    assert done.returncode == 0, done.stdout + done.stderr
    for student in ("sol", "own"):
        assert results[student]["status"] == "graded"
        got = auto_grades(course, student)
        assert {g["notebook"] for g in got.values()} == set(STEMS), "every notebook has autograded tests"
        # Without a hidden test set the model is not scored: its cell gets 0 and says why, nothing else is lost.
        assert got.pop("test_model_export")["score"] == 0
        assert "Not scored" in output_text(cell_outputs(course, student, "05_training", "test_model_export"))
        lost = {k: g for k, g in got.items() if g["score"] != g["max"]}
        assert not lost, f"{student} lost points: {lost}"
    # Notebook 06's comparison table, which scores nothing, is left out while grading.
    graded_06 = course / "autograded" / "sol" / ASSIGNMENT / "06_inference_onnx.ipynb"
    assert "(the table is left out while grading: run the cell yourself)" in notebook_text(graded_06)
    # The final table: students, mean score per notebook.
    assert re.search(r"submissions +3\n", done.stdout) and re.search(r"graded +3\n", done.stdout), done.stdout
    assert re.search(r"mean 03_unet +8\.7 / 13\n", done.stdout), done.stdout


def test_the_untouched_release_gets_zero_and_the_run_completes(whole_class):
    course, _, results = whole_class
    assert results["blank"]["status"] == "graded"
    got = auto_grades(course, "blank")
    assert {g["notebook"] for g in got.values()} == set(STEMS)
    assert all(g["score"] == 0 for g in got.values()), got
    messages = output_text(cell_outputs(course, "blank", "03_unet", "test_unet_conv_block_layers"))
    assert "UNetConvBlock layers: write it (see notebook 03_unet.ipynb)" in messages  # the student's stub ran
    assert (course / "autograded" / "blank" / ASSIGNMENT / "05_training.ipynb").is_file()


def test_only_the_library_exercises_are_the_students(whole_class):
    # Library files without exercises are put back to the release's before grading: a change there (here, a macro
    # F1 that always says 1) never counts; unet.py, transforms.py and stats.py, where students write, stay theirs.
    course, _, results = whole_class
    assert results["sol"]["restored"] == []
    assert results["own"]["restored"] == ["labcode/metrics.py"]
    graded = course / "autograded" / "own" / ASSIGNMENT / "labcode"
    assert (graded / "metrics.py").read_bytes() == (course / "notebooks" / ASSIGNMENT / "labcode" / "metrics.py"
                                                     ).read_bytes()
    assert "bias=False" in (graded / "unet.py").read_text()


# --------------------------------------------------------------------------------------------------------------------
# Mistakes and shortcuts
# --------------------------------------------------------------------------------------------------------------------

REDIRECT = '''
# Borrow the course's own solutions instead of writing them: through the installed package's metadata, or at the
# path of the instructor's repository.
import importlib.metadata
import pathlib
import sys

candidates = [pathlib.Path({repo!r}) / "labcode" / {name!r}]
try:
    for entry in importlib.metadata.files("labcode") or []:
        path = pathlib.Path(entry.locate())
        text = path.read_text() if str(entry).endswith(".py") and path.is_file() else ""
        for line in text.splitlines():
            if line.startswith("MAPPING"):
                candidates.insert(0, pathlib.Path(eval(line.split("=", 1)[1])["labcode"]) / {name!r})
except importlib.metadata.PackageNotFoundError:
    pass
source = next(path for path in candidates if path.is_file())
exec(compile(source.read_text(), str(source), "exec"))
'''


@pytest.fixture(scope="module")
def shortcuts(tmp_path_factory, grading_env):
    course = make_course(tmp_path_factory.mktemp("course"))
    bug = new_submission(course, "bug")
    keep_notebooks(bug, {"03_unet"})
    unet = bug / "labcode" / "unet.py"
    assert "features = self.block2(self.block1(x))" in unet.read_text()
    unet.write_text(unet.read_text().replace("features = self.block2(self.block1(x))", "features = self.block1(x)"))
    loop = new_submission(course, "loop")
    keep_notebooks(loop, {"04_metrics_losses"})
    answer(loop, "04_metrics_losses", {"answer_wall_accuracy": "while True:\n    pass"})
    new_submission(course, "nolib", library="deleted")
    redirect = new_submission(course, "redirect", library="blank")
    for name in ("unet.py", "transforms.py", "stats.py"):
        (redirect / "labcode" / name).write_text(REDIRECT.format(repo=str(REPO), name=name))
    # The instructor library is reachable from the grader's environment: the shortcut works outside grading.
    check = subprocess.run([sys.executable, "-c", "import labcode.unet as u; print(u.UNetConvBlock(3, 4))"],
                           cwd=redirect, capture_output=True, text=True, timeout=120)
    assert check.returncode == 0 and "BatchNorm2d" in check.stdout, check.stderr
    # The loop spins until the cell timeout: 10 s, several times the longest cell of these notebooks (their setup).
    done, results = run_grader(course, "--notebooks", "0[234]_*", "--cell-timeout", "10")
    return course, done, results


GRADED = {"02_data_pipeline", "03_unet", "04_metrics_losses"}  # the notebooks these students are graded on


def test_a_planted_bug_loses_exactly_its_test(shortcuts):
    course, _, _ = shortcuts
    got = auto_grades(course, "bug", {"03_unet"})  # (handed in alone)
    assert got.pop("test_unet_conv_block_forward")["score"] == 0
    assert got and all(g["score"] == g["max"] for g in got.values()), got


def test_an_infinite_loop_is_cut_at_the_cell_timeout_and_the_rest_is_graded(shortcuts):
    course, _, results = shortcuts
    got = auto_grades(course, "loop", {"04_metrics_losses"})  # (handed in alone)
    assert got.pop("test_wall_accuracy")["score"] == 0
    assert got and all(g["score"] == g["max"] for g in got.values()), got
    errors = output_text(cell_outputs(course, "loop", "04_metrics_losses", "answer_wall_accuracy"))
    assert "CellTimeoutError" in errors or "KeyboardInterrupt" in errors
    assert results["loop"]["status"] == "graded"


@pytest.mark.parametrize("student", ["nolib", "redirect"])
def test_a_missing_or_redirected_library_scores_zero_on_the_code_to_write(shortcuts, student):
    course, _, results = shortcuts
    assert results[student]["status"] == "graded"
    got = auto_grades(course, student, GRADED)
    assert LIBRARY_TESTS <= set(got)
    assert all(got[name]["score"] == 0 for name in LIBRARY_TESTS), {n: got[n] for n in LIBRARY_TESTS}
    said = output_text(cell_outputs(course, student, "03_unet", "test_unet_conv_block_layers"))
    if student == "nolib":  # a submission without its library is graded on the release's stubs
        assert "NotImplementedError: UNetConvBlock layers: write it" in said, said
    else:  # neither the instructor's repository nor an installed labcode exist where the submission runs
        assert "StopIteration" in said, said


# --------------------------------------------------------------------------------------------------------------------
# The whole loop from the exchange, and feedback
# --------------------------------------------------------------------------------------------------------------------

def nbgrader_cli(*args: str, cwd: Path) -> str:
    executable = Path(sys.executable).parent / "nbgrader"
    result = subprocess.run([str(executable), *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"nbgrader {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout + result.stderr


def test_release_fetch_submit_then_one_command_grades_gives_feedback_and_exports(tmp_path, grading_env):
    course = make_course(tmp_path / "course")
    exchange = ["--course", "segmentation-lab", f"--Exchange.root={course / 'exchange'}",
                f"--Exchange.cache={tmp_path}/cache"]
    nbgrader_cli("release_assignment", ASSIGNMENT, cwd=course)
    home = tmp_path / "bob"
    home.mkdir()
    nbgrader_cli("fetch_assignment", ASSIGNMENT, *exchange, cwd=home)
    work = home / ASSIGNMENT
    assert sorted(p.stem for p in work.glob("*.ipynb")) == STEMS and (work / "labcode" / "unet.py").is_file()
    from tests.course import write_library

    answer(work, "03_unet")
    write_library(work / "labcode")
    unet = work / "labcode" / "unet.py"
    unet.write_text(unet.read_text().replace("features = self.block2(self.block1(x))", "features = self.block1(x)"))
    (work / "runs").mkdir()
    (work / "runs" / "huge.pt").write_bytes(b"0" * 1000)  # left out of the submission by the course's ignore list
    nbgrader_cli("submit", ASSIGNMENT, "--student=bob", *exchange, cwd=home)

    done = grader("run", "--course", str(course), "--workers", "2", "--no-progress", "--notebooks", "03_unet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "collected 1 submission" in done.stdout
    assert not (course / "submitted" / "bob" / ASSIGNMENT / "runs").exists()
    got = auto_grades(course, "bob", {"03_unet"})
    assert got.pop("test_unet_conv_block_forward")["score"] == 0
    assert len(got) == 6 and all(g["score"] == g["max"] for g in got.values()), got

    html = (course / "feedback" / "bob" / ASSIGNMENT / "03_unet.html").read_text()
    assert "HIDDEN TESTS" not in html and "reference = block.block2(block.block1(x))" not in html  # hidden test
    # the failing test's one-line hint, from the judge
    assert "TestFailed: UNetConvBlock(3, 16)&#x27;s features (block2 after block1, before pooling) has the right " \
        "shape but wrong values" in html or "TestFailed: UNetConvBlock(3, 16)'s features (block2 after block1, " \
        "before pooling) has the right shape but wrong values" in html, html[-3000:]
    assert "most recent call last" not in html and "Cell In[" not in html  # one line per failed test: its hint
    grades_csv = (course / "grades.csv").read_text()
    assert "bob" in grades_csv.splitlines()[1] and ",11.0," in grades_csv.splitlines()[1], grades_csv


def test_the_grader_refuses_an_environment_with_the_instructor_library(tmp_path, grading_env):
    course = make_course(tmp_path / "course")
    new_submission(course, "sol")
    done = grader("autograde", "--course", str(course), "--python", sys.executable, "--no-progress")
    assert done.returncode == 2
    assert "can import labcode from" in done.stderr and "third-party stack only" in done.stderr
