"""A failed grading explains itself (``python -m tools.grading``): the traceback of any unexpected error is in
``grader.log``, and the final table gives each failing student's status, log files and the command that re-grades
that student alone.

The workers here are stand-ins (a few lines that write a ``result.json``), so no notebook is run: what is under test
is the grader's own process.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.grading import cli, parallel

FORKED = parallel.start_process  # the real one: the fake_grading fixture replaces it

REPO = Path(__file__).resolve().parents[1]

#: A stand-in worker: reads its job, writes a graded result (a problem in one notebook for "carol") and a log.
FAKE_WORKER = """
import json, sys
from pathlib import Path
job = json.loads(Path(sys.argv[1]).read_text())
scratch = Path(job["scratch"])
notebooks = {"03_unet": {"status": "graded", "reason": "", "auto_score": 3.0, "auto_max": 4.0, "manual_max": 0.0,
                         "tests": {}}}
if job["student"] == "carol":
    notebooks["04_metrics_losses"] = {"status": "error", "reason": "the notebook is not valid JSON"}
(scratch / "nbgrader.log").write_text("nbgrader says hello")
(scratch / "result.json").write_text(json.dumps({"student": job["student"], "status": "graded",
                                                 "notebooks": notebooks, "problems": [], "seconds": 1.0}))
print("worker done")
"""


@pytest.fixture
def course(tmp_path: Path) -> Path:
    """A course folder with the repository's configuration and three collected (empty) submissions."""
    root = tmp_path / "course"
    root.mkdir()
    (root / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"load_subconfig({str(REPO / 'nbgrader_config.py')!r})\n"
        f"c.CourseDirectory.root = {str(root)!r}\n")
    for student in ("alice", "bob", "carol"):
        (root / "submitted" / student / "segmentation").mkdir(parents=True)
    return root


@pytest.fixture
def fake_grading(monkeypatch, tmp_path):
    """No grading environment or sandbox needed; workers are :data:`FAKE_WORKER`; merging records who was merged."""
    merged = []
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    monkeypatch.setattr(cli, "check_environment", lambda python: None)
    monkeypatch.setattr(cli, "check_sandbox", lambda python, allow: True)
    monkeypatch.setattr(parallel, "start_process", lambda job, output: subprocess.Popen(
        [sys.executable, str(script), str(job)], stdout=output, stderr=subprocess.STDOUT, start_new_session=True))
    monkeypatch.setattr(parallel, "merge_submission", lambda course, work, student: merged.append(student))
    monkeypatch.setattr(parallel, "reset_submission", lambda course, student: None)
    return merged


def grade(course: Path, *options: str) -> int:
    return cli.main(["autograde", "--course", str(course), "--datadir", str(course), "--no-models", "--no-progress",
                     "--workers", "2", *options])


def test_an_unexpected_error_deep_in_grading_leaves_its_traceback_in_the_log(course, fake_grading, monkeypatch,
                                                                              capsys):
    def broken_job(*args, **kwargs):
        raise RuntimeError("deep failure while preparing a job")

    monkeypatch.setattr(parallel, "make_job", broken_job)
    assert grade(course) == 2
    err = capsys.readouterr().err.strip()
    log = course / "grading" / "grader.log"
    assert err == f"error: RuntimeError: deep failure while preparing a job (traceback in {log})"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in broken_job" in text and "in start_worker" in text
    assert "RuntimeError: deep failure while preparing a job" in text


def test_a_result_that_cannot_be_merged_fails_that_student_only(course, fake_grading, monkeypatch, capsys):
    def merge(course_, work, student):
        if student == "bob":
            raise RuntimeError("the gradebook refused bob")
        fake_grading.append(student)

    monkeypatch.setattr(parallel, "merge_submission", merge)
    assert grade(course) == 1
    out = capsys.readouterr().out
    assert sorted(fake_grading) == ["alice", "carol"]
    log = (course / "grading" / "grader.log").read_text()
    assert "bob: merging the result" in log and "RuntimeError: the gradebook refused bob" in log
    assert "Traceback (most recent call last)" in log
    rows = table(out)
    assert rows["error"] == "bob"
    assert rows["bob"].startswith("error: merging into the gradebook failed: RuntimeError: the gradebook refused bob")
    assert "alice" not in rows  # graded without a problem: not listed


