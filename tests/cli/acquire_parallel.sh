#!/usr/bin/env bash
# 64 `shmlimit acquire` processes, 8 at a time, on one key of a 5/day policy:
# exactly 5 are admitted (exit 0), 59 limited (exit 1), none fails (exit 2),
# and the segment's exact totals (stat) agree. The key's own counts in dump
# are approximate (two processes counting one key at the same instant may
# lose an increment, doc/cli.md): never more than the callers saw.
#   usage: acquire_parallel.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

expect 0 create "$NAME" --capacity 1024
expect 0 policy "$NAME" api 5/day

# Each invocation prints its own exit status; stderr is kept for diagnosis.
codes="$(seq 64 | xargs -P 8 -I{} sh -c '"$1" acquire "$2" api k >/dev/null 2>>"$3"; echo "$?"' \
  sh "$CLI" "$NAME" "$TMP/xargs.err")"
ok="$(grep -cx 0 <<<"$codes" || true)"
limited="$(grep -cx 1 <<<"$codes" || true)"
errors="$(grep -cvx '[01]' <<<"$codes" || true)"
ERR="$(cat "$TMP/xargs.err")"
OUT="$codes"
[[ "$ok" == 5 && "$limited" == 59 && "$errors" == 0 ]] ||
  fail "expected 5 admitted, 59 limited, 0 errors; got $ok, $limited, $errors"

expect 0 dump "$NAME" --json
py '
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 1, rows
r = rows[0]
assert (r["policy"], r["key"], r["key_hex"]) == ("api", "k", "6b"), r
assert 0 < r["admitted"] <= 5 and 0 < r["denied"] <= 59, r
assert (r["limit"], r["remaining"], r["state"]) == (5, 0, "limited"), r
assert r["retry_after_ns"] > 0, r
'

expect 0 stat "$NAME" --json
py '
import json, sys
s = json.load(sys.stdin)
assert (s["used"], s["admitted"], s["denied"]) == (1, 5, 59), s
assert s["full_events"] == 0 and s["contended_events"] == 0, s
'
echo "ok: 5 admitted, 59 limited, 0 errors"
