"""The nbgrader course the grader works on: its configuration, folders, gradebook and submissions."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ASSIGNMENT = "segmentation"


@dataclass(frozen=True)
class Course:
    """An nbgrader course folder (the repository root, or a scratch copy in the tests).

    Attributes:
        root: the folder holding ``nbgrader_config.py``.
        assignment: the assignment graded.
    """

    root: Path
    assignment: str = ASSIGNMENT

    def config(self):
        """The traitlets configuration of the course (its ``nbgrader_config.py``), with the root set."""
        from traitlets.config.loader import PyFileConfigLoader

        config = PyFileConfigLoader("nbgrader_config.py", path=str(self.root)).load_config()
        config.CourseDirectory.root = str(self.root)
        return config

    @property
    def course_id(self) -> str:
        return str(self.config().CourseDirectory.course_id)

    @property
    def db_path(self) -> Path:
        url = str(self.config().CourseDirectory.get("db_url", "")) or f"sqlite:///{self.root / 'gradebook.db'}"
        if not url.startswith("sqlite:///"):
            raise ValueError(f"the grader merges into a SQLite gradebook; the course's db_url is {url}")
        return Path(url.removeprefix("sqlite:///"))

    def folder(self, step: str, student: str | None = None) -> Path:
        """``<root>/<step>/<student>/<assignment>`` (``step``: submitted, autograded, feedback), or the release."""
        if step == "release":
            return self.root / str(self.config().CourseDirectory.release_directory) / self.assignment
        return self.root / step / str(student) / self.assignment

    def submissions(self) -> list[str]:
        """The students with a collected submission, sorted."""
        base = self.root / "submitted"
        return sorted(p.name for p in base.iterdir() if (p / self.assignment).is_dir()) if base.is_dir() else []

    def api(self, **values):
        """An ``NbGraderAPI`` on this course; ``values`` override configuration entries (``"Section.name": value``)."""
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory

        config = self.config()
        config.Exchange.root = str(config.Exchange.get("root", "") or self.root / "exchange")
        config.NbGraderAPI.log_level = "WARN"
        for key, value in values.items():
            section, name = key.split(".")
            config[section][name] = value
        return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


@contextlib.contextmanager
def tools_on_path() -> Iterator[None]:
    """nbgrader runs the ``alembic`` executable of the current environment: put its ``bin/`` first on PATH."""
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + old
    try:
        yield
    finally:
        os.environ["PATH"] = old


def copy_database(source: Path, dest: Path) -> None:
    """A consistent copy of a SQLite gradebook, even while another process writes it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(source, timeout=60)) as src, \
            contextlib.closing(sqlite3.connect(dest)) as out:
        src.backup(out)
