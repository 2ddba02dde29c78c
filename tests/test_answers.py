"""Questions and answers across the site, the instructor notebooks and the student release.

- The site's chapters and the notebooks pose the same questions ("Question N.M", both ways, with the same titles).
- Every question has its answer cell (a written answer graded by hand, or code with its test cell) and the
  instructor's answer in ``solutions/`` (the written answer, the solution region, or the library region).
- No visible cell of the student release, markdown included, and no text of the site gives away the answer of an
  autograded question: neither its value, in any usual rounding, nor the expression that computes it. (The lines of
  the solutions themselves are looked for by ``test_release.py`` and, on the built site, by ``test_book.py``.)
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import nbformat
import pytest

from tools import release

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "solutions" / "segmentation"
RELEASE = REPO / "notebooks" / "segmentation"
CHAPTERS = REPO / "book" / "chapters"
STEMS = sorted(p.stem for p in SOURCE.glob("*.ipynb"))

NOTEBOOK_QUESTION = re.compile(r"^### Question (\d+\.\d+): (.+?)\s*$", re.MULTILINE)
BOOK_QUESTION = re.compile(r"\*\*Questions? (\d+\.\d+)(?: and (\d+\.\d+))?: (.+?)\*\*", re.DOTALL)


def normal(title: str) -> str:
    """A title as words: lower case, letters and digits only."""
    return " ".join(re.findall(r"[a-z0-9+]+", title.lower()))


def book_questions() -> dict[str, tuple[str | None, str]]:
    """Question number -> (title, or None for questions posed together, chapter file) from the site's chapters."""
    found: dict[str, tuple[str | None, str]] = {}
    for path in sorted(CHAPTERS.glob("*.md")):
        for first, second, title in BOOK_QUESTION.findall(path.read_text()):
            for number in filter(None, (first, second)):
                assert number not in found, f"question {number} posed twice ({found[number][1]}, {path.name})"
                found[number] = (None if second else title.strip().rstrip("."), path.name)
    return found


def notebook_questions(folder: Path = SOURCE) -> dict[str, tuple[str, str, list]]:
    """Question number -> (title, notebook stem, cells from its heading to the next question) from the notebooks."""
    found: dict[str, tuple[str, str, list]] = {}
    for stem in STEMS:
        current = None
        for cell in nbformat.read(folder / f"{stem}.ipynb", as_version=4).cells:
            headings = NOTEBOOK_QUESTION.findall(cell.source) if cell.cell_type == "markdown" else []
            if headings:
                assert len(headings) == 1, f"{stem}: one question per cell, got {headings}"
                number, title = headings[0]
                assert number not in found, f"question {number} posed twice"
                assert number.split(".")[0] == str(int(stem[:2])), f"{stem} poses question {number}"
                found[number] = (title, stem, [])
                current = number
            elif current is not None:
                found[current][2].append(cell)
    return found


