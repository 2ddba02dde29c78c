"""The course site: draw the figures, build the Jupyter Book once, then check the built pages.

The book is built in a temporary copy of its sources as a clean clone has them (``_config.yml``, ``_toc.yml``,
``book/`` with its committed figures, ``notebooks/``; ``course.yml`` as a course with no link yet has it), with
nothing drawn beforehand, after the notebook pages of ``make book`` (``tools/site_notebooks.py``: the student release
run on a small generated data set): ``jupyter-book build book -W -n --keep-going``. The checks: the committed figures
are those the library draws now, every page of the table of contents and every student notebook is built, the
notebook pages show the outputs that need no answer and no placeholder, internal links and anchors resolve, no
placeholder link nor button by default and the right ones when ``course.yml`` sets them, the bibliography lists the
references, no solution, hidden test, answer or solution output reaches any page, and pages render in headless
Chromium without network, formulas typeset.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import unicodedata
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import numpy as np
import pytest
import torch
import yaml

from labcode.reference import INFO_KEYS, INFO_NAME

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = [
    "01_data_exploration", "02_data_pipeline", "03_unet", "04_metrics_losses", "05_training", "06_inference_onnx",
    "07_going_further",
]
CHAPTERS = [
    "chapters/data_exploration", "chapters/data_pipeline", "chapters/model", "chapters/metrics", "chapters/losses",
    "chapters/training", "chapters/inference", "chapters/going_further",
]
FIGURES = ["sample.png", "augmentation.png", "class_histogram.png", "focal_term.png", "unet_diagram.png",
           "prediction.png"]
TABLES = ["areas.md", "unet_shapes.md"]

bs4 = pytest.importorskip("bs4")


# --------------------------------------------------------------------------------------------------------------------
# Building once per session
# --------------------------------------------------------------------------------------------------------------------

#: ``course.yml`` as committed for a course with no links yet: the default build's settings, whatever the
#: repository's own ``course.yml`` says (instructors fill it in).
NO_LINKS = 'hub_url: ""\nstudent_repository: ""\nstudent_branch: main\nsite_url: ""\n'


def _book_ignore(folder: str, names: list[str]) -> list[str]:
    """What a clean clone lacks under book/: build output, caches, and the generated notebook pages."""
    ignored = shutil.ignore_patterns("_build", ".ipynb_checkpoints", "__pycache__")(folder, names)
    if Path(folder).resolve() == (REPO / "book").resolve():
        ignored |= {"segmentation"} & set(names)  # made by tools/site_notebooks.py (make book)
    return sorted(ignored)


def _copy_sources(dest: Path, links: str | None = None, pages: Path | None = None) -> Path:
    """Copy what the book is built from into ``dest``, as a clean clone has it (the committed figures included,
    build output and generated pages left out); ``links`` replaces the content of ``course.yml``; ``pages`` (made
    by ``tools/site_notebooks.py``) become the notebook pages, ``book/segmentation``."""
    for name in ("_config.yml", "_toc.yml", "course.yml"):
        shutil.copy2(REPO / name, dest / name)
    if links is not None:
        (dest / "course.yml").write_text(links)
    shutil.copytree(REPO / "book", dest / "book", symlinks=True, ignore=_book_ignore)
    if pages is not None:
        shutil.copytree(pages, dest / "book" / "segmentation")
    shutil.copytree(REPO / "notebooks", dest / "notebooks",
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "data", "runs"))
    # what the build takes the students' download from (book/_ext/student_download.py): the distribution's builder
    # and templates, the library it imports, the notebooks' packages and the course's ignore patterns
    shutil.copytree(REPO / "tools", dest / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "labcode", dest / "labcode", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements-student.txt", "nbgrader_config.py"):
        shutil.copy2(REPO / name, dest / name)
    return dest / "book"


def build(book: Path) -> Path:
    """``jupyter-book build book -W -n --keep-going``, as ``make book``; fails on any Sphinx warning."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    proc = subprocess.run([str(jupyter_book), "build", str(book), "-W", "-n", "--keep-going"], cwd=book.parent,
                          capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if "WARNING" in line or "ERROR" in line]
    assert proc.returncode == 0, "the book build failed:\n" + "\n".join(warnings or [log[-5000:]])
    html = book / "_build" / "html"
    assert (html / "index.html").is_file()
    return html


@pytest.fixture(scope="session")
def site_pages(built_site: Path) -> tuple[Path, list]:
    """The notebook pages as ``make book`` makes them (the student release run on a small generated data set, see
    ``built_site`` in conftest.py): their folder and the :class:`tools.site_notebooks.PageReport` of each notebook."""
    import pickle

    root = built_site.parents[3]  # <root>/site/book/_build/html
    with open(root / "reports.pickle", "rb") as file:
        return root / "pages" / "segmentation", pickle.load(file)


@pytest.fixture(scope="session")
def site(built_site: Path) -> Path:
    """The HTML site built with the options of ``make book`` from a copy of the committed sources whose
    ``course.yml`` names no link (built once per run: ``built_site`` in conftest.py)."""
    return built_site


def _soup(path: Path):
    return bs4.BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")


