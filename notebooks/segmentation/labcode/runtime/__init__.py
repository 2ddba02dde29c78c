# Your copy of the course library: labcode/runtime/__init__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Running the training: the parts built from a configuration, checkpoints, run logs, distributed training,
progress bars and the whole-lab pipeline."""
