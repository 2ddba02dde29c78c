"""What a submission may bring in, and when it arrived: the grader's intake of the students' folders.

A submission is a folder the student wrote, with the student's rights and the student's code. The grader decides two
things about it, from nothing the student controls:

- **which files are the student's**: the release's notebooks, the library files that hold an exercise (``# EXERCISE``
  in the release's copy), the exported model and the photos; regular files only, each opened without following a
  link. Every other library file is the release's. Anything else in the folder (a ``numpy.py`` beside the notebooks,
  a ``sitecustomize.py``, a link, a fifo, a file of any odd name) is left out and reported, its name quoted with
  ``repr`` so that no name can break a log line or a table;
- **when it was submitted**: when it reached the exchange's inbound folder, as the exchange's file system recorded it
  (the latest change time, ``ctime``, of the folder and of everything in it; no unprivileged process can set a
  ``ctime`` back). Never the ``timestamp.txt`` the student's side wrote, nor the time in the folder's name, which the
  student's side chose too.

:func:`collect` takes each student's newest submission from the exchange into ``submitted/`` (it replaces
``nbgrader collect``); :func:`take_submission` copies one folder and is what each grading worker runs on its copy.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tools.grading.course import Course

log = logging.getLogger(__name__)

#: Marks, in the release's library, the lines where students write code (see ``tools/release.py``).
EXERCISE_MARK = "# EXERCISE "
#: The library's folder in a submission and in the release.
LIBRARY = "labcode"
#: Files of the student's own beside the notebooks: the exported model and the photos of notebook 6.
STUDENT_FILES = ("my_model.onnx", "my_photo.png", "my_photo.jpg")
#: A larger file is not taken (the models' own limit, ``ModelGrading.max_model_mb``, is lower).
MAX_FILE_BYTES = 256 * 2**20
#: Left out without a word: what nbgrader's exchange and Jupyter write in every folder.
QUIET = frozenset({"timestamp.txt", "submission_secret.txt", ".ipynb_checkpoints", "__pycache__"})
#: How far into a submitted library the intake looks for files to report (deeper ones are reported as one).
MAX_DEPTH = 6
#: At most this many files left out are listed in a report (then their number).
MAX_LISTED = 200
#: nbgrader's ``timestamp.txt`` format (``Exchange.timestamp_format``), always in UTC here.
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f %Z"


@dataclass
class IntakeReport:
    """What :func:`take_submission` did with a folder; JSON-serialisable (:meth:`to_json`).

    Attributes:
        taken: the student's files copied, relative to the submission (``03_unet.ipynb``, ``labcode/unet.py``).
        skipped: what was left out, as ``{"path": repr of the relative path, "reason": why}`` (the first
            :data:`MAX_LISTED`).
        unlisted: how many more were left out.
        restored: library files the submission had changed or lacked, put back from the release
            (``labcode/metrics.py``; an exercise file it lacked is the release's stub).
    """

    taken: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unlisted: int = 0
    restored: list[str] = field(default_factory=list)

    def skip(self, rel: str, reason: str) -> None:
        if len(self.skipped) < MAX_LISTED:
            self.skipped.append({"path": shown(rel), "reason": reason})
        else:
            self.unlisted += 1

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class Collected:
    """One submission :func:`collect` took from the exchange, or an inbound folder it passed over.

    Attributes:
        folder: the inbound folder's name, quoted with ``repr``.
        student: the student id (empty when the folder was passed over).
        submitted_at: when it reached the exchange, in UTC (``None`` when passed over).
        report: what was taken, left out and restored (``None`` when passed over).
        notes: warnings for the instructor (a folder owned by another user than the student, a name refused).
    """

    folder: str
    student: str = ""
    submitted_at: datetime | None = None
    report: IntakeReport | None = None
    notes: list[str] = field(default_factory=list)


class NotTaken(Exception):
    """A file of a submission that is not taken; the message says why."""


def shown(name: str | bytes, limit: int = 200) -> str:
    """``name`` quoted for a log line or a table: ``repr`` of at most ``limit`` characters (any bytes, any name)."""
    text = repr(name[:limit])
    return text + f" (+{len(name) - limit} more)" if len(name) > limit else text


# --------------------------------------------------------------------------------------------------------------------
# What a submission may hold
# --------------------------------------------------------------------------------------------------------------------

def exercise_files(release_library: Path) -> set[str]:
    """The library files (paths relative to the library) where students write code: those with an exercise stub."""
    return {p.relative_to(release_library).as_posix() for p in release_library.rglob("*.py")
            if any(line.lstrip().startswith(EXERCISE_MARK + '"')
                   for line in p.read_text(encoding="utf-8").splitlines())}


def release_library_files(release_library: Path) -> list[str]:
    """Every file of the release's library (relative paths), caches left out."""
    return sorted(p.relative_to(release_library).as_posix() for p in release_library.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def open_folder(name: str, dir_fd: int | None = None) -> int:
    """A descriptor of the folder ``name`` (in ``dir_fd``), refusing a link or anything but a folder."""
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            raise NotTaken(reason_of(err, "a folder")) from None
        raise NotTaken(kind_of(mode) if not stat.S_ISDIR(mode) else reason_of(err, "a folder")) from None


def read_regular(name: str, dir_fd: int, max_bytes: int) -> bytes:
    """The content of the regular file ``name`` in ``dir_fd``; :class:`NotTaken` for a link, a fifo, a device..."""
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        if not stat.S_ISREG(mode):
            raise NotTaken(kind_of(mode))
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        raise NotTaken(reason_of(err, "a regular file")) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # replaced between the two looks
            raise NotTaken(kind_of(info.st_mode))
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise NotTaken(f"larger than {max_bytes} bytes")
    return data


def kind_of(mode: int) -> str:
    """What a file that is not taken is, in words."""
    if stat.S_ISLNK(mode):
        return "a symbolic link (never followed)"
    if stat.S_ISDIR(mode):
        return "a folder where a file was expected"
    if stat.S_ISREG(mode):
        return "a file where a folder was expected"
    return "not a regular file (fifo, socket or device)"


def reason_of(err: OSError, expected: str) -> str:
    """Why opening a file failed, in words."""
    if err.errno == errno.ELOOP:
        return "a symbolic link (never followed)"
    if err.errno == errno.ENOTDIR:
        return f"not {expected}"
    return f"unreadable ({err.strerror})"


def entries(dir_fd: int) -> list[tuple[str, int]]:
    """The names in a folder with their modes (not following links), sorted."""
    out = []
    for name in sorted(os.listdir(dir_fd)):
        try:
            out.append((name, os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode))
        except OSError:
            continue  # gone meanwhile
    return out


def library_tree(dir_fd: int, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, int]]:
    """The paths (relative to the library) and modes of a submitted library, folders not followed below a depth."""
    for name, mode in entries(dir_fd):
        rel = f"{prefix}{name}"
        if stat.S_ISDIR(mode) and name not in QUIET and depth < MAX_DEPTH:
            try:
                child = open_folder(name, dir_fd)
            except NotTaken:
                yield rel, mode
                continue
            try:
                yield from library_tree(child, f"{rel}/", depth + 1)
            finally:
                os.close(child)
        elif name not in QUIET:
            yield rel, mode


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def take_library(source_fd: int | None, dest: Path, release_library: Path, report: IntakeReport,
                 max_bytes: int) -> None:
    """The submitted library's exercise files, and the release's version of every other file, into ``dest``."""
    own = exercise_files(release_library)
    release_files = release_library_files(release_library)
    submitted = dict(library_tree(source_fd)) if source_fd is not None else {}
    for rel in release_files:
        data = (release_library / rel).read_bytes()
        if rel in own and rel in submitted:
            try:
                data = read_nested(source_fd, rel, max_bytes)
                report.taken.append(f"{LIBRARY}/{rel}")
            except NotTaken as why:
                report.restored.append(f"{LIBRARY}/{rel}")
                report.skip(f"{LIBRARY}/{rel}", f"{why}: the release's stub is graded instead")
        elif rel in own or rel not in submitted or not same_file(source_fd, rel, data, max_bytes):
            report.restored.append(f"{LIBRARY}/{rel}")
        write_file(dest / rel, data)
    for rel, mode in submitted.items():
        if rel not in release_files:
            report.skip(f"{LIBRARY}/{rel}", "not a file of the release's library" if stat.S_ISREG(mode) else
                        "a folder too deep to read" if stat.S_ISDIR(mode) else kind_of(mode))


def same_file(dir_fd: int, rel: str, data: bytes, max_bytes: int) -> bool:
    """Whether the submitted file at ``rel`` below ``dir_fd`` is a regular file holding ``data``."""
    try:
        return read_nested(dir_fd, rel, max_bytes) == data
    except NotTaken:
        return False


def read_nested(dir_fd: int, rel: str, max_bytes: int) -> bytes:
    """A regular file at the relative path ``rel`` below ``dir_fd``, no component of it a link."""
    *folders, name = rel.split("/")
    fds = []
    try:
        current = dir_fd
        for folder in folders:
            current = open_folder(folder, current)
            fds.append(current)
        return read_regular(name, current, max_bytes)
    finally:
        for fd in fds:
            os.close(fd)


def take_submission(source: Path, dest: Path, release: Path, *, timestamp: datetime | None = None,
                    student_files: Sequence[str] = STUDENT_FILES, max_bytes: int = MAX_FILE_BYTES) -> IntakeReport:
    """Copy into ``dest`` only what a submission may hold; everything else of the library comes from ``release``.

    Taken from ``source``: the top-level notebooks whose names are the release's, the exercise files of its library
    and ``student_files``, each only if it is a regular file (no component of its path a link) of at most
    ``max_bytes``. ``dest`` gets the release's library with those exercise files in it (the release's stub for an
    exercise file the submission lacks or holds as something else).

    Args:
        source: the submitted folder (an exchange folder, or a collected ``submitted/<student>/<assignment>``).
        dest: a new folder (it must not exist, or be empty).
        release: the release of the assignment (``notebooks/segmentation``), with its ``labcode/``.
        timestamp: when the submission was made; written to ``dest/timestamp.txt`` as nbgrader reads it.
        student_files: other files of the student's own taken from beside the notebooks.
        max_bytes: larger files are not taken.

    Returns:
        What was taken, left out (with the reason) and put back from the release.
    """
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"take_submission writes a new folder; {dest} is not empty")
    release_library = release / LIBRARY
    if not release_library.is_dir():
        raise FileNotFoundError(f"no {LIBRARY}/ in the release {release}")
    allowed = {p.name for p in release.glob("*.ipynb") if p.is_file()} | set(student_files)
    dest.mkdir(parents=True, exist_ok=True)
    report = IntakeReport()
    try:
        source_fd = open_folder(str(source))
    except NotTaken as why:
        raise NotADirectoryError(f"the submission {source} cannot be read: {why}") from None
    library_fd = None
    try:
        for name, mode in entries(source_fd):
            if name == LIBRARY:
                try:
                    library_fd = open_folder(name, source_fd)
                except NotTaken as why:
                    report.skip(name, f"{why}: the whole library is the release's")
            elif name in allowed:
                try:
                    write_file(dest / name, read_regular(name, source_fd, max_bytes))
                    report.taken.append(name)
                except NotTaken as why:
                    report.skip(name, str(why))
            elif name not in QUIET:
                report.skip(name, "not a file a submission may hold" if stat.S_ISREG(mode) else
                            "a folder that is not part of a submission (not read)" if stat.S_ISDIR(mode) else
                            kind_of(mode))
        take_library(library_fd, dest / LIBRARY, release_library, report, max_bytes)
    finally:
        for fd in (library_fd, source_fd):
            if fd is not None:
                os.close(fd)
    if timestamp is not None:
        (dest / "timestamp.txt").write_text(format_timestamp(timestamp))
    report.taken.sort()
    report.restored.sort()
    return report


