"""The student release: region stripping, sync with the sources, no leak of solutions."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from labcode.check import STUDENT_COPY_HEADER
from tools import release
from tools.leaks import find_leaks, secret_lines

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
RELEASE = REPO / "notebooks" / "segmentation"
STEMS = ["01_data_exploration", "02_data_pipeline", "03_unet", "04_metrics_losses", "05_training",
         "06_inference_onnx", "07_going_further"]


# --------------------------------------------------------------------------------------------------------------------
# Region parsing and stripping
# --------------------------------------------------------------------------------------------------------------------

SAMPLE = '''def outer(x):
    """Docstring mentioning ``# BEGIN SOLUTION`` markers is not a marker."""
    y = x + 1
    # BEGIN SOLUTION 03_unet: First part
    z = y * 2
    if z:
        z -= 1
    # END SOLUTION
    return z


class A:
    def method(self):
        # BEGIN SOLUTION 04_metrics_losses: Second part
        return 42
        # END SOLUTION
'''


def test_find_regions_reads_titles_lines_and_indentation():
    regions = release.find_regions(SAMPLE, "sample.py")
    assert [(r.stem, r.title, r.indent, r.begin, r.end) for r in regions] == [
        ("03_unet", "First part", "    ", 4, 8),
        ("04_metrics_losses", "Second part", "        ", 14, 16),
    ]
    assert regions[0].body == ("    z = y * 2", "    if z:", "        z -= 1")


def test_strip_regions_leaves_an_indented_stub_that_names_the_question():
    stripped = release.strip_regions(SAMPLE, "sample.py")
    assert "z = y * 2" not in stripped and "return 42" not in stripped and "END SOLUTION" not in stripped
    assert '    raise NotImplementedError("First part: write it (see notebook 03_unet.ipynb). ' in stripped
    assert '        raise NotImplementedError("Second part: write it (see notebook 04_metrics_losses.ipynb). ' \
        in stripped
    namespace: dict = {}
    exec(compile(stripped, "sample.py", "exec"), namespace)
    # Met from another notebook (notebook 5 training a UNet not written yet), the message says where to go first.
    with pytest.raises(NotImplementedError, match=r"^First part: write it \(see notebook 03_unet.ipynb\)\. .*"
                                                  r"write it in notebook 03_unet first, then run this again\.$"):
        namespace["outer"](1)
    with pytest.raises(NotImplementedError, match="Second part"):
        namespace["A"]().method()
    # Lines outside the regions are kept verbatim, in order.
    kept = [line for line in SAMPLE.splitlines() if line not in stripped.splitlines()]
    assert kept == SAMPLE.splitlines()[3:8] + SAMPLE.splitlines()[13:16]


@pytest.mark.parametrize("text, message", [
    ("# BEGIN SOLUTION 03_unet: a\n# BEGIN SOLUTION 03_unet: b\n# END SOLUTION\n", r"bad.py:2: BEGIN SOLUTION inside"),
    ("x = 1\n# BEGIN SOLUTION 03_unet: a\nx = 2\n", r"bad.py:2: BEGIN SOLUTION without a matching END"),
    ("x = 1\n# END SOLUTION\n", r"bad.py:2: END SOLUTION without a BEGIN"),
    ("    # BEGIN SOLUTION 03_unet\n    # END SOLUTION\n", r"bad.py:1: malformed marker"),
])
def test_bad_markers_are_reported_with_file_and_line(text, message):
    with pytest.raises(release.ReleaseError, match=message):
        release.find_regions(text, "bad.py")


def test_region_naming_an_unknown_notebook_is_refused(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("def f():\n    # BEGIN SOLUTION 09_nothing: Foo\n    pass\n    # END SOLUTION\n")
    with pytest.raises(release.ReleaseError, match=r"pkg/mod.py:2: region names notebook '09_nothing'"):
        release.release_library(package, tmp_path / "out", {"01_data_exploration"})


# --------------------------------------------------------------------------------------------------------------------
# The release on disk
# --------------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fresh_release() -> Path:
    """A release built now from the sources, into a temporary folder (once per test process)."""
    from tests.course import fresh_release

    return fresh_release()


def test_release_is_in_sync_with_the_sources(fresh_release):
    assert sorted(p.name for p in fresh_release.glob("*.ipynb")) == [f"{s}.ipynb" for s in STEMS]
    diffs = release.compare_trees(fresh_release, RELEASE)
    assert not diffs, f"notebooks/ is out of date, run `make release`; files that differ: {diffs}"


def test_release_check_option_reports_a_stale_release(fresh_release, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "notebooks"
    shutil.copytree(fresh_release, stale / "segmentation")
    monkeypatch.setattr(release, "build_release", lambda out, db_url=None: fresh_release)
    assert release.main(["--check", "--out", str(stale)]) == 0
    assert "is up to date" in capsys.readouterr().out
    (stale / "segmentation" / "labcode" / "unet.py").write_text("# edited by hand\n")
    (stale / "segmentation" / "stray.txt").write_text("not generated")
    (stale / "segmentation" / "03_unet.ipynb").unlink()
    for written_by_the_notebooks in ("runs/unet-1/best.pt", "data/synth-1/assets/synth.json", "stand_in_photo.png"):
        (stale / "segmentation" / written_by_the_notebooks).parent.mkdir(parents=True, exist_ok=True)
        (stale / "segmentation" / written_by_the_notebooks).write_text("not compared")
    assert release.main(["--check", "--out", str(stale)]) == 1
    out = capsys.readouterr().out
    assert "(3 files differ)" in out and "run `make release`" in out
    assert "  03_unet.ipynb\n" in out and "  labcode/unet.py\n" in out and "  stray.txt\n" in out


def test_no_solution_or_hidden_test_line_reaches_the_release():
    secrets = secret_lines()
    assert sum(map(len, secrets.values())) > 200, "the sources should hold solutions to look for"
    assert find_leaks(RELEASE, secrets) == []
    text = "\n".join(p.read_text() for p in RELEASE.glob("*.ipynb"))
    assert "HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text and "END SOLUTION" not in text


def test_release_notebooks_keep_graded_cells_and_say_they_are_generated():
    for stem in STEMS:
        source = nbformat.read(SOURCE / f"{stem}.ipynb", as_version=4)
        student = nbformat.read(RELEASE / f"{stem}.ipynb", as_version=4)
        nbformat.validate(student)
        ids = lambda nb: [c.metadata["nbgrader"]["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]  # noqa
        assert ids(student) == ids(source) and ids(source), stem
        first = student.cells[0].source.splitlines()
        assert first[0] == source.cells[0].source.splitlines()[0] and first[0].startswith("# ")
        assert release.STUDENT_NOTE in student.cells[0].source  # for students: no source path, no workflow
        assert "solutions/" not in student.cells[0].source and "release" not in student.cells[0].source
        for cell in student.cells:
            info = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None
            if info.get("grade") and not info.get("solution"):
                assert info["locked"] and info["points"] > 0, f"{stem}: test cell {info['grade_id']}"
            if info.get("solution") and cell.cell_type == "markdown":
                assert cell.source == "YOUR ANSWER HERE"
            if info.get("solution") and cell.cell_type == "code":
                assert "raise NotImplementedError()" in cell.source


def test_release_library_has_headers_and_stubs_only_where_the_regions_were():
    for src in release.library_files(REPO / "labcode"):
        rel = src.relative_to(REPO / "labcode")
        copy = RELEASE / "labcode" / rel
        assert copy.is_file(), f"{rel} missing from the release"
        if src.suffix != ".py":
            assert copy.read_bytes() == src.read_bytes()
            continue
        text = copy.read_text()
        assert text.startswith(f"{STUDENT_COPY_HEADER}: labcode/{rel.as_posix()}, used by the lab's notebooks.\n")
        regions = release.find_regions(src.read_text(), str(src))
        assert text.count("raise NotImplementedError(\"") - src.read_text().count("raise NotImplementedError(\"") \
            == len(regions)
        compile(text, str(copy), "exec")


def test_student_copy_of_the_library_raises_the_question_titles(tmp_path):
    work = tmp_path / "segmentation"
    shutil.copytree(RELEASE, work)
    code = ("import labcode, labcode.unet as u\n"
            "print(labcode.__file__)\n"
            "try:\n    u.UNetConvBlock(3, 8)\nexcept NotImplementedError as e:\n    print('raised:', e)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # even with the instructor library on the path
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert str(work / "labcode" / "__init__.py") in out
    assert "raised: UNetConvBlock layers: write it (see notebook 03_unet.ipynb)" in out
