"""What the grader takes from a submission, and the time it records for it (``tools/grading/intake.py``).

A submission is written with the student's rights: the grader takes only the release's notebooks, the library files
with an exercise, the model and the photos, as regular files; every other library file is the release's. The time
recorded in the gradebook and in ``grades.csv`` is when the submission reached the exchange, whatever the
``timestamp.txt`` or the folder name it carries says.
"""

from __future__ import annotations

import csv
import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import nbformat
import pytest

from tools.grading import intake
from tools.grading.course import Course, tools_on_path

REPO = Path(__file__).resolve().parents[1]
RELEASE = REPO / "notebooks" / "segmentation"
EXERCISES = intake.exercise_files(RELEASE / "labcode")

pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")


def skipped(report: intake.IntakeReport) -> dict[str, str]:
    return {entry["path"]: entry["reason"] for entry in report.skipped}


@pytest.fixture
def submission(tmp_path: Path) -> Path:
    """A student's folder made from the release, with the exercises written and a model and a photo added."""
    folder = tmp_path / "submission"
    shutil.copytree(RELEASE, folder)
    for rel in EXERCISES:
        path = folder / "labcode" / rel
        path.write_text(path.read_text() + "\n# the student's code\n")
    (folder / "my_model.onnx").write_bytes(b"onnx bytes")
    (folder / "my_photo.jpg").write_bytes(b"\xff\xd8 a photo")
    return folder


def test_the_notebooks_the_exercises_the_model_and_the_photos_are_taken(submission, tmp_path):
    report = intake.take_submission(submission, tmp_path / "taken", RELEASE)
    notebooks = sorted(p.name for p in RELEASE.glob("*.ipynb"))
    assert EXERCISES == {"unet.py", "transforms.py", "stats.py"}
    assert report.taken == sorted([*notebooks, *(f"labcode/{rel}" for rel in EXERCISES), "my_model.onnx",
                                   "my_photo.jpg"])
    assert report.skipped == [] and report.restored == []
    for rel in report.taken:
        assert (tmp_path / "taken" / rel).read_bytes() == (submission / rel).read_bytes(), rel
    assert "# the student's code" in (tmp_path / "taken" / "labcode" / "unet.py").read_text()
    assert not (tmp_path / "taken" / "timestamp.txt").exists()


def test_modules_beside_the_notebooks_and_library_changes_are_not_taken(submission, tmp_path):
    shadows = {"numpy.py": "ok = True\n", "ipykernel_launcher.py": "import os\n", "sitecustomize.py": "import os\n"}
    for name, text in shadows.items():
        (submission / name).write_text(text)
    metrics = submission / "labcode" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\ndef macro_f1(*args, **kwargs):\n    return 1.0\n")
    (submission / "labcode" / "check.py").unlink()
    (submission / "labcode" / "extra.py").write_text("import os\n")
    (submission / "runs").mkdir()
    (submission / "runs" / "best.pt").write_bytes(b"weights")
    (submission / "timestamp.txt").write_text("2000-01-01 00:00:00.000000 UTC")

    dest = tmp_path / "taken"
    report = intake.take_submission(submission, dest, RELEASE)
    assert not any((dest / name).exists() for name in [*shadows, "runs", "timestamp.txt"])
    assert not (dest / "labcode" / "extra.py").exists()
    for rel in ("metrics.py", "check.py"):  # changed, deleted: the release's
        assert (dest / "labcode" / rel).read_bytes() == (RELEASE / "labcode" / rel).read_bytes()
    assert report.restored == ["labcode/check.py", "labcode/metrics.py"]
    reasons = skipped(report)
    assert set(reasons) == {"'numpy.py'", "'ipykernel_launcher.py'", "'sitecustomize.py'", "'runs'",
                            "'labcode/extra.py'"}
    assert reasons["'numpy.py'"] == "not a file a submission may hold"
    assert reasons["'labcode/extra.py'"] == "not a file of the release's library"
    assert "not part of a submission" in reasons["'runs'"]


