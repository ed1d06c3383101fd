#!/usr/bin/env bash
# expect_exit.sh CODE KIND TOOL ARGS...
# Runs `TOOL ARGS... --json` and passes when it exits with CODE and, if KIND
# is not "-", its JSON summary lists at least one violation of that kind
# (KIND may list several, comma-separated: each must be reported).
# Used by tests/stress/CMakeLists.txt to prove the verifier can fail.
set -uo pipefail
code="$1" kind="$2" tool="$3"
shift 3
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
"$tool" "$@" --json >"$out"
rc=$?
if [[ $rc -ne $code ]]; then
  echo "expect_exit.sh: $tool $* exited $rc, expected $code" >&2
  cat "$out" >&2
  exit 1
fi
if [[ "$kind" != "-" ]]; then
  if ! /usr/bin/python3 - "$out" "$kind" <<'PY'
import json, sys
summary = json.load(open(sys.argv[1]))
kinds = {v["kind"] for v in summary["violations"]}
print("violations:", len(summary["violations"]), "kinds:", sorted(kinds))
sys.exit(0 if set(sys.argv[2].split(",")) <= kinds and summary["verdict"] == "fail" else 1)
PY
  then
    echo "expect_exit.sh: no violation of kind $kind reported (each of them required)" >&2
    cat "$out" >&2
    exit 1
  fi
elif [[ $code -eq 0 ]]; then
  /usr/bin/python3 - "$out" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
r, t = s["run"], s["table"]
print("%d decisions, %.0f ops/s, %d kills (%d mid-decision), %d claim repairs, verdict %s"
      % (r["decisions"], r["ops_per_s"], r["kills"], r["kills_mid_decision"], t["repairs_total"], s["verdict"]))
for p in s["policies"]:
    print("  %-8s admitted %d of allowance %d, lower bound checked on %d keys, worst deficit %s of %d allowed"
          % (p["name"], p["admitted_cost"], p["allowance"], p["lower_checked"], p["max_deficit"], p["deficit_allowed"]))
PY
fi
exit 0