def table(out: str) -> dict[str, str]:
    """The final table's rows, by their first column (the first row of each)."""
    rows = {}
    for line in out.splitlines():
        key, _, value = line.strip().partition("  ")
        rows.setdefault(key.strip(), value.strip())
    return rows


def test_the_table_gives_each_failing_students_logs_and_regrade_command(course, fake_grading, capsys):
    assert grade(course, "--notebooks", "0[34]*") == 0
    out = capsys.readouterr().out
    scratch = course / "grading"
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("carol"))
    assert "04_metrics_losses: error (the notebook is not valid JSON)" in lines[at]
    logs = lines[at + 1].split()
    assert logs[0] == "logs" and logs[1:] == [str(scratch / "carol" / "nbgrader.log"),
                                             str(scratch / "carol" / "worker.log"), str(scratch / "grader.log")]
    assert all(Path(path).is_file() for path in logs[1:])
    command = lines[at + 2].split(None, 1)
    assert command[0] == "regrade"
    assert shlex.split(command[1]) == ["python", "-m", "tools.grading", "autograde", "--student=carol",
                                       "--course", str(course), "--datadir", str(course), "--notebooks", "0[34]*",
                                       "--no-models"]
    assert not any(line.strip().startswith(("alice", "bob")) for line in lines)


def test_the_regrade_command_grades_that_student_alone(course, fake_grading, capsys):
    assert grade(course) == 0
    capsys.readouterr()
    alice_result = course / "grading" / "alice" / "result.json"
    before = alice_result.stat().st_mtime_ns
    fake_grading.clear()
    command = cli.regrade_command(cli.build_parser().parse_args(
        ["autograde", "--course", str(course), "--datadir", str(course), "--no-models"]), "carol")
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "tools.grading"]
    assert cli.main([*words[3:], "--no-progress"]) == 0
    assert fake_grading == ["carol"] and alice_result.stat().st_mtime_ns == before
    assert table(capsys.readouterr().out)["submissions"] == "1"
    odd = cli.regrade_command(cli.build_parser().parse_args(["run"]), "-rf")
    assert cli.build_parser().parse_args(shlex.split(odd)[3:]).student == ["-rf"]


def test_failing_results_built_by_hand(tmp_path):
    scratch = tmp_path / "grading"
    for student, logs in {"dan": ["worker.log", "worker-error.log", "nbgrader.log", "logs/03_unet.log"],
                          "eve": ["worker.log"], "o'neil": []}.items():
        for name in logs:
            (scratch / student / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / student / name).write_text("log")
    results = [
        {"student": "dan", "status": "error", "error": "RuntimeError: nbgrader autograde failed", "notebooks": {}},
        {"student": "eve", "status": "timeout", "error": "killed after 1800 s (--submission-timeout)",
         "notebooks": {}},
        {"student": "o'neil", "status": "crashed", "notebooks": {}},
        {"student": "fay", "status": "graded", "problems": ["06_inference_onnx: missing (no such notebook)"],
         "notebooks": {"06_inference_onnx": {"status": "missing", "reason": "no such notebook"}}},
        {"student": "gus", "status": "graded", "problems": [],
         "notebooks": {"03_unet": {"status": "graded", "auto_score": 0.0, "auto_max": 12.0}}},
    ]
    rows = parallel.attention_rows(results, scratch, lambda student: f"regrade {shlex.quote(student)}")
    by_student: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for key, value in rows:
        current = key if key and not key.startswith(" ") else current
        by_student.setdefault(current, []).append((key.strip(), value))
    assert sorted(by_student) == ["dan", "eve", "fay", "o'neil"]  # gus scored 0 but was graded: nothing to fix
    assert by_student["dan"][0] == ("dan", "error: RuntimeError: nbgrader autograde failed")
    assert dict(by_student["dan"])["logs"].split() == [str(scratch / "dan" / name) for name in (
        "worker-error.log", "nbgrader.log", "logs/03_unet.log", "worker.log")] + [str(scratch / "grader.log")]
    assert by_student["eve"][0][1] == "timeout: killed after 1800 s (--submission-timeout)"
    assert dict(by_student["o'neil"])["regrade"] == "regrade 'o'\"'\"'neil'"
    assert dict(by_student["o'neil"])["logs"].split()[0] == str(scratch / "o'neil" / "worker.log")  # where to look
    assert by_student["fay"][0] == ("fay", "06_inference_onnx: missing (no such notebook)")
    assert len(by_student["fay"]) == 3  # the same problem, from the notebook and the list, once


