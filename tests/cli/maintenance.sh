#!/usr/bin/env bash
# Single-process behaviour of check, reset, dump's filters, metrics and
# watch: exit codes, argument errors, CSV quoting, an empty segment.
#   usage: maintenance.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

for sub in check reset watch; do
  expect 2 "$sub" "$NAME"
  stderr_is_one_error_line
done
# metrics reports a missing segment (shmlimit_up 0, one line on stderr), exit 0.
expect 0 metrics "$NAME"
stderr_is_one_error_line
[[ "$OUT" == *"shmlimit_up{segment=\"$NAME\"} 0"* ]] || fail "metrics of a missing segment: shmlimit_up 0"

expect 0 create "$NAME" --capacity 64
expect 0 check "$NAME"
[[ "$OUT" == "clean: 0 problems, 0 live buckets, 0 repaired, 0 in progress" ]] ||
  fail "check of an empty segment"
expect 0 metrics "$NAME"
grep -q '^shmlimit_policy_buckets' <<<"$OUT" && fail "per-policy samples without policies"
expect 0 reset "$NAME"
[[ "$OUT" == "forgot 0 buckets" ]] || fail "reset of an empty segment"

expect 0 policy "$NAME" api 2/day
expect 0 acquire "$NAME" api 'a,"b'
expect 0 acquire "$NAME" api $'c\x01'
expect 0 dump "$NAME" --csv
py '
import csv, sys
rows = list(csv.reader(sys.stdin))
assert rows[0] == ["slot", "policy", "key", "key_hex", "remaining", "limit", "retry_after_ns",
                   "reset_after_ns", "admitted", "denied", "state"], rows[0]
assert sorted(r[2] for r in rows[1:]) == ["a,\"b", "c\\x01"], rows
'
expect 0 metrics "$NAME"
grep -qx 'shmlimit_policy_buckets{segment="'"$NAME"'",policy="api"} 2' <<<"$OUT" ||
  fail "metrics: policy_buckets for api"

expect 2 dump "$NAME" --json --csv
expect 2 dump "$NAME" --by usage
expect 2 dump "$NAME" --top 1 --by size
expect 2 dump "$NAME" --policy nope
stderr_has 'unknown policy "nope"'
expect 2 watch "$NAME" --interval 0
expect 2 reset "$NAME" nope k
expect 0 reset "$NAME" api nokey
[[ "$OUT" == "forgot 0 buckets" ]] || fail "reset of an absent key"
expect 0 watch "$NAME" --count 1 --interval 0.05
grep -q '^api ' <<<"$OUT" || fail "watch has no api row"
echo "ok: check, reset, dump filters, metrics, watch"
