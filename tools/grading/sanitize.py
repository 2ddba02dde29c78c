"""Submitted notebooks made inert: whatever reads them (Formgrader, the feedback, Jupyter) runs none of their content.

A submission controls more of its autograded notebook than its cells' text: the outputs its kernel sends (any MIME
type, any metadata, any execution count), its markdown (raw HTML, links, attachments), its cell and notebook
metadata. nbconvert's templates, which both Formgrader and the feedback use, put several of these into the page
as they are: rendered markdown, ``text/html``, ``application/javascript``, widget state, image sizes in unquoted
attributes, execution counts. :func:`sanitize_notebook` therefore rebuilds every part a renderer uses from an
allowlist:

- HTML (``text/html`` outputs, raw cells) is cleaned by bleach (:func:`clean_html`): known formatting, table and
  image tags only; no ``<script>``, ``<style>``, ``<iframe>``, ``<object>``, ``<embed>``, ``<form>``, ``<svg>``,
  ``<meta>``, ``<base>``, ``<link>``; no ``on*`` handler; links only to http(s) and mailto, images only from
  http(s) or embedded as ``data:image/...``; styles only a few harmless CSS properties.
- Markdown (cells and ``text/markdown`` outputs) is kept as written when it renders to HTML that cleaning would
  not change (:func:`sanitize_markdown`): maths, code, lists, ``a < b`` read the same. Otherwise its raw HTML is
  escaped (shown as text) and its unsafe links disabled; if that still renders anything active, the cell is shown
  as a code block.
- Outputs keep text, errors, PNG/JPEG/GIF images (checked base64), cleaned HTML and markdown, and LaTeX without
  link or class macros. SVG becomes an ``<img>`` of itself (a browser runs nothing in an SVG image);
  ``application/javascript``, widgets and every other type are dropped.
- Execution counts are integers, cell ids match nbformat's pattern, metadata keeps only what nbgrader and the
  templates need (the notebook's ``language_info`` is the grader's, not the kernel's; no widget state).

:class:`SanitizeSubmission` applies it in ``nbgrader autograde``, after the judge and before ``SaveAutoGrades``.
:func:`markdown2html_inert` and :func:`clean_html` are also nbconvert filters, so that pages rendered from a
notebook that was never sanitised are cleaned as they are made.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
import typing as t
import uuid
from urllib.parse import unquote

import bleach
import jinja2
from bleach import html5lib_shim
from bleach.css_sanitizer import CSSSanitizer
from bleach.sanitizer import BleachSanitizerFilter
from bs4 import BeautifulSoup, Comment
from nbconvert.exporters.exporter import ResourcesDict
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbformat.notebooknode import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor

# --------------------------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------------------------

TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "col", "colgroup", "dd", "del", "details", "dfn",
    "div", "dl", "dt", "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "input",
    "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "samp", "small", "span", "strike", "strong", "sub",
    "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "tt", "u", "ul", "var",
})
#: Removed with everything inside them before cleaning (cleaning alone would leave their text, CSS or code, visible).
DROPPED_WITH_CONTENT = ("script", "style", "template", "iframe", "frame", "frameset", "object", "embed", "applet",
                        "noscript", "noembed", "noframes", "svg", "math", "textarea", "select", "title", "head",
                        "xmp", "audio", "video", "canvas", "form", "button", "base", "link", "meta")
GLOBAL_ATTRIBUTES = frozenset({"class", "title", "style", "lang", "dir", "align"})
ATTRIBUTES = {
    "a": {"href"}, "img": {"src", "alt", "width", "height"}, "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan", "scope"}, "ol": {"start", "type"}, "li": {"value"}, "col": {"span"},
    "colgroup": {"span"}, "details": {"open"}, "input": {"type", "checked", "disabled"},
    **{f"h{level}": {"id"} for level in range(1, 7)},  # markdown headings' anchors
}
CSS_PROPERTIES = frozenset({"text-align", "vertical-align", "color", "background-color", "font-weight", "font-style",
                            "text-decoration", "white-space", "width", "height", "padding", "margin", "border"})
LINK_SCHEMES = frozenset({"http", "https", "mailto"})
IMAGE_DATA = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml)[;,]")
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")


def _normalized_url(value: str) -> str:
    """A URL as a browser resolves its scheme: entities decoded, blanks and control characters gone, lower case."""
    value = html.unescape(value)
    value = re.sub(r"[`\x00-\x20\x7f-\xa0\s]+", "", value)
    return re.sub(r"[^\x00-\x7f]", "", value).lower()


def safe_url(value: str, image: bool = False) -> bool:
    """Whether ``value`` may be a link (``image=False``) or an image source: relative, http(s), mailto for links,
    ``data:image/...`` for images; never ``javascript:``, ``vbscript:``, ``data:text/html``, ``file:``..."""
    url = _normalized_url(value)
    scheme = _SCHEME.match(url)
    if scheme is None:
        return True  # relative: same place as the page
    if image:
        return scheme.group(1) in {"http", "https"} or IMAGE_DATA.match(url) is not None
    return scheme.group(1) in LINK_SCHEMES


def _allowed_attribute(tag: str, name: str, value: str) -> bool:
    if name not in GLOBAL_ATTRIBUTES and name not in ATTRIBUTES.get(tag, ()):
        return False
    if tag == "a" and name == "href":
        return safe_url(value)
    if tag == "img" and name == "src":
        return safe_url(value, image=True)
    if tag == "input" and name == "type":
        return value.strip().lower() == "checkbox"
    return True


_CLEANER = bleach.Cleaner(tags=TAGS, attributes=_allowed_attribute, protocols=LINK_SCHEMES | {"data"}, strip=True,
                          strip_comments=True, css_sanitizer=CSSSanitizer(allowed_css_properties=CSS_PROPERTIES))
#: Parses every tag, as the cleaner's parser would if everything were allowed (to tell whether cleaning changes HTML).
_ANY_TAG = html5lib_shim.BleachHTMLParser(tags=None, strip=False, consume_entities=False,
                                          namespaceHTMLElements=False)


class _KeepEverything(BleachSanitizerFilter):
    """The cleaner's token filter with nothing removed: text and entities are normalised as cleaning does."""

    def sanitize_token(self, token: dict) -> dict | None:
        if token["type"] in ("StartTag", "EmptyTag") and (None, "style") in token.get("data", {}):
            style = token["data"][(None, "style")]  # written as cleaning writes it, if cleaning keeps all of it
            cleaned = _CLEANER.css_sanitizer.sanitize_css(style)
            if re.sub(r"[\s;]+", "", cleaned) == re.sub(r"[\s;]+", "", style):
                token["data"][(None, "style")] = cleaned
        if token["type"] in ("StartTag", "EndTag", "EmptyTag", "Comment"):
            return token
        return super().sanitize_token(token)


