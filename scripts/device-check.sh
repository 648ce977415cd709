#!/usr/bin/env bash
# The one prepared command for a GPU machine (issue 6, DESIGN.md §5): makes the device build
# (PAGODA_SERVER=OFF, PAGODA_CUDA=ON, architecture from the card), builds and runs the CUDA
# tests, prints `nvidia-smi -L` and, last, a short table (also written to $OUT/device-check.md
# when $OUT is set, with the logs beside it). Aims to finish in well under 8 minutes on an H100.
#
# The GPU machine has CUDA, CMake and ninja but no GoogleTest, nlohmann_json or network. Bring
# them first, here:   scripts/vendor_googletest.sh        (fills the ignored third_party/)
# then, from the session (device tool):
#   run(command="bash scripts/device-check.sh", carry=["third_party"], timeout_s=540)
# (carry ["third_party/googletest", "third_party/nlohmann_json"] is the same thing, spelled out.)
#
# NOTE: written without a GPU; never run on a GPU machine in the session that wrote it. The
# configure and build steps were tried on a machine with nvcc 13 and no device.
#
# What it runs: every CUDA test (ops against their CPU twins, stories260K against llama2.c,
# the Engine on the GPU against the CPU), compute-sanitizer memcheck/racecheck on the op tests,
# then the benchmark.
# Environment: BUILD_DIR (default build-device), JOBS (default nproc), TEST_TIMEOUT_S (300).
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
build="${BUILD_DIR:-build-device}"
jobs="${JOBS:-$(nproc)}"
test_timeout="${TEST_TIMEOUT_S:-300}"
logs="${OUT:-$build/logs}"
mkdir -p "$build" "$logs"
t_start=$(date +%s)

declare -a rows=()
declare -a bench_tables=()
elapsed() { echo "$(($(date +%s) - $1)) s"; }

# The table so far, rewritten after every row: a run cut off by the caller's time limit still
# leaves what it found in $OUT/device-check.md.
write_table() {
  {
    echo "## pagoda device check — $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "| step | result |"
    echo "|---|---|"
    printf '%s\n' "${rows[@]}"
    echo "| ${1:-so far} | $(elapsed "$t_start") |"
    for f in "${bench_tables[@]}"; do
      echo
      echo "### $(basename "$f" .md)"
      echo
      cat "$f"
    done
  } >"$logs/device-check.md.tmp" && mv "$logs/device-check.md.tmp" "$logs/device-check.md"
}
row() {
  rows+=("| $1 | $2 |")
  write_table
}

finish() {
  write_table total
  echo
  cat "$logs/device-check.md"
  exit "$1"
}

# ---- the card --------------------------------------------------------------------------
echo "== nvidia-smi -L"
nvidia-smi -L 2>&1 | tee "$logs/nvidia-smi.txt"
card="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')"
case "$cc" in
  9.0) arch="90a" ;;
  8.*) arch="80" ;;
  "") arch="80;90a" ;;
  *) arch="${cc/./}" ;;
esac
row card "${card:-none found} (compute capability ${cc:-?}, built for sm_${arch})"

if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
row nvcc "$(nvcc --version 2>/dev/null | grep -o 'release [0-9.]*' || echo 'not found')"

# ---- GoogleTest from third_party/ into a local prefix -------------------------------------
prefix_path="$root/third_party/nlohmann_json"
if [[ -f third_party/googletest/CMakeLists.txt ]]; then
  t=$(date +%s)
  gtest_prefix="$root/$build/_gtest"
  if [[ ! -f "$gtest_prefix/lib/cmake/GTest/GTestConfig.cmake" ]]; then
    echo "== building GoogleTest from third_party/googletest"
    if cmake -S third_party/googletest -B "$build/_gtest_build" -G Ninja \
      -DCMAKE_BUILD_TYPE=Release -DBUILD_GMOCK=OFF -DINSTALL_GTEST=ON \
      -DCMAKE_INSTALL_PREFIX="$gtest_prefix" -DCMAKE_INSTALL_LIBDIR=lib >"$logs/gtest.log" 2>&1 &&
      cmake --build "$build/_gtest_build" -j "$jobs" >>"$logs/gtest.log" 2>&1 &&
      cmake --install "$build/_gtest_build" >>"$logs/gtest.log" 2>&1; then
      row googletest "built from third_party ($(elapsed "$t"))"
    else
      tail -20 "$logs/gtest.log"
      row googletest "FAILED to build (see gtest.log)"
      finish 1
    fi
  else
    row googletest "reused $build/_gtest"
  fi
  prefix_path="$gtest_prefix;$prefix_path"
else
  row googletest "no third_party/googletest (run scripts/vendor_googletest.sh, carry third_party)"
fi

# find_package(PkgConfig REQUIRED) in the top-level CMakeLists: without pkg-config (the GPU
# machine may lack it) a stub that knows no package lets the configure go on (SentencePiece
# then counts as absent, which the device build does not need).
extra=()
if ! command -v pkg-config >/dev/null; then
  stub="$root/$build/pkg-config-stub"
  printf '#!/bin/sh\n[ "$1" = "--version" ] && { echo 0.29.2; exit 0; }\nexit 1\n' >"$stub"
  chmod +x "$stub"
  extra+=("-DPKG_CONFIG_EXECUTABLE=$stub")
