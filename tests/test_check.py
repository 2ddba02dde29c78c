"""The students' self-check (labcode.check): one source with the notebooks' visible checks, run in the release."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from labcode.check import CHECKS
from tests.course import write_library
from tools import release

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
RELEASE = REPO / "notebooks" / "segmentation"


def _visible_test_sources(stem: str) -> dict[str, str]:
    """grade_id -> the visible part of each graded test cell of a solution notebook."""
    cells = json.loads((SOURCE / f"{stem}.ipynb").read_text())["cells"]
    return {cell["metadata"]["nbgrader"]["grade_id"]: "".join(cell["source"]).split("### BEGIN HIDDEN TESTS")[0]
            for cell in cells if cell["metadata"].get("nbgrader", {}).get("grade") and cell["cell_type"] == "code"}


def test_each_notebook_test_of_a_library_exercise_runs_its_check_from_labcode_check():
    """The visible checks have one source: the notebook cells call the functions the self-check runs."""
    calls: dict[str, list[str]] = {}
    for stem in sorted({check.notebook for check in CHECKS}):
        for grade_id, visible in _visible_test_sources(stem).items():
            for name in re.findall(r"^(check_\w+)\(\)", visible, flags=re.MULTILINE):
                assert f"from labcode.check import {name}" in visible, grade_id
                calls.setdefault(name, []).append(grade_id)
    names = {check.run.__name__ for check in CHECKS}
    assert set(calls) <= names and all(len(ids) == 1 for ids in calls.values()), calls
    # Every check but the last one (the parts together, a whole UNet) is the visible test of one exercise's cell.
    assert names - set(calls) == {"check_whole_unet"}


def test_every_library_exercise_has_a_question_and_a_self_check():
    regions = [r for path in sorted((REPO / "labcode").rglob("*.py"))
               for r in release.find_regions(path.read_text(), str(path))]
    titles = {(r.stem, r.title) for r in regions}
    assert {("02_data_pipeline", "Augmentation pipeline"), ("04_metrics_losses", "Class weights"),
            ("03_unet", "UNetConvBlock layers"), ("03_unet", "Decoder first and last layers")} <= titles
    assert titles <= {(c.notebook, c.title) for c in CHECKS}
    for stem, title in titles:
        assert title in (SOURCE / f"{stem}.ipynb").read_text(), f"{title!r} is not a question of {stem}"


def _self_check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_self_check_fails_on_the_stubs_and_passes_with_the_solutions(tmp_path):
    work = tmp_path / "segmentation"
    shutil.copytree(RELEASE, work)
    stubs = _self_check(work, "labcode.check")
    assert stubs.returncode == 1, stubs.stdout + stubs.stderr
    assert f"Checking the exercises of {work / 'labcode'}" in stubs.stdout
    assert "WARNING" not in stubs.stdout
    for check in CHECKS:
        assert f"[TODO]   {check.notebook}: {check.title}" in stubs.stdout
    assert "Augmentation pipeline: write it (see notebook 02_data_pipeline.ipynb)" in stubs.stdout
    assert f"0/{len(CHECKS)} checks pass." in stubs.stdout

    write_library(work / "labcode")  # the instructor's code in the stubs
    solved = _self_check(work, "labcode", "check")  # the CLI spelling
    assert solved.returncode == 0, solved.stdout + solved.stderr
    assert f"{len(CHECKS)}/{len(CHECKS)} checks pass." in solved.stdout
    assert solved.stdout.count("[PASS]") == len(CHECKS)


def test_self_check_says_when_it_does_not_check_a_student_copy(tmp_path):
    # The instructor library copied in place of the student copy: its checks pass, and say nothing.
    work = tmp_path / "segmentation"
    shutil.copytree(REPO / "labcode", work / "labcode", ignore=shutil.ignore_patterns("__pycache__"))
    result = _self_check(work, "labcode.check")
    assert result.returncode == 3, result.stdout + result.stderr
    assert f"WARNING: {(work / 'labcode').resolve()} is not a student copy" in result.stdout
    assert f"{len(CHECKS)}/{len(CHECKS)} checks pass." in result.stdout
    # A student copy, but run from another folder while the instructor library is installed: the wrong copy.
    shutil.rmtree(work / "labcode")
    shutil.copytree(RELEASE / "labcode", work / "labcode")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _self_check(elsewhere, "labcode.check")
    assert result.returncode == 3
    assert f"not from {elsewhere / 'labcode'}: run the check from the folder" in result.stdout


def test_self_check_explains_wrong_and_crashing_code(tmp_path):
    work = tmp_path / "segmentation"
    shutil.copytree(RELEASE, work)
    write_library(work / "labcode")  # the instructor's code in the stubs
    unet = work / "labcode" / "unet.py"
    text = unet.read_text()
    wrong = text.replace("nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout))",
                         "nn.Conv2d(cout, cout // 2, 3, padding=1), nn.ReLU(inplace=True), nn.BatchNorm2d(cout // 2))",
                         1)
    assert wrong != text
    unet.write_text(wrong)
    stats = work / "labcode" / "stats.py"
    crashing = stats.read_text().replace("raw = np.divide(1.0, freq,", "raw = np.divide(1.0, frequency,", 1)
    stats.write_text(crashing)
    result = _self_check(work, "labcode.check")
    assert result.returncode == 1
    out = result.stdout
    assert "[FAIL]   03_unet: UNetConvBlock layers\n         block2's convolution should output 16 channels, got 8" \
        in out
    assert re.search(r"\[ERROR\]  04_metrics_losses: Class weights\n +NameError: name 'frequency' is not defined "
                     r"\(labcode/stats.py:\d+: raw = np.divide\(1.0, frequency,", out), out
    assert "[PASS]   02_data_pipeline: Augmentation pipeline" in out


def test_self_check_selects_a_notebook(capsys):
    from labcode import check

    assert check.main(["--notebook", "04"]) == 3  # the instructor library passes, but is no student copy
    out = capsys.readouterr().out
    assert "[PASS]   04_metrics_losses: Class weights" in out and "1/1 checks pass." in out
    assert "is not a student copy" in out
    assert check.main(["--notebook", "99"]) == 2
    assert "no exercise for notebook '99'" in capsys.readouterr().err


def test_a_valid_pipeline_with_colour_transforms_passes_the_augmentation_check_without_warnings(monkeypatch):
    # The check's images are in colour, so that colour transforms run as on the data set: no warning (an albucore
    # UserWarning about grey images looked like a fault) and the check passes.
    import warnings

    import albumentations as A
    from albumentations.pytorch import ToTensorV2

    from labcode import transforms
    from labcode.check import check_augmentation

    def colourful(img_size: int) -> A.Compose:
        return A.Compose([
            A.RandomResizedCrop(size=(img_size, img_size), scale=(0.5, 1.0), mask_interpolation=0),
            A.HorizontalFlip(p=0.5),
            A.HueSaturationValue(p=1.0),
            A.RGBShift(p=0.5),
            A.ColorJitter(p=0.5),
            A.Normalize(mean=transforms.MEAN, std=transforms.STD, max_pixel_value=255.0),
            ToTensorV2(),
        ])

    monkeypatch.setattr(transforms, "train_transforms", colourful)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_augmentation()
