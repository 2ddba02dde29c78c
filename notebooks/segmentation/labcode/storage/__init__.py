# Your copy of the course library: labcode/storage/__init__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Image codecs, the on-disk format of Stanford 2D-3D-S, the data sets, loaders and the prepared cache."""
