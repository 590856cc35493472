#!/usr/bin/env bash
# One prepared GPU call (7 minutes or less on one H100): the project installed offline, tests/e2e/test_gpu.py, then
# benchmarks/bench_gpu.py (full-size Kosmos-2 built on the card, random weights, bf16): ground at several batch
# sizes and auto, the bare decoder with graphs and eager (same sync interval), generate at the same batch, the seed's
# one-image loop and the ratios between them; token-id agreement of the fast decoder with generate on the full-size
# architecture in bf16 and fp32; each attention kernel's max error against the math kernel; the card's fp32 answers
# against the CPU's. Every figure is written with the card's name.
#
#   bash benchmarks/gpu.sh --wheels       # HERE, with network, once: the wheels it installs from -> benchmarks/wheels
#   bash benchmarks/gpu.sh --dry [OUT]    # anywhere: the checks before the card (syntax, wheels, versions); no card
#   bash benchmarks/gpu.sh OUTDIR         # on the card: carry benchmarks/wheels beside the work tree
#
# The GPU machine is offline and has torch (2.11) and transformers (5.17) but not what this project needs above them
# (transformers>=5.24, typer, ...): those come from benchmarks/wheels, pip with --no-index and --no-build-isolation
# (setuptools among the wheels), torch as it is there. NVIDIA_TF32_OVERRIDE=0: float32 on the card is float32 where
# its answers are compared with the CPU's (bf16 figures do not change). Writes OUT/gpu.json, OUT/gpu.md, OUT/*.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/wheels

if [[ "${1:-}" == "--wheels" ]]; then
  # what this project needs beyond torch (and what torch itself needs), at the versions installed here, as wheels for
  # CPython $GPU_PYTHON (default: this one's) on x86_64 Linux; run it in the venv the tests pass in. About 38 MB, within
  # what the device tool carries (64 MiB with the work tree): numpy is left to the card's image, and pyarrow (54 MB,
  # WITH_PYARROW=1 adds it) too; without it the project installs alone and only Parquet output is missing
  mkdir -p "$WHEELS"
  python - "${GPU_PYTHON:-}" ${WITH_PYARROW:+pyarrow} > "$WHEELS/wanted.txt" <<'PY'
import importlib.metadata as md
import re
import sys

from packaging.requirements import Requirement

env = {"python_version": sys.argv[1] or f"{sys.version_info[0]}.{sys.version_info[1]}", "extra": ""}


def needs(name):
    for text in md.requires(name) or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate(env):
            yield re.sub(r"[-_.]+", "-", req.name).lower()


def closure(roots):
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            try:
                todo.extend(needs(name))
            except md.PackageNotFoundError:
                seen.discard(name)
    return seen


ours = closure(needs("kosmos-ground")) | closure(["setuptools"])
left = {"numpy", "pyarrow"} - set(sys.argv[2:])  # numpy: the card's torch image has it; pyarrow (54 MB): on request
for name in sorted(ours - closure(["torch"]) - left):
    print(f"{name}=={md.version(name)}")
PY
  pip download -q --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any --python-version "${GPU_PYTHON:-$(python -c 'import sys; print("%d.%d" % sys.version_info[:2])')}" \
    -d "$WHEELS" -r "$WHEELS/wanted.txt"
  du -sh "$WHEELS"
  exit 0
fi

DRY=0
if [[ "${1:-}" == "--dry" ]]; then DRY=1; shift; fi
OUT=${1:-$(mktemp -d)}
mkdir -p "$OUT"
started=$(date +%s)
step() { echo "== $(($(date +%s) - started)) s: $*" | tee -a "$OUT/steps.txt"; }

step "install from $WHEELS (offline)"
if [[ ! -d "$WHEELS" ]]; then
  echo "no $WHEELS: run 'bash benchmarks/gpu.sh --wheels' where there is network, and carry it" | tee -a "$OUT/steps.txt"
  [[ $DRY == 1 ]] || exit 2
fi
if [[ $DRY == 0 ]]; then
  export PIP_NO_INDEX=1 PIP_FIND_LINKS=$WHEELS PIP_DISABLE_PIP_VERSION_CHECK=1
  pip install -q 'setuptools>=68' 2>&1 | tail -3 || true
  if ! pip install -q --no-build-isolation -e . 2>"$OUT/pip.txt"; then
    grep -v "is ignored" "$OUT/pip.txt" | tail -3
    step "a need is neither installed nor among the wheels (above: pyarrow, unless WITH_PYARROW=1 carried it): the wheels, then the project without it"
    pip install -q "$WHEELS"/*.whl
    pip install -q --no-build-isolation --no-deps -e .
  fi
fi
python - <<'PY' | tee "$OUT/versions.txt"
import importlib.metadata as md

for name in ("torch", "transformers", "typer", "accelerate", "pyarrow", "pillow", "kosmos-ground"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "missing")
PY
python -c "from kosmos_cli.model.engine import check_versions; check_versions()" || [[ $DRY == 1 ]]
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  step "no CUDA device here: nothing measured"
  [[ $DRY == 1 ]] && exit 0 || exit 3
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu_name.txt" || true
export NVIDIA_TF32_OVERRIDE=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

step "tests/e2e/test_gpu.py"
PYTHONPATH=$PWD:$PWD/tools timeout 120 python -m pytest -q -p no:cacheprovider -rs tests/e2e/test_gpu.py 2>&1 \
  | tail -25 | tee "$OUT/test_gpu.txt" || true

step "benchmarks/bench_gpu.py"
left=$((400 - ($(date +%s) - started)))
PYTHONPATH=$PWD:$PWD/tools timeout "$left" python benchmarks/bench_gpu.py --out "$OUT" 2>&1 | tee "$OUT/log.txt" || true
step "done"
