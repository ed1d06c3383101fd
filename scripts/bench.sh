#!/usr/bin/env bash
# Builds shmlimit_bench, runs every benchmark case (5 repetitions each,
# interleaved at random, aggregates only) and writes bench/results.md: the
# machine, the table of ratios to the floor and the Google Benchmark output.
#
#   bash scripts/bench.sh                          build (dev preset) and run all cases
#   bash scripts/bench.sh --benchmark_filter=Hot   extra arguments go to shmlimit_bench
#
# Environment:
#   SHMLIMIT_BENCH_BUILD=auto|cmake|gxx  how to build (default auto: the `dev` CMake
#                                        preset, else g++ by hand into build/bench)
#   SHMLIMIT_BENCH_RESULTS=path          where to write the report (default bench/results.md;
#                                        "-" writes none)
#   SHMLIMIT_BENCH_REPETITIONS=n         repetitions per case (default 5)
#   SHMLIMIT_BENCH_WAIT_IDLE=seconds     wait up to this long for the CPUs to be idle
#                                        (>= 90% idle over 2 s) before running (default 0)
#   SHMLIMIT_BENCH_REV=<git revision>    measure src/ and include/ of that commit (extracted
#                                        with git archive into build/bench-rev/, built with
#                                        g++) with the working tree's bench/: to compare
#                                        revisions, or while the working tree does not build
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

build_mode="${SHMLIMIT_BENCH_BUILD:-auto}"
bench_rev="${SHMLIMIT_BENCH_REV:-}"
results="${SHMLIMIT_BENCH_RESULTS:-bench/results.md}"
repetitions="${SHMLIMIT_BENCH_REPETITIONS:-5}"
wait_idle="${SHMLIMIT_BENCH_WAIT_IDLE:-0}"

say() { printf '==> %s\n' "$*" >&2; }
run() { printf '+ %s\n' "$*" >&2; "$@"; }
# shellcheck source=scripts/bench_lib.sh
source scripts/bench_lib.sh

# What is measured, named before the build (HEAD may move during a long run).
revision="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
if [[ -n "$(git status --porcelain -- src include bench 2>/dev/null)" ]]; then
  revision="$revision + uncommitted changes in src/, include/ or bench/"
fi

