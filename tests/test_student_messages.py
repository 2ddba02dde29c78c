"""What students read where they go wrong: a notebook run outside the lab's folder, a data set that is not there.
(The self-check run from the distribution's top folder is tested with the distribution, in ``test_distribution.py``;
the message of an exercise of another notebook not written yet, with the release, in ``test_release_exercises.py``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from labcode.errors import DatasetError
from labcode.storage.loaders import default_datadir

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
STEMS = sorted(p.stem for p in SOURCE.glob("*.ipynb"))


def setup_code(stem: str) -> str:
    """The setup cell of a notebook as plain Python (its IPython magics left out)."""
    cells = json.loads((SOURCE / f"{stem}.ipynb").read_text(encoding="utf-8"))["cells"]
    cell = next(c for c in cells if c["cell_type"] == "code")
    assert cell["metadata"]["nbgrader"]["grade_id"] == "setup", stem
    return "".join(line for line in cell["source"] if not line.lstrip().startswith("%"))


@pytest.mark.parametrize("stem", STEMS)
def test_a_notebook_run_outside_the_lab_folder_says_where_to_open_it(stem, tmp_path):
    # The course library is importable here (installed in the instructors' environment): the setup cell must stop
    # before it imports any labcode but the copy next to the notebook.
    elsewhere = tmp_path / "Downloads"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "NBGRADER_EXECUTION")}
    done = subprocess.run([sys.executable, "-c", setup_code(stem)], cwd=elsewhere, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"FileNotFoundError: no labcode/ folder in {elsewhere}, where this notebook runs: open the "
                    "notebook from the lab's folder segmentation/, which holds the notebooks and your labcode/ copy, "
                    "then restart the kernel"), done.stderr
    assert "ModuleNotFoundError" not in done.stderr and done.stdout == ""


@pytest.mark.parametrize("kind, problem", [
    ("missing", "does not exist"),
    ("file", "is not a folder"),
    ("empty", "holds no data set (no assets/semantic_labels.json)"),
])
def test_a_data_set_that_is_not_there_is_named_with_the_setting_to_fix(kind, problem, tmp_path, monkeypatch):
    root = tmp_path / "Stanford2D-3D-S"
    if kind == "file":
        root.write_text("not a folder")
    elif kind == "empty":
        (root / "area_1").mkdir(parents=True)
    monkeypatch.setenv("LABCODE_DATADIR", str(root))
    with pytest.raises(DatasetError) as raised:
        default_datadir()
    assert str(raised.value) == (f"LABCODE_DATADIR is set to {root}, which {problem}: set it to the root of Stanford "
                                 "2D-3D-S (the folder holding assets/ and area_1 ... area_6), or unset it to use the "
                                 "generated data set")


def test_a_real_data_set_root_is_taken_as_it_is(tiny_root, monkeypatch):
    monkeypatch.setenv("LABCODE_DATADIR", str(tiny_root["root"]))
    assert default_datadir() == tiny_root["root"]