def clean_html(markup: t.Any) -> str:
    """``markup`` with only allowlisted tags, attributes, URLs and styles; scripts and styles removed whole."""
    markup = markup.decode() if isinstance(markup, bytes) else str(markup)
    if "<" not in markup:
        return _CLEANER.clean(markup)
    soup = BeautifulSoup(markup, "html.parser")
    for element in soup.find_all(DROPPED_WITH_CONTENT):
        element.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    return _CLEANER.clean(str(soup))


def is_inert(markup: str) -> bool:
    """Whether cleaning would leave ``markup`` as it is (same tags, attributes and text once both are serialised)."""
    tokens = _KeepEverything(source=_CLEANER.walker(_ANY_TAG.parseFragment(markup)), allowed_tags=frozenset(),
                             attributes={}, allowed_protocols=frozenset())
    serialized = _CLEANER.serializer.render(tokens)
    return _CLEANER.clean(markup) == serialized


# --------------------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------------------

#: Shown above a markdown text that could not be made safe otherwise (it then appears as plain text).
AS_TEXT = "*[shown as plain text by the grader: this markdown held active content]*"
REMOVED = "*[removed by the grader: this markdown could not be shown safely]*"
_FENCE_INFO = re.compile(r"^(\s{0,3}(?:`{3,}|~{3,})\s*)mermaid", re.MULTILINE)


