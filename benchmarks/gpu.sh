#!/usr/bin/env bash
# The GPU checks, as one prepared script for a machine with a CUDA device (the project's
# lent accelerator, or yours): the test suite (its CUDA tests run instead of skipping), the
# loss and training benchmarks on the GPU (float32 and TF32, eager and compiled), the CIFAR-10
# recipe and tuned run on the GPU, the kink study on the GPU (its exact-tie counts in
# float32 with TF32 matmuls on and off), and training from a memory-mapped file (bench_scale).
#   bash benchmarks/gpu.sh [OUT_DIR]        # writes OUT_DIR/{tests,bench_*,train_*,kinks_*}.*
#   QUICK=1 bash benchmarks/gpu.sh [OUT_DIR] # skips the kink study, the 8000-iteration runs and
#                                            # the 4.1 GB file: for a lent machine's 10-minute call
# Needs a CUDA build of torch; builds CIFAR-10 from ../shared/cifar10 when it is there.
set -uo pipefail
out=${1:-${OUT:-gpu-results}}
mkdir -p "$out"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.cuda.get_device_name())" | tee "$out/device.txt" || exit 1
pip install -q -e ".[test]" >/dev/null 2>&1 || pip install -q -e . || exit 1
python -m pytest -q -rs 2>&1 | tail -25 | tee "$out/tests.txt"
python benchmarks/bench_loss.py --device cuda --repeat 20 2>&1 | tee "$out/bench_cuda_f32.txt"
python benchmarks/bench_loss.py --device cuda --repeat 20 --dtype float64 --no-memory 2>&1 | tee "$out/bench_cuda_f64.txt"
# compiled (CUDA graphs) next to eager, in float32 and with TF32 matmuls
python benchmarks/bench_loss.py --device cuda --repeat 20 --compile --no-memory 2>&1 | tee "$out/bench_cuda_f32_compiled.txt"
python benchmarks/bench_loss.py --device cuda --repeat 20 --compile --tf32 --no-memory 2>&1 | tee "$out/bench_cuda_tf32_compiled.txt"
if [ -f ../shared/cifar10/build.py ]; then
  pip install -q pillow >/dev/null 2>&1
  python ../shared/cifar10/build.py /tmp/cifar >/dev/null
  data="--data cifar10 --data-dir /tmp/cifar --num-test 10000"
  for dev in cuda cpu; do
    torch-svm train $data --lr 1e-7 --reg 2.5e4 --iters 1500 --device $dev --json > "$out/train_recipe_$dev.json"
    [ -n "${QUICK:-}" ] || torch-svm train $data --lr 1e-7 --reg 1e3 --iters 8000 --device $dev --json > "$out/train_tuned_$dev.json"
  done
  torch-svm verify tests/mutants.py:correct_vectorized --data cifar10 --data-dir /tmp/cifar --json > "$out/verify_cifar.json"
  [ -n "${QUICK:-}" ] || torch-svm kinks --device cuda --data-dir /tmp/cifar --out "$out/kinks_cuda" --json > "$out/kinks_cuda.json"  # ties with TF32 on and off
  cifar="--data-dir /tmp/cifar"
fi
# whole training runs: torch-svm's rows on the GPU (eager and compiled), float32 then TF32;
# the numpy and scikit-learn rows are CPU-only and measured on the project machine
for tf32 in "" "--tf32"; do
  python benchmarks/bench_train.py --device cuda --compile --methods torch --no-busy ${cifar:-} $tf32 \
    2>&1 | tee "$out/bench_train_cuda${tf32:+_tf32}.md"
done
# your own data at linear-probe shape (N x 512 float32, 1,000 classes) trained from a memory
# map: minibatches gathered on the CPU, SGD and the full evaluation on the GPU; then N = 2e6 (4.1 GB)
python benchmarks/bench_scale.py --device cuda 2>&1 | tee "$out/bench_scale_cuda.md"
[ -n "${QUICK:-}" ] || python benchmarks/bench_scale.py --device cuda --big --dir /tmp 2>&1 | tee "$out/bench_scale_cuda_big.md"
torch-svm check --device cuda --dtype float32 | tail -3 | tee "$out/check_cuda.txt"
# the CPU-only step paths on that machine's cores (oneDNN's float32 GEMMs, the sparse X^T B):
# the gradient's GEMM against its sparse path by density, and the CPU rows at linear-probe shape
python benchmarks/bench_loss.py --sparse 2>&1 | tee "$out/bench_sparse_cpu.md"
[ -n "${QUICK:-}" ] || python benchmarks/bench_scale.py --compare --iters 1500 2>&1 | tee "$out/bench_scale_compare_cpu.md"
