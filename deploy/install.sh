#!/bin/sh
# Creates the virtual environment $1 and installs flushwatch from the source tree $2 into it.
# The Dockerfile's build stage runs this script, and tests/test_deploy.py runs the same script into a temporary
# directory, so the image's install recipe is exercised without a Docker engine. pip's cache is left to the
# caller: the Dockerfile turns it off (PIP_NO_CACHE_DIR), the test reuses the machine's.
set -eu
venv="$1"
src="$2"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet "$src"
