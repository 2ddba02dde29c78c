"""Outputs are data, never code: sanitised submissions, bounded outputs, and feedback that completes for everyone.

Unit tests on notebooks built with nbformat (hostile markdown and outputs, honest answers, floods, kernel messages
over a real ZeroMQ socket), one browser check of a hostile notebook's feedback page, and one small end-to-end
grading of notebook 01 for a class with a hostile, a flooding and an unreadable submission.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from bs4 import BeautifulSoup
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from tools.grading import outputs
from tools.grading.feedback import SafeFeedback, cap_outputs
from tools.grading.outputs import CUT, PROBE_MIME, OutputBudget, OutputLimits
from tools.grading.sanitize import (
    AS_TEXT,
    clean_html,
    render_markdown,
    sanitize_markdown,
    sanitize_notebook,
)

PNG = base64.b64encode(bytes.fromhex(  # a 1x1 PNG
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082")).decode()
PWN = "document.title='pwned'"

#: Markdown a hostile student writes in an answer (each would run PWN, or load or navigate, if rendered as is).
HOSTILE_MARKDOWN = [
    f"<script>{PWN}</script>",
    f'<img src=x onerror="{PWN}">',
    f"[click me](javascript:{PWN})",
    f"<javascript:{PWN}>",
    f'<svg onload="{PWN}"><script>{PWN}</script><a href="javascript:{PWN}"><text>x</text></a></svg>',
    f'<iframe srcdoc="<script>{PWN}</script>"></iframe>',
    f'<a href="jav&#x61;script:{PWN}">entity</a>',
    f'[x](data:text/html;base64,{base64.b64encode(b"<script>alert(1)</script>").decode()})',
    f"```mermaid\n<img src=x onerror=\"{PWN}\">\n```",
    "<form action='https://evil.example'><input name=q><button>go</button></form>",
    "<meta http-equiv='refresh' content='0;url=https://evil.example'>",
    "<base href='https://evil.example/'>",
    "<link rel=stylesheet href='https://evil.example/x.css'><style>body{display:none}</style>",
    "<object data='https://evil.example/x.swf'></object><embed src='https://evil.example/x.swf'>",
    f"- a list\n\n    <img src=x onerror=\"{PWN}\">\n",
    f"[ref][1]\n\n[1]: javascript:{PWN}",
]

#: Honest answers: maths, code, lists, comparisons, tables, links, simple HTML. They must read the same.
HONEST_MARKDOWN = [
    "The share is $p = n_w / N < 1$ and $$\\frac{a}{b} \\le 1.$$\n\nSo a < b, and 5 > 3 & 2 > 1.",
    "- first\n- second with `x<y` code\n  1. nested\n\n```python\nif a < b:\n    print('<b>not html</b>')\n```",
    "# Answer\n\n## Why\n\n| class | share |\n|:--|--:|\n| wall | 0.34 |\n\n> a quote\n\n~~wrong~~ right",
    "See [the docs](https://pytorch.org), <https://numpy.org>, ![my photo](photo.png), line<br>break, H<sub>2</sub>O",
    "\\begin{align} x &= 1 \\\\ y &< 2 \\end{align}\n\n- [x] done\n- [ ] todo",
]

ACTIVE_TAGS = ("script", "iframe", "frame", "object", "embed", "form", "meta", "base", "link", "style", "svg",
               "foreignobject", "applet", "template")


def active_content(page: str, baseline: str = "") -> list[str]:
    """What in ``page`` could run, load or navigate, beyond what ``baseline`` (the same template, honest) holds."""
    soup, base = BeautifulSoup(page, "html.parser"), BeautifulSoup(baseline, "html.parser")
    found = []
    for tag in ACTIVE_TAGS:
        extra = len(soup.find_all(tag)) - len(base.find_all(tag))
        if extra > 0:
            found.append(f"{extra} <{tag}>")
    for element in soup.find_all(True):
        for name, value in element.attrs.items():
            value = " ".join(value) if isinstance(value, list) else str(value)
            squeezed = "".join(value.split()).lower()
            if name.lower().startswith("on"):
                found.append(f"<{element.name} {name}>")
            if name.lower() in ("href", "src", "action", "formaction", "data", "srcdoc", "xlink:href") and (
                    squeezed.startswith(("javascript:", "vbscript:", "data:text/html")) or name == "srcdoc"):
                found.append(f"<{element.name} {name}={value[:40]}>")
    return found


def hostile_notebook(counts: bool = False) -> nbformat.NotebookNode:
    """Every way a submission can put HTML or script into its notebook: markdown, outputs, metadata, and with
    ``counts``, execution counts (which nbformat refuses to render, and nbgrader to save)."""
    cells = [new_markdown_cell(source) for source in HOSTILE_MARKDOWN]
    svg = (f"<svg xmlns='http://www.w3.org/2000/svg' onload=\"{PWN}\"><script>{PWN}</script>"
           f"<foreignObject><iframe src='javascript:{PWN}'/></foreignObject></svg>")
    outputs_ = [
        new_output("display_data", data={"application/javascript": PWN, "text/plain": "<js>"}),
        new_output("display_data", data={"text/html": f"<script>{PWN}</script><img src=x onerror=\"{PWN}\">"
                                                      "<b>kept</b>"}),
        new_output("display_data", data={"text/html": f"<script>{PWN}</script>"},
                   metadata={"text/html": {"isolated": True}}),
        new_output("display_data", data={"image/svg+xml": svg}),
        new_output("display_data", data={"text/markdown": f"<img src=x onerror=\"{PWN}\"> and **bold**"}),
        new_output("display_data", data={"application/vnd.jupyter.widget-view+json": {"model_id": "1"},
                                         "text/plain": "widget"}),
        new_output("display_data", data={"image/png": f"\" onerror=\"{PWN}"}),
        new_output("display_data", data={"image/png": PNG},
                   metadata={"image/png": {"width": f"1 onerror={PWN}", "height": 7}}),
        new_output("stream", name="stdout", text=f"<script>{PWN}</script> printed as text\n"),
    ]
    code = new_code_cell("hostile()", outputs=outputs_)
    code.metadata["tags"] = [f'x" onmouseover="{PWN}']
    result = new_code_cell("1", outputs=[new_output("execute_result", data={"text/plain": "1"}, execution_count=1)])
    raw = nbformat.v4.new_raw_cell(f"<script>{PWN}</script>raw")
    nb = new_notebook(cells=[*cells, code, result, raw])
    if counts:
        code.execution_count = f"<img src=x onerror=\"{PWN}\">"
        result.outputs[0].execution_count = f"<script>{PWN}</script>"
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    nb.metadata["language_info"] = {"name": f"python\"><script>{PWN}</script>"}
    return nb


def feedback_page(nb: nbformat.NotebookNode, inert_filters: bool = False) -> str:
    """``nb`` rendered with nbgrader's feedback template (as ``nbgrader generate_feedback`` does)."""
    import nbgrader
    from nbconvert import HTMLExporter
    from traitlets.config import Config

    formgrader = Path(nbgrader.__file__).parent / "server_extensions" / "formgrader"
    config = Config()
    config.HTMLExporter.template_name = "feedback"
    config.HTMLExporter.extra_template_basedirs = [str(formgrader / "templates")]
    config.HTMLExporter.extra_template_paths = [str(formgrader / "static" / "node_modules" / "bootstrap" / "dist"
                                                    / "css")]
    if inert_filters:  # what the course configuration adds for every page nbconvert makes (feedback, Formgrader)
        config.HTMLExporter.sanitize_html = True
        config.HTMLExporter.filters = {"markdown2html": "tools.grading.sanitize.markdown2html_inert",
                                       "clean_html": "tools.grading.sanitize.clean_html"}
    resources = {"nbgrader": {"notebook": "01_hostile", "score": 1, "max_score": 2, "late_penalty": 0}}
    page, _ = HTMLExporter(config=config).from_notebook_node(nb, resources=resources)
    return page