def render_markdown(source: str, attachments: dict | None = None) -> str | None:
    """``source`` as nbconvert renders it (Formgrader and the feedback), or ``None`` if it cannot be rendered."""
    try:
        renderer = IPythonRenderer(escape=False, attachments=dict(attachments or {}))
        return MarkdownWithMath(renderer=renderer).render(source)
    except Exception:  # a missing attachment, a renderer bug: not displayable as is
        return None


def _renders_inert(source: str, attachments: dict | None) -> bool:
    rendered = render_markdown(source, attachments)
    return rendered is not None and is_inert(rendered)


def _tokens(source: str) -> t.Iterator[dict]:
    tokens, _state = MarkdownWithMath(renderer=None).parse(source)

    def walk(items: list) -> t.Iterator[dict]:
        for token in items:
            if isinstance(token, dict):
                yield token
                yield from walk(token.get("children") or [])

    yield from walk(tokens)


def _disarmed(source: str) -> str:
    """``source`` with its raw HTML escaped (shown as text), its unsafe link targets replaced, no mermaid block."""
    for token in list(_tokens(source)):
        kind = token.get("type")
        if kind in ("block_html", "inline_html"):
            for line in str(token.get("raw", "")).splitlines():
                if "<" in line:
                    source = source.replace(line, line.replace("<", "&lt;"))
        elif kind in ("link", "image"):
            url = str((token.get("attrs") or {}).get("url", ""))
            if url and not safe_url(url, image=kind == "image"):
                for written in {url, unquote(url), html.unescape(unquote(url))}:  # as the parser read it, or raw
                    source = source.replace(written, "#unsafe-link-removed")
    return _FENCE_INFO.sub(r"\1text", source)


