#!/usr/bin/env bash
# One look at clamp-track on an NVIDIA GPU, under 5 minutes: does it work, how fast, how busy.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # from the repository root
#
# Runs, each under its own time limit and with the GPU's utilisation sampled by nvidia-smi
# every 200 ms while it runs:
#   1. clamp-track doctor                 (devices, the fp16 pose self-test vs the CPU, crops/s)
#   2. benchmarks/pose_speed.py           (CLAMP vs SimpleBaseline RN50, CUDA fp16, crops/s)
#   3. benchmarks/pipeline_speed.py       (clamp_rn50, end-to-end frames/s, stages, peak memory)
#   4. benchmarks/pipeline_ceiling.py     (the real model: the table, end-to-end frames/s)
#   5. benchmarks/pipeline_ceiling.py     (free forward: the host's ceiling R1 / R10)
# and ends with a summary: per step its exit status, seconds, mean / peak GPU utilisation and
# the lines that carry the figures. Logs and samples go to OUT_DIR (default gpu_check_out/).
# Needs: clamp-track installed in $PYTHON (default: python3), torch with CUDA, nvidia-smi, and
# ../shared/data beside the repository (the benchmarks' real clips). No network.
set -u
cd "$(dirname "$0")/.." || exit 2
OUT_DIR=${1:-gpu_check_out}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

fail() { echo "gpu_check: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: run this on a machine with an NVIDIA GPU"
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
  || fail "$PYTHON has no torch with CUDA; set PYTHON=/path/to/venv/bin/python"
"$PYTHON" -c "import clamp_track" 2>/dev/null \
  || fail "$PYTHON cannot import clamp_track; pip install -e . first"
[ -d ../shared/data/badja-davis ] || fail "../shared/data/badja-davis is missing (the benchmarks' clips)"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT_DIR/gpu.txt"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" \
  | tee -a "$OUT_DIR/gpu.txt"

SUMMARY=()
# step NAME LIMIT_S GREP_PATTERN COMMAND...: run with GPU sampling, keep the figures' lines
step() {
  local name=$1 limit=$2 pattern=$3; shift 3
  local log="$OUT_DIR/$name.log" smi="$OUT_DIR/$name.gpu.csv"
  echo; echo "=== $name: $*"
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits \
    -lms 200 > "$smi" 2>/dev/null &
  local sampler=$! start=$SECONDS
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null
  tail -n 25 "$log"
  local util
  util=$(awk -F', *' '$1 ~ /^[0-9]+$/ {s += $1; n++; if ($1 > m) m = $1; if ($2 > mem) mem = $2}
         END {if (n) printf "GPU busy mean %.0f %%, peak %d %%, memory peak %d MiB (%d samples)",
              s / n, m, mem, n; else print "no GPU samples"}' "$smi")
  [ "$rc" -eq 124 ] && util="TIMED OUT after ${limit} s; $util"
  SUMMARY+=("$name: exit $rc, $((SECONDS - start)) s, $util")
  while IFS= read -r line; do SUMMARY+=("    $line"); done < <(grep -E "$pattern" "$log" | tail -n 14)
}

# the limits add up to 285 s, so the whole check ends within 5 minutes whatever happens
step doctor 40 "cuda|crops/s|FAIL" "$PYTHON" -m clamp_track doctor
step pose_speed 45 "^\| rn50|^device" \
  "$PYTHON" benchmarks/pose_speed.py --backbones rn50 --batches 1 8 32 64 --repeats 5
step pipeline_speed 60 "end to end|stages|pose stage|peak RSS|^model" \
  "$PYTHON" benchmarks/pipeline_speed.py --model clamp_rn50
step ceiling_real_model 100 "^\||^model|^ceiling" \
  "$PYTHON" benchmarks/pipeline_ceiling.py --real-model --repeats 2 --frames 104 --device cuda \
  --clips "$OUT_DIR/clips"
step ceiling_free_forward 40 "^\| 1080p|^model|^ceiling" \
  "$PYTHON" benchmarks/pipeline_ceiling.py --quick --repeats 3 --frames 104 --device cuda \
  --clips "$OUT_DIR/clips"

echo; echo "=== summary (logs in $OUT_DIR)"
cat "$OUT_DIR/gpu.txt"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT_DIR/summary.txt"
