#!/usr/bin/env bash
# Every GPU check of the project in one run, in order of importance, each under its own time
# limit, results appended as JSON lines so a run cut short still reports what it measured:
#   1. pre-training MFU of the 1B dense preset, bf16, seq 2048, FlexAttention over the
#      document block mask (bench/mfu.py; MFU against the bf16 matmul peak measured in the run)
#   2. forge pre-training (Ray Train + DeepSpeed bf16, one GPU worker) vs the plain loop of
#      the same model on the same batches (bench/train_overhead.py)
#   2b. where a trainer step's time goes beyond the plain loop's, per phase and DeepSpeed
#      precision mode, with a profiler table (bench/step_breakdown.py)
#   3. the MoE preset (moe-small), 4. the 1B preset with SDPA + a dense mask (what FlexAttention
#      replaces), 5. HF-engine rollout tokens/s (and vLLM's where vLLM is installed),
#   6. the 1B preset with torch.compile per decoder layer.
# GPU_CHECK_STEPS="mfu_1b_flex overhead_1b" runs only the steps named.
# Full output in OUT/gpu_check.log, results in OUT/results.jsonl, the table in OUT/table.md.
#
# On a GPU machine with forge installed:   bash bench/gpu_check.sh [OUT_DIR]
# On a bare image with only PyTorch:       put wheels of the missing packages in .whl/ (Ray,
#   DeepSpeed and their pure-Python needs); they are installed to /tmp/site first.
# CPU:  not meaningful (use bench/mfu.py and bench/train_overhead.py with their CPU examples).
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-./gpu_check_out}}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
RES=$OUT/results.jsonl
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} RAY_USAGE_STATS_ENABLED=0
T0=$(date +%s)

if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >>"$LOG" 2>&1 && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi

step() {  # step NAME LIMIT_S COMMAND…: run, keep the output, append its JSON line(s) to RES
  local name=$1 limit=$2; shift 2
  if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then return; fi
  echo "=== $name (limit ${limit}s, at +$(( $(date +%s) - T0 ))s)" | tee -a "$LOG"
  local t=$(date +%s)
  timeout -k 10 "$limit" "$@" >"$OUT/$name.out" 2>&1
  local rc=$?
  cat "$OUT/$name.out" >>"$LOG"
  grep -h '^{' "$OUT/$name.out" | tail -1 | $PY -c "
import json, sys
line = sys.stdin.read().strip()
row = json.loads(line) if line else {}
row.update(step='$name', rc=$rc, wall_s=$(( $(date +%s) - t )))
print(json.dumps(row))" >>"$RES"
  echo "--- $name rc=$rc in $(( $(date +%s) - t ))s" | tee -a "$LOG"
  rm -f "$OUT/$name.out"
}

{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'transformers', transformers.__version__)"
  $PY -c "import ray, deepspeed; print('ray', ray.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tail -1
  $PY -c "import vllm; print('vllm', vllm.__version__)" 2>&1 | tail -1
} >"$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt" | tee -a "$LOG"

step mfu_1b_flex 150 $PY bench/mfu.py --preset 1b --seq-len 2048 --batch 8 --attention flex --steps 12
step step_breakdown 200 $PY bench/step_breakdown.py --preset 1b --seq-len 2048 --batch 8 --vocab 2048 --steps 6
step overhead_1b 330 $PY bench/train_overhead.py --preset 1b --gpu --seq-len 2048 --batch 8 --workers 1 \
  --steps 16 --warmup 4 --threads 8 --copies 4
step mfu_moe_small 150 $PY bench/mfu.py --preset moe-small --seq-len 2048 --batch 8 --steps 10
step mfu_1b_sdpa 120 $PY bench/mfu.py --preset 1b --seq-len 2048 --batch 8 --attention sdpa --steps 10
step rollout_125m 150 $PY bench/rollout.py README.md --preset 125m --gpus 1 --prompts 16 --n 2 --max-tokens 32 --repeats 1
step mfu_1b_compile 240 $PY bench/mfu.py --preset 1b --seq-len 2048 --batch 8 --attention flex --compile --steps 12

$PY - "$RES" "$OUT/machine.txt" <<'EOF' | tee "$OUT/table.md" | tee -a "$LOG"
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print("machine: " + " | ".join(open(sys.argv[2]).read().split("\n")[:3]))
print()
print("| check | result | rc | wall s |")
print("| --- | --- | --- | --- |")
for r in rows:
    if r.get("bench") == "mfu":
        what = (f"{r['preset']} {r['attention']}{' +compile' if r['compile'] else ''} {r['precision']}: "
                f"{r['tokens_per_s']:,.0f} tok/s, MFU {r['mfu']:.1%} (peak {r['peak_tflops']:.0f} TF/s, "
                f"{r.get('max_memory_gb', 0):.0f} GiB)")
    elif r.get("bench") == "train_overhead":
        f = r["forge"]["1"]
        what = (f"plain {r['plain_tokens_per_s']:,.0f} tok/s; forge (Ray Train + DeepSpeed) {f['tokens_per_s']:,.0f} "
                f"tok/s = {f['tokens_per_s'] / r['plain_tokens_per_s']:.3f}x, MFU {f['mfu']:.1%}")
    elif r.get("bench") == "step_breakdown":
        v = r["variants"]
        base = v.get("plain", {}).get("step_s", float("nan"))
        what = "; ".join(f"{k} {x['step_s'] * 1e3:.0f} ms ({base / x['step_s']:.3f}x)" for k, x in v.items())
        what += "".join(f"; {k} FAILED" for k in r.get("failed", {}))
    elif "hf_tokens_per_s" in r:
        what = f"HF engine {r['hf_tokens_per_s']:,.0f} tok/s; vLLM {r['vllm_tokens_per_s']}; ratio {r['vllm_over_hf']}"
    else:
        what = "failed: see gpu_check.log"
    print(f"| {r['step']} | {what} | {r['rc']} | {r['wall_s']} |")
EOF
