"""``labcode.data``: the names the notebooks, the book and the tools import from it are there."""

from __future__ import annotations

import re
from pathlib import Path

import labcode.data

REPO = Path(__file__).resolve().parents[1]
IMPORT = re.compile(r"from labcode\.data import (?:\(([^)]*)\)|([A-Za-z0-9_, ]+))")


def imported_names(module_import: re.Pattern) -> dict[str, set[str]]:
    """Names imported by ``module_import`` statements, by file, in the sources, notebooks and pages of the course."""
    found = {}
    folders = ("labcode", "tools", "tests", "benchmarks", "scripts", "solutions", "book")
    for path in sorted(p for folder in folders for p in (REPO / folder).rglob("*")
                       if p.suffix in (".py", ".ipynb", ".md") and p.is_file()):
        text = path.read_text(encoding="utf-8").replace("\\n", "\n")
        names = {name.strip() for match in module_import.finditer(text)
                 for name in (match[1] or match[2]).split(",")} - {""}
        if names:
            found[str(path.relative_to(REPO))] = names
    return found


def test_every_name_imported_from_labcode_data_is_there():
    found = imported_names(IMPORT)
    assert "solutions/segmentation/01_data_exploration.ipynb" in found  # the notebooks are searched
    missing = {path: sorted(n for n in names if not hasattr(labcode.data, n)) for path, names in found.items()}
    assert not {path: names for path, names in missing.items() if names}