fi

# ---- configure and build ----------------------------------------------------------------
echo "== configure ($build, sm_$arch)"
t=$(date +%s)
if ! cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DPAGODA_SERVER=OFF \
  -DPAGODA_CUDA=ON -DPAGODA_BENCH=ON -DPAGODA_TESTS=ON -DCMAKE_CUDA_ARCHITECTURES="$arch" \
  -DCMAKE_PREFIX_PATH="$prefix_path" "${extra[@]}" >"$logs/configure.log" 2>&1; then
  tail -30 "$logs/configure.log"
  row configure "FAILED (see configure.log)"
  finish 1
fi
row configure "ok ($(elapsed "$t"))"

echo "== build pagoda_cuda_tests pagoda-bench"
t=$(date +%s)
if ! timeout 360 cmake --build "$build" -j "$jobs" --target pagoda_cuda_tests pagoda-bench \
  >"$logs/build.log" 2>&1; then
  grep -E "error|FAILED" "$logs/build.log" | head -30
  row build "FAILED (see build.log)"
  finish 1
fi
row build "ok ($(elapsed "$t"))"

# ---- the CUDA tests ---------------------------------------------------------------------
bin="$(find "$build/tests" -name pagoda_cuda_tests -type f -perm -u+x | head -1)"
# One process per test suite: a kernel that faults (an illegal address poisons the CUDA context)
# takes down its own suite only, and the table still says how every other suite did.
echo "== $bin, one process per suite"
t=$(date +%s)
: >"$logs/cuda_tests.log"
mkdir -p "$logs/cuda_tests"
crashed=()
timed_out=()
mapfile -t suites < <("$bin" --gtest_list_tests 2>/dev/null | grep -v '^ ' | grep '\.$' | sed 's/\.$//')
for suite in "${suites[@]}"; do
  if (($(date +%s) - t > test_timeout)); then
    timed_out+=("$suite (not started)")
    continue
  fi
  safe="${suite//\//_}"
  timeout "${SUITE_TIMEOUT_S:-150}" "$bin" --gtest_color=no --gtest_filter="${suite}.*" \
    --gtest_output="xml:$logs/cuda_tests/$safe.xml" >"$logs/cuda_tests/$safe.log" 2>&1
  src=$?
  cat "$logs/cuda_tests/$safe.log" >>"$logs/cuda_tests.log"
  if [[ $src -eq 124 ]]; then
    timed_out+=("$suite")
  elif [[ $src -ne 0 && $src -ne 1 ]]; then
    crashed+=("$suite (exit $src)")
  fi