def test_a_folder_that_is_no_course_is_refused_in_one_line(tmp_path, capsys):
    assert cli.main(["autograde", "--course", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'nowhere'} is not a course folder (no nbgrader_config.py)\n"
    assert not (tmp_path / "nowhere").exists()


def test_the_worker_result_is_read_with_care(tmp_path):
    folder = tmp_path / "bob"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({"student": "mallory", "status": "graded"}))
    with pytest.raises(ValueError, match="not a result of 'bob'"):
        parallel.read_result(folder / "result.json", "bob")
    (folder / "result.json").write_text("{ truncated")
    with pytest.raises(ValueError):
        parallel.read_result(folder / "result.json", "bob")


def test_a_regrade_keeps_the_rest_of_the_class_in_the_model_medians(course, monkeypatch):
    from tools.grading import merge
    from tools.grading.course import Course
    from tools.grading.models import ModelGrading

    monkeypatch.setattr(merge, "cell_points", lambda course_, notebook, grade_id: 5.0)
    scratch = course / "grading"
    models = {"alice": {"status": "scored", "confusion": [[9, 1], [0, 10]]}, "bob": {"status": "refused",
                                                                                    "reason": "too large"}}
    for student, model in models.items():
        (scratch / student).mkdir(parents=True)
        (scratch / student / "result.json").write_text(json.dumps(
            {"student": student, "status": "graded", "notebooks": {}, "model": model}))
    settings = parallel.Settings(python=Path(sys.executable), datadir=course, scratch=scratch, model=ModelGrading())
    fresh = [{"student": "carol", "status": "graded", "notebooks": {}, "model": {"status": "refused"}}]
    earlier = {r["student"]: r["model_points"] for r in cli.earlier_results(Course(course), fresh, settings)}
    assert earlier == {"alice": {"points": 5.0, "max": 5.0}, "bob": {"points": 0.0, "max": 5.0}}


