"""Not the course library: your copy of it is ``segmentation/labcode/``, next to the notebooks.

Python imports this file when it runs in the lab's top folder (``python -m labcode.check`` typed here, say). It stops
with a message saying where to run instead.
"""

raise SystemExit("labcode lives in segmentation/, next to the notebooks: run the self-check with `make check` in this "
                 "folder, or `cd segmentation` and then `python -m labcode.check` (notebooks and commands of the lab "
                 "run in segmentation/)")