done
grep -E "^\[  FAILED  \]|Failure" "$logs/cuda_tests.log" | head -40
passed="$(grep -c '^\[       OK \]' "$logs/cuda_tests.log")"
failed="$(grep -c '^\[  FAILED  \] .*(' "$logs/cuda_tests.log")"
skipped="$(grep -c '^\[  SKIPPED \] .*(' "$logs/cuda_tests.log")"
status="ok"
rc=0
if ((failed > 0 || ${#crashed[@]} > 0 || ${#timed_out[@]} > 0)); then
  status="FAILED"
  rc=1
fi
row "cuda tests" "$status: $passed passed, $failed failed, $skipped skipped, ${#suites[@]} suites ($(elapsed "$t"))"
((${#crashed[@]} > 0)) && row "  crashed suites" "${crashed[*]}"
((${#timed_out[@]} > 0)) && row "  timed-out suites" "${timed_out[*]}"
for suite in CudaMatmul CudaRmsNorm CudaAttention CudaSample CudaLogprobs EngineGpuTest; do
  p="$(grep -c "^\[       OK \] [A-Za-z0-9_/]*${suite}" "$logs/cuda_tests.log")"
  f="$(grep -c "^\[  FAILED  \] [A-Za-z0-9_/]*${suite}.*(" "$logs/cuda_tests.log")"
  row "  $suite*" "$p passed, $f failed"
done
overall=$rc

# ---- the benchmark: llama3-1b (and llama3-8b while time allows), ceilings in the same run ---
# llama3-1b-tc: the same prefill with the opt-in tensor-core prefill attention
# (PAGODA_CUDA_TC_PREFILL=1), one decode batch only; its prefill row sits beside llama3-1b's.
bench_bin="$build/bench/pagoda-bench"
bench_runs=(
  "llama3-1b|llama3-1b|0|1,8,32,64,128,256|32|180"
  "llama3-1b-tc|llama3-1b|1|1|4|90"
  "llama3-8b|llama3-8b|0|1,8,32,64,128,256|32|240"
)
for run in "${bench_runs[@]}"; do
  IFS='|' read -r name shape tc batches steps limit <<<"$run"
  if [[ $shape == llama3-8b ]] && (($(date +%s) - t_start > ${BENCH_8B_BEFORE_S:-240})); then
    row "bench $name" "skipped: $(elapsed "$t_start") already spent"
    continue
  fi
  echo "== pagoda-bench device --shape $shape (tensor-core prefill: $tc)"
  t=$(date +%s)
  PAGODA_CUDA_TC_PREFILL="$tc" timeout "$limit" "$bench_bin" device --shape "$shape" \
    --batches "$batches" --context 1024 --prompt-len 2048 --decode-steps "$steps" \
    --json "$logs/bench-device-$name.json" \
    >"$logs/bench-device-$name.md" 2>"$logs/bench-device-$name.log"
  brc=$?
  if [[ $brc -eq 0 ]]; then
    bench_tables+=("$logs/bench-device-$name.md")
    row "bench $name" "ok ($(elapsed "$t")): bench-device-$name.md / .json"
  else
    tail -5 "$logs/bench-device-$name.log"
    row "bench $name" "FAILED (exit $brc, see bench-device-$name.log)"
    overall=1
  fi
done

# ---- the serving mix through the Engine (issue 7): many requests at once, output tokens/s ----
# llama3-1b only (8b would not fit the device time): 128 in / 512 out (also with async
# scheduling, side by side) and 2048 in / 128 out, greedy; then 128 / 512 sampled (T 0.8,
# top-p 0.95) on the device and on the host sampler; then 128 / 128 sampled with 5 logprobs per
# token from the logprobs op (device sampling) and from logits copied back to the host sampler.
offline_runs=(
  "128in-512out|--input-len 128 --output-len 512"
  "128in-512out-async|--input-len 128 --output-len 512 --async-scheduling true"
  "2048in-128out|--input-len 2048 --output-len 128"
  "128in-512out-sampled-device|--input-len 128 --output-len 512 --temperature 0.8 --top-p 0.95"
  "128in-512out-sampled-host|--input-len 128 --output-len 512 --temperature 0.8 --top-p 0.95 --device-sampling false"
  "128in-128out-logprobs5-device|--input-len 128 --output-len 128 --temperature 0.8 --top-p 0.95 --logprobs 5"
  "128in-128out-logprobs5-host|--input-len 128 --output-len 128 --temperature 0.8 --top-p 0.95 --logprobs 5 --device-sampling false"
)
for run in "${offline_runs[@]}"; do
  name="offline-llama3-1b-${run%%|*}"
  read -r -a run_args <<<"${run#*|}"
  if (($(date +%s) - t_start > ${OFFLINE_BEFORE_S:-300})); then
    row "bench $name" "skipped: $(elapsed "$t_start") already spent"
    continue
  fi
  echo "== pagoda-bench offline $name"
  t=$(date +%s)
  timeout 90 "$bench_bin" offline --shape llama3-1b --dtype bf16 --device cuda:0/bf16 \
    --num-requests 256 --kv-cache-mb 24576 "${run_args[@]}" \
    >"$logs/bench-$name.md" 2>"$logs/bench-$name.log"
  brc=$?
  if [[ $brc -eq 0 ]]; then
    bench_tables+=("$logs/bench-$name.md")
    row "bench $name" "ok ($(elapsed "$t")): bench-$name.md"
  else
    tail -5 "$logs/bench-$name.log"
    row "bench $name" "FAILED (exit $brc, see bench-$name.log)"
    overall=1
  fi
done

# ---- compute-sanitizer on the kernel tests (memcheck; racecheck on the shared-memory ones) ---
# Only the op tests: the whole-model tests would take minutes under the sanitizer. Skipped when
# the run is already long, so the table still comes back within the device time.
san="$(command -v compute-sanitizer || true)"
for cand in /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [[ -z "$san" && -x "$cand" ]] && san="$cand"
done
kernel_tests='Cuda*:Sweep/*:F32/*:BF16/*'
if [[ -z "$san" ]]; then
  row "compute-sanitizer" "not found"
elif (($(date +%s) - t_start > ${SANITIZER_AFTER_S:-330})); then
  row "compute-sanitizer" "skipped: $(elapsed "$t_start") already spent"
else
  for tool in memcheck racecheck; do
    filter="$kernel_tests"
    [[ $tool == racecheck ]] && filter='*Attention*:*RmsNorm*:*Sample*'
    t=$(date +%s)
    timeout 150 "$san" --tool "$tool" --error-exitcode 3 --print-limit 20 "$bin" \
      --gtest_color=no --gtest_filter="$filter" >"$logs/sanitizer-$tool.log" 2>&1
    src=$?
    summary="$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$logs/sanitizer-$tool.log" | tail -1)"
    case $src in
      0) row "compute-sanitizer $tool" "clean: ${summary:-no summary} ($(elapsed "$t"))" ;;
      124) row "compute-sanitizer $tool" "TIMED OUT after 150 s (see sanitizer-$tool.log)" ;;
      *)
        grep -E "=========" "$logs/sanitizer-$tool.log" | head -20
        row "compute-sanitizer $tool" "FAILED (exit $src): ${summary} (see sanitizer-$tool.log)"
        overall=1
        ;;
    esac
  done
fi

[[ $overall -eq 0 ]] && finish 0
finish 1
