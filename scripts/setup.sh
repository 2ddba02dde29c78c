#!/usr/bin/env bash
# Set up the instructor repository. Idempotent: a second run only checks (a stamp per requirements hash).
#
#   bash scripts/setup.sh              # .venv: the pinned stack and labcode (editable); requirements-optional.txt
#                                      # (the Wuffs PNG decoder, built from source) when it builds
#   bash scripts/setup.sh --grading    # also .venv-grading: the notebooks' stack WITHOUT labcode, where submissions
#                                      # are graded (their own labcode/ copy is the only one they can import)
#   bash scripts/setup.sh --system     # also Debian's tools of the tests, when root with apt-get: chromium and
#                                      # chromium-driver (browser tests), bubblewrap (the grading sandbox), slurm-wlm
#                                      # and munge (a one-node cluster for the slurm tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
GRADING=0
SYSTEM=0
for arg in "$@"; do
    case "$arg" in
        --grading) GRADING=1 ;;
        --system|--browser) SYSTEM=1 ;;
        *) echo "setup: unknown option $arg" >&2; exit 2 ;;
    esac
done

quiet_pip() { "$@" 2>&1 | grep -v -e "^WARNING: Location" -e "^$" || true; }

install_main() {  # .venv: the instructor stack, the optional decoder, labcode (editable)
    local stamp
    stamp=.venv/.installed-$(cat requirements.txt requirements-student.txt requirements-optional.txt pyproject.toml \
        | sha1sum | cut -c1-12)
    [ -f "$stamp" ] && return 0
    [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
    echo "installing the Python stack into .venv (about 75 s on a fresh machine, plus about 40 s the first time to" \
         "build the Wuffs PNG decoder)..."
    quiet_pip .venv/bin/python -m pip install --quiet --upgrade pip
    quiet_pip .venv/bin/python -m pip install --quiet -r requirements.txt
    if ! .venv/bin/python -m pip install --quiet -r requirements-optional.txt >.venv/optional-install.log 2>&1; then
        echo "setup: the optional Wuffs PNG decoder did not build (see .venv/optional-install.log);" \
             "labcode decodes PNGs with libspng or OpenCV instead" >&2
    fi
    quiet_pip .venv/bin/python -m pip install --quiet --no-deps -e .
    .venv/bin/python -c "import labcode, torch, albumentations, onnxruntime, nbgrader" \
        || { echo "setup: the Python stack did not install" >&2; return 1; }
    rm -f .venv/.installed-*
    touch "$stamp"
}

install_grading() {  # .venv-grading: the notebooks' stack, without labcode
    local stamp
    stamp=.venv-grading/.installed-$(sha1sum requirements-student.txt | cut -c1-12)
    [ -f "$stamp" ] && return 0
    [ -x .venv-grading/bin/python ] || "$PYTHON" -m venv .venv-grading
    echo "installing the grading environment into .venv-grading (the notebooks' stack, no labcode)..."
    quiet_pip .venv-grading/bin/python -m pip install --quiet --upgrade pip
    quiet_pip .venv-grading/bin/python -m pip install --quiet -r requirements-student.txt
    (cd / && "$OLDPWD/.venv-grading/bin/python" -c "
import importlib.util, sys
import torch, albumentations, onnxruntime, ipykernel
sys.exit('setup: labcode must not be importable in .venv-grading' if importlib.util.find_spec('labcode') else 0)") \
        || { echo "setup: the grading environment is not right" >&2; return 1; }
    rm -f .venv-grading/.installed-*
    touch "$stamp"
}

install_system() {  # Debian's tools of the tests; a failure only skips the tests that need them
    local missing=()
    command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
    command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
    command -v slurmctld >/dev/null 2>&1 || missing+=(slurm-wlm munge)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]} (tests: browser, grading sandbox, slurm)..."
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
            || echo "setup: could not install ${missing[*]}; the tests needing them will be skipped" >&2
    else
        echo "setup: not root or no apt-get; tests needing ${missing[*]} will be skipped" >&2
    fi
}

# The three installs are independent (each its own folder, or the system's packages): the grading environment and
# the system's packages install in the background while .venv installs, and their output is shown once each ends.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
background=()
if [ "$SYSTEM" = 1 ]; then install_system >"$logs/system" 2>&1 & background+=("system:$!"); fi
if [ "$GRADING" = 1 ]; then install_grading >"$logs/grading" 2>&1 & background+=("grading:$!"); fi
status=0
install_main || status=1
for job in "${background[@]}"; do
    wait "${job#*:}" || status=1
    cat "$logs/${job%%:*}"
done
exit "$status"
