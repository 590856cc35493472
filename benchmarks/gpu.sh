#!/usr/bin/env bash
# One prepared GPU run (under 8 minutes on one H100/H200): the fast decoder (CUDA graphs on and off) against
# generate, full-size Kosmos-2; the attention kernels, the vision encoder, the loader; agreement on the card.
#   bash benchmarks/gpu.sh OUTDIR
# The same script without a card, every part on the CPU at toy sizes (shows it runs):
#   python benchmarks/bench_gpu.py --out OUTDIR --smoke
# Needs torch, transformers, accelerate, pyarrow, pillow and typer installed; installs this project without deps.
# Writes OUTDIR/gpu.json and OUTDIR/gpu.md. Not run on the development VM (no GPU): see benchmarks/README.md.
set -euo pipefail
OUT=${1:?usage: benchmarks/gpu.sh OUTDIR}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
pip install -q --no-deps -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader > "$OUT/gpu_name.txt" || true
timeout 450 python benchmarks/bench_gpu.py --out "$OUT" 2>&1 | tee "$OUT/log.txt"