def _toc_files(node) -> list[str]:
    """Every ``root`` and ``file`` entry of a table of contents, in order."""
    found = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(node[key])
        for value in node.values():
            if isinstance(value, (list, dict)):
                found += _toc_files(value)
    elif isinstance(node, list):
        for item in node:
            found += _toc_files(item)
    return found


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _letters(text: str) -> str:
    """Lower-case ASCII letters and digits separated by single spaces (accents dropped): text to compare loosely."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).strip()


# --------------------------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------------------------

FIGURES_DIR = REPO / "book" / "figures" / "generated"


@pytest.mark.slow
def test_the_committed_figures_are_those_the_library_draws_now(tmp_path: Path):
    # The quick figures are drawn again and compared; the prediction must come from the reference model of the
    # current recipe, on the current generated data set. When this fails: make reference && make figures.
    import json

    from PIL import Image

    from labcode.reference import CPU_RECIPE
    from labcode.synth import SYNTH_VERSION

    fresh = tmp_path / "figures"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_figures.py"), "--out", str(fresh),
                           "--skip-prediction", "--threads", "2"], cwd=REPO, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    stale = []
    for path in sorted(fresh.iterdir()):
        committed = FIGURES_DIR / path.name
        if path.suffix == ".md":
            same = committed.read_text() == path.read_text()
        else:
            with Image.open(path) as new, Image.open(committed) as old:
                a, b = np.asarray(new.convert("RGB"), dtype=int), np.asarray(old.convert("RGB"), dtype=int)
            same = a.shape == b.shape and (np.abs(a - b).max(axis=2) > 24).mean() < 0.002
        if not same:
            stale.append(path.name)
    assert not stale, f"stale figures (run `make figures`): {stale}"
    manifest = json.loads((FIGURES_DIR / "manifest.json").read_text())
    assert manifest["data"] == f"generated data set, version {SYNTH_VERSION}"
    prediction = manifest["prediction"]
    assert prediction["model"] == "reference", "prediction.png must show the reference model (make reference)"
    assert prediction.get("data", manifest["data"]) == manifest["data"], \
        "prediction.png was drawn from another data set than the other figures: make reference && make figures"
    assert prediction["recipe"] == json.loads(json.dumps(CPU_RECIPE)), \
        "the recipe changed: make reference, then figures"


@pytest.mark.slow
def test_figures_are_drawn_from_the_library():
    from PIL import Image

    out = FIGURES_DIR
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG", name
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert min(pixels.shape) >= 200, f"{name} is only {pixels.shape}"
        assert pixels.std() > 5, f"{name} looks blank"

    # The UNet table comes from a real forward pass of a 256x256 image through the lab's UNet (4 blocks, 64
    # channels): compare with the sizes the architecture implies.
    rows = [line for line in (out / "unet_shapes.md").read_text().splitlines() if line.startswith("| ")]
    cells = {r.split("|")[1].strip(): [c.strip() for c in r.split("|")[2:-1]] for r in rows[2:]}
    for i in range(4):
        module, output, skip, _ = cells[f"encoder conv block {i + 1}"]
        c, side = 64 * 2**i, 256 // 2**i
        assert module == f"`encoder.blocks[{i}]`"
        assert output == f"{c} × {side // 2} × {side // 2}" and skip == f"{c} × {side} × {side}"
    assert cells["encoder bottleneck"][1] == "1024 × 16 × 16"
    for j in range(4):
        c, side = 512 // 2**j, 32 * 2**j
        assert cells[f"decoder up block {j + 1}"][1] == f"{c} × {side} × {side}"
    assert cells["decoder classifier (1x1 conv)"][1] == "14 × 256 × 256"
    assert cells["decoder classifier (1x1 conv)"][3] == f"{64 * 14 + 14:,}"  # 1x1 conv: weights and biases
    from labcode.models import build_model, count_parameters

    assert cells["**total**"][3] == f"**{count_parameters(build_model('unet', 14)):,}**"

    # The area table: the real counts of the data set paper and the images actually on disk.
    from labcode.classes import AREAS
    from labcode.data import StanfordDataset, default_datadir
    from labcode.synth import REAL_AREA_IMAGES

    lines = (out / "areas.md").read_text().splitlines()[2:]
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]] for line in lines}
    assert sorted(table) == sorted([*AREAS, "**total**"])
    for area in AREAS:
        here = len(StanfordDataset(default_datadir(), areas=[area]))
        assert table[area][1] == f"{here:,}", area
        if area in REAL_AREA_IMAGES:
            assert table[area][0] == f"{REAL_AREA_IMAGES[area]:,}", area
    # The handout counts area 5 as one area: no invented split of its images between 5a and 5b.
    assert table["5a"][0] == f"{REAL_AREA_IMAGES['5']:,} for 5a and 5b together" and table["5b"][0] == "counted with 5a"
    assert table["**total**"][0] == f"**{sum(REAL_AREA_IMAGES.values()):,}**" == "**70,496**"


def _load_make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", REPO / "tools" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _AlwaysWall(torch.nn.Module):
    """A 1x1 convolution whose logits favour "wall" everywhere: a model with a known prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Conv2d(3, 14, kernel_size=1)
        torch.nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias.copy_(torch.nn.functional.one_hot(torch.tensor(12), 14).float())

    def forward(self, x):
        return self.head(x)