# --------------------------------------------------------------------------------------------------------------------
# When it arrived
# --------------------------------------------------------------------------------------------------------------------

def arrival_time(folder: Path) -> datetime:
    """When ``folder`` took its present form: the latest change time of it and of everything in it, in UTC.

    The change time (``ctime``) is set by the file system's clock (the server's, on NFS) whenever a file is created,
    written, renamed or has its attributes changed; unlike the modification time, no unprivileged process can set it
    to a chosen value. A student who changes a submission after handing it in only makes it later.
    """
    latest = os.lstat(folder).st_ctime_ns
    for root, folders, files in os.walk(folder, followlinks=False):
        for name in folders + files:
            try:
                latest = max(latest, os.lstat(os.path.join(root, name)).st_ctime_ns)
            except OSError:
                continue
    return datetime.fromtimestamp(latest / 1e9, timezone.utc)


def format_timestamp(when: datetime) -> str:
    """``when`` as nbgrader writes ``timestamp.txt`` (``2026-12-03 08:40:58.123456 UTC``)."""
    return when.astimezone(timezone.utc).strftime(TIMESTAMP_FORMAT)


def read_timestamp(folder: Path) -> datetime | None:
    """The time recorded in ``folder/timestamp.txt`` by :func:`collect` (``None`` without one), as nbgrader reads it.

    Trust it only in a folder :func:`collect` wrote (``submitted/``), never in one a student wrote.
    """
    from nbgrader.utils import parse_utc

    path = folder / "timestamp.txt"
    if not path.is_file() or path.is_symlink():
        return None
    try:
        return parse_utc(path.read_text(encoding="utf-8").strip()).replace(tzinfo=timezone.utc)
    except (ValueError, OverflowError, UnicodeDecodeError):
        return None


