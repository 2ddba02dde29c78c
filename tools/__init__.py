"""The instructors' tools: the release, the distribution, the site's notebook pages, leak scans, the grader."""

import sys

# jsonschema, which nbformat imports, loads rfc3987_syntax when it is installed (jupyter-events requires it) to check
# the "iri" format: building that module's grammar takes one to three seconds in every process, and no notebook
# schema uses the format. The grader starts processes per submission, so these tools never load it.
sys.modules.setdefault("rfc3987_syntax", None)