@pytest.fixture(scope="module")
def baseline_page() -> str:
    return feedback_page(new_notebook(cells=[new_markdown_cell("honest"), new_code_cell("1")]))


# --------------------------------------------------------------------------------------------------------------------
# Sanitising
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:No lexer found")  # the hostile language_info, unsanitised
def test_the_hostile_notebook_is_live_without_sanitising(baseline_page):
    # The checker sees what the attacks do to an unprotected page (so its silence below means something).
    found = active_content(feedback_page(hostile_notebook()), baseline_page)
    assert any("<script>" in f for f in found) and any("onerror" in f for f in found), found
    assert any("javascript:" in f for f in found) and any("<iframe>" in f for f in found), found


@pytest.mark.parametrize("source", HOSTILE_MARKDOWN)
def test_hostile_markdown_renders_to_nothing_active(source):
    cleaned = sanitize_markdown(source)
    assert active_content(render_markdown(cleaned)) == [], cleaned
    assert "<script" not in render_markdown(cleaned).lower()


@pytest.mark.parametrize("source", HONEST_MARKDOWN)
def test_honest_markdown_reads_the_same(source):
    assert sanitize_markdown(source) == source


def test_the_release_markdown_is_kept_as_written():
    from tests.course import SOURCE

    for path in sorted(SOURCE.glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                assert sanitize_markdown(cell.source, cell.get("attachments")) == cell.source, path.name


def test_escaped_html_still_shows_its_text():
    # Disarmed, not deleted: the grader sees what the student wrote.
    cleaned = sanitize_markdown(f"My answer <img src=x onerror=\"{PWN}\"> is **42**.")
    rendered = BeautifulSoup(render_markdown(cleaned), "html.parser")
    assert "My answer <img src=x" in rendered.get_text() and rendered.find("strong").get_text() == "42"
    assert sanitize_markdown(f"```mermaid\n<b onclick=\"{PWN}\">\n```").startswith("```text")
    assert not sanitize_markdown(f'<a href="jav&#x61;script:{PWN}">x</a>').startswith(AS_TEXT)  # escaped only


def test_sanitised_notebook_keeps_safe_outputs_and_drops_the_rest(baseline_page):
    nb = sanitize_notebook(hostile_notebook(counts=True))
    code = next(c for c in nb.cells if c.cell_type == "code")
    mimes = [sorted(o.get("data", {})) for o in code.outputs]
    assert not any("application/javascript" in m or "application/vnd.jupyter.widget-view+json" in m
                   for m in mimes), mimes
    html_outputs = [o.data["text/html"] for o in code.outputs if "text/html" in o.get("data", {})]
    assert "<b>kept</b>" in html_outputs[0] and all(active_content(h) == [] for h in html_outputs), html_outputs
    svg = next(h for h in html_outputs if "image/svg+xml" in h)
    assert svg.startswith("<img") and "onload" not in svg.split("base64,")[0]  # an SVG image never runs script
    pngs = [o for o in code.outputs if "image/png" in o.get("data", {})]
    assert [p.data["image/png"] for p in pngs] == [PNG] and pngs[0].metadata == {"image/png": {"height": 7}}
    assert code.execution_count is None and code.metadata == {"tags": []}
    assert nb.cells[-2].outputs[0].execution_count is None
    assert all(o.get("metadata", {}).get("text/html") is None for o in code.outputs)  # no "isolated" iframe
    assert "widgets" not in nb.metadata and nb.metadata.language_info.name == "python"
    raw = nb.cells[-1]
    assert "<script" not in raw.source and "raw" in raw.source
    saved = nbformat.writes(nb)
    assert "application/javascript" not in saved and "widget-view" not in saved and "widget-state" not in saved
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert active_content(render_markdown(cell.source)) == []
    assert active_content(feedback_page(nb), baseline_page) == []


def test_the_inert_filters_clean_markdown_and_html_of_an_unsanitised_notebook(baseline_page):
    # Defence in depth for pages made from notebooks never sanitised: the filters clean what the templates render
    # through them (markdown, text/html, raw cells); the rest (image sizes, "isolated" HTML) needs the notebook
    # sanitised, which autograding and SafeFeedback do.
    outputs_ = [new_output("display_data", data={"text/html": f"<script>{PWN}</script><img src=x onerror=\"{PWN}\">"}),
                new_output("display_data", data={"application/javascript": PWN}),
                new_output("display_data", data={"text/markdown": f"<img src=x onerror=\"{PWN}\">"})]
    nb = new_notebook(cells=[*map(new_markdown_cell, HOSTILE_MARKDOWN), new_code_cell("x", outputs=outputs_),
                             nbformat.v4.new_raw_cell(f"<script>{PWN}</script>raw")])
    assert active_content(feedback_page(nb), baseline_page) != []
    page = feedback_page(nb, inert_filters=True)
    assert active_content(page, feedback_page(new_notebook(cells=[new_markdown_cell("honest")]),
                                              inert_filters=True)) == []
    honest = new_notebook(cells=[new_markdown_cell(HONEST_MARKDOWN[0]), new_markdown_cell(HONEST_MARKDOWN[2])])
    text = BeautifulSoup(feedback_page(honest, inert_filters=True), "html.parser").get_text()
    assert "So a < b, and 5 > 3 & 2 > 1." in text and "$p = n_w / N < 1$" in text and "wall" in text


def test_html_cleaning_keeps_formatting_and_drops_scripts_with_their_text():
    cleaned = clean_html("<p style='color: red; position: fixed'>hi <b>there</b></p><style>.x{}</style>"
                         "<script>var secret = 1</script><table class='dataframe'><tr><td>1</td></tr></table>")
    assert cleaned == ('<p style="color: red;">hi <b>there</b></p><table class="dataframe"><tbody><tr><td>1</td>'
                       '</tr></tbody></table>')


MODEL_REPORT = ("<div class='model-report'><p><b>Your model on the hidden test set: 5 / 5 points</b> (macro F1 "
                "0.812)</p><table><tr><th>class</th><th>your F1</th><th>class median</th></tr><tr><td>wall</td>"
                f"<td>0.90</td><td>0.80</td></tr></table><p>Your confusion matrix:</p><img alt='confusion matrix' "
                f"src='data:image/png;base64,{PNG}'></div>")


def test_the_model_report_survives_into_the_feedback(baseline_page):
    cell = new_code_cell("export()", outputs=[new_output("display_data", data={
        "text/html": MODEL_REPORT, "text/plain": "model on the hidden test set: 5 / 5 points"})])
    cell.metadata["nbgrader"] = {"grade_id": "test_model_export", "grade": True, "solution": False, "points": 5}
    nb = sanitize_notebook(new_notebook(cells=[cell]))  # autograding sanitises before the report is injected;
    shown, _ = SafeFeedback().preprocess(nb, {})  # the feedback sanitises again, with the report in
    shown.cells[0].metadata.nbgrader["score"] = 5  # (nbgrader's GetGrades, after SafeFeedback)
    report = BeautifulSoup(shown.cells[0].outputs[0].data["text/html"], "html.parser")
    assert report.find("div")["class"] == ["model-report"] and len(report.find_all("td")) == 3
    assert report.find("img")["src"] == f"data:image/png;base64,{PNG}"
    page = feedback_page(shown)
    assert "Your model on the hidden test set: 5 / 5 points" in page and f"base64,{PNG}" in page
    assert active_content(page, baseline_page) == []


# --------------------------------------------------------------------------------------------------------------------
# Output bounds
# --------------------------------------------------------------------------------------------------------------------

def stream(text: str) -> dict:
    return {"msg_type": "stream", "content": {"name": "stdout", "text": text}}


def test_a_flood_is_cut_to_the_cell_budget_with_a_note():
    budget = OutputBudget(OutputLimits(cell_bytes=1000, notebook_bytes=10_000))
    budget.start_cell()
    kept = [budget.admit(stream("x" * 400)) for _ in range(5)]
    assert [len(m["content"]["text"]) if m else 0 for m in kept] == [400, 400, 200, 0, 0]
    note = budget.note()
    assert note.data == {"text/plain": f"{CUT} 1000 bytes of output over the limit of 1000 bytes per cell]"}
    budget.start_cell()
    assert budget.admit(stream("fine\n"))["content"]["text"] == "fine\n" and budget.note() is None


def test_the_notebook_budget_spans_cells_and_errors_always_keep_their_message():
    budget = OutputBudget(OutputLimits(cell_bytes=600, notebook_bytes=1000))
    for _ in range(2):
        budget.start_cell()
        budget.admit(stream("y" * 600))
    assert "per notebook" in budget.note().data["text/plain"]
    error = {"msg_type": "error", "content": {"ename": "TestFailed", "evalue": "hint " * 10, "traceback": ["t"] * 9}}
    kept = budget.admit(error)["content"]
    assert kept["ename"] == "TestFailed" and kept["evalue"] == "hint " * 10 and kept["traceback"] == [
        "TestFailed: " + "hint " * 10]


def test_rich_output_over_the_budget_keeps_only_its_text():
    budget = OutputBudget(OutputLimits(cell_bytes=100))
    budget.start_cell()
    msg = budget.admit({"msg_type": "display_data", "content": {"data": {"image/png": "A" * 500,
                                                                         "text/plain": "<Figure>"}, "metadata": {}}})
    assert msg["content"]["data"] == {"text/plain": "<Figure>"} and "500 bytes" in budget.note().data["text/plain"]


def test_probe_data_has_its_own_budget_only_in_probe_cells():
    budget = OutputBudget(OutputLimits(cell_bytes=100, probe_cell_bytes=10_000))
    budget.start_cell()
    probe = {"msg_type": "display_data", "content": {"data": {PROBE_MIME: {"x": "z" * 5000}}, "metadata": {}}}
    assert budget.admit(json.loads(json.dumps(probe)), probe_cell=True) is not None
    assert budget.cell_used == 0 and budget.note() is None
    assert budget.admit(json.loads(json.dumps(probe)), probe_cell=True) is None  # 10 000 per probe cell
    budget.start_cell()
    assert budget.admit(json.loads(json.dumps(probe)), probe_cell=False) is None  # not a probe cell: no probe data


def test_the_feedback_caps_what_it_renders():
    nb = new_notebook(cells=[new_code_cell("print()", outputs=[new_output("stream", name="stdout",
                                                                          text="z" * 5_000_000)])])
    capped = cap_outputs(nb)
    assert len(capped.cells[0].outputs[0].text) == 2 * outputs.MIB
    assert capped.cells[0].outputs[-1].data["text/plain"].startswith(CUT)


def _send(socket, session, content: dict, buffers: list[bytes] | None = None) -> None:
    session.send(socket, "stream", content, parent={"msg_id": "cell-1"}, buffers=buffers)


def test_kernel_messages_over_the_limit_are_refused_and_the_channel_goes_on(tmp_path):
    import zmq
    import zmq.asyncio
    from jupyter_client.session import Session

    session = Session(key=b"secret")
    server = zmq.Context()
    pub = server.socket(zmq.PUB)
    address = f"ipc://{tmp_path}/iopub"
    pub.bind(address)
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, 8_000)
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    channel = type("Bounded", (outputs.BoundedChannel,), {"max_bytes": 12_000})(sub, session)
    sub.connect(address)

    async def scenario() -> list:
        got = []
        await asyncio.sleep(0.3)
        _send(pub, session, {"name": "stdout", "text": "before\n"})
        got.append(await channel.get_msg(timeout=5))
        _send(pub, session, {"name": "stdout", "text": "x"}, buffers=[b"b" * 5000] * 3)  # frames fit, not the sum
        got.append(await channel.get_msg(timeout=5))
        _send(pub, session, {"name": "stdout", "text": "x" * 50_000})  # one frame over ZMQ_MAXMSGSIZE
        with pytest.raises(Exception):  # nothing arrives; the channel reconnects meanwhile
            await channel.get_msg(timeout=1)
        await asyncio.sleep(0.3)
        _send(pub, session, {"name": "stdout", "text": "after\n"})
        got.append(await channel.get_msg(timeout=5))
        return got

    try:
        before, dropped, after = asyncio.run(scenario())
    finally:
        channel.close()
        sub.close(linger=0)
        pub.close(linger=0)
        server.term()
        context.term()
    assert before["content"]["text"] == "before\n" and after["content"]["text"] == "after\n"
    assert dropped["content"] == {outputs.DROPPED: dropped["content"][outputs.DROPPED]}
    assert dropped["content"][outputs.DROPPED] > 12_000 and dropped["parent_header"] == {"msg_id": "cell-1"}
    assert channel.refused == 1


