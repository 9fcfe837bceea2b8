#!/usr/bin/env bash
# Create the development virtual environment with the three packages installed editable.
#
# Usage: scripts/setup-venv.sh [VENV_DIR]     (default: .venv in the repository root)
#
# All three packages, their test extras and the development tools are installed
# in one pip command, so that pip resolves ecs-common from this checkout for
# both ecs-train and ecs-deploy. ecs-deploy also gets its optional numba extra,
# so that tests which need numba run here too. Set PYTHON to choose the
# interpreter (default python3).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${1:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    echo "Creating virtual environment $venv with $("$python" --version)"
    "$python" -m venv "$venv"
fi

cd "$root"
"$venv/bin/python" -m pip install \
    -e "packages/ecs-common[test]" \
    -e "packages/ecs-train[test]" \
    -e "packages/ecs-deploy[test,fast]" \
    -r requirements-dev.txt

echo "Virtual environment ready: $venv"
