"""Submissions that attack the grading, graded in one run with honest ones, through ``python -m tools.grading``.

Every attack below made a failing test count as passed, or carried hidden tests out, when the verdicts were decided
in the student's kernel. Now the kernel only hands back evidence and the judge decides outside it, so:

- untouched exercises earn 0 on every code test, whatever the submission installs in its kernel (IPython hooks, a
  patched ``run_cell``, errors hidden, an ``execute_result`` sent first), patches from its library (the visible
  checks, ``torch.allclose``), forged probes, or puts beside its notebooks (``numpy.py``, ``ipykernel_launcher.py``,
  ``labcode_probe.py``);
- a function that reads the cells it is called from (``In``, frames, the notebook files) finds no hidden test;
- a duplicated answer cell or an unreadable notebook costs at most that notebook;
- the honest students of the same run keep full marks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from tests.course import (
    ASSIGNMENT,
    REPO,
    answer,
    auto_grades,
    cell_outputs,
    grader,
    keep_notebooks,
    make_course,
    new_submission,
    output_text,
    require_sandbox,
)
from tools.leaks import find_leaks, secret_lines

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")]

NOTEBOOKS = {"01_data_exploration", "03_unet", "04_metrics_losses"}

#: Installed in the kernel by the student's code: every failing cell looks passed, every check agrees, the probe is
#: forged. With verdicts decided in the kernel, this earned full marks on notebook 3 with the stubs untouched.
HOOKS = '''
import builtins as _builtins
import sys as _sys

def _attack():
    import IPython
    from IPython.display import display
    shell = IPython.get_ipython()
    if shell is None or getattr(_builtins, "_attacked", False):
        return
    _builtins._attacked = True

    def forget_errors(result):
        result.error_in_exec = None
        result.error_before_exec = None

    shell.events.register("post_run_cell", forget_errors)
    shell.events.register("pre_run_cell", lambda info: _sys.displayhook(100.0))  # a "full marks" execute_result
    shell.showtraceback = lambda *args, **kwargs: None
    shell._showtraceback = lambda *args, **kwargs: None
    import numpy
    import torch
    torch.allclose = lambda *args, **kwargs: True
    numpy.allclose = lambda *args, **kwargs: True
    try:
        import labcode.check as check
        for name in dir(check):
            if name.startswith("check_"):
                setattr(check, name, lambda *args, **kwargs: None)
    except Exception:
        pass
    import types
    forged = types.ModuleType("labcode_probe")

    def emit(grade_id, ns):
        evidence = {"value": 0.5, "visible": {"output": {"value": 1.0}}, "hidden": {}}
        display({"application/vnd.labcode.probe+json": {"grade_id": grade_id, "evidence": evidence},
                 "text/plain": "all good"}, raw=True)

    forged.emit = emit
    forged.collect = lambda grade_id, ns: {"grade_id": grade_id, "evidence": {}}
    _sys.modules["labcode_probe"] = forged

_attack()
'''

SHADOW_NUMPY = '''
import os as _os
import sys as _sys
_here = _os.path.dirname(_os.path.abspath(__file__))
_sys.path[:] = [p for p in _sys.path if _os.path.abspath(p or ".") != _here]
del _sys.modules["numpy"]
import numpy as _real
_real.allclose = lambda *args, **kwargs: True
_sys.modules["numpy"] = _real
'''

SHADOW_LAUNCHER = '''
import os, runpy, sys
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != os.getcwd()]
del sys.modules["ipykernel_launcher"]
from IPython.core.interactiveshell import InteractiveShell
InteractiveShell.showtraceback = lambda *args, **kwargs: None
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
'''

SHADOW_PROBE = '''
def emit(grade_id, ns):
    from IPython.display import display
    display({"application/vnd.labcode.probe+json": {"grade_id": grade_id, "evidence": {"value": 1}},
             "text/plain": ""}, raw=True)
'''

#: A student's function that, when a test calls it, gathers everything it can find of the calling code (``In``, the
#: frames, the files it can open) and prints it, encoded, in every later cell's output.
READER = '''LOOT = []


def describe_sample(image, mask) -> dict:
    import glob, inspect, sys
    LOOT.extend(str(cell) for cell in globals().get("In", []))
    frame = sys._getframe(1)
    while frame is not None:
        try:
            LOOT.append(inspect.getsource(frame.f_code))
        except Exception:
            pass
        frame = frame.f_back
    for path in glob.glob("*.ipynb") + glob.glob("../**/*.ipynb", recursive=True) + glob.glob("*.py"):
        try:
            LOOT.append(open(path).read())
        except Exception:
            pass
    image, mask = np.asarray(image), np.asarray(mask)
    return {"image_shape": tuple(image.shape), "image_dtype": str(image.dtype), "mask_shape": tuple(mask.shape),
            "mask_dtype": str(mask.dtype), "classes": [CLASSES[k] for k in np.unique(mask)]}


def _show_loot(result):
    import base64
    if LOOT:
        print("LOOT", base64.b64encode("\\n".join(LOOT).encode()).decode())


get_ipython().events.register("post_run_cell", _show_loot)
'''


def blank_with_hooks(course: Path, student: str) -> Path:
    """Exercises and answers untouched; attack code run by the student's library and first answer cells."""
    folder = new_submission(course, student, notebooks="blank", library="blank")
    for name in ("unet.py", "stats.py", "transforms.py"):
        path = folder / "labcode" / name
        path.write_text(path.read_text() + "\n" + HOOKS)
    stub = "def describe_sample(image, mask) -> dict:\n    raise NotImplementedError()\n"
    answer(folder, "01_data_exploration", {"answer_describe_sample": HOOKS + "\n" + stub})
    answer(folder, "04_metrics_losses", {"answer_wall_accuracy": HOOKS + "\nwall_accuracy = 'full marks'",
                                         "answer_wall_macro_f1": "wall_macro_f1 = None"})
    return folder


