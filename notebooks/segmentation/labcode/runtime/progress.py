# Your copy of the course library: labcode/runtime/progress.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Progress bars: tqdm's widget in Jupyter, text in a terminal, and notebook outputs that end as the bars ended.

``tqdm.auto`` picks the widget in Jupyter. A saved or executed notebook, though, keeps the text shown beside the
widget when it first appeared ("0%| | 0/96"): the widget's later states live only in the open page. The bars of
:func:`progress_bar` update their output when they close, so a notebook shows each finished bar at 100 % (or where
it stopped, after an error) and nothing for a bar closed with ``leave=False`` (the widget hides such bars too).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


@functools.cache
def _notebook_bar() -> type[tqdm] | None:
    """tqdm's notebook bar with an output that follows it to the end; ``None`` outside Jupyter."""
    notebook = sys.modules.get("tqdm.notebook")
    if notebook is None or not issubclass(tqdm, notebook.tqdm_notebook):
        return None

    class NotebookBar(tqdm):
        """The widget bar, displayed with a display id so that :meth:`close` can rewrite its output."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._handle = None
            display_now = kwargs.pop("display", True) and (kwargs.get("delay") or 0) <= 0
            super().__init__(*args, display=False, **kwargs)
            if display_now and not self.disable and hasattr(self, "container"):
                from IPython.display import display

                self._handle = display(self.container, display_id=True)
                self.displayed = True

        def close(self) -> None:
            was_open, handle = not self.disable, getattr(self, "_handle", None)
            super().close()
            if not was_open or handle is None:
                return
            self._handle = None
            if self.leave or (self.total and self.n < self.total):
                handle.update(self.container)  # the widget, and the text of its last state
            else:
                handle.update({"text/plain": ""}, raw=True)  # hidden, as the widget is

    return NotebookBar


def progress_bar(iterable: Iterable | None = None, **options: Any) -> tqdm:
    """A ``tqdm.auto`` progress bar over ``iterable`` (``options``: tqdm's, e.g. ``total``, ``desc``, ``disable``).

    In Jupyter it is the widget, whose output in the notebook ends at the bar's final state.
    """
    kind = _notebook_bar() or tqdm
    return kind(iterable, **options)
