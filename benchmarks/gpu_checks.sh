#!/usr/bin/env bash
# Every GPU measurement the README asks for, in one run with its own time limits, logs under $OUT (or ./gpu-logs).
# On a lent GPU machine: GPU_PYDENSECRF=1 source .gpu/setup.sh && bash benchmarks/gpu_checks.sh   (build .gpu/ with
# ../shared/gpu/make-bundle first). Test it on a CPU machine with DEVICE=cpu IMAGES=16 SIZE=128 BACKBONE=resnet50.
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
device=${DEVICE:-cuda}
images=${IMAGES:-512}
size=${SIZE:-512}
backbone=${BACKBONE:-resnet101}
export PYTHONUNBUFFERED=1
(nvidia-smi || true) >"$out/device.log" 2>&1
run() {  # run NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*" | tee -a "$out/summary.log"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "exit $? ($name)" >>"$out/summary.log"
  grep -v -e 'INFO' -e 'WARNING' -e 'core_worker' -e '^\s*$' "$out/$name.log" | tail -n 14 >>"$out/summary.log"
}
run segment-bf16 200 python -m benchmarks.segment --device "$device" --precision auto --images "$images" \
  --size "$size" --backbone "$backbone" --output-stride 8
run segment-fp32 100 python -m benchmarks.segment --device "$device" --precision fp32 --images "$((images / 4))" \
  --size "$size" --backbone "$backbone" --output-stride 8 --no-evaluate
run train 120 python -m benchmarks.train --device "$device" --amp --iterations 40 --backbone "$backbone"
run crf-scaling 240 python -m benchmarks.crf --images 2 --families confident,uncertain --per-cpu 30
