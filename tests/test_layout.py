"""The layout of ``labcode``: what students write and read at the top, one module per chapter, the machinery in
named sub-packages, and importing a teaching module loads no machinery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labcode"

#: The modules students write and read, each the companion of a chapter (and the check of their exercises).
TEACHING = {"classes", "data", "transforms", "stats", "unet", "deeplab", "models", "losses", "metrics", "engine",
            "config", "train", "infer", "scoring", "reference", "viz", "check"}
#: The machinery, by concern.
SUBPACKAGES = {"storage": "image codecs, the on-disk format, data sets, loaders and the prepared cache",
               "runtime": "the parts of a run, checkpoints, run logs, distributed training, progress bars, pipeline",
               "export": "ONNX export, plain and folded",
               "serving": "the web API, its uploads and its page",
               "commands": "the command line",
               "synth": "the generator of the offline data set"}
#: What a teaching module may load, beyond the teaching modules and ``labcode.errors``: the data needs its storage,
#: the training loop its runtime. The others load no sub-package at all.
ALLOWED = {"data": ("labcode.storage",), "engine": ("labcode.runtime",), "train": ("labcode.runtime",)}


def test_the_top_holds_the_teaching_modules_and_the_machinery_is_in_named_sub_packages():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert modules == TEACHING | {"errors"}, sorted(modules ^ (TEACHING | {"errors"}))
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert packages == set(SUBPACKAGES), sorted(packages ^ set(SUBPACKAGES))
    for name in packages:
        assert (PACKAGE / name / "__init__.py").read_text().startswith('"""'), f"labcode/{name} says what it holds"


def test_the_files_students_write_are_teaching_modules_and_the_package_names_them():
    written = {p.stem for p in PACKAGE.rglob("*.py") if "# BEGIN SOLUTION" in p.read_text(encoding="utf-8")}
    assert written and written <= TEACHING, written
    docstring = (PACKAGE / "__init__.py").read_text()
    for stem in written:
        assert f"labcode/{stem}.py" in docstring, f"labcode/__init__.py does not name labcode/{stem}.py"


_LOADED = """
import json, sys
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(name for name in sys.modules if name.startswith("labcode."))))
"""


@pytest.mark.parametrize("name", sorted(TEACHING))
def test_importing_a_teaching_module_loads_no_machinery(name):
    done = subprocess.run([sys.executable, "-c", _LOADED, f"labcode.{name}"], capture_output=True, text=True,
                          timeout=300, cwd=PACKAGE.parent, check=False)
    assert done.returncode == 0, done.stderr
    machinery = [module for module in json.loads(done.stdout) if module.split(".")[1] in SUBPACKAGES]
    unexpected = [module for module in machinery if not module.startswith(ALLOWED.get(name, ()))]
    assert unexpected == [], f"import labcode.{name} loads {unexpected}"
