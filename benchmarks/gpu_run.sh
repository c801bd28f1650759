#!/usr/bin/env bash
# One-shot GPU figures: ResNet-50, VT-R50, ResNet-18 and VT-R18 train steps in bfloat16 at
# batch 256, MFU against the nominal dense bfloat16 peak (989 TFLOP/s on H100/H200), in both
# layer forms (`model.layers`: the default 'auto' runs the plain flax layers on a GPU; then
# 'tuned', the CPU-tuned forms), so that 'auto' can follow what is faster there. Written for a machine with no
# network, no TensorFlow, no clu and no ml_collections, where this checkout arrives with
# `.whl/` (git-ignored) holding the pure wheels vt_jax needs beyond jax/flax/optax/orbax:
#
#   pip download --no-deps -d .whl ml-collections==1.1.0 absl-py==2.5.1
#   pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux2014_x86_64 -d .whl PyYAML==6.0.4
#
# Usage (repository root):  OUT=/some/dir bash benchmarks/gpu_run.sh [extra train_step flags]
# Extra flags override the defaults below (absl: the last value wins), e.g. a CPU dry run:
#   JAX_PLATFORMS=cpu bash benchmarks/gpu_run.sh --configs=quickstart:width=4 \
#       --resolution=32 --batch=8 --dtypes=float32
# Writes to $OUT: env.txt, train_step.log, train_step.json (the benchmark's JSON object),
# tuned.log and tuned.json (the same with --layers=tuned; best effort, cut off after 150 s),
# breakdown.log (per-stage times; best effort, cut off after 90 s). Budget: < 9 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu_out}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# Install only what is missing, from the local wheels (no index: there is no network).
missing=$(python - <<'EOF'
import importlib.util
need = {"ml_collections": "ml-collections", "absl": "absl-py", "yaml": "PyYAML"}
print(" ".join(pip for mod, pip in need.items() if importlib.util.find_spec(mod) is None))
EOF
)
if [ -n "$missing" ]; then
  echo "installing from .whl/: $missing"
  python -m pip install --quiet --no-index --find-links=.whl $missing || {
    echo "gpu_run.sh: could not install $missing from .whl/ (see the header for the" \
         "pip download commands that fill it)" >&2; exit 2; }
fi

{ date -u; python --version; nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv 2>/dev/null
  python -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__); print(jax.devices())"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

CONFIGS=--configs=resnet50,vt_r50,resnet18,vt_r18

# 1. The figures: the real train step, bfloat16, batch 256, median of 20 steps; with them,
#    ResNet-50's and ResNet-18's steps without stage 5 (the VT speed-up bound: 2 more compiles).
timeout 270 python benchmarks/train_step.py "$CONFIGS" --dtypes=bfloat16 \
  --batch=256 --steps=20 --nobreakdown --json "$@" 2>"$OUT/train_step.stderr" \
  | tee "$OUT/train_step.log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  echo "gpu_run.sh: the benchmark failed (exit $rc); stderr tail:" >&2
  tail -30 "$OUT/train_step.stderr" >&2
  exit "$rc"
fi
tail -1 "$OUT/train_step.log" > "$OUT/train_step.json"

# 2. The same steps with the CPU-tuned layer forms (best effort; no bound, to save time).
timeout 150 python benchmarks/train_step.py "$CONFIGS" --dtypes=bfloat16 \
  --batch=256 --steps=10 --nobreakdown --nospeedup_bound --json --layers=tuned "$@" 2>"$OUT/tuned.stderr" \
  | tee "$OUT/tuned.log" \
  || echo "gpu_run.sh: the tuned-layers run was cut off or failed; the figures above stand"
tail -1 "$OUT/tuned.log" > "$OUT/tuned.json"

# 3. Where the time goes per stage (best effort: its absence does not fail the run).
timeout 90 python benchmarks/train_step.py "$CONFIGS" --dtypes=bfloat16 \
  --batch=256 --notrain_step --quick "$@" > "$OUT/breakdown.log" 2>"$OUT/breakdown.stderr" \
  || echo "gpu_run.sh: breakdown cut off or failed (exit $?); the figures above stand"
cat "$OUT/breakdown.log"
exit 0