def test_the_sandboxes_get_the_reference_model_as_students_do_without_instructor_paths(tmp_path, capsys):
    # The instructor's reference run describes itself with paths of their machine; the sandboxes get the copy the
    # distribution ships (tools/distribution.shipped_info), staged in the grading folder.
    from labcode.reference import INFO_KEYS, SHIPPED_NAME

    run = tmp_path / "instructor" / "reference-synth-4"
    run.mkdir(parents=True)
    (run / "best.onnx").write_bytes(b"onnx bytes")
    info = {key: 1 for key in INFO_KEYS} | {"img_size": 96, "areas_train": ["1", "3"],
                                            "datadir": str(tmp_path / "instructor" / "synth-4"),
                                            "recipe": {"lr": 0.003, "datadir": "/home/teacher/data"}}
    (run / "reference.json").write_text(json.dumps(info))
    staged = cli.stage_reference(run / "best.onnx", tmp_path / "grading")
    assert staged == tmp_path / "grading" / ".reference" / SHIPPED_NAME
    assert staged.read_bytes() == b"onnx bytes"
    shipped = (staged.parent / "reference.json").read_text()
    assert json.loads(shipped)["img_size"] == 96 and json.loads(shipped)["recipe"] == {"lr": 0.003}
    assert str(tmp_path) not in shipped and "/home/teacher" not in shipped
    assert sorted(p.name for p in staged.parent.iterdir()) == sorted([SHIPPED_NAME, "reference.json"])
    # Staged again (a second grading run): replaced, nothing left over.
    (run / "best.onnx").write_bytes(b"newer model")
    assert cli.stage_reference(run / "best.onnx", tmp_path / "grading").read_bytes() == b"newer model"
    assert sorted(p.name for p in (tmp_path / "grading").iterdir()) == [".reference"]
    # A model without its description is refused, naming the file and the command that makes it.
    (run / "reference.json").unlink()
    with pytest.raises(cli.GradingError, match=r"--reference: .*best\.onnx.*reference\.json.*labcode reference"):
        cli.stage_reference(run / "best.onnx", tmp_path / "grading")


# --------------------------------------------------------------------------------------------------------------------
# Workers forked from the fork server: output, crash, time limit (bodies at module level: the server imports them)
# --------------------------------------------------------------------------------------------------------------------

def hanging_worker(job_file: str, output: str) -> None:
    """Starts a process of its own, says so, then never ends."""
    os.setsid()
    with open(output, "a") as log:
        child = subprocess.Popen(["sleep", "600"])
        Path(job_file).with_name("child.pid").write_text(str(child.pid))
        print(f"hanging, with a child {child.pid}", file=log, flush=True)
    time.sleep(600)


def crashing_worker(job_file: str, output: str) -> None:
    os.setsid()
    os.kill(os.getpid(), signal.SIGKILL)


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def test_a_forked_worker_writes_its_output_and_errors_to_its_log(course, fake_grading, monkeypatch, capsys):
    # The real worker body, forked from the server: this course has no release, so each worker fails on its own,
    # writes why in its result, and its log holds what it printed.
    monkeypatch.setattr(parallel, "start_process", FORKED)
    assert grade(course, "--student", "alice") == 1
    result = json.loads((course / "grading" / "alice" / "result.json").read_text())
    assert result["status"] == "error" and result["error"], result
    assert (course / "grading" / "alice" / "worker-error.log").read_text().startswith("Traceback")
    assert "INFO tools.grading.worker: grading alice (notebooks *)" in (course / "grading" / "alice" / "worker.log"
                                                                        ).read_text()
    assert table(capsys.readouterr().out)["error"] == "alice"


def test_a_worker_killed_by_a_signal_is_a_crash_of_that_student_only(course, fake_grading, monkeypatch, capsys):
    monkeypatch.setattr(parallel, "start_process", functools.partial(FORKED, target=crashing_worker))
    assert grade(course, "--student", "bob") == 1
    rows = table(capsys.readouterr().out)
    assert rows["crashed"] == "bob" and rows["bob"] == "crashed: the worker was killed by signal 9", rows


def test_a_worker_over_its_time_is_killed_with_what_it_started(course, fake_grading, monkeypatch, capsys):
    monkeypatch.setattr(parallel, "start_process", functools.partial(FORKED, target=hanging_worker))
    started = time.monotonic()
    assert grade(course, "--student", "carol", "--submission-timeout", "3") == 1
    assert time.monotonic() - started < 60
    rows = table(capsys.readouterr().out)
    assert rows["carol"] == "timeout: killed after 3 s (--submission-timeout)", rows
    child = int((course / "grading" / "carol" / "child.pid").read_text())
    assert not alive(child), f"the worker's child {child} outlived it"
    assert "hanging, with a child" in (course / "grading" / "carol" / "worker.log").read_text()