def _as_text(source: str) -> str:
    longest = max((len(run) for run in re.findall(r"`+", source)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{AS_TEXT}\n\n{fence}\n{source}\n{fence}\n"


def sanitize_markdown(source: str, attachments: dict | None = None) -> str:
    """Markdown that renders to nothing active: ``source`` itself when it already does, else a disarmed version.

    Args:
        source: the markdown text (a cell's source or a ``text/markdown`` output).
        attachments: the cell's attachments (``attachment:`` images), already sanitised.

    Returns:
        ``source`` unchanged when nbconvert renders it to HTML that cleaning keeps as it is; otherwise ``source``
        with its raw HTML shown as text and its unsafe links disabled; failing that, ``source`` as a code block.
    """
    if _renders_inert(source, attachments):
        return source
    try:
        disarmed = _disarmed(source)
    except Exception:  # a parser failure: fall back to text
        disarmed = source
    for candidate in (disarmed, _as_text(source)):
        if _renders_inert(candidate, attachments):
            return candidate
    return REMOVED


@jinja2.pass_context
def markdown2html_inert(context: t.Any, source: str) -> str:
    """nbconvert filter: markdown to HTML as ``HTMLExporter`` renders it (cell attachments included), then cleaned."""
    cell = context.get("cell", {}) if context is not None else {}
    attachments = sanitize_attachments(cell.get("attachments") or {}) if isinstance(cell, dict) else {}
    rendered = render_markdown(str(source), attachments)
    return clean_html(rendered) if rendered is not None else html.escape(str(source))


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------

IMAGES = ("image/png", "image/jpeg", "image/gif")
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
#: TeX macros that make links, classes, styles or HTML in MathJax.
_ACTIVE_TEX = re.compile(r"\\(href|url|class|style|cssId|unicode|require|html|data|mmlToken)\b", re.IGNORECASE)


def _text(value: t.Any) -> str:
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    return value if isinstance(value, str) else str(value)


def _base64_image(value: t.Any) -> str | None:
    data = re.sub(r"\s+", "", _text(value))
    if not _BASE64.fullmatch(data):
        return None
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None
    return data


def _svg_as_image(svg: str) -> str:
    encoded = base64.b64encode(svg.encode("utf-8", errors="replace")).decode("ascii")
    return f'<img alt="SVG figure" src="data:image/svg+xml;base64,{encoded}">'


def _dimension(value: t.Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= 100_000 and str(value).strip().isdigit() else None


def _count(value: t.Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def sanitize_data(data: dict) -> dict[str, str]:
    """The safe MIME bundle of an output's ``data`` (see the module's description for what is kept)."""
    out: dict[str, str] = {}
    for mime, value in data.items():
        if mime == "text/plain":
            out[mime] = _text(value)
        elif mime == "text/html":
            out[mime] = clean_html(_text(value))
        elif mime == "text/markdown":
            out[mime] = sanitize_markdown(_text(value))
        elif mime == "text/latex" and not _ACTIVE_TEX.search(_text(value)):
            out[mime] = _text(value)
        elif mime in IMAGES and (image := _base64_image(value)) is not None:
            out[mime] = image
    if "image/svg+xml" in data and "text/html" not in out:
        out["text/html"] = _svg_as_image(_text(data["image/svg+xml"]))
    return out


def sanitize_output(output: t.Any) -> NotebookNode | None:
    """A safe copy of one code cell output, or ``None`` when nothing of it is safe to show."""
    if not isinstance(output, dict):
        return None
    kind = output.get("output_type")
    if kind == "stream":
        name = output.get("name") if output.get("name") in ("stdout", "stderr") else "stdout"
        return NotebookNode(output_type="stream", name=name, text=_text(output.get("text", "")))
    if kind == "error":
        traceback = output.get("traceback")
        lines = [_text(line) for line in traceback] if isinstance(traceback, list) else []
        return NotebookNode(output_type="error", ename=_text(output.get("ename", "Error")),
                            evalue=_text(output.get("evalue", "")), traceback=lines)
    if kind not in ("display_data", "execute_result"):
        return None
    data = output.get("data")
    bundle = sanitize_data(data if isinstance(data, dict) else {})
    if not bundle:
        return None
    metadata: dict[str, dict[str, int]] = {}
    given = output.get("metadata")
    for mime in IMAGES:
        sizes = given.get(mime) if isinstance(given, dict) and mime in bundle else None
        if isinstance(sizes, dict):
            kept = {key: size for key in ("width", "height") if (size := _dimension(sizes.get(key))) is not None}
            if kept:
                metadata[mime] = kept
    safe = NotebookNode(output_type=kind, data=bundle, metadata=metadata)
    if kind == "execute_result":
        safe.execution_count = _count(output.get("execution_count"))
    return safe


# --------------------------------------------------------------------------------------------------------------------
# Cells and notebooks
# --------------------------------------------------------------------------------------------------------------------

_CELL_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}")
LANGUAGE_INFO = {"name": "python", "codemirror_mode": {"name": "ipython", "version": 3}, "file_extension": ".py",
                 "mimetype": "text/x-python", "nbconvert_exporter": "python", "pygments_lexer": "ipython3"}
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
#: Cell metadata kept (besides a valid ``nbgrader``): all are flags or names that renderers escape.
CELL_METADATA = ("editable", "deletable", "collapsed", "scrolled")


def sanitize_attachments(attachments: t.Any) -> dict:
    """The cell attachments that are PNG, JPEG or GIF images with valid base64 data."""
    safe = {}
    for name, bundle in (attachments.items() if isinstance(attachments, dict) else ()):
        if not isinstance(bundle, dict) or not _NAME.fullmatch(str(name)):
            continue
        images = {mime: image for mime in IMAGES if mime in bundle
                  and (image := _base64_image(bundle[mime])) is not None}
        if images:
            safe[str(name)] = images
    return safe


def _nbgrader_metadata(grading: t.Any) -> dict | None:
    """nbgrader's cell metadata with its known keys of the right types only (no ``comment``: the gradebook's)."""
    if not isinstance(grading, dict) or not _NAME.fullmatch(str(grading.get("grade_id", ""))):
        return None
    kept: dict[str, t.Any] = {"grade_id": grading["grade_id"]}
    for key in ("grade", "solution", "locked", "task"):
        if isinstance(grading.get(key), bool):
            kept[key] = grading[key]
    for key in ("points", "schema_version"):
        if isinstance(grading.get(key), (int, float)) and not isinstance(grading.get(key), bool):
            kept[key] = grading[key]
    if isinstance(grading.get("checksum"), str) and re.fullmatch(r"[0-9a-f]{1,128}", grading["checksum"]):
        kept["checksum"] = grading["checksum"]
    if grading.get("cell_type") in ("code", "markdown"):
        kept["cell_type"] = grading["cell_type"]
    return kept


def _cell_metadata(metadata: t.Any) -> dict:
    metadata = metadata if isinstance(metadata, dict) else {}
    kept = {key: metadata[key] for key in CELL_METADATA if isinstance(metadata.get(key), bool)}
    grading = _nbgrader_metadata(metadata.get("nbgrader"))
    if grading is not None:
        kept["nbgrader"] = grading
    tags = metadata.get("tags")
    if isinstance(tags, list):
        kept["tags"] = [tag for tag in tags if isinstance(tag, str) and _NAME.fullmatch(tag)]
    return kept


def sanitize_cell(cell: NotebookNode) -> NotebookNode:
    """Make one cell inert in place (see the module's description) and return it."""
    if not isinstance(cell.get("id"), str) or not _CELL_ID.fullmatch(cell.id):
        cell.id = uuid.uuid4().hex[:8]
    cell.metadata = NotebookNode(_cell_metadata(cell.get("metadata")))
    cell.source = _text(cell.get("source", ""))
    if cell.cell_type == "markdown":
        attachments = sanitize_attachments(cell.get("attachments"))
        if attachments:
            cell.attachments = attachments
        else:
            cell.pop("attachments", None)
        cell.source = sanitize_markdown(cell.source, attachments)
    elif cell.cell_type == "code":
        cell.execution_count = _count(cell.get("execution_count"))
        cell.outputs = [safe for output in cell.get("outputs", []) if (safe := sanitize_output(output)) is not None]
    else:  # raw (or unknown): shown as HTML by nbconvert's HTML templates
        cell.cell_type = "raw"
        cell.source = clean_html(cell.source)
    return cell


def sanitize_notebook(nb: NotebookNode) -> NotebookNode:
    """Make a submitted, executed notebook inert for every reader, in place; return it.

    The notebook's metadata keeps the grader's kernel description and nbgrader's own entry only (no widget state,
    no ``language_info`` from the submission's kernel).
    """
    metadata = nb.get("metadata") if isinstance(nb.get("metadata"), dict) else {}
    kept = NotebookNode(kernelspec=NotebookNode(KERNELSPEC), language_info=NotebookNode(LANGUAGE_INFO))
    if isinstance(metadata.get("nbgrader"), dict):
        kept["nbgrader"] = metadata["nbgrader"]
    nb.metadata = kept
    for cell in nb.cells:
        sanitize_cell(cell)
    return nb


class SanitizeSubmission(NbGraderPreprocessor):
    """nbgrader preprocessor: :func:`sanitize_notebook` (in autograding: after execution and the judge, before
    ``SaveAutoGrades``)."""

    def preprocess(self, nb: NotebookNode, resources: ResourcesDict) -> tuple[NotebookNode, ResourcesDict]:
        return sanitize_notebook(nb), resources