# ---- build ------------------------------------------------------------------
bin=""
compiler=""
build_note=""
build_cmake() {
  command -v cmake >/dev/null 2>&1 || return 1
  grep -q '"name": "dev"' CMakePresets.json 2>/dev/null || return 1
  run cmake --preset dev >&2 || return 1
  run cmake --build --preset dev --target shmlimit_bench >&2 || return 1
  [[ -x build/dev/bench/shmlimit_bench ]] || return 1
  bin=build/dev/bench/shmlimit_bench
  compiler="$(sed -n 's/^CMAKE_CXX_COMPILER:[A-Z]*=//p' build/dev/CMakeCache.txt)"
  local type
  type="$(sed -n 's/^CMAKE_BUILD_TYPE:[A-Z]*=//p' build/dev/CMakeCache.txt)"
  build_note="CMake preset \`dev\` (${type:-?}: $(sed -n "s/^CMAKE_CXX_FLAGS_${type^^}:[A-Z]*=//p" build/dev/CMakeCache.txt))"
}
# build_gxx [source root]: src/ and include/ from the root (default: the working tree).
build_gxx() {
  local root="${1:-.}"
  mkdir -p build/bench
  local flags=(-std=c++20 -O2 -g -DNDEBUG)
  run g++ "${flags[@]}" -I"$root/include" -I"$root/src" "$root"/src/*.cpp bench/bench_acquire.cpp bench/bench_remote.cpp \
    -o build/bench/shmlimit_bench -lbenchmark -lpthread -lrt >&2 || return 1
  bin=build/bench/shmlimit_bench
  compiler="$(command -v g++)"
  build_note="g++ by hand (${flags[*]})"
}
if [[ -n "$bench_rev" ]]; then
  # Resolved once: the report names the commit that was built even if HEAD
  # moves during the run.
  bench_rev="$(git rev-parse --verify "${bench_rev}^{commit}")" ||
    { echo "bench.sh: no such revision: $SHMLIMIT_BENCH_REV" >&2; exit 2; }
  rev_dir=build/bench-rev
  rm -rf "$rev_dir"
  mkdir -p "$rev_dir"
  run git archive "$bench_rev" src include | tar -x -C "$rev_dir"
  build_gxx "$rev_dir" || { echo "bench.sh: the g++ build of $bench_rev failed" >&2; exit 1; }
  build_mode=done
fi
case "$build_mode" in
  done) ;;
  cmake) build_cmake || { echo "bench.sh: the CMake build failed" >&2; exit 1; } ;;
  gxx) build_gxx || { echo "bench.sh: the g++ build failed" >&2; exit 1; } ;;
  auto)
    if ! build_cmake; then
      say "the dev preset did not build shmlimit_bench; building by hand with g++"
      build_gxx || { echo "bench.sh: the g++ build failed" >&2; exit 1; }
    fi
    ;;
  *) echo "bench.sh: SHMLIMIT_BENCH_BUILD must be auto, cmake or gxx" >&2; exit 2 ;;
esac

# ---- segments left by a killed run --------------------------------------------
remove_stale_bench_segments

# ---- machine -------------------------------------------------------------------
# Percentage of CPU time idle over the next 2 seconds, from /proc/stat.
idle_percent() {
  local a b
  read -r -a a < <(grep '^cpu ' /proc/stat)
  sleep 2
  read -r -a b < <(grep '^cpu ' /proc/stat)
  local total=0 i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  local idle=$((b[4] - a[4] + b[5] - a[5]))
  echo $((total > 0 ? 100 * idle / total : 0))
}
idle="$(idle_percent)"
if ((wait_idle > 0)); then
  deadline=$((SECONDS + wait_idle))
  while ((idle < 90 && SECONDS < deadline)); do
    say "CPUs ${idle}% idle; waiting for >= 90% (up to ${wait_idle} s)"
    idle="$(idle_percent)"
  done
fi

machine_facts
compiler_version="$("${compiler:-c++}" --version 2>/dev/null | head -n1)"
benchmark_version="$(dpkg-query -W -f='${Version}' libbenchmark-dev 2>/dev/null || echo unknown)"
if [[ -n "$bench_rev" ]]; then
  revision="src/ and include/ of $(git rev-parse --short "$bench_rev"), bench/ of the working tree"
fi

# ---- run -----------------------------------------------------------------------
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
run_bench "$bin" "$repetitions" "$out" "$@"
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

[[ "$results" == "-" ]] && exit 0

{
  echo "# shmlimit benchmark results"
  echo
  echo "Written by \`scripts/bench.sh\` on $started. Each case ran $repetitions times, interleaved at random;"
  echo "ratios are of the fastest repetition's CPU time, medians are shown next to it."
  echo "How to read them: [README.md](README.md)."
  echo
  echo "## Machine"
  echo
  echo "| | |"
  echo "|---|---|"
  echo "| CPU | ${cpu_model:-unknown} (family ${cpu_family:-?} model ${cpu_model_number:-?}; ${cpus} CPUs, ${cores_per_socket:-?} cores per socket${hypervisor:+, VM on $hypervisor}) |"
  echo "| Kernel | $kernel |"
  echo "| Clock source | $clocksource |"
  echo "| Compiler | ${compiler_version:-unknown} |"
  echo "| Build | $build_note |"
  echo "| Google Benchmark | $benchmark_version |"
  echo "| Source | $revision |"
  echo "| CPU idle before the run | ${idle}% (over 2 s) |"
  echo "| Load average before / after | $load_before / $load_after |"
  echo
  bench_tables "$out"
  echo
  echo "## Console output"
  echo
  echo '```'
  bench_console "$out"
  echo '```'
} >"$results"
say "wrote $results"
