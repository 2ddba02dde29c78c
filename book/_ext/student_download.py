"""Sphinx extension of the course book: the students' distribution as a zip to download, when no repository is set.

With ``student_repository`` empty in ``course.yml``, students cannot clone their copy of the lab: the build then
writes the students' distribution (the student release ``notebooks/segmentation`` and the distribution's top files,
put together by ``tools/distribution.py``) into ``<book>/_build/download/segmentation-lab.zip``, and the setup
page's ``{{ clone_command }}`` (set by ``course_links``) becomes a link to download it; Sphinx copies the archive
into the site's ``_downloads/``. With a repository set, nothing is built and the page gives the clone command.

The archive holds one folder, ``segmentation-lab/``, as the clone would, the reference model included
(``reference/unet_reference.onnx`` and its ``reference.json``, as every distribution ships them). The model is not in
the repository: it is the one ``make reference`` trains (``$LABCODE_REFERENCE_MODEL`` names another). Without it,
as on a fresh clone, no archive is built and the setup page gives the clone command only; the build log says why.
The entries carry a fixed date, so the same sources give the same archive.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
import zipfile
from pathlib import Path

#: The archive's name, and the folder it unpacks to (the folder the setup page's commands enter).
ARCHIVE = "segmentation-lab.zip"
FOLDER = "segmentation-lab"
#: Where the archive is written, relative to the book's sources (``_build`` is left out of the pages).
OUTPUT = Path("_build") / "download"
#: Name patterns kept out of the archive whatever ``nbgrader_config.py`` says: caches and a student's own outputs.
ALWAYS_IGNORED = (".ipynb_checkpoints", "__pycache__", "*.pyc", "data", "runs")


class DownloadError(Exception):
    """The distribution cannot be put together (the message names the missing file)."""


class NoReferenceModel(DownloadError):
    """The reference model that every distribution ships is not on this machine (not trained yet)."""


def _distribution_module(root: Path):
    """``tools/distribution.py`` of the repository at ``root`` (loaded from that file, whatever ``sys.path`` holds)."""
    path = root / "tools" / "distribution.py"
    if not path.is_file():
        raise DownloadError(f"{path} is missing: the book builds the students' download with it")
    name = "_course_distribution"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def ignored_names(root: Path) -> tuple[str, ...]:
    """The name patterns the course never copies with an assignment (``CourseDirectory.ignore`` of
    ``nbgrader_config.py`` when there is one), and the caches and outputs of :data:`ALWAYS_IGNORED`."""
    config = root / "nbgrader_config.py"
    patterns: list[str] = []
    if config.is_file():
        from traitlets.config.loader import PyFileConfigLoader

        loaded = PyFileConfigLoader(config.name, path=str(root)).load_config()
        patterns = list(loaded.CourseDirectory.get("ignore", []))
    return tuple(dict.fromkeys([*patterns, *ALWAYS_IGNORED]))


def write_zip(folder: Path, archive: Path, prefix: str = FOLDER) -> Path:
    """Zip every file under ``folder`` into ``archive``, under ``prefix/``, with a fixed date and the files' modes."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=archive.parent, suffix=".zip", delete=False) as tmp:
        partial = Path(tmp.name)
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                name = f"{prefix}/{path.relative_to(folder).as_posix()}"
                info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
                info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, path.read_bytes())
        partial.chmod(0o644)  # a temporary file is private; the archive is for everyone
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    return archive


def build_archive(root: Path, archive: Path, reference: Path | None = None) -> Path:
    """The students' distribution of the repository at ``root``, zipped to ``archive``.

    Args:
        root: the course repository (or a copy of what the book is built from).
        archive: the zip file to write.
        reference: the reference model to ship, with its ``reference.json`` beside it; default:
            ``$LABCODE_REFERENCE_MODEL`` when set, else the one ``make reference`` trains
            (``tools/distribution.py``'s ``reference_model()``).

    Raises:
        NoReferenceModel: there is no reference model to ship.
        DownloadError: the student release or ``tools/distribution.py`` is missing, or the distribution cannot be
            built (the message says why).
    """
    release = root / "notebooks" / "segmentation"
    if not (release / "labcode" / "__init__.py").is_file():
        raise DownloadError(f"{release} holds no student release (no labcode/): run `make release` first")
    distribution = _distribution_module(root)
    if reference is None:
        override = os.environ.get("LABCODE_REFERENCE_MODEL")
        reference = Path(override) if override else Path(distribution.reference_model())
    if not reference.is_file():
        raise NoReferenceModel(f"no reference model at {reference}, which the distribution ships: train it with "
                               "`make reference`")
    with tempfile.TemporaryDirectory(prefix="student-download-") as tmp:
        try:
            dist = distribution.build_distribution(release, Path(tmp) / "student", reference=reference,
                                                   links=distribution.load_links(root / "course.yml"),
                                                   ignore=ignored_names(root))
        except distribution.DistributionError as err:
            raise DownloadError(str(err)) from err
        return write_zip(dist, archive)


def offer_download(app, config) -> None:
    """With no student repository in ``course.yml``, build the archive and make ``clone_command`` link to it."""
    import yaml
    from sphinx.util import logging

    root = Path(app.srcdir).resolve().parent
    course = root / "course.yml"
    values = (yaml.safe_load(course.read_text()) or {}) if course.is_file() else {}
    if str(values.get("student_repository") or ""):
        return
    archive = Path(app.srcdir) / OUTPUT / ARCHIVE
    try:
        build_archive(root, archive)
    except NoReferenceModel as err:  # a fresh clone: the site is fine without the download, which says why
        logging.getLogger(__name__).info(f"no download of the students' distribution: {err}")
        return
    except DownloadError as err:
        logging.getLogger(__name__).warning(f"no download of the students' distribution: {err}")
        return
    link = f"{{download}}`{ARCHIVE} </{OUTPUT.as_posix()}/{ARCHIVE}>`"
    config.myst_substitutions = {
        **getattr(config, "myst_substitutions", {}),
        "clone_command": f"by downloading {link} and unzipping it (it unpacks to a folder `{FOLDER}`), or with "
                         f"`git clone` from the address your instructors give you, if they give one",
    }


def setup(app):
    # after course_links (priority 900), whose clone command this replaces when there is nothing to clone
    app.connect("config-inited", offer_download, priority=950)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
