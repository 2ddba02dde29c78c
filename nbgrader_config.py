"""nbgrader configuration of the course; every ``nbgrader`` command run from the repository root reads it.

Course layout (nbgrader's ``{nbgrader_step}/{student_id}/{assignment_id}`` folders, rooted here):

- ``solutions/segmentation/``: the instructor sources (solutions, hidden tests, instructor answers);
- ``notebooks/segmentation/``: the student release, written by ``make release`` (``tools/release.py``), which runs
  ``nbgrader generate_assignment`` and adds the student copy of the library (``labcode/`` with exercise stubs);
- ``submitted/``, ``autograded/``, ``feedback/`` and ``gradebook.db``: grading work, git-ignored.

The instructor workflow (generate, release, collect, autograde, feedback, export) is described in the book's
instructor page. Settings a particular machine needs (the exchange folder shared with the students, a different
course id) go in a ``nbgrader_config.py`` of the Jupyter config path or on the command line, e.g.
``nbgrader release_assignment segmentation --Exchange.root=/srv/nbgrader/exchange``.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # the course's grader (tools/grading), below
from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    CheckCellMetadata,
    ClearOutput,
    DeduplicateIds,
    GetGrades,
    OverwriteCells,
    OverwriteKernelspec,
)

from tools.grading.feedback import SafeFeedback  # noqa: E402
from tools.grading.kernel import autograde_preprocessors  # noqa: E402
from tools.grading.verdicts import GraderOnly  # noqa: E402

c = get_config()  # noqa: F821  (provided by traitlets when it loads this file)

# --------------------------------------------------------------------------------------------------------------------
# Course directory
# --------------------------------------------------------------------------------------------------------------------
c.CourseDirectory.root = os.path.dirname(os.path.abspath(__file__))
c.CourseDirectory.course_id = "segmentation-lab"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "notebooks"
# Never copied when assignments move around (release, fetch, submit, collect, autograde): caches, checkpoints and
# the data sets and runs that the notebooks write next to themselves.
c.CourseDirectory.ignore = [
    ".ipynb_checkpoints", "*.pyc", "__pycache__", "feedback",
    "data", "runs", "*.onnx.data", "*.pt", "*.pth",  # (*.onnx is kept: students submit my_model.onnx)
    "stand_in_photo.png", "*_segmentation.png", "*_segmentation_mask.png",
]

# --------------------------------------------------------------------------------------------------------------------
# Student version
# --------------------------------------------------------------------------------------------------------------------
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# --------------------------------------------------------------------------------------------------------------------
# Autograding
# --------------------------------------------------------------------------------------------------------------------
# Per-cell limit. While grading (NBGRADER_EXECUTION is set) the notebooks pick tiny settings: every cell, training
# included, takes well under a minute on two CPU cores. A cell still running after this many seconds is interrupted,
# recorded as failed (0 points for its test), and the remaining cells are executed and graded.
c.ExecutePreprocessor.timeout = 300
# A graded cell a student deleted is put back (and run) instead of silently missing.
c.OverwriteCells.add_missing_cells = True
# Every kernel of an autograde runs in the sandbox (tools/grading/sandbox.py), with the grading environment: the
# third-party stack without the course library, so that a submission can only run its own labcode/ copy.
# `python -m tools.grading run` grades a whole class in parallel (instructors' page).
c.Autograde.autograde_preprocessors = autograde_preprocessors()
# Outputs are bounded while the kernel's messages arrive (tools/grading/outputs.py), then LimitOutput cuts by lines;
# a cell or notebook over its limit keeps a one-line note that reaches the feedback. Sizes in characters.
c.SandboxedExecute.cell_output_limit = 2 * 2**20
c.SandboxedExecute.notebook_output_limit = 8 * 2**20
c.SandboxedExecute.probe_output_limit = 32 * 2**20  # the evidence of one test (tools/grading/probe.py)
c.SandboxedExecute.message_limit = 40 * 2**20  # the largest kernel message accepted (above the probe's limit)
c.LimitOutput.max_lines = 1000
c.LimitOutput.max_traceback = 100
# Grading goes through the course's grader, which takes only the files a submission may hold, grades each notebook on
# its own and lets the judge (tools/grading/verdicts.py) decide every test outside the student's kernel: a plain
# `nbgrader autograde` (or Formgrader's button) refuses and says so.
c.Autograde.sanitize_preprocessors = [GraderOnly, ClearOutput, DeduplicateIds, OverwriteKernelspec, OverwriteCells,
                                      CheckCellMetadata]

# --------------------------------------------------------------------------------------------------------------------
# Feedback
# --------------------------------------------------------------------------------------------------------------------
# What students get back carries no hidden test, and each failed test shows one line: its hint.
c.GenerateFeedback.preprocessors = [SafeFeedback, GetGrades, CSSHTMLHeaderPreprocessor]
# Every page nbconvert renders (feedback, Formgrader's views) cleans markdown and HTML as it renders them, a second
# layer behind the sanitising of the graded notebooks (tools/grading/sanitize.py): nothing a submission wrote runs.
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = {"markdown2html": "tools.grading.sanitize.markdown2html_inert",
                          "clean_html": "tools.grading.sanitize.clean_html"}

# --------------------------------------------------------------------------------------------------------------------
# Grading the trained models (tools/grading/models.py; part of `python -m tools.grading run`)
# --------------------------------------------------------------------------------------------------------------------
# Notebook 5 ends with each student exporting their best model to my_model.onnx; the grader scores it, in the
# sandbox, on the hidden test set (`python -m tools.grading hidden-set`, once per term) and gives the graded cell
# below its points by the bands: (minimum macro F1 on the hidden set, share of the cell's points), best first.
c.ModelGrading.model_file = "my_model.onnx"
c.ModelGrading.notebook = "05_training"
c.ModelGrading.grade_id = "test_model_export"
c.ModelGrading.bands = [(0.70, 1.0), (0.60, 0.8), (0.50, 0.6), (0.35, 0.4), (0.20, 0.2)]
c.ModelGrading.img_size = 128  # the models are evaluated on the hidden images resized to this side
c.ModelGrading.time_limit = 300  # seconds per model for the whole hidden set
c.ModelGrading.memory_gb = 4
c.ModelGrading.max_model_mb = 200
c.ModelGrading.names = "pseudonym"  # on the leaderboard; or "student_id"
c.ModelGrading.shareable = 3  # students see their predictions on the first 3 hidden images