# --------------------------------------------------------------------------------------------------------------------
# From the exchange
# --------------------------------------------------------------------------------------------------------------------

def student_of(name: str, assignment: str) -> str | None:
    """The student id in an inbound folder's name (``<student>+<assignment>+<time>[+<random>]``), or ``None``."""
    for parts in (name.rsplit("+", 3), name.rsplit("+", 2)):
        if len(parts) >= 3 and parts[1] == assignment and parts[0]:
            return parts[0]
    return None


def refused_id(student: str) -> str | None:
    """Why ``student`` cannot name a folder of the course (``None`` when it can)."""
    if student.startswith(".") or student.startswith("-"):
        return "a student id starting with '.' or '-'"
    if len(student) > 100:
        return "a student id longer than 100 characters"
    if any(unicodedata.category(ch).startswith("C") or ch in "/\\*" for ch in student):
        return "a student id with control, '/', '\\' or '*' characters, or bytes that are not UTF-8"
    return None


def owner_note(path: Path, student: str) -> str | None:
    """A warning when ``path`` is not owned by the user named ``student`` (as ``nbgrader collect`` warns)."""
    import pwd

    uid = os.lstat(path).st_uid
    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = f"uid {uid}"
    return None if owner == student else f"owned by {owner}, not by the user {student!r} (CollectApp.check_owner)"


