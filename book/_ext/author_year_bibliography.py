"""Sphinx extension of the course book: a bibliography labelled by author and year, like the citations.

The pages cite with sphinxcontrib-bibtex's ``author_year`` reference style ("Armeni et al. [2017]"), while pybtex's
``plain`` style labels the bibliography's entries with numbers. This extension registers the pybtex formatting style
``author_year_plain`` (set as ``bibtex_default_style`` in ``_config.yml``): the entries of ``plain``, sorted by
author, year and title, and labelled "Armeni et al., 2017" (one author: "Eigen, 2015"; two: "Eigen and Fergus, 2015"),
with a letter after the year when two entries would get the same label.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator

from pybtex.plugin import register_plugin
from pybtex.richtext import Text
from pybtex.style.formatting.plain import Style as PlainStyle
from pybtex.style.labels import BaseLabelStyle

STYLE = "author_year_plain"
LABELS = "author_year"


def _last_name(person) -> str:
    """A person's last name as plain text (LaTeX accents such as ``Doll{\\'a}r`` resolved)."""
    return Text.from_latex(" ".join(person.prelast_names + person.last_names)).render_as("text")


def author_year(entry) -> str:
    """``"Lin et al., 2017"``, ``"Eigen and Fergus, 2015"`` or ``"Abhishek, 2021"`` for one bibliography entry."""
    persons = entry.persons.get("author") or entry.persons.get("editor") or []
    names = [_last_name(person) for person in persons]
    if not names:
        who = entry.fields.get("title", entry.key)
    elif len(names) == 1:
        who = names[0]
    elif len(names) == 2:
        who = f"{names[0]} and {names[1]}"
    else:
        who = f"{names[0]} et al."
    return f"{who}, {entry.fields.get('year', 'n.d.')}"


class AuthorYearLabelStyle(BaseLabelStyle):
    """Labels "First author et al., year", made unique by a letter after the year (2017a, 2017b)."""

    def format_labels(self, sorted_entries: Iterable) -> Iterator[str]:
        entries = list(sorted_entries)
        labels = [author_year(entry) for entry in entries]
        repeated, seen = Counter(labels), Counter()
        for label in labels:
            if repeated[label] > 1:
                seen[label] += 1
                yield label + "abcdefghijklmnopqrstuvwxyz"[seen[label] - 1]
            else:
                yield label


class AuthorYearPlainStyle(PlainStyle):
    """pybtex's ``plain`` formatting, labelled by :class:`AuthorYearLabelStyle`."""

    default_label_style = LABELS


def setup(app) -> dict[str, bool]:
    register_plugin("pybtex.style.labels", LABELS, AuthorYearLabelStyle)
    register_plugin("pybtex.style.formatting", STYLE, AuthorYearPlainStyle)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