def nbgrader(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def library_titles() -> set[tuple[str, str]]:
    return {(region.stem, region.title) for path in sorted((REPO / "labcode").rglob("*.py"))
            for region in release.find_regions(path.read_text(), str(path))}


# --------------------------------------------------------------------------------------------------------------------
# Same questions on the site and in the notebooks, each with its answer cell and the instructor's answer
# --------------------------------------------------------------------------------------------------------------------

def test_the_site_and_the_notebooks_pose_the_same_questions():
    book, notebooks = book_questions(), notebook_questions()
    assert len(book) >= 30
    assert sorted(book) == sorted(notebooks), \
        f"only on the site: {sorted(set(book) - set(notebooks))}; only in the notebooks: " \
        f"{sorted(set(notebooks) - set(book))}"
    different = {number: (title, notebooks[number][0]) for number, (title, _) in book.items()
                 if title is not None and normal(title) != normal(notebooks[number][0])}
    assert not different, f"questions titled differently on the site and in the notebook: {different}"


def test_every_question_has_an_answer_cell_and_an_instructor_answer():
    library = library_titles()
    student = notebook_questions(RELEASE)
    for number, (title, stem, cells) in notebook_questions().items():
        graded = [cell for cell in cells if nbgrader(cell).get("grade")]
        assert graded, f"question {number} ({stem}) has no graded cell"
        released = {nbgrader(c).get("grade_id"): c for c in student[number][2] if nbgrader(c)}
        for cell in graded:
            info = nbgrader(cell)
            grade_id = info["grade_id"]
            assert info["points"] > 0, grade_id
            if cell.cell_type == "markdown":  # written answer, graded by hand: the instructor's answer is the cell
                assert info["solution"] and len(cell.source) > 300, f"{grade_id}: no instructor answer"
                assert released[grade_id].source == "YOUR ANSWER HERE", f"{grade_id}: no answer cell in the release"
                continue
            if grade_id in HANDED_IN:  # a file the student exports with a plain cell, graded by the model grader
                assert any(c.cell_type == "code" and not nbgrader(c) and HANDED_IN[grade_id] in c.source
                           for c in cells), f"{number}: no cell exports {HANDED_IN[grade_id]}"
                continue
            answers = [c for c in cells if nbgrader(c).get("solution") and c.cell_type == "code"]
            if answers:  # code written in the notebook, then its test
                assert all("### BEGIN SOLUTION" in c.source for c in answers), number
                assert all("raise NotImplementedError()" in released[nbgrader(c)["grade_id"]].source
                           for c in answers), f"{number}: no code cell to fill in the release"
            else:  # code written in the library
                assert (stem, title) in library, f"question {number} ({title}): no solution region in labcode/"
                stubs = "\n".join(p.read_text() for p in (RELEASE / "labcode").rglob("*.py"))
                assert f'raise NotImplementedError("{title}: write it' in stubs, f"{number}: no stub in the release"


#: Test cells that check a file students hand in (the model, scored on the hidden test set by tools/grading).
HANDED_IN = {"test_model_export": "my_model.onnx"}

#: Questions with a written part, answered in a cell graded by hand (besides any code they ask for).
WRITTEN = {"1.1", "1.3", "2.1", "2.2", "3.1", "3.2", "3.9", "4.3", "4.4", "4.5", "4.8", "5.1", "5.2", "6.1", "6.2",
           "6.3", "6.4", "6.5", "6.6", "7.2", "7.3", "7.4"}
#: Questions answered by code alone, and why no written answer is asked.
CODE_ONLY = {
    "1.2": "a helper function, compared with the answer of 1.1",
    "3.3": "library code", "3.4": "library code", "3.5": "library code", "3.6": "library code", "3.7": "library code",
    "3.8": "library code",
    "4.1": "a number computed in the notebook", "4.2": "a number computed in the notebook",
    "4.6": "library code", "4.7": "a function written in the notebook",
    "7.1": "a model and its output; the cell prints the output's size, which answers the question",
    "5.3": "a trained model handed in, scored on the hidden test set",
}


def test_questions_with_a_written_part_have_a_written_answer_cell():
    questions = notebook_questions()
    assert not WRITTEN & set(CODE_ONLY) and sorted(WRITTEN | set(CODE_ONLY)) == sorted(questions), \
        f"classify every question: {sorted(set(questions) ^ (WRITTEN | set(CODE_ONLY)))}"
    for number in sorted(WRITTEN):
        title, stem, cells = questions[number]
        written = [c for c in cells if c.cell_type == "markdown" and nbgrader(c).get("grade")]
        assert written, f"question {number} ({stem}: {title}) asks for a written answer but has no cell for it"


def test_no_graded_cell_lies_outside_a_question():
    for stem in STEMS:
        posed = {nbgrader(c).get("grade_id") for _, s, cells in notebook_questions().values() if s == stem
                 for c in cells}
        for cell in nbformat.read(SOURCE / f"{stem}.ipynb", as_version=4).cells:
            grade_id = nbgrader(cell).get("grade_id")
            if grade_id and grade_id != "setup":
                assert grade_id in posed, f"{stem}: {grade_id} answers no question"


def test_question_parsers_read_titles_numbers_and_groups(tmp_path):
    text = "**Question 1.2: check it.** ...\n**Questions 3.3 and 3.4: the encoder\nblock.** ..."
    assert BOOK_QUESTION.findall(text) == [("1.2", "", "check it."), ("3.3", "3.4", "the encoder\nblock.")]
    assert NOTEBOOK_QUESTION.findall("## Part\n\n### Question 4.1: a lazy model's accuracy\n\nText") == \
        [("4.1", "a lazy model's accuracy")]
    assert normal("Sizes within a mini-batch.") == normal("sizes within a mini batch")


# --------------------------------------------------------------------------------------------------------------------
# No written answer in the visible cells
# --------------------------------------------------------------------------------------------------------------------

def _real_wall_share() -> float:
    from labcode.classes import CLASSES, REAL_CLASS_FREQUENCIES

    return float(REAL_CLASS_FREQUENCIES[CLASSES.index("wall")] / REAL_CLASS_FREQUENCIES.sum())


def autograded_answers() -> dict[str, dict]:
    """For each autograded test cell whose question has one answer: ``stem``, ``source`` (how the instructor's
    solution or hidden tests write it: each must be found there, so that this table describes the real answers),
    ``values`` (numbers) and ``texts`` (expressions) that must not be visible, and ``data`` when the value is also
    a number of the data set the question starts from (then it may appear outside the question's notebook)."""
    f = _real_wall_share()
    return {
        # the accuracy is the wall's share of the pixels: a number of the data (labcode.classes, notebook 1), so it
        # may appear there, but not where question 4.1 is asked
        "test_wall_accuracy": {"stem": "04_metrics_losses", "values": [f], "data": True,
                               "source": ["REAL_CLASS_FREQUENCIES[WALL] / REAL_CLASS_FREQUENCIES.sum()"],
                               "texts": ["REAL_CLASS_FREQUENCIES[WALL] / REAL_CLASS_FREQUENCIES.sum()"]},
        "test_wall_macro_f1": {"stem": "04_metrics_losses", "values": [2 * f / (1 + f) / 14, 2 * f / (1 + f)],
                               "source": ["2 * f / (1 + f) / NUM_CLASSES"],
                               "texts": ["2 * f / (1 + f)", "2f / (1 + f)", "2 f / (1 + f)", "f1_wall / NUM_CLASSES"]},
        "test_unet_dummy_forward": {"stem": "03_unet", "values": [], "source": ["(2, NUM_CLASSES, 96, 128)"],
                                    "texts": ["(2, NUM_CLASSES, 96, 128)", "(2, 14, 96, 128)", "2, 14, 96, 128"]},
        "test_deeplab_forward": {"stem": "07_going_further", "values": [], "source": ["(1, NUM_CLASSES, 70, 90)"],
                                 "texts": ["(1, NUM_CLASSES, 70, 90)", "(1, 14, 70, 90)", "1, 14, 70, 90"]},
        "test_loss_zoo": {"stem": "07_going_further", "values": [math.log(14)], "source": [],
                          "texts": ["log(NUM_CLASSES)", "log(K)", "log K", "ln 14", "ln(14)", "log 14", "log(14)"]},
    }


#: Autograded questions without a single answer to give away, and why.
OPEN_ANSWERS = {
    "test_describe_sample": "a function; its visible checks run it on a hand-made pair the cell describes",
    "test_augmentation_pipeline": "a list of transforms, many of them valid; checked on its properties",
    "test_unet_conv_block_layers": "library code; its lines are looked for by test_release.py",
    "test_unet_conv_block_forward": "library code",
    "test_unet_encoder": "library code",
    "test_unet_up_block_layers": "library code",
    "test_unet_up_block_forward": "library code",
    "test_unet_decoder": "library code",
    "test_class_weights_inverse": "library code; its test cases follow from the definition the question states",
    "test_weighted_cross_entropy": "a function; its test cases follow from the formula the notebook states",
    "test_training_config": "a configuration whose every field the question names",
    "test_short_training_run": "the student's own run",
    "test_evaluate_areas": "the scores of the student's own evaluation",
    "test_segment_photo": "the student's own photo",
    "test_model_export": "the student's own model; its points come from the hidden test set",
}


def spellings(value: float) -> set[str]:
    """The ways a number is usually written: 3 and 4 decimals, and as a percentage with 1 and 2 decimals."""
    return {f"{value:.3f}", f"{value:.4f}", f"{100 * value:.2f}"} | ({f"{100 * value:.1f}"} if value >= 0.1 else set())


def visible_texts(stem: str) -> dict[str, str]:
    """What a student sees of the notebook ``stem`` and of the site's chapters that pose its questions."""
    number = str(int(stem[:2]))
    texts = {f"notebooks/segmentation/{stem}.ipynb cell {i}": cell.source
             for i, cell in enumerate(nbformat.read(RELEASE / f"{stem}.ipynb", as_version=4).cells)}
    for path in sorted(CHAPTERS.glob("*.md")):
        if re.search(rf"\*\*Questions? {number}\.\d", path.read_text()):
            texts[f"book/chapters/{path.name}"] = path.read_text()
    return texts


def test_the_table_of_answers_covers_every_autograded_question_and_matches_the_solutions():
    tests = {nbgrader(c)["grade_id"]: stem for stem in STEMS
             for c in nbformat.read(SOURCE / f"{stem}.ipynb", as_version=4).cells
             if nbgrader(c).get("grade") and c.cell_type == "code"}
    answers = autograded_answers()
    assert set(tests) == set(answers) | set(OPEN_ANSWERS), \
        f"say what the answer of each autograded question is: {sorted(set(tests) ^ (set(answers) | set(OPEN_ANSWERS)))}"
    for grade_id, answer in answers.items():
        assert tests[grade_id] == answer["stem"], grade_id
        source = "\n".join(c.source for c in nbformat.read(SOURCE / f"{answer['stem']}.ipynb", as_version=4).cells)
        source += (REPO / "tools" / "grading" / "judge.py").read_text()  # the hidden tests
        for text in answer["source"]:
            assert text in source, f"{grade_id}: {text!r} is neither in the instructor notebook nor in the judge"


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def leaks(texts: dict[str, str], answers: dict[str, dict]) -> list[str]:
    """Where the values or expressions of ``answers`` appear in ``texts``."""
    found = []
    for grade_id, answer in answers.items():
        needles = {_squash(t) for t in answer["texts"]} | {s for v in answer["values"] for s in spellings(v)}
        for where, text in texts.items():
            flat = _squash(text)
            found += [f"{where}: {needle!r} (answer of {grade_id})" for needle in sorted(needles)
                      if re.search(rf"(?<![\d.]){re.escape(needle)}(?!\d)", flat)]
    return found


def test_visible_cells_and_chapters_hold_no_autograded_answer():
    answers = autograded_answers()
    problems = []
    for stem in sorted({answer["stem"] for answer in answers.values()}):
        mine = {grade_id: answer for grade_id, answer in answers.items() if answer["stem"] == stem}
        problems += leaks(visible_texts(stem), mine)
    # The student copy of the library, and the repository's pages a student can read (the hub clones it).
    library = {str(p.relative_to(RELEASE)): p.read_text() for p in (RELEASE / "labcode").rglob("*.py")}
    pages = [REPO / "README.md", *sorted((REPO / "book").rglob("*.md"))]
    library |= {str(p.relative_to(REPO)): p.read_text() for p in pages
                if "_build" not in p.parts}
    problems += leaks(library, {grade_id: {**answer, "values": [] if answer.get("data") else answer["values"]}
                                for grade_id, answer in answers.items()})
    assert not problems, "answers visible to students:\n" + "\n".join(problems)


@pytest.mark.parametrize("planted", ["print(f'{0.3367:.4f}')", "accuracy: 33.67 %", "shape (2, 14, 96, 128)",
                                     "the loss is log(K)", "f = 2 f / (1 + f)"])
def test_the_leak_search_finds_planted_answers(planted):
    texts = {"cell": f"Some text\n{planted}\nmore text"}
    assert leaks(texts, autograded_answers())
    assert not leaks({"cell": "Some text, shapes (B, 3, H, W) and 0.33675 or 133.67"}, autograded_answers())