def test_links_fifos_and_odd_names_are_left_out_and_reported_safely(submission, tmp_path):
    outside = tmp_path / "instructor_secret.txt"
    outside.write_text("hidden tests")
    (submission / "my_model.onnx").unlink()
    (submission / "my_model.onnx").symlink_to(outside)
    os.mkfifo(submission / "my_photo.png")
    unet = submission / "labcode" / "unet.py"
    unet.unlink()
    unet.symlink_to(REPO / "labcode" / "unet.py")  # the instructor's solution
    odd = ["new\nline.ipynb", "-rf", "--help.py", "é" * 120, "\u202eevil.py", " ", "x" * 255]
    for name in odd:
        (submission / name).write_text("x")
    bad_utf8 = os.fsencode(submission) + b"/\xff\xfe.ipynb"
    with open(bad_utf8, "wb") as file:
        file.write(b"x")
    (submission / "deep").mkdir()
    (submission / "deep" / "03_unet.ipynb").write_text("{}")  # only top-level notebooks

    dest = tmp_path / "taken"
    report = intake.take_submission(submission, dest, RELEASE)
    reasons = skipped(report)
    assert reasons["'my_model.onnx'"] == "a symbolic link (never followed)"
    assert reasons["'my_photo.png'"] == "not a regular file (fifo, socket or device)"
    assert reasons["'labcode/unet.py'"].startswith("a symbolic link (never followed)")
    assert (dest / "labcode" / "unet.py").read_bytes() == (RELEASE / "labcode" / "unet.py").read_bytes()  # the stub
    assert "labcode/unet.py" in report.restored and "labcode/unet.py" not in report.taken
    assert not (dest / "my_model.onnx").exists() and not (dest / "my_photo.png").exists()
    assert "'new\\nline.ipynb'" in reasons and "'\\udcff\\udcfe.ipynb'" in reasons and "'-rf'" in reasons
    assert "'\\u202eevil.py'" in reasons  # a right-to-left override cannot reorder a log line
    assert any(path.startswith("'xxxx") and path.endswith("(+55 more)") for path in reasons)
    assert all("\n" not in path and path.isprintable() for path in reasons)
    assert sorted(os.listdir(dest)) == sorted([*(p.name for p in RELEASE.glob("*.ipynb")), "labcode", "my_photo.jpg"])
    assert json.loads(json.dumps(report.to_json())) == report.to_json()


def test_a_linked_or_missing_library_is_the_release_with_its_stubs(submission, tmp_path):
    shutil.rmtree(submission / "labcode")
    (submission / "labcode").symlink_to(REPO / "labcode")
    report = intake.take_submission(submission, tmp_path / "linked", RELEASE)
    assert skipped(report)["'labcode'"].startswith("a symbolic link")
    (submission / "labcode").unlink()
    bare = intake.take_submission(submission, tmp_path / "missing", RELEASE)
    for dest, got in ((tmp_path / "linked", report), (tmp_path / "missing", bare)):
        files = intake.release_library_files(RELEASE / "labcode")
        assert sorted(got.restored) == sorted(f"labcode/{rel}" for rel in files)
        for rel in files:
            assert (dest / "labcode" / rel).read_bytes() == (RELEASE / "labcode" / rel).read_bytes(), rel


def test_a_flood_of_files_is_counted_not_listed(submission, tmp_path):
    for i in range(intake.MAX_LISTED + 50):
        (submission / "labcode" / f"junk{i:04d}.py").write_text("")
    report = intake.take_submission(submission, tmp_path / "taken", RELEASE)
    assert len(report.skipped) == intake.MAX_LISTED and report.unlisted == 50
    assert not list((tmp_path / "taken" / "labcode").glob("junk*"))


def test_bad_arguments_name_the_folder(submission, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    with pytest.raises(FileExistsError, match="full"):
        intake.take_submission(submission, tmp_path / "full", RELEASE)
    with pytest.raises(NotADirectoryError, match="nowhere"):
        intake.take_submission(tmp_path / "nowhere", tmp_path / "dest", RELEASE)
    with pytest.raises(FileNotFoundError, match="no labcode/ in the release"):
        intake.take_submission(submission, tmp_path / "dest2", tmp_path)


def test_the_arrival_time_is_the_file_systems_not_the_students(tmp_path):
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    folder = tmp_path / "bob+segmentation+2000-01-01 00:00:00.000000 UTC+abc"
    folder.mkdir()
    (folder / "timestamp.txt").write_text("2000-01-01 00:00:00.000000 UTC")
    long_ago = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
    for path in (folder / "timestamp.txt", folder):
        os.utime(path, (long_ago, long_ago))  # a student can set modification times, not change times
    arrived = intake.arrival_time(folder)
    assert before <= arrived <= datetime.now(timezone.utc) + timedelta(seconds=1)
    recorded = tmp_path / "recorded"
    recorded.mkdir()
    (recorded / "timestamp.txt").write_text(intake.format_timestamp(arrived))
    assert intake.read_timestamp(recorded) == arrived
    assert intake.read_timestamp(tmp_path) is None


def test_student_ids_from_inbound_folder_names():
    assert intake.student_of("bob+segmentation+2026-12-01 10:00:00.000000 UTC+Ab_c", "segmentation") == "bob"
    assert intake.student_of("a+b+segmentation+2026-12-01 10:00:00 UTC+xyz", "segmentation") == "a+b"
    assert intake.student_of("bob+segmentation+2026-12-01 10:00:00 UTC", "segmentation") == "bob"
    assert intake.student_of("bob+other+2026-12-01 10:00:00 UTC+xyz", "segmentation") is None
    assert intake.refused_id("bob") is None and intake.refused_id("zoë") is None
    for bad in ("..", ".hidden", "-rf", "a\nb", "\udcff", "a" * 101, "a*b"):
        assert intake.refused_id(bad), bad


def test_a_folder_owned_by_another_user_is_noted(tmp_path):
    me = pwd.getpwuid(os.getuid()).pw_name
    assert intake.owner_note(tmp_path, me) is None
    assert intake.owner_note(tmp_path, "not-a-user").startswith(f"owned by {me}, not by the user 'not-a-user'")


# --------------------------------------------------------------------------------------------------------------------
# From the exchange to the gradebook and grades.csv
# --------------------------------------------------------------------------------------------------------------------

def tiny_course(root: Path) -> Course:
    """A one-notebook nbgrader course (no sandbox: only the time of the submission is under test)."""
    source = root / "source" / "segmentation"
    source.mkdir(parents=True)
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\nanswer = 42\n### END SOLUTION", metadata={"nbgrader": {
            "grade": False, "solution": True, "locked": False, "grade_id": "answer", "schema_version": 3}}),
        nbformat.v4.new_code_cell("assert answer == 42", metadata={"nbgrader": {
            "grade": True, "solution": False, "locked": True, "points": 1, "grade_id": "test_answer",
            "schema_version": 3}}),
    ]
    nbformat.write(nb, source / "quiz.ipynb")
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(root)!r}\n"
        "c.CourseDirectory.course_id = 'tiny-course'\n"
        "c.CourseDirectory.source_directory = 'source'\n"
        "c.CourseDirectory.release_directory = 'release'\n"
        f"c.Exchange.root = {str(root / 'exchange')!r}\n"
        "c.CollectApp.check_owner = False\n")
    (root / "exchange").mkdir()
    course = Course(root)
    with tools_on_path():
        assert course.api().generate_assignment("segmentation")["success"]
    library = course.folder("release") / "labcode"
    library.mkdir()
    (library / "unet.py").write_text("def unet():\n    # EXERCISE 1\n    raise NotImplementedError\n")
    (library / "metrics.py").write_text("def f1():\n    return 0.5\n")
    return course


