"""What the release tool (``tools/release.py``) makes of the library's exercise regions: well-formed regions in
``labcode/unet.py``, a student copy that compiles, and stubs whose message says which notebook to finish first.

These assertions join the library to the instructors' tooling, so they live with the tooling's tests; the library's
own tests (``test_unet.py``, ``test_student_messages.py``) import nothing from ``tools``."""

from __future__ import annotations

import ast
import types
from pathlib import Path

import pytest

from tools import release

REPO = Path(__file__).resolve().parents[1]

EXPECTED_TITLES = [
    "UNetConvBlock layers",
    "UNetConvBlock forward",
    "Encoder bottleneck",
    "UNetUpConvBlock layers",
    "UNetUpConvBlock forward",
    "Decoder first and last layers",
]


def test_exercise_regions_are_well_formed_and_release_compiles():
    source = (REPO / "labcode" / "unet.py").read_text()
    regions = release.find_regions(source, "labcode/unet.py")
    assert [(region.stem, region.title) for region in regions] == [("03_unet", title) for title in EXPECTED_TITLES]

    # Each region sits inside a function or method body, and is small.
    functions = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef)]
    for region in regions:
        # (the END marker may follow the last statement: a comment is not part of the function node)
        assert any(f.lineno < region.begin and region.end <= f.end_lineno + 1 for f in functions), region.title
        assert len(region.body) <= 12, f"region {region.title!r} is not small"

    # The student copy must still be valid Python, and keep what is not an exercise.
    student = release.strip_regions(source, "labcode/unet.py")
    compile(student, "unet_student.py", "exec")
    assert "for block in self.blocks" in student  # the propagation loop stays in the student version


def test_an_exercise_met_in_another_notebook_says_which_notebook_to_finish_first():
    # Notebook 5 builds a UNet: with the student copy of labcode/unet.py, the stub of notebook 3 answers.
    source = (REPO / "labcode" / "unet.py").read_text(encoding="utf-8")
    student = types.ModuleType("student_unet")
    exec(compile(release.strip_regions(source, "labcode/unet.py"), "labcode/unet.py", "exec"), student.__dict__)
    with pytest.raises(NotImplementedError) as raised:
        student.UNet(14, num_blocks=3, base_chan=16)
    message = str(raised.value)
    assert message.startswith("UNetConvBlock layers: write it (see notebook 03_unet.ipynb). "), message
    assert message.endswith("write it in notebook 03_unet first, then run this again."), message
    assert "SOLUTION" not in message and "instructor" not in message
