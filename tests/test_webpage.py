"""The serving page: self-contained, and allowed to run its own inline code only."""

from __future__ import annotations

import base64
import hashlib
import re

from labcode.serving.webpage import PAGE, PAGE_CSP


def _sources(policy: str) -> dict[str, str]:
    return {part.split()[0]: part.split(" ", 1)[1] for part in policy.split("; ")}


def test_the_policy_names_the_hash_of_the_pages_one_script_and_one_style():
    sources = _sources(PAGE_CSP)
    for tag in ("script", "style"):
        assert PAGE.count(f"<{tag}>") == 1, tag
        content = PAGE.split(f"<{tag}>")[1].split(f"</{tag}>")[0]
        digest = base64.b64encode(hashlib.sha256(content.encode()).digest()).decode()
        assert sources[f"{tag}-src"] == f"'sha256-{digest}'"
    assert sources["default-src"] == "'none'" and sources["frame-ancestors"] == "'none'"


def test_the_page_loads_nothing_from_elsewhere():
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", PAGE)
    assert "<link" not in PAGE and "@import" not in PAGE
    targets = re.findall(r"fetch\(\s*[`'\"]([^`'\"?]*)", PAGE)
    assert sorted(targets) == ["health", "segment"]  # this server's API, relative (works behind a proxy's prefix)