@pytest.fixture(scope="module")
def attacked(tmp_path_factory, synth_root, reference_model):
    require_sandbox()
    saved = {key: os.environ.get(key) for key in ("LABCODE_DATADIR", "PYTHONPATH", "LABCODE_REFERENCE_MODEL")}
    os.environ["LABCODE_DATADIR"] = str(synth_root)
    os.environ["LABCODE_REFERENCE_MODEL"] = str(reference_model)
    os.environ["PYTHONPATH"] = str(REPO)
    course = make_course(tmp_path_factory.mktemp("course"))
    new_submission(course, "honest")
    blank_with_hooks(course, "hooks")
    shadows = new_submission(course, "shadows", notebooks="blank", library="blank")
    (shadows / "numpy.py").write_text(SHADOW_NUMPY)
    (shadows / "ipykernel_launcher.py").write_text(SHADOW_LAUNCHER)
    (shadows / "labcode_probe.py").write_text(SHADOW_PROBE)
    reader = new_submission(course, "reader")
    keep_notebooks(reader, {"01_data_exploration"})  # each test's submission holds only the notebooks it reads
    answer(reader, "01_data_exploration", {"answer_describe_sample": READER + "\n\nimage, mask = dataset[0]"})
    dup = new_submission(course, "dup")
    keep_notebooks(dup, {"04_metrics_losses"})
    nb = nbformat.read(dup / "04_metrics_losses.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id")
                 == "answer_wall_accuracy")
    nb.cells.insert(index + 1, nbformat.from_dict(json.loads(json.dumps(nb.cells[index]))))  # Jupyter's copy-paste
    nbformat.write(nb, dup / "04_metrics_losses.ipynb")
    broken = new_submission(course, "broken")
    keep_notebooks(broken, {"01_data_exploration", "03_unet"})
    (broken / "03_unet.ipynb").write_text('{"cells": [ truncated by a crash')
    done = grader("autograde", "--course", str(course), "--workers", "2", "--no-progress", "--notebooks",
                  "0[134]_*", "--cell-timeout", "120")
    results = {p.parent.name: json.loads(p.read_text()) for p in (course / "grading").glob("*/result.json")}
    yield course, done, results
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def test_honest_students_graded_in_the_same_run_keep_full_marks(attacked):
    course, done, results = attacked
    for student, notebooks in (("honest", NOTEBOOKS), ("reader", {"01_data_exploration"})):
        assert results[student]["status"] == "graded", results[student]
        got = auto_grades(course, student, notebooks)
        assert got and all(g["score"] == g["max"] for g in got.values()), (student, got)


