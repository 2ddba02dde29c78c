"""Serving a model: the web API, the uploads it accepts and its page."""
