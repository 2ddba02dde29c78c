#!/usr/bin/env bash
# Create .venv and install the pinned stack and labcode (editable). Idempotent: a second run only checks.
# requirements-optional.txt (built from source) is installed when it builds; labcode works without it.
# With --browser, also install Debian's chromium + chromium-driver (for the browser tests) when apt is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.installed-$(sha1sum requirements.txt requirements-optional.txt pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    echo "installing the Python stack into .venv (about 75 s on a fresh machine, plus about 40 s the first time to build the Wuffs PNG decoder)..."
    .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -m pip install --quiet -r requirements.txt 2>&1 | grep -v "^WARNING: Location" || true
    if ! .venv/bin/python -m pip install --quiet -r requirements-optional.txt >.venv/optional-install.log 2>&1; then
        echo "setup: the optional Wuffs PNG decoder did not build (see .venv/optional-install.log);" \
             "labcode decodes PNGs with libspng or OpenCV instead" >&2
    fi
    .venv/bin/python -m pip install --quiet --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import labcode, torch, albumentations, onnxruntime, nbgrader" \
        || { echo "setup: the Python stack did not install" >&2; exit 1; }
    rm -f .venv/.installed-*
    touch "$stamp"
fi
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium and chromium-driver (browser tests)..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "setup: chromium could not be installed; browser tests will be skipped" >&2
    else
        echo "setup: not root or no apt-get; browser tests will be skipped" >&2
    fi
fi
