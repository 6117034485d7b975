#!/usr/bin/env bash
# Every GPU measurement of issue 5 in one device call: correctness checks, then each benchmark with its
# baseline in the same process, then the real training loop (compile, FSDP2) on CUDA through pytest.
# Logs and JSON go to $OUT. Sized to end in ~8.5 minutes on one H100; from the repository root:
#   PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 bash benchmarks/gpu_suite.sh
# On CPU (to test the script): SIZE=tiny STEPS=4 T_INT=0 bash benchmarks/gpu_suite.sh
set -u
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
SIZE=${SIZE:-1b}; STEPS=${STEPS:-50}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
stamp() { echo "== $1 at +$(( $(date +%s) - t0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
stamp checks
timeout ${T_CHECKS:-75} python benchmarks/gpu_checks.py 2>&1 | tee "$OUT/checks.log"
stamp generate
timeout ${T_GEN:-130} python benchmarks/generate.py --size "$SIZE" ${MODES:+--modes $MODES} --json "$OUT/generate.json" 2>&1 | tee "$OUT/generate.log"
stamp train
timeout ${T_TRAIN:-190} python benchmarks/train_step.py --size "$SIZE" --steps "$STEPS" ${VARIANTS:+--variants $VARIANTS} --baseline-steps ${BASE_STEPS:-20} --json "$OUT/train.json" 2>&1 | tee "$OUT/train.log"
stamp integration
[ "${T_INT:-120}" = 0 ] && exit 0
# The real loop on CUDA (compile on by default, bf16 autocast, fast-greedy probes), FSDP2 through
# accelerate launch, the blocker on the GPU: tiny models, pytest.
timeout ${T_INT:-120} python -m pytest tests/test_blocker.py tests/test_distributed.py tests/test_fast_greedy.py tests/test_train.py \
  -q -x -p no:cacheprovider -k "drives_loss or equals_generate or accumulation or fsdp2 or cuda_matches" 2>&1 | tail -40 | tee "$OUT/integration.log"
stamp end
