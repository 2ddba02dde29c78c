"""A student's path, end to end: the distribution built as ``make release`` builds it, set up and checked with the
commands of its own README, the exercises and answers written in the student's own code and words, and the seven
notebooks run top to bottom as JupyterLab runs them (the distribution's ``.venv`` as kernel, no grading setting).

The small generated data set stands in for the default one, to keep the run short; ``python -m
benchmarks.bench_student`` times the same path on the default data set.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import nbformat
import numpy as np
import pytest

from tests.course import (
    ASSIGNMENT,
    GRADING_PYTHON,
    STEMS,
    build_student_distribution,
    do_the_work,
    error_outputs,
    link_default_dataset,
    notebook_text,
    require,
    run_student_notebooks,
    student_env,
    student_venv,
)

pytestmark = pytest.mark.slow


def make(dist: Path, target: str, env: dict[str, str], *options: str) -> subprocess.CompletedProcess:
    """``make <target>`` in the distribution's folder, as its README says to type it."""
    env = {key: value for key, value in env.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}  # not make's
    return subprocess.run(["make", *options, target], cwd=dist, env=env, capture_output=True, text=True, timeout=600)


def statuses(report: str) -> list[str]:
    """The status of each line of the self-check's report (``PASS``, ``TODO``, ``FAIL``, ``ERROR``)."""
    return re.findall(r"^\[([A-Z]+)\]", report, re.MULTILINE)


def alarms_in_test_cells(notebook: Path) -> list[str]:
    """Warnings that the graded test cells of a saved notebook print, except those raised by the notebook's own code
    (``/tmp/ipykernel_<pid>/<cell>.py``): what the checks and the library say while the student's work is right."""
    nb = nbformat.read(notebook, as_version=4)
    lines = [line for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id", "").startswith("test_")
             for out in cell.get("outputs", []) if out.get("name") == "stderr" for line in out.text.splitlines()]
    return [line for line in lines if "Warning" in line and "/ipykernel_" not in line]


def files_under(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*") if p.is_file()}


def test_a_student_sets_up_the_distribution_and_works_through_the_seven_notebooks(tmp_path, synth_root,
                                                                                   reference_model):
    import onnxruntime as ort

    from labcode.check import CHECKS
    from labcode.classes import NUM_CLASSES
    from labcode.reference import SHIPPED_NAME

    require(GRADING_PYTHON.is_file(), "the notebooks' stack without labcode is needed: bash scripts/setup.sh --grading")
    require(shutil.which("make") is not None, "make is needed (Debian: apt-get install make)")
    started = time.perf_counter()
    dist = build_student_distribution(tmp_path / "build", reference_model)
    assert (dist / "reference" / SHIPPED_NAME).is_file() and (dist / "reference" / "reference.json").is_file()
    built = time.perf_counter() - started

    # `make setup`: a .venv with requirements.txt, then `make data`. The packages come from the grading
    # environment instead of a download; the rest runs as written.
    readme = (dist / "README.md").read_text()
    assert "make setup" in readme and "make check" in readme
    home = tmp_path / "cache" / "labcode"
    env = student_env(synth_root, home)
    planned = make(dist, "setup", env, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert "-r requirements.txt" in planned.stdout and re.search(r"^\S*make\S* data$", planned.stdout, re.MULTILINE), \
        planned.stdout
    student_venv(dist)
    link_default_dataset(home)  # when this checkout has made it already, `make data` finds it instead of making it
    data = make(dist, "data", env)
    assert data.returncode == 0, data.stdout + data.stderr
    made = Path(data.stdout.strip().splitlines()[-1].split(": ", 1)[1])
    assert made.parent == home and (made / "assets" / "semantic_labels.json").is_file(), data.stdout

    # Before any work, the self-check says what is left to do; afterwards every exercise passes.
    fresh = make(dist, "check", env)
    assert fresh.returncode != 0 and set(statuses(fresh.stdout)) == {"TODO"}, fresh.stdout + fresh.stderr
    do_the_work(dist / ASSIGNMENT)
    checked = make(dist, "check", env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert statuses(checked.stdout) == ["PASS"] * len(CHECKS), checked.stdout
    assert "warning" not in (checked.stdout + checked.stderr).lower(), checked.stdout + checked.stderr

    # Restart & Run All, notebook after notebook; 06 studies the shipped model and trains nothing.
    folder = dist / ASSIGNMENT
    times = run_student_notebooks(dist, STEMS[:5], env)
    model = folder / "my_model.onnx"
    assert model.is_file(), "notebook 05 should write the hand-in file my_model.onnx"
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros((1, 3, 64, 64), np.float32)})[0]
    assert logits.shape == (1, NUM_CLASSES, 64, 64)
    before = files_under(folder)
    times |= run_student_notebooks(dist, STEMS[5:6], env)
    after = files_under(folder)
    trained = sorted(name for name in after if name.startswith("runs/") and after[name] != before.get(name))
    assert not trained, f"notebook 06 trained a model: {trained}"
    assert not [name for name in after if name.endswith(".pt") and name not in before]
    assert not list(home.glob("reference-*")), "notebook 06 trained a reference model in the data cache"
    studied = notebook_text(folder / "06_inference_onnx.ipynb")
    assert f"{dist / 'reference' / SHIPPED_NAME}" in studied
    # The comparison table (left out while grading): the reference model and the student's, each scored three times.
    rows = re.findall(r"^(reference|yours) +\S+ +[01]\.\d{3} +[01]\.\d{3} +[01]\.\d{3}$", studied, re.MULTILINE)
    assert rows == ["reference", "yours"], studied[-3000:]
    times |= run_student_notebooks(dist, STEMS[6:], env)

    assert list(times) == STEMS
    for stem in STEMS:
        path = folder / f"{stem}.ipynb"
        assert error_outputs(path) == [], f"{stem}: cells ending in an error"
        assert alarms_in_test_cells(path) == [], f"{stem}: warnings in the checks of right answers"
        assert f"labcode from {folder / 'labcode'}" in notebook_text(path), f"{stem}: not the student's library"
    total = time.perf_counter() - started
    print(f"\nstudent path: distribution {built:.0f} s; notebooks (wall / CPU s) " + ", ".join(
        f"{stem[:2]} {t['seconds']:.0f}/{t['cpu_seconds']:.0f}" for stem, t in times.items())
        + f"; whole test {total:.0f} s")
