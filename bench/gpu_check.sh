#!/usr/bin/env bash
# The GPU check in one call (see bench/gpu_check.py for what it runs and writes):
#
#   bench/gpu_check.sh                  # on the GPU machine: installs bench/gpu_wheels/*.whl, then runs everything
#   bench/gpu_check.sh --dry-run        # here, on the CPU, with the tiny model: the same script end to end
#   bench/gpu_check.sh --wheels DIR ... # wheels from another folder; other arguments go to gpu_check.py
#
# Output: $OUT if set (the run tool's folder that comes back), else --out, else outputs/gpu-check-<time>.
# Prepare the wheels and the 1024 px dataset first, on a machine with network: bench/gpu_prepare.sh
set -uo pipefail
cd "$(dirname "$0")/.."
wheels=bench/gpu_wheels
if [[ ${1:-} == --wheels ]]; then wheels=$2; shift 2; fi
if [[ -x .venv/bin/python ]]; then PY=${PY:-.venv/bin/python}; else PY=${PY:-python3}; fi
if compgen -G "$wheels/*.whl" >/dev/null && [[ " $* " != *" --dry-run "* ]]; then
  site=${SDXLAB_SITE:-/tmp/sdxlab-site}
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl \
    || { echo "gpu_check.sh: installing the wheels in $wheels failed" >&2; exit 2; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
exec "$PY" -u bench/gpu_check.py "$@"