def submit(inbound: Path, name: str, answer: str) -> Path:
    """An inbound folder as the student's side writes it, claiming to be from 2000-01-01."""
    folder = inbound / name
    folder.mkdir()
    nb = nbformat.read(inbound.parents[1].parent / "release" / "segmentation" / "quiz.ipynb", as_version=4)
    nb.cells[0].source = answer
    nbformat.write(nb, folder / "quiz.ipynb")
    (folder / "timestamp.txt").write_text("2000-01-01 00:00:00.000000 UTC")
    (folder / "numpy.py").write_text("raise SystemExit\n")
    long_ago = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()
    for path in (*folder.iterdir(), folder):
        os.utime(path, (long_ago, long_ago))
    return folder


def test_collect_records_when_the_newest_submission_reached_the_exchange(tmp_path):
    course = tiny_course(tmp_path / "course")
    inbound = course.root / "exchange" / "tiny-course" / "inbound"
    inbound.mkdir(parents=True)
    # its name claims the future, but it reached the exchange first: not the newest
    submit(inbound, "bob+segmentation+2099-01-01 00:00:00.000000 UTC+first", "answer = 0")
    time.sleep(0.05)
    before = datetime.now(timezone.utc) - timedelta(seconds=1)
    submit(inbound, "bob+segmentation+2000-01-01 00:00:00.000000 UTC+second", "answer = 42")
    after = datetime.now(timezone.utc) + timedelta(seconds=1)
    (inbound / "..+segmentation+2026-01-01 00:00:00 UTC+x").mkdir()

    collected = intake.collect(course, course.root / "exchange")
    taken = [c for c in collected if c.report]
    assert [c.student for c in taken] == ["bob"] and "second" in taken[0].folder
    assert [c.notes for c in collected if not c.report] == [["not collected: a student id starting with '.' or '-'"]]
    assert before <= taken[0].submitted_at <= after
    submitted = course.folder("submitted", "bob")
    assert not (submitted / "numpy.py").exists() and (submitted / "labcode" / "metrics.py").is_file()
    assert (submitted / "timestamp.txt").read_text() == intake.format_timestamp(taken[0].submitted_at)

    with tools_on_path():  # nbgrader's autograde reads timestamp.txt into the gradebook, its export into the CSV
        assert course.api(**{"GraderOnly.worker": True}).autograde("segmentation", "bob", force=True,
                                                                  create=True)["success"]
        done = subprocess.run([str(Path(sys.executable).parent / "nbgrader"), "export", "--to=grades.csv"],
                              cwd=course.root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.root / 'gradebook.db'}", "tiny-course") as gradebook:
        submission = gradebook.find_submission("segmentation", "bob")
        recorded, score = submission.timestamp, submission.score
    assert score == 1  # the newest submission's answer, not the other's
    assert before <= recorded.replace(tzinfo=timezone.utc) <= after
    row = next(csv.DictReader((course.root / "grades.csv").open()))
    assert row["student_id"] == "bob" and row["timestamp"].startswith(recorded.strftime("%Y-%m-%d %H:%M:%S"))