# --------------------------------------------------------------------------------------------------------------------
# Feedback never stopped by a notebook's content
# --------------------------------------------------------------------------------------------------------------------

def test_printed_or_written_hidden_test_markers_never_stop_the_feedback():
    answer = new_code_cell("x = 1\nprint('### BEGIN HIDDEN TESTS')\nprint('done')", outputs=[
        new_output("stream", name="stdout", text="### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS\n")])
    answer.metadata["nbgrader"] = {"grade_id": "answer", "solution": True, "grade": False}
    stray = new_code_cell("y = 2\n# BEGIN HIDDEN TESTS (a stray marker)\nassert secret()")
    shown, _ = SafeFeedback().preprocess(new_notebook(cells=[answer, stray]), {})
    assert shown.cells[0].source == answer.source  # the student's own code is shown as written
    assert shown.cells[0].outputs[0].text.startswith("### BEGIN HIDDEN TESTS")
    assert shown.cells[1].source == "y = 2\n"  # an unclosed region hides the rest of its cell


@pytest.mark.browser
def test_the_feedback_of_a_hostile_notebook_runs_no_script_in_chromium(chromium, tmp_path):
    nb = hostile_notebook()
    nb.cells.append(new_markdown_cell(f"<img src=x onerror=\"window.pwned = 1; {PWN}\">"))
    shown, _ = SafeFeedback().preprocess(sanitize_notebook(nb), {})
    page = tmp_path / "feedback.html"
    page.write_text(feedback_page(shown))
    control = tmp_path / "control.html"  # the same check on a live page proves the browser runs such scripts
    control.write_text(f"<html><head><title>control</title></head><body><img src=x onerror=\"{PWN}\"></body></html>")
    chromium.get(control.as_uri())
    time.sleep(0.5)
    assert chromium.title == "pwned"
    chromium.get(page.as_uri())
    time.sleep(1.0)
    assert chromium.title == "01_hostile"
    assert chromium.execute_script("return typeof window.pwned") == "undefined"


