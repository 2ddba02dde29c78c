"""Sphinx extension of the course book: search results whose snippets show formulas as text, not as TeX source.

Sphinx's search page quotes each result with a few lines of the page it fetches, taken as they stand in the HTML,
where MathJax has not run: a formula reads ``\\(\\hat{p}_{i,k}\\)`` there. This extension adds ``search_snippets.js``
to the search page only; it rewrites the formulas of the fetched page into plain text (``p̂_(i,k)``: Greek letters and
symbols as characters, fractions as ``(a)/(b)``) before Sphinx cuts its snippet.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT = "search_snippets.js"


def add_static_folder(app) -> None:
    app.config.html_static_path.append(str(Path(__file__).parent / "static"))


def add_script(app, pagename, templatename, context, doctree) -> None:
    if pagename == "search":
        app.add_js_file(SCRIPT)


def setup(app):
    app.connect("builder-inited", add_static_folder)
    app.connect("html-page-context", add_script)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