@pytest.mark.slow
def test_make_figures_with_a_given_model_and_data_set(synth_root: Path, tmp_path: Path, capsys, monkeypatch):
    from labcode.classes import AREAS
    from labcode.export import export_onnx

    make_figures = _load_make_figures()
    onnx_path = export_onnx(_AlwaysWall(), tmp_path / "wall.onnx")
    images = np.zeros((2, 40, 56, 3), dtype=np.uint8)
    preds = make_figures.predict_with_file(onnx_path, images, img_size=32)
    assert preds.shape == (2, 40, 56) and (preds == 12).all()

    out = tmp_path / "figures"
    assert make_figures.main(["--datadir", str(synth_root), "--out", str(out), "--model", str(onnx_path),
                              "--threads", "1"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES + TABLES + ["manifest.json"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["prediction"]["model"] == "wall.onnx" and manifest["data"] == str(synth_root)
    assert "figures written to" in capsys.readouterr().out
    lines = (out / "areas.md").read_text().splitlines()[2:]
    table = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in lines}
    assert all(table[area] == "4" for area in AREAS)  # the fixture has 4 images per area
    assert table["**total**"] == f"**{4 * len(AREAS)}**"

    # The class histogram counts every image by default, and its title says how many it counted.
    titles = []
    monkeypatch.setattr(make_figures, "save", lambda fig, path: titles.append(fig.axes[0].get_title()) or path)
    make_figures.histogram_figure(synth_root, out, max_images=None)
    make_figures.histogram_figure(synth_root, out, max_images=10)
    total = 4 * len(AREAS)
    assert titles == [f"class frequencies over all {total} images of the data set",
                      f"class frequencies over 10 of the {total} images of the data set"]


@pytest.mark.slow
def test_make_figures_keeps_the_committed_prediction_without_a_reference_model(synth_root: Path, tmp_path: Path,
                                                                                capsys, monkeypatch):
    # A fresh clone has no reference model: the figures are redrawn, but the committed prediction figure and its
    # entry of the manifest stay byte for byte as they are (worked on a copy), and the output says why.
    import labcode.synth

    make_figures = _load_make_figures()
    monkeypatch.setenv("LABCODE_REFERENCE_MODEL", str(tmp_path / "no-reference.onnx"))
    monkeypatch.delenv("LABCODE_DATADIR", raising=False)
    monkeypatch.setattr(labcode.synth, "ensure_default_dataset", lambda progress=True: synth_root)
    assert make_figures.find_reference_model() is None
    out = tmp_path / "figures"
    out.mkdir()
    for name in ("prediction.png", "manifest.json"):
        shutil.copy2(FIGURES_DIR / name, out / name)
    committed = {name: (FIGURES_DIR / name).read_bytes() for name in ("prediction.png", "manifest.json")}

    assert make_figures.main(["--datadir", str(synth_root), "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert (out / "prediction.png").read_bytes() == committed["prediction.png"]
    assert (out / "manifest.json").read_bytes() == committed["manifest.json"]
    assert "prediction       kept: no reference model" in printed and "make reference" in printed, printed
    assert (out / "sample.png").is_file() and (out / "focal_term.png").is_file()  # the other figures are redrawn

    # Drawn from another data set, the other figures' manifest entry changes; the kept prediction keeps its own.
    monkeypatch.setattr(labcode.synth, "ensure_default_dataset", lambda progress=True: tmp_path / "elsewhere")
    assert make_figures.main(["--datadir", str(synth_root), "--out", str(out), "--threads", "1"]) == 0
    old, new = json.loads(committed["manifest.json"]), json.loads((out / "manifest.json").read_text())
    assert new["data"] == str(synth_root) and new["prediction"] == {**old["prediction"], "data": old["data"]}
    assert (out / "prediction.png").read_bytes() == committed["prediction.png"]

    # With no figure to keep, none is drawn: nothing is trained for the occasion.
    empty = tmp_path / "empty"
    assert make_figures.main(["--datadir", str(synth_root), "--out", str(empty), "--threads", "1"]) == 0
    assert "prediction       not drawn" in capsys.readouterr().out
    assert not (empty / "prediction.png").exists() and "prediction" not in json.loads((empty / "manifest.json")
                                                                                       .read_text())
    with pytest.raises(SystemExit):
        make_figures.main(["--out", str(empty), "--model", str(tmp_path / "missing.onnx")])


# --------------------------------------------------------------------------------------------------------------------
# Pages and links
# --------------------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_every_toc_page_and_notebook_is_built(site: Path):
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    files = _toc_files(toc)
    expected = ["intro", "setup", "notation", "instructors", *CHAPTERS, "serving", "bibliography"]
    expected += [f"segmentation/{name}" for name in NOTEBOOKS]
    assert sorted(files) == sorted(expected), "the table of contents changed: update the test and the site"
    for name in files:
        page = site / f"{name}.html"
        assert page.is_file(), f"{name} is in _toc.yml but {page.name} was not built"
        assert _soup(page).select_one("article h1") is not None, f"{name}.html has no title"
    # No page of the stripped library copied beside the notebooks.
    assert not (site / "segmentation" / "labcode").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_shows_the_student_notebook(site: Path, site_pages, name: str):
    # The page is the student release, cell for cell (never a solution): only the students' note under the title
    # and the answers' placeholders give way to notes for the reader.
    from tools.release import STUDENT_NOTE
    from tools.site_notebooks import ANSWER_NOTE, CODE_NOTE, PLACEHOLDER_LINES, READER_NOTE

    notebook = nbformat.read(REPO / "notebooks" / "segmentation" / f"{name}.ipynb", as_version=4)
    shown = nbformat.read(site_pages[0] / f"{name}.ipynb", as_version=4)
    assert len(shown.cells) == len(notebook.cells), name
    for released, cell in zip(notebook.cells, shown.cells):
        assert cell.cell_type == released.cell_type and cell.metadata.get("nbgrader") == released.metadata.get(
            "nbgrader"), name
        if not released.metadata.get("nbgrader", {}).get("solution"):
            assert cell.source == released.source.replace(STUDENT_NOTE, READER_NOTE), name
        elif cell.cell_type == "markdown":
            assert cell.source == ANSWER_NOTE, name
        else:
            kept = [line for line in released.source.strip("\n").splitlines() if line.strip() not in PLACEHOLDER_LINES]
            assert [line for line in cell.source.splitlines() if line.strip() != CODE_NOTE] == kept, name
            assert CODE_NOTE in cell.source, name

    page = site / "segmentation" / f"{name}.html"
    text = _squash(_soup(page).get_text())
    code_cells = [c for c in shown.cells if c.cell_type == "code" and c.source.strip()
                  and not {"remove-cell", "remove-input"} & set(c.metadata.get("tags", []))]
    assert code_cells, f"{name} has no code cell"
    for cell in code_cells:
        first = next(line for line in cell.source.splitlines() if line.strip())
        assert _squash(first) in text, f"{name}.html lacks the code cell starting with {first!r}"

    # The download button serves the page as shown; with no link set in course.yml, no launch button.
    downloaded = page.parent / "../_sources/segmentation" / f"{name}.ipynb"
    assert [c.source for c in nbformat.read(downloaded, as_version=4).cells] == [c.source for c in shown.cells]
    assert not _soup(page).select(".dropdown-launch-buttons"), f"{name}.html has a launch button with no hub set"


#: Notebooks whose figures need no answer: the student release draws them (data, class histogram, noisy labels in
#: notebook 1; the focal term in notebook 4).
NOTEBOOKS_WITH_FIGURES = {"01_data_exploration", "04_metrics_losses"}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_pages_show_the_outputs_that_need_no_answer(site: Path, site_pages, name: str):
    pages, reports = site_pages
    report = next(r for r in reports if r.stem == name)
    shown = nbformat.read(pages / f"{name}.ipynb", as_version=4)
    soup = _soup(site / "segmentation" / f"{name}.html")
    outputs = soup.select("div.cell_output")
    # at least the setup cell's report (where the library and the data come from), rendered as the page's outputs
    assert report.kept and len(outputs) >= len(report.kept), f"{name}: {len(outputs)} outputs on the page"
    assert "labcode from" in _squash(outputs[0].get_text(" ")), name
    images = soup.select("div.cell_output img")
    drawn = [o for c in shown.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) == len(drawn), f"{name}: {len(images)} figures shown of {len(drawn)} drawn"
    if name in NOTEBOOKS_WITH_FIGURES:
        assert images, f"{name}: the figures that need no answer are missing"
    for img in images:
        assert (site / "segmentation" / img["src"]).resolve().is_file(), img["src"]
    # no output of a cell that failed, nor of an answer or a test cell
    for cell in shown.cells:
        info = cell.metadata.get("nbgrader", {})
        if cell.cell_type == "code" and (info.get("solution") or info.get("grade")):
            assert cell.outputs == [], f"{name}: {info['grade_id']} shows an output"
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error" and output.get("name") != "stderr", f"{name}: {output}"
    assert not soup.select("div.cell_output .traceback, div.output.error, div.output.stderr"), name


@pytest.mark.slow
def test_notebook_pages_show_no_placeholder_nor_students_note(site: Path):
    from tools.release import STUDENT_NOTE
    from tools.site_notebooks import ANSWER_NOTE, READER_NOTE

    for name in NOTEBOOKS:
        soup = _soup(site / "segmentation" / f"{name}.html")
        article = soup.select_one("article")
        code = "\n".join(pre.get_text() for pre in article.select("div.cell_input pre"))
        assert "YOUR CODE HERE" not in code and "raise NotImplementedError()" not in code, name
        paragraphs = [_squash(p.get_text(" ")) for p in article.select("p")]
        assert "YOUR ANSWER HERE" not in paragraphs, f"{name}: an answer placeholder is shown"
        text = _squash(article.get_text(" "))
        assert _squash(STUDENT_NOTE.strip("*").split(":")[0]) not in text, f"{name}: the students' note is shown"
        assert _letters(READER_NOTE)[:60] in _letters(text), f"{name}: no note for the reader under the title"
        released = nbformat.read(REPO / "notebooks" / "segmentation" / f"{name}.ipynb", as_version=4)
        if any(c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("solution") for c in released.cells):
            assert _letters(ANSWER_NOTE) in _letters(text), f"{name}: written answers show no note"


@pytest.mark.slow
def test_the_default_build_has_no_placeholder_link_nor_button(site: Path):
    # built with the course.yml of a course that sets no link yet (book_sources), not the repository's own
    used = yaml.safe_load((site.parents[2] / "course.yml").read_text())
    assert used == {"hub_url": "", "student_repository": "", "student_branch": "main", "site_url": ""}
    assert set(used) == set(yaml.safe_load((REPO / "course.yml").read_text())), "course.yml has other settings now"
    pages = sorted(site.rglob("*.html"))
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "example.edu" not in text and "course-team/" not in text, f"{page.relative_to(site)}: placeholder"
        soup = _soup(page)
        links = [a["href"] for a in soup.find_all("a", href=True)]
        for placeholder in ("example", "your-school", "mybinder.org", "executablebooks/jupyter-book", "colab"):
            assert not [href for href in links if placeholder in href], f"{page.relative_to(site)}: {placeholder}"
        assert not soup.select(".dropdown-launch-buttons, a[title='Source repository']"), page.name


@pytest.mark.slow
def test_links_set_in_course_yml_give_launch_and_repository_buttons(tmp_path: Path, site_pages):
    hub, repository = "https://hub.school.test", "https://git.school.test/course/segmentation-lab"
    book = _copy_sources(tmp_path, links=f"hub_url: {hub}\nstudent_repository: {repository}\nstudent_branch: term1\n",
                         pages=site_pages[0])
    html = build(book)
    page = _soup(html / "segmentation" / "03_unet.html")
    launch = [unquote(a["href"]) for a in page.find_all("a", href=True) if a["href"].startswith(hub)]
    assert launch and "repo=" + repository in launch[0] and "branch=term1" in launch[0], launch
    assert "urlpath=lab/tree/segmentation-lab/segmentation/03_unet.ipynb" in launch[0], launch[0]
    repo_buttons = [a["href"] for a in page.find_all("a", href=True) if a["href"].startswith(repository)]
    assert repo_buttons, "no repository button"
    setup = _squash(_soup(html / "setup.html").get_text())
    assert f"git clone {repository} segmentation-lab" in setup
    # with a repository to clone, no archive of the distribution is offered nor built
    assert not _download_links(html / "setup.html") and not list(html.rglob(DOWNLOAD))


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_says_what_its_notebook_needs(site: Path, chapter: str):
    soup = _soup(site / f"{chapter}.html")
    admonitions = [a for a in soup.select("div.admonition") if "What this notebook needs" in a.get_text()]
    assert admonitions, f"{chapter} lacks its 'What this notebook needs' box"
    box = _squash(admonitions[0].get_text())
    assert "Hardware:" in box and "Time:" in box
    links = [a["href"] for a in admonitions[0].find_all("a", href=True)]
    assert any(re.search(r"segmentation/0\d_\w+\.html$", href) for href in links), links


def _local_target(page: Path, url: str) -> tuple[Path, str] | None:
    """The file and fragment a local URL of ``page`` points to, or None for external and special URLs."""
    parts = urlsplit(url)
    if parts.scheme or parts.netloc or url.startswith(("mailto:", "javascript:", "data:")):
        return None
    target = page.resolve() if not parts.path else (page.parent / unquote(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


@pytest.mark.slow
def test_internal_links_and_anchors_resolve(site: Path):
    ids: dict[Path, set[str]] = {}

    def anchors(path: Path) -> set[str]:
        if path not in ids:
            soup = _soup(path)
            ids[path] = {tag["id"] for tag in soup.find_all(id=True)}
            ids[path] |= {tag["name"] for tag in soup.find_all(attrs={"name": True})}
        return ids[path]

    broken, checked = [], 0
    pages = sorted(p for p in site.rglob("*.html") if "_static" not in p.relative_to(site).parts)  # not templates
    for page in pages:
        soup = _soup(page)
        urls = [(tag.name, tag.get("href") or tag.get("src")) for tag in soup.find_all(["a", "img", "link", "script"])]
        for tag, url in urls:
            if not url or url == "#":
                continue
            local = _local_target(page, url)
            if local is None:
                continue
            target, fragment = local
            checked += 1
            if not target.is_relative_to(site.resolve()):
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} -> outside the site")
            elif not target.is_file():
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} -> missing file")
            elif fragment and target.suffix == ".html" and fragment not in anchors(target):
                broken.append(f"{page.relative_to(site)}: <{tag}> {url} -> no anchor #{fragment}")
    assert checked > 100, f"only {checked} local links found in {len(pages)} pages"
    assert not broken, "broken internal links:\n" + "\n".join(broken[:40])


@pytest.mark.slow
def test_bibliography_lists_the_references(site: Path):
    bib = (REPO / "book" / "references.bib").read_text()
    titles = re.findall(r"^\s*title\s*=\s*\{(.*?)\},?\s*$", bib, re.M | re.S)
    keys = re.findall(r"^@\w+\{(\w+),", bib, re.M)
    assert len(titles) == len(keys) >= 10
    page = _letters(_soup(site / "bibliography.html").get_text())
    for key, title in zip(keys, titles):
        plain = _letters(re.sub(r"\\['\"`^~=.]|[{}]", "", title))  # LaTeX accents and braces out
        assert plain[:50] in page, f"{key} ({title!r}) is missing from the bibliography page"
    for key in ("Long2015", "Ronneberger2015", "Milletari2016", "Badrinarayanan2017", "Chen2018", "Lin2017",
                "Cui2019", "Yeung2022", "Abhishek2021", "Armeni2017"):
        assert key in keys


# --------------------------------------------------------------------------------------------------------------------
# No solution in the site
# --------------------------------------------------------------------------------------------------------------------

def _site_texts(site: Path) -> dict[str, str]:
    """Every text a reader can get from the site: rendered pages, and the sources offered for download."""
    from tools.leaks import readable_text

    texts = {str(path.relative_to(site)): readable_text(path) for path in sorted(site.rglob("*"))
             if path.is_file() and path.suffix in (".html", ".ipynb", ".md", ".txt", ".py")}
    return {rel: text for rel, text in texts.items() if text is not None}


@pytest.mark.slow
def test_no_solution_line_reaches_the_site(site: Path):
    from tools.leaks import find_leaks

    assert len(_site_texts(site)) > 20 and any(rel.endswith(".ipynb") for rel in _site_texts(site))
    leaks = find_leaks(site)
    assert not leaks, "solution or hidden-test lines found in the site:\n" + "\n".join(leaks[:30])


@pytest.mark.slow
def test_no_solution_output_reaches_the_site(site: Path, site_pages, solved_notebooks, synth_root: Path):
    # What the solutions print and draw (on the data set of the pages) but a run of the student release does not
    # show must be nowhere in the site: not in the pages' text, the notebooks offered for download, nor its images.
    # The solutions run as students run them (those that study no model once for this test and the solutions' test,
    # ``solved_notebooks``), all but notebook 5: its solution trains on the CPU for minutes; its student run stops at
    # the first answer, so its page shows the setup's output only (checked below).
    from tools.leaks import execute_solutions, find_leaks, secret_outputs

    pages, reports = site_pages
    solved = {stem: executed for stem, (executed, _) in solved_notebooks.items()}
    solved |= execute_solutions(synth_root, stems=[stem for stem in NOTEBOOKS if stem not in solved
                                                   and stem != "05_training"], timeout=30)
    secrets = secret_outputs(solved, [report.executed for report in reports])
    assert sum(map(len, secrets.values())) >= 10, f"the solutions should show things the release cannot: {secrets}"
    assert any(line.startswith("image sha256:") for lines in secrets.values() for line in lines), \
        "the solutions draw figures the release cannot (notebook 2's augmentations)"
    leaks = find_leaks(site, secrets)
    assert not leaks, "solution outputs found in the site:\n" + "\n".join(leaks[:30])
    training = next(report for report in reports if report.stem == "05_training")
    assert training.kept == [min(training.kept + training.dropped)], "notebook 5 shows more than its setup"


@pytest.mark.slow
def test_no_autograded_answer_reaches_the_site(site: Path):
    from tests.test_answers import autograded_answers, leaks, notebook_questions

    texts = _site_texts(site)
    questions = notebook_questions()
    chapters_of = {stem: {Path(_chapter_of(number)).stem for number, (_, s, _) in questions.items() if s == stem}
                   for stem in {s for _, s, _ in questions.values()}}
    problems = []
    for grade_id, answer in autograded_answers().items():
        pages = {rel: text for rel, text in texts.items()
                 if not answer.get("data") or answer["stem"] in rel or any(f"chapters/{c}." in rel
                                                                             for c in chapters_of[answer["stem"]])}
        problems += leaks(pages, {grade_id: answer})
    assert not problems, "answers on the site:\n" + "\n".join(problems)


def _chapter_of(number: str) -> str:
    from tests.test_answers import book_questions

    return book_questions()[number][1]


# --------------------------------------------------------------------------------------------------------------------
# Rendering in a browser
# --------------------------------------------------------------------------------------------------------------------

class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the signature of the base class
        pass


@pytest.fixture
def served_site(site: Path):
    """The built site on an HTTP server on localhost (any free port), stopped after the test."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _images_state(driver) -> list[list]:
    return driver.execute_script(
        "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth]);")


def _open(driver, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")
    wait.until(lambda d: all(complete for _, complete, _ in _images_state(d)))


def _screenshot(driver, path: Path) -> np.ndarray:
    from PIL import Image

    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
@pytest.mark.browser
def test_site_renders_in_chromium(site: Path, served_site: str, chromium, tmp_path: Path):
    # Home: index.html redirects to the introduction, whose figures must load.
    _open(chromium, served_site + "index.html")
    assert chromium.current_url.endswith("intro.html"), chromium.current_url
    title = _soup(site / "intro.html").select_one("article h1").get_text(" ", strip=True).rstrip("#").strip()
    assert "Semantic segmentation" in chromium.title and title.startswith("Semantic segmentation")
    assert chromium.find_element("css selector", "article h1").text.startswith(title)
    images = _images_state(chromium)
    loaded = {Path(src).name for src, _, width in images if width > 0}
    assert "sample.png" in loaded, f"the figure of the home page did not load: {images}"
    assert not [img for img in images if img[2] == 0], f"broken images on the home page: {images}"
    sidebar_width = chromium.execute_script(
        "const s = document.querySelector('.bd-sidebar-primary'); return s ? s.getBoundingClientRect().width : 0;")
    assert sidebar_width > 150, "the navigation sidebar is not laid out (theme CSS not applied?)"
    home = _screenshot(chromium, tmp_path / "home.png")
    assert home.shape[0] >= 800 and home.std() > 10, "the home page screenshot looks blank"

    # A notebook page: its title, its code cells and the launch menu.
    page = site / "segmentation" / "03_unet.html"
    _open(chromium, served_site + "segmentation/03_unet.html")
    title = _soup(page).select_one("article h1").get_text(" ", strip=True).rstrip("#").strip()
    assert chromium.find_element("css selector", "article h1").text.startswith(title[:20])
    cells = chromium.execute_script(
        "return Array.from(document.querySelectorAll('div.cell_input')).map(c => c.getBoundingClientRect().height);")
    assert cells and all(height > 0 for height in cells), f"code cells not rendered: {cells}"
    assert not [img for img in _images_state(chromium) if img[2] == 0], "broken images on the notebook page"
    notebook = _screenshot(chromium, tmp_path / "notebook.png")
    assert notebook.std() > 10, "the notebook page screenshot looks blank"

    # Every generated figure shows up, loaded, on the chapter pages.
    shown = set()
    for chapter in CHAPTERS:
        _open(chromium, served_site + f"{chapter}.html")
        images = _images_state(chromium)
        assert not [img for img in images if img[2] == 0], f"broken images on {chapter}: {images}"
        shown |= {Path(src).name for src, _, _ in images}
    assert set(FIGURES) - {"sample.png"} <= shown, f"figures missing from the chapters: {sorted(shown)}"


@pytest.mark.slow
@pytest.mark.browser
def test_notebook_code_fits_a_1280_pixel_window_and_figures_load(site: Path, served_site: str, chromium):
    # Notebook code lines have at most 88 characters (tests/test_site_notebooks.py): at 1280 pixels, beside the
    # navigation and the page's contents, such a line fits its cell (book/_static/notebook_cells.css), so no cell
    # whose lines are that short scrolls; the figures of the outputs load.
    chromium.set_window_size(1280, 900)
    for name in NOTEBOOKS:
        _open(chromium, served_site + f"segmentation/{name}.html")
        fits, scrolled, images = chromium.execute_script("""
            const pres = Array.from(document.querySelectorAll('div.cell_input pre'));
            const probe = document.createElement('span');
            probe.textContent = 'x'.repeat(100);
            pres[0].appendChild(probe);
            const width = probe.getBoundingClientRect().width / 100;
            probe.remove();
            const style = getComputedStyle(pres[0]);
            const room = pres[0].clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
            const longest = p => Math.max(...p.innerText.split('\\n').map(line => line.length));
            const scrolled = pres.filter(p => longest(p) <= 88 && p.scrollWidth > p.clientWidth + 1).length;
            const images = Array.from(document.querySelectorAll('div.cell_output img')).map(i => i.naturalWidth);
            return [room / width, scrolled, images];""")
        assert fits >= 88, f"{name}: a code cell holds {fits:.1f} characters a line at 1280 pixels"
        assert scrolled == 0, f"{name}: {scrolled} code cells of short lines scroll"
        assert all(width > 0 for width in images), f"{name}: a figure did not load ({images})"


@pytest.mark.slow
@pytest.mark.browser
def test_formulas_are_typeset_without_network(site: Path, served_site: str, chromium):
    # The browser resolves no host but this machine (the shared fixture): MathJax must come with the site.
    from selenium.webdriver.support.ui import WebDriverWait

    for chapter in ("chapters/metrics", "chapters/losses"):
        source = (site / f"{chapter}.html").read_text()
        assert "\\(" in source or "\\[" in source or "$$" in source, f"{chapter} has no formula to typeset"
        assert "cdn.jsdelivr" not in source and "_static/mathjax/tex-chtml.js" in source
        _open(chromium, served_site + f"{chapter}.html")
        WebDriverWait(chromium, 60).until(
            lambda d: d.execute_script("return document.querySelectorAll('mjx-container').length") > 0)
        typeset = chromium.execute_script("return document.querySelectorAll('mjx-container').length")
        raw = chromium.execute_script("return document.querySelector('article').innerText")
        assert typeset >= 2 and "\\(" not in raw and "\\frac" not in raw, f"{chapter}: raw TeX left"


# --------------------------------------------------------------------------------------------------------------------
# Content the questions rely on, credit, navigation
# --------------------------------------------------------------------------------------------------------------------

def _frequency_table(markdown: str) -> dict[str, float]:
    """Class -> share (%) from a markdown table whose rows pair class names with numbers, possibly several pairs per
    row (``| 0 | `<UNK>` | 1.26 | | 7 | column | 3.05 |``)."""
    from labcode.classes import CLASSES

    shares = {}
    for line in markdown.splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        for i, cell in enumerate(cells[:-1]):
            if cell in CLASSES and re.fullmatch(r"\d+\.\d+", cells[i + 1]):
                assert cell not in shares, f"{cell} appears twice in the table"
                shares[cell] = float(cells[i + 1])
    return shares


def test_the_class_frequencies_are_given_as_numbers_where_the_questions_send_students():
    # Questions 4.1 and 4.2 are worked with pen and paper from these shares: the chapter they point to and notebook 1
    # list them, and the numbers are those of the library, class by class.
    from labcode.classes import CLASSES, REAL_CLASS_FREQUENCIES

    expected = {name: round(100 * float(share), 2) for name, share in zip(CLASSES, REAL_CLASS_FREQUENCIES)}
    chapter = (REPO / "book" / "chapters" / "data_exploration.md").read_text()
    assert "(tab-class-frequencies)=" in chapter
    assert _frequency_table(chapter) == expected
    notebook = nbformat.read(REPO / "solutions" / "segmentation" / "01_data_exploration.ipynb", as_version=4)
    tables = [_frequency_table(c.source) for c in notebook.cells if c.cell_type == "markdown"]
    assert expected in tables, "notebook 1 does not list the class shares"
    assert "tab-class-frequencies>" in (REPO / "book" / "chapters" / "metrics.md").read_text(), \
        "question 4.1 does not point to the table"


def test_the_frequency_table_parser_reads_pairs_and_rejects_repeats():
    assert _frequency_table("| 0 | `<UNK>` | 1.26 | | 7 | column | 3.05 |\n| wall | 33.67 |") == \
        {"<UNK>": 1.26, "column": 3.05, "wall": 33.67}
    with pytest.raises(AssertionError):
        _frequency_table("| wall | 1.00 |\n| wall | 2.00 |")


def test_the_instructors_page_is_a_part_of_its_own():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    parts = {part["caption"]: _toc_files(part) for part in toc["parts"]}
    assert parts["Getting started"] == ["setup"]
    owners = [caption for caption, files in parts.items() if "instructors" in files]
    assert owners == ["For instructors"] and parts["For instructors"] == ["instructors"], parts


def test_bibliography_labels_follow_the_citations_author_year():
    spec = importlib.util.spec_from_file_location("author_year_bibliography",
                                                  REPO / "book" / "_ext" / "author_year_bibliography.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from pybtex.database import Entry, Person

    def entry(authors: list[str], year: str = "2017") -> Entry:
        return Entry("article", fields={"title": "T", "year": year},
                     persons={"author": [Person(name) for name in authors]})

    lin = entry(["Lin, Tsung-Yi", "Goyal, Priya", "Doll{\\'a}r, Piotr"])
    assert module.author_year(lin) == "Lin et al., 2017"
    assert module.author_year(entry(["Eigen, David", "Fergus, Rob"], "2015")) == "Eigen and Fergus, 2015"
    assert module.author_year(entry(["Doll{\\'a}r, Piotr"])) == "Dollár, 2017"
    labels = list(module.AuthorYearLabelStyle().format_labels([lin, lin, entry(["Cui, Yin"], "2019")]))
    assert labels == ["Lin et al., 2017a", "Lin et al., 2017b", "Cui, 2019"]


@pytest.mark.slow
def test_the_bibliography_is_labelled_by_author_and_year(site: Path):
    page = _soup(site / "bibliography.html")
    labels = [_squash(tag.get_text(" ", strip=True)).strip("[] ") for tag in page.select("article .label")]
    assert labels and not [label for label in labels if re.fullmatch(r"\d+", label)], labels
    assert "Armeni et al., 2017" in labels and "Eigen and Fergus, 2015" in labels, labels
    assert labels == sorted(labels, key=str.lower), "the entries are not in the order of their first authors"


@pytest.mark.slow
def test_the_site_credits_the_original_lab_and_the_data_set(site: Path):
    intro = _soup(site / "intro.html")
    credits = _squash(intro.select_one("#credits").get_text(" "))
    assert "Jeremy Fix" in credits and "CentraleSupélec" in credits and "Semantic segmentation" in credits
    dataset = "http://buildingparser.stanford.edu/dataset.html"
    assert dataset in [a["href"] for a in intro.select("#credits a[href]")]
    assert len([a for a in intro.select("article a[href]") if a["href"] == dataset]) >= 2, \
        "the data set's page is linked where the data set is introduced, and in the credits"
    for page in sorted(site.rglob("*.html")):
        text = page.read_text(encoding="utf-8")
        assert "The course team" not in text, f"{page.relative_to(site)}: the footer credits nobody"
        words = _squash(_soup(page).get_text(" ")).lower()
        assert "the handout" not in words, f"{page.relative_to(site)} cites the original lab as 'the handout'"
    # every mention of the original lab in the chapters links to its credit
    for chapter in ("chapters/inference", "chapters/training"):
        assert [a for a in _soup(site / f"{chapter}.html").select("article a[href]")
                if a["href"].endswith("intro.html#credits")], chapter


@pytest.mark.slow
def test_the_introduction_links_every_notebook(site: Path):
    intro = _soup(site / "intro.html")
    hrefs = {a["href"] for a in intro.select("article table a[href]")}
    missing = [name for name in NOTEBOOKS if f"segmentation/{name}.html" not in hrefs]
    assert not missing, f"the introduction's table does not link {missing}"


@pytest.mark.slow
def test_search_finds_the_plain_spelling_of_lovasz(site: Path):
    index = (site / "searchindex.js").read_text(encoding="utf-8")
    assert '"lovasz"' in index, "searching 'lovasz' finds nothing: the pages only write Lovász"


@pytest.mark.slow
def test_the_plain_graph_recipe_of_question_6_1_gives_the_plain_graph(tmp_path: Path, monkeypatch):
    # The chapter tells students how to export the graph that question 6.1 reads: run its code as they would, and
    # check that it shows the upsampling as the code writes it (Resize); the folded graph is export's option.
    from collections import Counter

    import onnx

    from labcode.export import export_onnx
    from labcode.models import build_model

    chapter = (REPO / "book" / "chapters" / "inference.md").read_text()
    section = chapter[chapter.index("(folded-graph)="):chapter.index("## Questions")]
    code = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(code) == 1, "the folded-graph section should give one Python snippet"
    monkeypatch.chdir(tmp_path)
    exec(compile(code[0], "inference.md", "exec"), {})  # noqa: S102 - the course's own snippet
    plain = Counter(node.op_type for node in onnx.load(str(tmp_path / "plain.onnx")).graph.node)
    assert plain["Resize"] == 3 and plain["DepthToSpace"] == 0, plain
    folded_path = export_onnx(build_model("unet", 14, base_chan=8, num_blocks=3), tmp_path / "folded.onnx", fold=True)
    folded = Counter(node.op_type for node in onnx.load(str(folded_path)).graph.node)
    assert folded["Resize"] == 0 and folded["DepthToSpace"] == 3, folded
    assert "python -m labcode view plain.onnx" in section


# --------------------------------------------------------------------------------------------------------------------
# One audience per page: the students' pages speak only of what the students' distribution has
# --------------------------------------------------------------------------------------------------------------------

#: Pages for instructors, the only ones that may speak of the course repository's own commands and folders.
INSTRUCTOR_PAGES = {"instructors.md"}
#: Paths the distribution does not hold but a step the pages document creates, relative to its root, with the step
#: (each is checked against the distribution's own files by the test).
CREATED_BY_A_STEP = {".venv": "make setup (VENV := .venv/bin in the Makefile)",
                     "segmentation/runs": "python -m labcode train or pipeline, run in segmentation/ (logdir runs)"}
#: Paths inside a data set root (the real Stanford 2D-3D-S or the generated one), not in the distribution.
DATASET_PATH = re.compile(r"^(Stanford2D-3D-S|assets|area_[\w*<>.]+)(/|$)")
#: Files named without a folder that are checked too (others, such as ``photo.jpg``, are the reader's own).
REPOSITORY_FILE = re.compile(r"^[\w.-]+\.(py|ipynb|txt|toml|yml|yaml|cfg|sh)$|^Makefile$")


def student_pages() -> dict[str, str]:
    """Name -> markdown of every page students read: ``book/*.md`` and ``book/chapters/*.md`` but the instructors'
    page, and the footer of every page (``extra_footer`` of ``_config.yml``, its ``<code>`` as backquotes)."""
    pages = {str(path.relative_to(REPO / "book")): path.read_text(encoding="utf-8")
             for path in sorted([*(REPO / "book").glob("*.md"), *(REPO / "book" / "chapters").glob("*.md")])
             if path.name not in INSTRUCTOR_PAGES}
    footer = yaml.safe_load((REPO / "_config.yml").read_text())["html"].get("extra_footer", "")
    pages["_config.yml (footer)"] = re.sub(r"</?code>", "`", footer)
    return pages


def code_of(markdown: str) -> list[str]:
    """The code a page shows: fenced blocks (the content of ``{directive}`` blocks is read as markdown, for the inline
    code of captions and admonitions) and inline code spans, MyST roles (``{doc}`x```) left out."""
    found: list[str] = []
    fence = re.compile(r"^(?P<fence>`{3,}|:{3,})(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.S | re.M)
    for block in fence.finditer(markdown):
        if block["info"].strip().startswith("{"):
            found += code_of(block["body"])
        elif block["fence"].startswith("`"):
            found.append(block["body"])
    prose = fence.sub("\n", markdown)
    spans = re.finditer(r"(\{[\w:-]+\})?`((?:[^`\n]|\n(?!\s*\n))+)`", prose)
    return found + [span[2] for span in spans if not span[1]]


def make_targets(code: str) -> list[str]:
    return re.findall(r"(?:^|[\s;&(|$])make\s+(?:-\S+\s+)*([A-Za-z][\w.-]*)", code, re.M)


def python_modules(code: str) -> list[tuple[str, str | None]]:
    """``(module, first argument)`` of each ``python -m module ...`` (or ``torchrun ... -m module``) of ``code``."""
    pattern = r"(?:\bpython[\d.]*|\btorchrun\b[^\n`]*?)\s+-m\s+([A-Za-z_][\w.]*)(?:[ \t]+([A-Za-z][\w-]*))?"
    return [(module, argument or None) for module, argument in re.findall(pattern, code)]


def repository_paths(code: str) -> list[str]:
    """The paths of the course's folders a piece of code names: words with a ``/`` (URLs, absolute paths, ``~``
    and ``$`` paths left out) and bare file names of source and configuration files."""
    code = re.sub(r"\w+://\S+", " ", code)
    found = []
    for word in re.findall(r"[\w.~<>*/$-]+", code):
        word = word.rstrip(".")
        if "/" in word and not word.startswith(("/", "~", "$")) and not DATASET_PATH.match(word):
            found.append(word)
        elif "/" not in word and REPOSITORY_FILE.match(word):
            found.append(word)
    return found


def _concrete(path: str) -> str:
    """``path`` up to its first placeholder component (``runs/<run>/best.pt`` -> ``runs``)."""
    parts = []
    for part in path.strip("/").split("/"):
        if any(mark in part for mark in "<>*{") or "..." in part:
            break
        parts.append(part)
    return "/".join(parts)


def missing_from(dist: Path, pages: dict[str, str]) -> list[str]:
    """``page: what`` for each make target, module, ``labcode`` command or path of ``pages`` that the distribution
    in ``dist`` lacks. Commands of the library run in ``segmentation/`` (where the copy of ``labcode`` is), make in
    the distribution's root; a path is looked up from both."""
    targets = set(re.findall(r"^([A-Za-z][\w.-]*):(?!=)", (dist / "Makefile").read_text(), re.M))
    cli = (dist / "segmentation" / "labcode" / "commands" / "cli.py").read_text()
    commands = set(re.findall(r'^\s+"([\w-]+)": \("labcode\.commands\.', cli, re.M))
    work = dist / "segmentation"

    def module_exists(module: str) -> bool:
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in {"pip", "jupyter", "tensorboard"}:
            return True
        base = work / Path(*module.split("."))
        return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()

    def path_exists(path: str) -> bool:
        concrete = _concrete(path)
        for root in (dist, work):
            relative = os.path.relpath(os.path.normpath(root / concrete), dist)
            if relative.startswith(".."):
                continue
            if (dist / relative).exists() or any(relative == made or relative.startswith(made + "/")
                                                   for made in CREATED_BY_A_STEP):
                return True
        return False

    problems = []
    for name, markdown in pages.items():
        for code in code_of(markdown):
            problems += [f"{name}: make {target}" for target in make_targets(code) if target not in targets]
            for module, argument in python_modules(code):
                if not module_exists(module):
                    problems.append(f"{name}: python -m {module}")
                elif module == "labcode" and argument and argument not in commands and argument != "help":
                    problems.append(f"{name}: python -m labcode {argument}")
            problems += [f"{name}: {path}" for path in repository_paths(code) if not path_exists(path)]
    return sorted(set(problems))


@pytest.fixture(scope="module")
def student_dist(tmp_path_factory) -> Path:
    """The students' distribution built from the tracked student release, as ``make release`` builds it (a stand-in
    file for the reference model)."""
    from tools import distribution, release

    notebooks = REPO / "notebooks" / "segmentation"
    if not (notebooks / "labcode").is_dir():
        pytest.fail("notebooks/segmentation/ is missing: generate the student release first (make release)")
    tmp = tmp_path_factory.mktemp("dist")
    reference = tmp / "reference" / "best.onnx"
    reference.parent.mkdir()
    reference.write_bytes(b"onnx stand-in")
    (reference.parent / INFO_NAME).write_text(json.dumps({key: None for key in INFO_KEYS}))
    return distribution.build_distribution(notebooks, tmp / "student", reference=reference,
                                           links=distribution.CourseLinks(),
                                           ignore=tuple(release.load_course_config().CourseDirectory.ignore))


def test_student_pages_name_only_what_the_distribution_has(student_dist: Path):
    problems = missing_from(student_dist, student_pages())
    assert not problems, ("student pages name commands or paths that the students' distribution lacks (instructor "
                          "material goes to book/instructors.md):\n" + "\n".join(problems))


def test_the_steps_that_create_folders_are_those_of_the_distribution(student_dist: Path):
    # The folders the check above accepts without finding them are made by the distribution's own commands.
    assert re.search(r"^VENV := \.venv/bin$", (student_dist / "Makefile").read_text(), re.M)
    config = (student_dist / "segmentation" / "labcode" / "config.py").read_text()
    assert re.search(r'^\s+logdir: str = "runs"$', config, re.M)
    assert set(CREATED_BY_A_STEP) == {".venv", "segmentation/runs"}


def test_the_distribution_check_finds_what_a_page_should_not_name(student_dist: Path):
    page = {"page.md": "\n".join([
        "Run `make setup`, then `make reference` and `make figures`.",
        "```console\n$ make lab\n$ python -m benchmarks.bench_cpu_recipe\n$ python -m labcode pipelines\n```",
        "Edit `labcode/unet.py` and `labcode/nowhere.py`; runs go to `runs/<run>/best.pt`, data to `data/`.",
        "`tools/make_figures.py`, `pyproject.toml`, `../.venv/bin/python`, `~/.cache/labcode`, {doc}`tools/x`,",
        "`assets/semantic_labels.json` and <https://example.org/a/b>; make sure you `python -m labcode.check`.",
        ":::{admonition} Box\nSee `solutions/segmentation/03_unet.ipynb`.\n:::",
        "```{figure} x.png\n:alt: x\n\nCaption: `make book`.\n```",
    ])}
    assert missing_from(student_dist, page) == sorted([
        "page.md: make reference", "page.md: make figures", "page.md: python -m benchmarks.bench_cpu_recipe",
        "page.md: python -m labcode pipelines", "page.md: labcode/nowhere.py", "page.md: data/",
        "page.md: tools/make_figures.py", "page.md: pyproject.toml", "page.md: solutions/segmentation/03_unet.ipynb",
        "page.md: make book",
    ])


# --------------------------------------------------------------------------------------------------------------------
# What the site gives a learner: the distribution to download, a notation page, hints under the questions
# --------------------------------------------------------------------------------------------------------------------

#: The archive of the students' distribution that the setup page offers when course.yml names no repository.
DOWNLOAD = "segmentation-lab.zip"


def _download_links(page: Path) -> list[str]:
    return [a["href"] for a in _soup(page).select("article a[href]") if a["href"].endswith(DOWNLOAD)]


@pytest.mark.slow
def test_with_no_repository_the_setup_page_offers_the_distribution_to_download(site: Path, tmp_path: Path):
    import zipfile

    from tools.leaks import find_leaks

    links = _download_links(site / "setup.html")
    assert len(links) == 1, f"the setup page should link the distribution once: {links}"
    archive = (site / links[0]).resolve()
    assert archive.is_file() and archive.is_relative_to(site.resolve() / "_downloads"), links[0]
    setup = _squash(_soup(site / "setup.html").get_text())
    assert f"by downloading {DOWNLOAD} and unzipping it" in setup, setup[:800]

    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
    root = "segmentation-lab/"
    assert all(name.startswith(root) for name in names), sorted(names)[:5]
    for name in NOTEBOOKS:  # every notebook, as released
        released = REPO / "notebooks" / "segmentation" / f"{name}.ipynb"
        assert (tmp_path / root / "segmentation" / f"{name}.ipynb").read_bytes() == released.read_bytes(), name
    library = sorted(p.relative_to(REPO / "notebooks").as_posix()
                     for p in (REPO / "notebooks" / "segmentation" / "labcode").rglob("*.py"))
    missing = [path for path in library if root + path not in names]
    assert len(library) > 20 and not missing, f"labcode/ files missing from the archive: {missing}"
    for top in ("README.md", "Makefile", "requirements.txt", "requirements-gpu.txt", "labcode.py", ".gitignore"):
        assert root + top in names, top
    assert re.search(r"^setup:", (tmp_path / root / "Makefile").read_text(), re.M)
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")
                or "solutions/" in name or "/tools/" in name], sorted(names)
    assert not find_leaks(tmp_path), "solution lines in the downloadable distribution"


def test_the_download_archive_holds_the_release_and_leaves_out_caches(tmp_path: Path):
    # The archive builder of the book, on a tree laid out as the repository: the release's files go in under
    # segmentation-lab/, caches and a student's outputs stay out, and the same sources give the same bytes.
    import zipfile

    spec = importlib.util.spec_from_file_location("student_download", REPO / "book" / "_ext" / "student_download.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path / "repo"
    for name in ("tools", "labcode"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements-student.txt", "nbgrader_config.py", "course.yml"):
        shutil.copy2(REPO / name, root / name)
    release = root / "notebooks" / "segmentation"
    shutil.copytree(REPO / "notebooks" / "segmentation", release,
                    ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints", "data", "runs"))
    for junk in ("runs/run1/best.pt", "labcode/__pycache__/unet.cpython-311.pyc", ".ipynb_checkpoints/x.ipynb",
                 "data/cache.npy"):
        (release / junk).parent.mkdir(parents=True, exist_ok=True)
        (release / junk).write_bytes(b"x")
    reference = tmp_path / "reference" / "best.onnx"
    reference.parent.mkdir()
    reference.write_bytes(b"onnx stand-in")
    (reference.parent / INFO_NAME).write_text(json.dumps({key: None for key in INFO_KEYS}))
    first = module.build_archive(root, tmp_path / "a" / module.ARCHIVE, reference=reference)
    names = zipfile.ZipFile(first).namelist()
    assert "segmentation-lab/segmentation/03_unet.ipynb" in names
    assert "segmentation-lab/segmentation/labcode/unet.py" in names
    assert not [n for n in names if {"runs", "__pycache__", ".ipynb_checkpoints", "data"} & set(n.split("/"))], names
    assert "segmentation-lab/segmentation/labcode/check_data/unet.npz" in names  # the library's own data goes in
    second = module.build_archive(root, tmp_path / "b" / module.ARCHIVE, reference=reference)
    assert first.read_bytes() == second.read_bytes(), "the archive changes from one build to the next"
    shutil.rmtree(release / "labcode")
    with pytest.raises(module.DownloadError, match="no student release"):
        module.build_archive(root, tmp_path / "c" / module.ARCHIVE, reference=reference)


#: Symbols the notation page must explain: the TeX of each, as the chapters write it.
NOTATION_SYMBOLS = ["K", "B", "H", "W", "N", "S", "z_{i,k}", "\\hat{p}_{i,k}", "y_i", "f_k", "w_k", "\\gamma",
                    "\\beta", "TP_k", "FP_k", "FN_k", "F1_k", "macro-", "IoU_k", "C_{jk}", "\\mathcal{L}_{wCE}",
                    "\\mathcal{L}_{focal}", "c_0"]


def test_the_notation_page_explains_the_chapters_symbols_and_links_each():
    page = (REPO / "book" / "notation.md").read_text()
    rows = [line for line in page.splitlines() if line.startswith("| $") or line.startswith("| macro")]
    cells = [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]
    symbols = " ".join(row[0] for row in cells)
    missing = [symbol for symbol in NOTATION_SYMBOLS if symbol not in symbols]
    assert not missing, f"symbols the notation page does not explain: {missing}"
    definitions = [row for row in cells if len(row) == 3 and "{" in row[2]]
    assert len(definitions) >= len(NOTATION_SYMBOLS) - 3, "each symbol links to where it is defined"
    # the symbols are those of the chapters: each of these TeX strings is written in at least one chapter
    chapters = "\n".join(p.read_text() for p in sorted((REPO / "book" / "chapters").glob("*.md")))
    for symbol in ("TP_k", "F1_k", "IoU_k", "w_k", "\\gamma", "\\hat{p}_{i,k}", "y_i", "C_{jk}", "c_0",
                   "\\mathcal{L}_{wCE}"):
        assert symbol in chapters, f"{symbol} is not a symbol of the chapters"
    labels = set(re.findall(r"^\(([\w-]+)\)=$", chapters, re.M))
    targets = set(re.findall(r"\{ref\}`[^`<]*<([\w-]+)>`", page))
    assert targets and targets <= labels | {"notation-losses"}, f"links to no label: {targets - labels}"


@pytest.mark.slow
def test_the_notation_page_links_resolve_and_sits_with_the_chapters(site: Path):
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    parts = {part["caption"]: _toc_files(part) for part in toc["parts"]}
    assert "notation" in parts["The lab"]
    article = _soup(site / "notation.html").select_one("article")
    hrefs = [a["href"] for a in article.find_all("a", href=True)]
    into_chapters = [href for href in hrefs if href.startswith("chapters/") and "#" in href]
    assert len(into_chapters) >= 15, hrefs
    assert article.select("table") and "\\gamma" in article.get_text()


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_question_of_a_chapter_has_a_collapsed_hint(site: Path, chapter: str):
    # Each "Question N.M" paragraph is followed by a hint, collapsed (the dropdown class of sphinx-togglebutton).
    article = _soup(site / f"{chapter}.html").select_one("article")
    questions = [p for p in article.find_all("p") if re.match(r"Questions? \d+\.\d+", p.get_text(" ", strip=True))]
    assert questions, f"{chapter} poses no question"
    for question in questions:
        box = question.find_next_sibling()
        while box is not None and box.name not in ("div", "p", "section"):
            box = box.find_next_sibling()
        title = question.get_text(" ", strip=True)[:40]
        assert box is not None and box.name == "div", f"{chapter}: no hint after {title!r}"
        classes = box.get("class", [])
        assert "admonition" in classes and "dropdown" in classes, f"{chapter}: {title!r} is followed by {classes}"
        assert box.select_one(".admonition-title").get_text(strip=True) == "Hint", title
        assert len(_squash(box.get_text(" "))) > 60, f"{chapter}: the hint of {title!r} is empty"


@pytest.mark.slow
@pytest.mark.browser
def test_hints_are_collapsed_until_clicked(site: Path, served_site: str, chromium):
    # sphinx-togglebutton folds every hint: its text shows only once the reader clicks its title.
    from selenium.webdriver.support.ui import WebDriverWait

    _open(chromium, served_site + "chapters/metrics.html")
    wait = WebDriverWait(chromium, 30)
    hints = "div.admonition.dropdown"
    wait.until(lambda d: d.find_elements("css selector", hints + ".toggle-hidden"))
    boxes = chromium.find_elements("css selector", hints)
    assert len(boxes) == 3, f"metrics poses 3 questions, found {len(boxes)} hints"
    text = boxes[0].find_element("css selector", "p:not(.admonition-title)")
    assert not text.is_displayed(), "the hint shows before it is asked for"
    boxes[0].find_element("css selector", ".admonition-title").click()
    wait.until(lambda d: text.is_displayed())
    assert "pixels" in text.text
