# Helpers shared by the tests/cli scripts; sourced, not run.
#
#   source lib.sh "$@"     sets CLI (the shmlimit executable, $1), NAME (a
#                          segment name unique to this test run), TMP (a
#                          scratch directory) and removes both on exit.
#   run_cli ARGS...        runs "$CLI" ARGS, leaving RC, OUT (stdout) and
#                          ERR (stderr); never fails by itself.
#   expect RC ARGS...      run_cli, then fails unless the exit status is RC.
#   stderr_has TEXT        fails unless ERR contains TEXT (fixed string).
#   py CODE                runs /usr/bin/python3 -c CODE on OUT (stdin).
#   fail MESSAGE           prints the failing test's context and exits 1.
set -euo pipefail

CLI="${1:?usage: $0 path/to/shmlimit [...]}"
[[ -x "$CLI" ]] || { echo "not executable: $CLI" >&2; exit 1; }
TEST_NAME="$(basename "$0" .sh)"
NAME="/shmlimit-test-${TEST_NAME}-$$"
TMP="$(mktemp -d)"
EXTRA_SEGMENTS=()
cleanup() {
  "$CLI" rm "$NAME" >/dev/null 2>&1 || true
  local s
  for s in "${EXTRA_SEGMENTS[@]}"; do "$CLI" rm "$s" >/dev/null 2>&1 || true; done
  rm -rf "$TMP"
}
trap cleanup EXIT

RC=0
OUT=""
ERR=""

fail() {
  {
    echo "FAIL [$TEST_NAME]: $*"
    echo "  last command exit status: $RC"
    echo "  stdout: ${OUT:0:2000}"
    echo "  stderr: ${ERR:0:2000}"
  } >&2
  exit 1
}

run_cli() {
  RC=0
  "$CLI" "$@" >"$TMP/out" 2>"$TMP/err" || RC=$?
  OUT="$(cat "$TMP/out")"
  ERR="$(cat "$TMP/err")"
}

expect() {
  local want="$1"
  shift
  run_cli "$@"
  [[ "$RC" == "$want" ]] || fail "shmlimit $* exited $RC, expected $want"
}

stderr_has() {
  [[ "$ERR" == *"$1"* ]] || fail "stderr does not mention \"$1\""
}

# Exactly one line, prefixed "shmlimit: ".
stderr_is_one_error_line() {
  [[ "$ERR" == "shmlimit: "* ]] || fail "stderr is not prefixed \"shmlimit: \""
  [[ "$(printf '%s\n' "$ERR" | wc -l)" == 1 ]] || fail "stderr is not one line"
}

py() {
  printf '%s' "$OUT" | /usr/bin/python3 -c "$1" || fail "python check failed: $1"
}
