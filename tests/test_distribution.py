"""The students' distribution (``make release`` writes ``dist/student``): what it holds, what it never holds, how
students set up from it, and its publication as a repository of its own."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from tests.course import GRADING_PYTHON, REPO, require
from tools import distribution, release
from tools.leaks import find_leaks, secret_lines

RELEASE = REPO / "notebooks" / "segmentation"


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """A distribution built from the tracked student release, with a stand-in reference model file."""
    tmp = tmp_path_factory.mktemp("dist")
    reference = tmp / "reference.onnx"
    reference.write_bytes(b"onnx stand-in")
    (tmp / "reference.json").write_text("{}")
    links = distribution.CourseLinks(site_url="https://course.example.org/segmentation")
    return distribution.build_distribution(RELEASE, tmp / "student", reference=reference, links=links,
                                           ignore=tuple(release.load_course_config().CourseDirectory.ignore))


def test_the_distribution_holds_the_students_material_and_nothing_else(dist):
    top = sorted(p.name for p in dist.iterdir())
    assert top == [".gitignore", "Makefile", "README.md", "reference", "requirements.txt", "segmentation"]
    shipped = sorted(p.name for p in (dist / "reference").iterdir())
    assert shipped == sorted([distribution.REFERENCE_NAME, "reference.json"])
    notebooks = sorted(p.name for p in (dist / "segmentation").glob("*.ipynb"))
    assert notebooks == sorted(p.name for p in RELEASE.glob("*.ipynb")) and len(notebooks) == 7
    files = {p.relative_to(dist / "segmentation").as_posix() for p in (dist / "segmentation").rglob("*")
             if p.is_file()}
    assert files == {p.relative_to(RELEASE).as_posix() for p in RELEASE.rglob("*") if p.is_file()
                     and "__pycache__" not in p.parts}
    assert (dist / "reference" / distribution.REFERENCE_NAME).read_bytes() == b"onnx stand-in"
    requirements = (dist / "requirements.txt").read_text()
    assert requirements.endswith((REPO / "requirements-student.txt").read_text())
    assert "nbgrader" not in requirements and "-e ." not in requirements and "labcode" not in requirements.lower()
    for name in ("solutions", "tools", "tests", "pyproject.toml", "nbgrader_config.py"):
        assert not list(dist.rglob(name)), name


def test_no_solution_hidden_test_or_instructor_answer_in_any_file(dist, tmp_path):
    secrets = secret_lines()
    assert sum(map(len, secrets.values())) > 200, "the sources should hold secrets to look for"
    assert find_leaks(dist, secrets) == []
    # The scan reads notebook outputs too: a notebook whose output quotes a solution line is caught.
    copy = tmp_path / "copy"
    shutil.copytree(dist / "segmentation", copy)
    nb = nbformat.read(copy / "03_unet.ipynb", as_version=4)
    line = sorted(secrets["labcode/unet.py"])[0]
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"print-out: {line}\n")]
    nbformat.write(nb, copy / "03_unet.ipynb")
    assert [leak.split(":")[0] for leak in find_leaks(copy, secrets)] == ["03_unet.ipynb"]


def test_the_readme_gives_two_commands_that_the_makefile_runs(dist):
    readme = (dist / "README.md").read_text()
    assert "make setup" in readme and "make lab" in readme and "{" not in readme.replace("{{", "")
    assert "https://course.example.org/segmentation" in readme
    for target in ("setup", "lab", "check", "data"):
        done = subprocess.run(["make", "-n", target], cwd=dist, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "pip install -e" not in done.stdout and str(REPO) not in done.stdout, done.stdout
    setup = subprocess.run(["make", "-n", "setup"], cwd=dist, capture_output=True, text=True).stdout
    assert "pip install --quiet -r requirements.txt" in setup


def test_students_set_up_without_the_instructor_library(dist, tmp_path):
    # The grading environment is what `make setup` installs (requirements-student.txt): with it, the notebooks'
    # folder imports its own labcode, the self-check runs, and no other copy is importable.
    require(GRADING_PYTHON.is_file(), "no grading environment (bash scripts/setup.sh --grading)")
    work = tmp_path / "student"
    shutil.copytree(dist, work)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "LABCODE_DATADIR")}
    probe = subprocess.run([str(GRADING_PYTHON), "-c", "import labcode, json; print(json.dumps(labcode.__path__))"],
                           cwd=work / "segmentation", env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(probe.stdout) == [str(work / "segmentation" / "labcode")], probe.stderr
    elsewhere = subprocess.run([str(GRADING_PYTHON), "-c", "import labcode"], cwd=work, env=env,
                               capture_output=True, text=True, timeout=120)
    assert "No module named 'labcode'" in elsewhere.stderr
    check = subprocess.run([str(GRADING_PYTHON), "-m", "labcode.check", "--notebook", "04"],
                           cwd=work / "segmentation", env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 1 and "[TODO]   04_metrics_losses: Class weights" in check.stdout, check.stdout
    assert "WARNING" not in check.stdout


def test_publishing_commits_the_distribution_to_a_repository_of_its_own(dist, tmp_path):
    remote = tmp_path / "student.git"
    first = distribution.publish(dist, str(remote), branch="main")
    assert first
    assert distribution.publish(dist, str(remote), branch="main") is None  # nothing new: no empty commit
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(remote), str(clone)], check=True)
    published = sorted(p.relative_to(clone).as_posix() for p in clone.rglob("*") if p.is_file()
                       and ".git" not in p.relative_to(clone).parts)
    expected = sorted(p.relative_to(dist).as_posix() for p in dist.rglob("*") if p.is_file())
    assert published == expected
    (dist / "README.md").write_text((dist / "README.md").read_text() + "\nErratum.\n")
    second = distribution.publish(dist, str(remote), branch="main")
    assert second and second != first


def test_publishing_needs_a_target_and_a_reference_model(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(distribution, "COURSE_FILE", tmp_path / "course.yml")
    assert distribution.main(["--dist", str(tmp_path)]) == 2
    assert "nowhere to publish" in capsys.readouterr().err
    (tmp_path / "README.md").write_text("x")
    assert distribution.main(["--dist", str(tmp_path), "--publish", str(tmp_path / "r.git")]) == 2
    assert "has no reference model" in capsys.readouterr().err


def test_course_links_come_from_one_file(tmp_path):
    (tmp_path / "course.yml").write_text("hub_url: https://hub.school.org\nstudent_repository: ''\n")
    links = distribution.load_links(tmp_path / "course.yml")
    assert links.hub_url == "https://hub.school.org" and links.student_repository == ""
    (tmp_path / "course.yml").write_text("hub: x\n")
    with pytest.raises(distribution.DistributionError, match="unknown setting"):
        distribution.load_links(tmp_path / "course.yml")
    shipped = distribution.load_links(REPO / "course.yml")
    assert shipped == distribution.CourseLinks(), "the repository ships without links (no placeholder)"


def test_notebooks_of_the_distribution_find_the_shipped_reference_model(dist, tmp_path):
    require(GRADING_PYTHON.is_file(), "no grading environment (bash scripts/setup.sh --grading)")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "LABCODE_REFERENCE_MODEL")}
    env["LABCODE_DATA_HOME"] = str(tmp_path / "cache")  # nothing trained on this machine
    found = subprocess.run([str(GRADING_PYTHON), "-c", "from labcode.reference import reference_model_path as p; "
                            "print(p())"], cwd=dist / "segmentation", env=env, capture_output=True, text=True,
                           timeout=120)
    assert found.stdout.strip() == str(dist / "reference" / distribution.REFERENCE_NAME), found.stderr