# --------------------------------------------------------------------------------------------------------------------
# End to end: a class graded in the sandbox, feedback and export for everyone
# --------------------------------------------------------------------------------------------------------------------

NOTEBOOK = "01_data_exploration"
#: The course configuration's lines that clean every page nbconvert renders (the feedback here, Formgrader too).
INERT_PAGES = """c.HTMLExporter.sanitize_html = True
c.HTMLExporter.filters = {"markdown2html": "tools.grading.sanitize.markdown2html_inert",
                          "clean_html": "tools.grading.sanitize.clean_html"}
"""
FLOOD = ["print('x' * 300_000_000)", "for i in range(1_000_000):\n    print(i)"]


def add_cells(folder: Path, cells: list) -> None:
    path = folder / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[3:3] = cells  # before the answers and their test
    nbformat.write(nb, path)


def hostile_submission(folder: Path) -> None:
    path = folder / f"{NOTEBOOK}.ipynb"
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "answer_tensor_types":
            cell.source = f"My answer.\n\n<script>{PWN}</script><img src=x onerror=\"{PWN}\">"
    nbformat.write(nb, path)
    html = f'<img src=x onerror="{PWN}"><b>bold</b>'
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" onload="{PWN}"></svg>'
    add_cells(folder, [
        new_markdown_cell(f"[click](javascript:{PWN}) <svg onload=\"{PWN}\"></svg>"),
        new_code_cell("from IPython.display import HTML, Javascript, SVG, Markdown, display\n"
                      f"display(Javascript({PWN!r}))\n"
                      f"display(HTML({html!r}))\n"
                      f"display(SVG({svg!r}))\n"
                      f"display(Markdown({'<script>' + PWN + '</script>'!r}))"),
        new_code_cell("print('### BEGIN HIDDEN TESTS')\nmarker = '### BEGIN HIDDEN TESTS'"),
    ])


