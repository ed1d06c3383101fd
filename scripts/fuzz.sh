#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`: Clang, ASan + UBSan) and runs
# each for a bounded time. doc/fuzzing.md describes the targets.
#
#   bash scripts/fuzz.sh                   every target, SHMLIMIT_FUZZ_SECONDS (default 25) each
#   bash scripts/fuzz.sh segment 600       one target for 600 s
#   bash scripts/fuzz.sh --no-build rate   skip the build
#   bash scripts/fuzz.sh --make-seeds      rewrite the library-made seeds in fuzz/corpus/segment*/
#                                          that this library no longer opens (stale layout)
#   bash scripts/fuzz.sh --make-seeds --force   rewrite them all (after editing fuzz/make_seeds.cpp)
#
# The seed corpus fuzz/corpus/<target>/ is only read; what the fuzzer finds
# goes to build/fuzz/corpus/<target>/, a crashing input to
# build/fuzz/artifacts/<target>/ (turn it into a regression: doc/fuzzing.md).
# Exit status: 0 no target found anything, 1 a crash, leak, timeout or
# sanitizer report, 2 a usage or build error. Runs niced, one process per target.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

TARGETS=(rate config segment segment_tail identity http state_import)
declare -A MAX_LEN=([rate]=256 [config]=4096 [segment]=1048576 [segment_tail]=20000 [identity]=4096 [http]=512 [state_import]=8192)

seconds="${SHMLIMIT_FUZZ_SECONDS:-25}"
build=1 make_seeds=0 force=()
chosen=()
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    --make-seeds) make_seeds=1 ;;
    --force) force=(--force) ;;
    -h|--help) sed -n '2,17p' "${BASH_SOURCE[0]}"; exit 0 ;;
    [0-9]*) seconds="$arg" ;;
    *)
      if [[ -z "${MAX_LEN[$arg]+x}" ]]; then
        echo "fuzz.sh: unknown target or option: $arg (targets: ${TARGETS[*]})" >&2
        exit 2
      fi
      chosen+=("$arg") ;;
  esac
done
[[ ${#chosen[@]} -gt 0 ]] || chosen=("${TARGETS[@]}")

say() { printf '==> %s\n' "$*"; }
run() { printf '+ %s\n' "$*"; "$@"; }

bin="build/fuzz/fuzz"
if [[ $build == 1 ]]; then
  run cmake --preset fuzz >/dev/null || exit 2
  run cmake --build --preset fuzz || exit 2
fi

if [[ $make_seeds == 1 ]]; then
  run "$bin/fuzz_make_seeds" "${force[@]}" fuzz/corpus
  exit 0
fi

export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}:allocator_may_return_null=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

status=0
summary=()
for t in "${chosen[@]}"; do
  work="build/fuzz/corpus/$t" artifacts="build/fuzz/artifacts/$t"
  mkdir -p "$work" "$artifacts"
  log="build/fuzz/$t.log"
  say "fuzz_$t for ${seconds}s (log: $log)"
  rc=0
  nice -n 10 "$bin/fuzz_$t" "$work" "fuzz/corpus/$t" \
    -max_total_time="$seconds" -max_len="${MAX_LEN[$t]}" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || rc=$?
  execs="$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo '?')"
  cov="$(grep -E '#[0-9]+.*cov:' "$log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' || echo 'cov: ?')"
  if [[ $rc -ne 0 ]]; then
    status=1
    summary+=("$t: FAILED (exit $rc) after $execs runs, $cov; input in $artifacts/")
    grep -E 'ERROR|SUMMARY|==[0-9]+==|rate_fuzz:|runtime error' "$log" | head -n 20 >&2 || true
  else
    summary+=("$t: ok, $execs runs in ${seconds}s, $cov")
  fi
done

say "summary"
printf '%s\n' "${summary[@]}"
exit "$status"