@pytest.mark.parametrize("student", ["hooks", "shadows"])
def test_untouched_exercises_earn_nothing_whatever_the_kernel_is_made_to_say(attacked, student):
    course, _, results = attacked
    assert results[student]["status"] == "graded", results[student]
    got = auto_grades(course, student, NOTEBOOKS)
    assert len(got) == 12 and all(g["score"] == 0 for g in got.values()), got
    # what the test cells show is the judge's verdict, not what the kernel was made to print
    said = output_text(cell_outputs(course, student, "03_unet", "test_unet_conv_block_layers"))
    assert "TestFailed" in said and "all good" not in said and "100.0" not in said


def test_nothing_placed_beside_the_notebooks_reaches_the_kernel(attacked):
    course, _, _ = attacked
    graded = course / "autograded" / "shadows" / ASSIGNMENT
    for name in ("numpy.py", "ipykernel_launcher.py", "labcode_probe.py"):
        assert not (graded / name).exists(), name


def test_reading_the_calling_code_finds_no_hidden_test(attacked):
    course, _, _ = attacked
    import base64

    nb = nbformat.read(course / "autograded" / "reader" / ASSIGNMENT / "01_data_exploration.ipynb", as_version=4)
    said = "\n".join(output_text(cell.get("outputs", [])) for cell in nb.cells)
    assert "LOOT" in said  # the attack ran, and what it found is below
    loot = "\n".join(base64.b64decode(part.split()[0]).decode(errors="replace")
                     for part in said.split("LOOT ")[1:])
    assert "describe_sample(" in loot  # it did find the code that called it
    judge_lines = secret_lines(REPO)["tools/grading/judge.py"]
    squashed = " ".join(loot.split())
    assert judge_lines and not [line for line in judge_lines if line in squashed]
    # and nothing of the judge is in any graded notebook either (the students' own library files may of course hold
    # the lines they wrote, some of which a reference forward of the judge shares)
    leaks = find_leaks(course / "autograded", {"tools/grading/judge.py": judge_lines})
    assert not [leak for leak in leaks if ".ipynb:" in leak], leaks[:5]


def test_a_duplicated_answer_cell_costs_nothing(attacked):
    course, _, results = attacked
    assert results["dup"]["status"] == "graded", results["dup"]
    got = auto_grades(course, "dup", {"04_metrics_losses"})
    assert got and all(g["score"] == g["max"] for g in got.values()), got


def test_an_unreadable_notebook_costs_only_itself_and_says_what_to_fix(attacked):
    course, _, results = attacked
    result = results["broken"]
    assert result["status"] == "graded" and result["notebooks"]["03_unet"]["status"] != "graded"
    assert any(p.startswith("03_unet: unreadable notebook") for p in result["problems"]), result["problems"]
    got = auto_grades(course, "broken", {"01_data_exploration", "03_unet"})
    assert all(g["score"] == 0 for g in got.values() if g["notebook"] == "03_unet")
    others = {k: g for k, g in got.items() if g["notebook"] != "03_unet"}
    assert others and all(g["score"] == g["max"] for g in others.values()), others


def test_copied_graded_cells_keep_one_owner_and_unreadable_notebooks_are_named(tmp_path):
    from tools.grading.worker import prepare_notebook

    nb = nbformat.v4.new_notebook()
    meta = {"nbgrader": {"grade_id": "answer_x", "solution": True, "grade": False, "locked": False}}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata=json.loads(json.dumps(meta))),
                nbformat.v4.new_code_cell("x = 2", metadata=json.loads(json.dumps(meta)))]
    nbformat.write(nb, tmp_path / "copied.ipynb")
    assert prepare_notebook(tmp_path / "copied.ipynb") == (
        "", ["copied: the cell answer_x appears more than once; the last copy was graded"])
    cells = nbformat.read(tmp_path / "copied.ipynb", as_version=4).cells
    assert [c.source for c in cells] == ["x = 1", "x = 2"] and "nbgrader" not in cells[0].metadata
    assert cells[1].metadata.nbgrader.grade_id == "answer_x"
    assert prepare_notebook(tmp_path / "copied.ipynb") == ("", [])  # nothing left to repair
    (tmp_path / "broken.ipynb").write_text('{"cells": [')
    problem, notes = prepare_notebook(tmp_path / "broken.ipynb")
    assert problem.startswith("unreadable notebook (") and "submit again" in problem and notes == []