@pytest.fixture(scope="module")
def graded_class(tmp_path_factory, request):
    request.getfixturevalue("grading_env")  # the sandboxed grading's environment (tests/conftest.py)
    from tests.course import grader, make_course, new_submission
    from tools.grading import cli
    from tools.grading.course import Course

    course = make_course(tmp_path_factory.mktemp("course"), INERT_PAGES)
    for student in ("honest", "hostile", "flood", "broken"):
        new_submission(course, student)
    hostile_submission(course / "submitted" / "hostile" / "segmentation")
    add_cells(course / "submitted" / "flood" / "segmentation", [new_code_cell(code) for code in FLOOD])
    done = grader("autograde", "--course", str(course), "--workers", "2", "--no-progress", "--notebooks",
                  f"{NOTEBOOK}*")
    (course / "autograded" / "broken" / "segmentation" / f"{NOTEBOOK}.ipynb").write_text("{not a notebook")
    report = cli.feedback(Course(course), release=False)
    grades = cli.export(Course(course), course / "grades.csv")
    return course, done, report, grades


def autograded(course: Path, student: str) -> Path:
    return course / "autograded" / student / "segmentation" / f"{NOTEBOOK}.ipynb"


@pytest.mark.slow
def test_everyone_is_graded_whatever_the_others_print(graded_class):
    from tests.course import auto_grades

    course, done, _, _ = graded_class
    assert done.returncode == 0, done.stdout + done.stderr
    for student in ("honest", "hostile", "flood", "broken"):
        got = auto_grades(course, student, {NOTEBOOK})
        assert got and all(g["score"] == g["max"] for g in got.values()), (student, got)


