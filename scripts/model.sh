#!/usr/bin/env bash
# Model-checks the slot protocol (model/slot.pml, doc/model.md) with SPIN.
#
#   bash scripts/model.sh          the CI checks (under a minute on 2 cores)
#   bash scripts/model.sh --full   also the larger configurations (+2 minutes, ~1.3 GB of RAM)
#
# Each check generates pan with `spin -a`, compiles it (-DSAFETY: assertions
# and invalid end states, i.e. deadlocks) and runs it. A check passes when
# pan's result is the expected one:
#   pass  no assertion violation, no invalid end state, search completed
#   fail  pan finds a counterexample (the trail is kept in build/model/)
# Exit status: 0 every check as expected, 1 otherwise, 2 spin/gcc missing.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

full=0
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    -h|--help) sed -n '2,13p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "model.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done
for tool in spin gcc; do
  command -v "$tool" >/dev/null || { echo "model.sh: $tool is not installed (bash scripts/setup.sh)" >&2; exit 2; }
done

# name | expect | spin defines | what it shows
CHECKS=(
  "kill-n2|pass|-DN=2 -DOPS=1 -DKILLS=1|P1-P4, 2 workers (one killed at any step), 2 keys, 2 slots"
  "kill-n3|pass|-DN=3 -DOPS=1 -DKILLS=1|P1-P4 with a 3-slot window (withdraw and wait paths)"
  "reclaims|pass|-DN=2 -DOPS1=1 -DOPS=2 -DKILLS=0|P2 under reclaim churn: no stale CAS while versions do not wrap"
  "wrap|fail|-DWRAP -DN=2 -DOPS1=1 -DOPS=2 -DKILLS=0|the wrap assumption is needed: version mod 2 lets a stale CAS land (P2)"
)
if [[ $full == 1 ]]; then
  CHECKS+=(
    "kill-ops2|pass|-DN=2 -DOPS1=1 -DOPS=2 -DKILLS=1|P1-P4, the survivor makes two decisions"
    "kill-mortal-ops2|pass|-DN=2 -DOPS1=2 -DOPS=1 -DKILLS=1|P1-P4, the mortal worker makes two decisions"
  )
fi

out="build/model"
mkdir -p "$out"
cp model/slot.pml "$out/slot.pml"
cd "$out"

status=0
summary=()
for check in "${CHECKS[@]}"; do
  IFS='|' read -r name expect defines what <<<"$check"
  start=$SECONDS
  rm -f pan pan.* slot.pml.trail
  # shellcheck disable=SC2086
  spin $defines -a slot.pml >/dev/null
  gcc -O1 -DSAFETY -DCOLLAPSE -DMEMLIM=3000 -w -o pan pan.c
  log="$name.log"
  ./pan -m3000000 >"$log" 2>&1 || true
  errors="$(grep -oE 'errors: [0-9]+' "$log" | grep -oE '[0-9]+' || echo '?')"
  states="$(grep -oE '^ *[0-9]+ states, stored' "$log" | grep -oE '[0-9]+' || echo '?')"
  incomplete=0
  grep -qE 'reached -DMEMLIM bound|Search not completed|max search depth too small' "$log" && incomplete=1
  if [[ "$errors" == 0 && $incomplete == 0 ]]; then got=pass; else got=fail; fi
  [[ "$errors" == 0 && $incomplete == 1 ]] && got=incomplete
  [[ -f slot.pml.trail ]] && mv slot.pml.trail "$name.trail"
  line="$(printf '%-20s %-4s (expected %-4s) %10s states %3ss  %s' "$name" "$got" "$expect" "$states" "$((SECONDS - start))" "$what")"
  if [[ "$got" != "$expect" ]]; then
    status=1
    line="$line  <-- UNEXPECTED"
    grep -E 'assertion violated|invalid end state|MEMLIM|not completed' "$log" | head -n 3 >&2 || true
  fi
  summary+=("$line")
  echo "$line"
done

echo
if [[ $status == 0 ]]; then
  echo "model: ${#CHECKS[@]} checks as expected (counterexample trails: $out/*.trail; replay one with"
  echo "       cd $out && spin -t -p -g <defines> slot.pml after renaming it to slot.pml.trail)"
else
  echo "model: UNEXPECTED results above (logs in $out/)" >&2
fi
exit "$status"
