#!/usr/bin/env bash
# Every GPU measurement docs/benchmarks.md records, in one run with its own time limits, logs under $OUT (or ./gpu-logs).
# On a lent GPU machine: source .gpu/setup.sh && bash benchmarks/gpu_checks.sh   (build .gpu/ with
# ../shared/gpu/make-bundle first; the CRF families table, which needs pydensecrf, is benchmarks/crf.py's job on any
# machine). Test it on a CPU machine with DEVICE=cpu IMAGES=32 DISTINCT=8 CRF_IMAGES=8 SIZE=128 BACKBONE=resnet50
# ITERATIONS=8 EVAL_IMAGES=16.
set -uo pipefail
out=${OUT:-gpu-logs}
mkdir -p "$out"
device=${DEVICE:-cuda}
images=${IMAGES:-2048}
distinct=${DISTINCT:-256}
crf_images=${CRF_IMAGES:-512}
size=${SIZE:-512}
backbone=${BACKBONE:-resnet101}
iterations=${ITERATIONS:-60}
eval_images=${EVAL_IMAGES:-512}
# All of them take ~18 minutes on an H100 machine: within one 600 s device call, run a subset, e.g.
# CHECKS="segment cold-start train", CHECKS="crf-scaling segment-crf" (within their limits: 480 and 560 s).
checks=${CHECKS:-segment cold-start train msc crf-scaling segment-crf crf-nodes}
cpus=$(nproc)
# The .gpu bundle ships Ray's package without its `ray` command, which cluster.local (crf-scaling's 2 nodes) runs.
if ! command -v ray >/dev/null; then
  mkdir -p /tmp/ray-cli
  printf '#!/usr/bin/env python3\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n' >/tmp/ray-cli/ray
  chmod +x /tmp/ray-cli/ray && export PATH="/tmp/ray-cli:$PATH"
fi
export PYTHONUNBUFFERED=1
(nvidia-smi; lscpu) >"$out/device.log" 2>&1  # lscpu: threads per core, caches (the CRF stage's scaling)
run() {  # run NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  [[ " $checks " == *" $name "* ]] || return 0
  echo "== $name: $*" | tee -a "$out/summary.log"
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo "exit $? ($name)" >>"$out/summary.log"
  grep -v -e 'INFO' -e 'WARNING' -e 'core_worker' -e 'network_util' -e '^\s*$' "$out/$name.log" | tail -n 14 \
    >>"$out/summary.log"
}
run segment 230 python -m benchmarks.segment --device "$device" --precision auto --images "$images" \
  --distinct "$distinct" --eval-images "$eval_images" --size "$size" --backbone "$backbone" --output-stride 8
run segment-crf 200 python -m benchmarks.segment --device "$device" --precision auto --images "$crf_images" \
  --distinct 64 --crf-images "$crf_images" --no-segment --no-evaluate --size "$size" \
  --backbone "$backbone" --output-stride 8
run cold-start 140 python -m benchmarks.cold_start --device "$device" --size "$size" --backbone "$backbone"
run train 110 python -m benchmarks.train --device "$device" --amp --iterations "$iterations" --backbone "$backbone"
run msc 60 python -m benchmarks.train --device "$device" --amp --msc-only --backbone "$backbone" --crop-size 321 \
  --batch-size 10
# One Ray node, against N plain processes without Ray (~4 min); then the same split over two Ray nodes (~4 min).
run crf-scaling 360 python -m benchmarks.crf --families "" --trained-iterations 0 --size "$size" --per-cpu 30 \
  --cpu-counts "$((cpus / 2)),$cpus" --nodes 1
run crf-nodes 360 python -m benchmarks.crf --families "" --trained-iterations 0 --size "$size" --per-cpu 30 \
  --cpu-counts "$((cpus / 2)),$cpus" --nodes 2
