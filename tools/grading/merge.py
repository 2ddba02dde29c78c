"""Merge a worker's scratch gradebook into the course's: the one place that writes the course gradebook.

nbgrader's SQLite gradebook does not take concurrent writers, so workers grade into copies and the parent process
merges each result here, one at a time. The merge applies exactly what nbgrader's own autograde writes
(``SaveAutoGrades``, ``AssignLatePenalties``): the automatic score of each graded cell, whether it needs a manual
grade, the automatic comment of each answer cell, the submission's timestamp and each notebook's late penalty;
manual scores already given in the course gradebook are kept. The graded notebooks are copied to
``autograded/<student>/`` as nbgrader would have written them.
"""

from __future__ import annotations

import shutil
import warnings

from tools.grading.course import Course


def merge_submission(course: Course, work: Course, student: str) -> None:
    """Copy ``student``'s autograding results from the scratch course ``work`` into ``course``."""
    from nbgrader.api import Gradebook
    from sqlalchemy.exc import SAWarning

    warnings.filterwarnings("ignore", category=SAWarning)  # nbgrader's own autoflush notices

    with Gradebook(f"sqlite:///{work.root / 'gradebook.db'}", work.course_id) as scratch, \
            Gradebook(f"sqlite:///{course.db_path}", course.course_id) as master:
        graded = scratch.find_submission(course.assignment, student)
        master.update_or_create_student(student)
        master.update_or_create_submission(course.assignment, student, timestamp=graded.timestamp)
        for notebook in graded.notebooks:
            into = master.find_submission_notebook(notebook.name, course.assignment, student)
            into.late_submission_penalty = notebook.late_submission_penalty
            for grade in notebook.grades:
                mine = master.find_grade(grade.name, notebook.name, course.assignment, student)
                mine.auto_score = grade.auto_score
                mine.needs_manual_grade = mine.manual_score is not None or mine.auto_score is None
            for comment in notebook.comments:
                master.find_comment(comment.name, notebook.name, course.assignment,
                                    student).auto_comment = comment.auto_comment
        master.db.commit()
    source, dest = work.folder("autograded", student), course.folder("autograded", student)
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(source, dest, symlinks=True)


def reset_submission(course: Course, student: str) -> None:
    """Record a submission that could not be graded at all (worker crash, wall-time limit): 0 on every test."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course.db_path}", course.course_id) as master:
        master.update_or_create_student(student)
        submission = master.update_or_create_submission(course.assignment, student)
        for notebook in submission.notebooks:
            for grade in notebook.grades:
                if grade.cell.cell_type == "code":
                    grade.auto_score = 0
                    grade.needs_manual_grade = grade.manual_score is not None
        master.db.commit()


def set_manual_score(course: Course, student: str, notebook: str, grade_id: str, points: float) -> float | None:
    """Give ``student``'s graded cell ``grade_id`` of ``notebook`` the score ``points`` (capped at the cell's points).

    Returns:
        the cell's maximum score, or ``None`` when the course has no such graded cell (nothing is written).
    """
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course.db_path}", course.course_id) as master:
        try:
            grade = master.find_grade(grade_id, notebook, course.assignment, student)
        except MissingEntry:
            return None
        grade.manual_score = min(points, grade.max_score)
        grade.needs_manual_grade = False
        master.db.commit()
        return float(grade.max_score)


def cell_points(course: Course, notebook: str, grade_id: str) -> float | None:
    """The points of a graded cell of the assignment, or ``None`` when there is no such cell."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course.db_path}", course.course_id) as master:
        try:
            return float(master.find_graded_cell(grade_id, notebook, course.assignment).max_score)
        except MissingEntry:
            return None
