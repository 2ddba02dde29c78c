"""Progress bars (labcode.runtime.progress): text in a terminal; in Jupyter the widget, whose saved output ends as the
bar ended (100 % when finished) instead of the "0%" it showed when it appeared."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from tqdm.auto import tqdm

from labcode.runtime.progress import progress_bar

REPO = Path(__file__).resolve().parents[1]


def test_outside_jupyter_the_bar_is_tqdms_text_bar():
    bar = progress_bar(range(7), desc="count", disable=True)
    assert type(bar) is tqdm and list(bar) == list(range(7))


@pytest.fixture(scope="module")
def executed() -> list[str]:
    """The text each cell of a notebook using the library's bars leaves in its saved outputs."""
    import nbclient

    sources = [
        "from labcode.runtime.progress import progress_bar\nfrom tqdm.auto import tqdm",
        "for _ in progress_bar(range(96), desc='epoch', unit='batch'):\n    pass",
        "for _ in progress_bar(range(40), desc='hidden', leave=False):\n    pass",
        "bar = progress_bar(total=10, desc='stopped')\nbar.update(3)\nbar.close()",
        "import numpy as np\nfrom labcode.stats import class_histogram\n\n"
        "class Masks:\n    def __len__(self):\n        return 12\n\n"
        "    def load_mask(self, i):\n        return np.full((4, 4), i % 3)\n\n"
        "print(class_histogram(Masks(), num_classes=3).tolist())",
        "for _ in tqdm(range(96), desc='plain'):\n    pass",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source) for source in sources])
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(REPO)}})
    client.execute()
    return ["\n".join(out.get("text", "") + out.get("data", {}).get("text/plain", "") for out in cell.outputs)
            for cell in nb.cells]


def test_a_finished_bar_is_saved_at_100_percent(executed):
    assert "epoch: 100%" in executed[1] and "96/96" in executed[1] and "0%" not in executed[1].replace("100%", "")
    assert "class histogram: 100%" in executed[4] and "12/12" in executed[4] and "[64, 64, 64]" in executed[4]
    # tqdm.auto alone keeps the text of the bar's first display: what the library's bars no longer do
    assert "plain:   0%" in executed[5]


def test_a_hidden_bar_leaves_nothing_and_a_stopped_one_shows_where_it_stopped(executed):
    assert executed[2].strip() == ""
    assert "stopped:  30%" in executed[3] and "3/10" in executed[3]
