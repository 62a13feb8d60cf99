#!/usr/bin/env bash
# Prepare, on a machine WITH network (this one), everything bench/gpu_check.sh needs on a GPU machine without it:
#
#   bench/gpu_wheels/        wheels of diffusers, open_clip_torch (for its CLIP vocabulary file) and bitsandbytes
#                            (8-bit AdamW) for Python 3.12 on x86-64, without dependencies: the GPU image already has
#                            torch, transformers, peft, accelerate, safetensors, huggingface-hub, pandas, matplotlib.
#                            bitsandbytes keeps only its CUDA 13.0 library (the image's torch is cu130): 43 MB -> 5 MB.
#                            The papermill/Jupyter stack is not carried (about 20 more packages): gpu_check.py calls
#                            the library functions the notebooks call.
#   bench/gpu_data/dataset/  data/sample/ captured at 1024 px by the real capture stage (dlib runs here only: its
#                            100 MB of models do not travel).
#
# Both folders are git-ignored (bench/.gitignore) and travel with the `run` tool's `carry` list. Prints the total,
# which must stay under the tool's 64 MiB per call (working tree included).
#
#   bench/gpu_prepare.sh            # both
#   bench/gpu_prepare.sh wheels     # or: dataset
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
export PYTHONPATH="$PWD/lib${PYTHONPATH:+:$PYTHONPATH}"
what=${1:-all}
# Versions known to work with this project (pyproject.toml ranges) and the GPU image (torch 2.11 cu130, Python 3.12).
WHEELS=(diffusers==0.42.1 open_clip_torch==3.3.0 bitsandbytes==0.50.2)

if [[ $what == all || $what == wheels ]]; then
  rm -rf bench/gpu_wheels && mkdir -p bench/gpu_wheels
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d bench/gpu_wheels "${WHEELS[@]}"
  # bitsandbytes ships one library per CUDA version (43 MB); the GPU image's torch is cu130: keep that one (5 MB)
  "$PY" - <<'PYEOF'
import zipfile
from pathlib import Path

for wheel in Path("bench/gpu_wheels").glob("bitsandbytes-*.whl"):
    slim = wheel.with_suffix(".slim")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as target:
        def dropped(name):
            return "/libbitsandbytes_" in name and "cuda130" not in name and "cpu" not in name
        for item in source.infolist():
            if dropped(item.filename):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/RECORD"):
                data = b"".join(line for line in data.splitlines(keepends=True) if not dropped(line.decode()))
            target.writestr(item, data)
    slim.replace(wheel)
PYEOF
fi

if [[ $what == all || $what == dataset ]]; then
  rm -rf bench/gpu_data/dataset
  "$PY" - <<'PYEOF'
from pathlib import Path

from sdxlab import capture

# the sample photos are small: allow 4x enlargement so most of them make a 1024 px crop (real selfies need none)
settings = capture.CaptureSettings(resolution=1024, max_upscale=4.0)
result = capture.analyse_photos(Path("data/sample"), settings)
print(result.summary())
capture.write_dataset(result, Path("bench/gpu_data/dataset"))
PYEOF
fi

du -sh bench/gpu_wheels bench/gpu_data 2>/dev/null || true
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
carried=$(du -cb bench/gpu_wheels bench/gpu_data 2>/dev/null | tail -1 | cut -f1)
total=$(( (tracked + carried) / 1048576 ))
echo "working tree ${tracked} B + carried ${carried} B = ${total} MiB (limit 64 MiB per run call)"
(( total < 64 )) || { echo "too big for one run call: shrink what is carried" >&2; exit 1; }
