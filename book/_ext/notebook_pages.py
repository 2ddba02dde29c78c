"""Sphinx extension of the course book: the notebook pages are made when they are missing.

The pages of ``segmentation/`` are written by ``tools/site_notebooks.py`` (the student release run on the generated
data set, git-ignored): ``make book`` refreshes them before each build. A plain ``jupyter-book build book`` on a fresh
clone or an archive of the repository has none yet: this extension then writes them, before Sphinx looks for its
sources, so that the chapters' links to the notebooks resolve. Pages already there are left as they are.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)

#: The folder of the pages, relative to the book's sources (the paths of the students' distribution).
PAGES = "segmentation"


def _site_notebooks(repo: Path):
    """``tools/site_notebooks.py`` of the repository at ``repo``, loaded from that file whatever ``sys.path`` holds."""
    path = repo / "tools" / "site_notebooks.py"
    spec = importlib.util.spec_from_file_location("course_site_notebooks", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def make_missing_pages(app, config) -> None:
    out = Path(app.srcdir) / PAGES
    repo = Path(app.srcdir).resolve().parent
    release = repo / "notebooks" / "segmentation"
    wanted = sorted(p.name for p in release.glob("*.ipynb"))
    if all((out / name).is_file() for name in wanted):
        return
    logger.info(f"notebook pages: {out} lacks pages; running the student release to make them")
    for report in _site_notebooks(repo).build_site_notebooks(out, release=release):
        logger.info(f"notebook pages: {report.summary()}")


def setup(app):
    app.connect("config-inited", make_missing_pages)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