def collect(course: Course, exchange_root: Path, students: Sequence[str] | None = None,
            check_owner: bool | None = None) -> list[Collected]:
    """Take each student's newest submission from the exchange into ``<course>/submitted/<student>/<assignment>``.

    For each student (all, or ``students``), the submission that reached the inbound folder last (by
    :func:`arrival_time`, never by the time in its name) replaces any collected one, through :func:`take_submission`,
    with that arrival time in its ``timestamp.txt``: nbgrader's autograde records it in the gradebook, and the export
    in ``grades.csv``.

    Args:
        course: the course; its release says what a submission may hold.
        exchange_root: nbgrader's exchange folder (``<root>/<course_id>/inbound``); none there: nothing collected.
        students: only these students (default: every student with a submission).
        check_owner: warn about folders not owned by the student's user (default: ``CollectApp.check_owner``).

    Returns:
        One entry per submission taken, and one per inbound folder passed over (with a note saying why).
    """
    inbound = exchange_root / course.course_id / "inbound"
    if not inbound.is_dir():
        return []
    if check_owner is None:
        check_owner = bool(course.config().get("CollectApp", {}).get("check_owner", True))
    release = course.folder("release")
    passed: list[Collected] = []
    newest: dict[str, tuple[datetime, Path]] = {}
    with os.scandir(inbound) as found:
        folders = sorted(found, key=lambda e: e.name)
    for entry in folders:
        student = student_of(entry.name, course.assignment)
        if student is None or (students is not None and student not in students):
            continue
        problem = refused_id(student) or (None if entry.is_dir(follow_symlinks=False) else "not a folder")
        if problem:
            passed.append(Collected(folder=shown(entry.name), notes=[f"not collected: {problem}"]))
            continue
        arrived = arrival_time(Path(entry.path))
        if student not in newest or arrived > newest[student][0]:
            newest[student] = (arrived, Path(entry.path))
    taken = []
    for student, (arrived, folder) in sorted(newest.items()):
        dest = course.folder("submitted", student)
        if dest.exists():
            shutil.rmtree(dest)
        report = take_submission(folder, dest, release)
        arrived = max(arrived, arrival_time(folder))  # changed while it was copied: as late as the change
        (dest / "timestamp.txt").write_text(format_timestamp(arrived))
        note = owner_note(folder, student) if check_owner else None
        taken.append(Collected(folder=shown(folder.name), student=student, submitted_at=arrived, report=report,
                               notes=[note] if note else []))
        log.info("collected %s from %s, submitted at %s: %d file(s) taken, %d left out, %d restored",
                 student, shown(folder.name), format_timestamp(arrived), len(report.taken), len(report.skipped),
                 len(report.restored))
        for skipped in report.skipped:
            log.info("  %s: left out %s: %s", student, skipped["path"], skipped["reason"])
    for item in passed + taken:
        for note in item.notes:
            log.warning("%s: %s", item.folder, note)
    return taken + passed