@pytest.mark.slow
def test_a_flood_leaves_a_small_notebook_with_a_note_that_reaches_the_feedback(graded_class):
    course, _, _, _ = graded_class
    path = autograded(course, "flood")
    assert path.stat().st_size < 5 * outputs.MIB
    nb = nbformat.read(path, as_version=4)
    notes = [o.data["text/plain"] for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if o.output_type == "display_data" and o.data.get("text/plain", "").startswith(CUT)]
    assert len(notes) == 2, notes  # one per flooding cell
    assert "per message refused" in notes[0] and "per cell" in notes[1]
    page = (course / "feedback" / "flood" / "segmentation" / f"{NOTEBOOK}.html").read_text()
    assert CUT in page and len(page) < 5 * outputs.MIB


@pytest.mark.slow
def test_nothing_of_a_hostile_submission_is_live_in_its_autograded_notebook_or_feedback(graded_class):
    course, _, _, _ = graded_class
    nb = nbformat.read(autograded(course, "hostile"), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            assert active_content(render_markdown(cell.source)) == [], cell.source
        for output in cell.get("outputs", []):
            assert "application/javascript" not in output.get("data", {})
            assert active_content(str(output.get("data", {}).get("text/html", ""))) == []
    pages = {student: (course / "feedback" / student / "segmentation" / f"{NOTEBOOK}.html").read_text()
             for student in ("honest", "hostile")}
    assert active_content(pages["hostile"], pages["honest"]) == []
    assert "My answer." in pages["hostile"] and "<b>bold</b>" in pages["hostile"]


@pytest.mark.slow
def test_the_class_feedback_and_export_complete_around_an_unreadable_notebook(graded_class):
    course, _, report, grades = graded_class
    assert sorted(report.written) == ["flood", "honest", "hostile"]  # the printed marker stopped nothing
    assert list(report.failed) == [("broken", NOTEBOOK)]
    assert "cannot be read as a notebook" in report.failed[("broken", NOTEBOOK)]
    assert not (course / "feedback" / "broken" / "segmentation" / f"{NOTEBOOK}.html").exists()
    assert any("no feedback for broken / 01_data_exploration" in line for line in report.lines())
    rows = grades.read_text().splitlines()
    assert {"honest", "hostile", "flood", "broken"} <= {row.split(",")[3] for row in rows[1:]}


WRAPPER = """
import json, resource, sys
from tools.grading import worker
peaks = []
for job in sys.argv[1:]:
    worker.main([job])
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps(peaks))
"""


@pytest.mark.slow
def test_the_trusted_process_stays_small_whatever_a_cell_prints(graded_class, tmp_path):
    # One process grades an honest notebook, then a flooding one: the flood must not raise its peak memory much.
    from tests.course import GRADING_PYTHON
    from tools.grading.worker import Job

    course, _, _, _ = graded_class
    jobs = []
    for student in ("honest", "flood"):
        job = Job(course=str(course), student=student, scratch=str(tmp_path / student), python=str(GRADING_PYTHON),
                  datadir=os.environ["LABCODE_DATADIR"], notebooks=f"{NOTEBOOK}*")
        job.save(tmp_path / f"{student}.json")
        jobs.append(str(tmp_path / f"{student}.json"))
    done = subprocess.run([sys.executable, "-c", WRAPPER, *jobs], capture_output=True, text=True, timeout=900,
                          cwd=str(Path(__file__).resolve().parents[1]))
    assert done.returncode == 0, done.stderr[-3000:]
    honest_peak, flood_peak = json.loads(done.stdout.strip().splitlines()[-1])
    flood = json.loads((tmp_path / "flood" / "result.json").read_text())
    assert flood["status"] == "graded" and flood["notebooks"][NOTEBOOK]["auto_score"] == \
        flood["notebooks"][NOTEBOOK]["auto_max"]
    assert flood_peak - honest_peak < 150 * outputs.MIB, (honest_peak / outputs.MIB, flood_peak / outputs.MIB)
