#!/usr/bin/env bash
# Every GPU measurement of issue 5 in one device call: correctness checks, each benchmark with its
# baseline in the same process, and the real training loop (compile, FSDP2) on CUDA through pytest.
# Logs and JSON go to $OUT. Sized to end in ~8.5 minutes on one H100/H200; from the repository root:
#   PYTHONPATH=$PWD/src HF_HUB_OFFLINE=1 bash benchmarks/gpu_suite.sh
# PARTS picks and orders the parts; MODES / VARIANTS / CHECK_MODES narrow them; T_<PART> caps each.
# On CPU (to test the script): SIZE=tiny STEPS=4 PARTS="generate train" bash benchmarks/gpu_suite.sh
set -u
OUT=${OUT:-/tmp/gpu_suite}; mkdir -p "$OUT"
SIZE=${SIZE:-1b}; STEPS=${STEPS:-50}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
t0=$(date +%s)
stamp() { echo "== $1 at +$(( $(date +%s) - t0 )) s"; }

checks() { timeout ${T_CHECKS:-75} python benchmarks/gpu_checks.py 2>&1 | tee "$OUT/checks.log"; }
generate() {
  timeout ${T_GENERATE:-130} python benchmarks/generate.py --size "$SIZE" ${MODES:+--modes $MODES} \
    --json "$OUT/generate.json" 2>&1 | tee "$OUT/generate.log"
}
train() {
  timeout ${T_TRAIN:-190} python benchmarks/train_step.py --size "$SIZE" --steps "$STEPS" ${VARIANTS:+--variants $VARIANTS} \
    --baseline-steps ${BASE_STEPS:-20} --json "$OUT/train.json" 2>&1 | tee "$OUT/train.log"
}
# The real loop on CUDA (compile on by default, bf16 autocast, fast-greedy probes), FSDP2 through
# accelerate launch, the blocker on the GPU: tiny models, pytest.
integration() {
  timeout ${T_INTEGRATION:-120} python -m pytest tests/test_blocker.py tests/test_distributed.py tests/test_fast_greedy.py \
    tests/test_train.py -q -p no:cacheprovider -k "${INT_K:-drives_loss or equals_generate or accumulation or fsdp2 or cuda_matches}" \
    > "$OUT/integration.log" 2>&1
  tail -60 "$OUT/integration.log"  # the whole log (failures' subprocess output included) comes back in $OUT
}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv 2>&1 | tee "$OUT/gpu.txt"
python -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" | tee -a "$OUT/gpu.txt"
for part in ${PARTS:-checks generate train integration}; do
  stamp "$part"
  $part
done
stamp end
