#!/usr/bin/env bash
# GPU check: the benchmark suite on the GPU, then a 2-epoch phase 1 + phase 2 on the VND export at
# 640 px with --cache ram, and one table of everything at the end.
#
#   SMARTCASH_VND_DATA=/path/to/vnd/data.yaml bash benchmarks/gpu_check.sh [DEVICE]
#
# DEVICE defaults to cuda. Results go to benchmarks/results/gpu/ (SMARTCASH_BENCH_RESULTS), apart
# from the CPU files the README quotes; the training runs to benchmarks/results/gpu/runs/. The
# install benchmark is left out: it downloads every package, and a GPU machine may be offline.
set -euo pipefail
cd "$(dirname "$0")/.."
device="${1:-cuda}"
out="${SMARTCASH_GPU_CHECK_DIR:-benchmarks/results/gpu}"
vnd="${SMARTCASH_VND_DATA:?set SMARTCASH_VND_DATA to the data.yaml of the VND export}"
python="${PYTHON:-python}"
export SMARTCASH_BENCH_RESULTS="$out" YOLO_OFFLINE=1
mkdir -p "$out"
start=$(date +%s)
suite_rc=0  # a failing benchmark must not cost the training runs and the table: report it at the end
"$python" -m benchmarks --device "$device" --only map,extractor,validation,loader,training ${GPU_CHECK_SUITE_FLAGS:-} \
  || suite_rc=$?
suite=$(( $(date +%s) - start ))
train=("$python" -m smartcash.train --data "$vnd" --imgsz "${GPU_CHECK_IMGSZ:-640}" --epochs "${GPU_CHECK_EPOCHS:-2}"
       --device "$device" --cache ram --project "$out/runs" --name vnd --patience 0)
rm -rf "$out/runs/train/vnd"
"${train[@]}" --phase 1
"${train[@]}" --phase 2
echo
echo "suite: ${suite} s; all: $(( $(date +%s) - start )) s"
"$python" -m benchmarks.summary_table "$out" --runs "$out/runs"
if [ "$suite_rc" -ne 0 ]; then echo "a benchmark of the suite failed (exit $suite_rc): see above" >&2; fi
exit "$suite_rc"
