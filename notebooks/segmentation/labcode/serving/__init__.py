# Your copy of the course library: labcode/serving/__init__.py, used by the lab's notebooks.
# No exercise in this file: read it as you like, and leave it as it is (the notebooks use it).
"""Serving a model: the web API, the uploads it accepts and its page."""
