#!/usr/bin/env bash
# ONE prepared command for a lent GPU machine: the torch backend's GPU tests, golden parity and
# low-precision numbers, and bench_gpu.py on the torch backend; prints one JSON summary line.
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine (about 6 minutes on an H200)
#   bash benchmarks/gpu_check.sh --runtime cpu    # the same plumbing on a CPU, tiny sizes (the default tests run this)
#
# Nothing is installed: the repository is put on PYTHONPATH and the machine's own python3 (with
# torch) runs it. What it needs besides torch: numpy, opencv-python-headless, pytest, fsspec,
# pyarrow; pycocotools, ray and onnxruntime-gpu are not needed. The shared test data is looked for
# in $YOLACT_BATCH_SHARED, then ../shared, then ./shared: a device call carries only the checkout,
# so first run `python benchmarks/gpu_bundle.py` where ../shared exists, which copies the few
# files needed (golden JSON, one golden .npz, the checkpoint recipes, 40 COCO images; ~20 MB) into
# ./shared (git-ignored).
#
# With $OUT set, every step's output lands there: env.json, tests.log, tests.xml, parity.json,
# bench.json, summary.json. Each step has its own time limit, so one hang cannot eat the budget.
set -uo pipefail

RUNTIME=cuda
while [ $# -gt 0 ]; do
  case "$1" in
    --runtime) RUNTIME="$2"; shift 2 ;;
    *) echo "usage: $0 [--runtime cuda|cpu]" >&2; exit 2 ;;
  esac
done
case "$RUNTIME" in cuda|cpu) ;; *) echo "--runtime must be cuda or cpu, got $RUNTIME" >&2; exit 2 ;; esac

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -z "${YOLACT_BATCH_SHARED:-}" ]; then
  for candidate in "$REPO/../shared" "$REPO/shared"; do
    if [ -d "$candidate/golden" ]; then export YOLACT_BATCH_SHARED="$(cd "$candidate" && pwd)"; break; fi
  done
fi
DIR="${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$DIR"
cd "$REPO"

if [ "$RUNTIME" = cuda ]; then
  BENCH=(--runtime torch-cuda --models "yolact_resnet50,yolact_base" --batches 1,8,32 --precision fp16
         --seconds "${BENCH_SECONDS:-4}" --workers "${BENCH_WORKERS:-8}" --compare-compile)
  if "$PY" -c "from yolact_batch.core.configs import get_config; get_config('yolact_plus_resnet50')" 2>/dev/null; then
    BENCH[2]="yolact_resnet50,yolact_base,yolact_plus_resnet50"
  fi
  TEST_LIMIT=240 BENCH_LIMIT=330
else
  BENCH=(--runtime torch-cpu --models yolact_shapes --batches 1,2 --precision fp32 --seconds 0.5 --workers 1)
  TEST_LIMIT=120 BENCH_LIMIT=240
fi

# 1. What this machine is.
timeout 60 "$PY" - >"$DIR/env.json" 2>"$DIR/env.err" <<'EOF'
import json, os, platform
import torch
cuda = torch.cuda.is_available()
print(json.dumps({
    "python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if cuda else None, "cuda_available": cuda,
    "device": torch.cuda.get_device_name(0) if cuda else None, "cpu_count": os.cpu_count(),
    "shared": os.environ.get("YOLACT_BATCH_SHARED"),
}))
EOF
echo "env rc=$? $(cat "$DIR/env.json" 2>/dev/null)" >&2

# 2. The gpu-marked tests (golden parity in fp32, fp16/bf16 against fp32, streaming, CUDA graphs);
#    they record their numbers in parity.json.
YOLACT_BATCH_GPU_REPORT="$DIR/parity.json" timeout "$TEST_LIMIT" "$PY" -m pytest -m gpu tests/backends \
  -q -p no:cacheprovider --continue-on-collection-errors --junitxml="$DIR/tests.xml" >"$DIR/tests.log" 2>&1
TESTS_RC=$?
tail -n 15 "$DIR/tests.log" >&2

# 3. Throughput: model-only and end-to-end img/s, their ratio, GPU utilisation, host ms per image.
timeout "$BENCH_LIMIT" "$PY" benchmarks/bench_gpu.py "${BENCH[@]}" >"$DIR/bench.json" 2>"$DIR/bench.err"
BENCH_RC=$?
tail -n 5 "$DIR/bench.err" >&2

# 4. One line.
"$PY" benchmarks/gpu_summary.py --dir "$DIR" --runtime "$RUNTIME" --tests-rc "$TESTS_RC" --bench-rc "$BENCH_RC" \
  | tee "$DIR/summary.json"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
