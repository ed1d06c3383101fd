#!/usr/bin/env bash
# check, dump's filters, metrics, watch and reset against a segment that
# background `shmlimit acquire` loops write at the same time.
# While they write: check is clean, the filters keep only what they name,
# metrics has its metric names, watch prints a per-policy block. After they
# stop: no key admitted beyond its policy's allowance, the most hammered key
# is first in --top 1 --by usage, metrics' per-policy totals are exactly
# what the writers were answered and at least the sum of dump --json's
# per-key counts (approximate: two processes counting one key at the same
# instant may lose an increment, doc/cli.md), and a reset key is admitted
# again. No timing.
#   usage: inspect_live.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

expect 0 create "$NAME" --capacity 1024
expect 0 policy "$NAME" api 5/day
expect 0 policy "$NAME" login 3/day

# Three writers; each hits api/hot every round, one of k0..k3 and one of
# u0..u2. Exit statuses 0/1 are expected; 2 is written to errors.
writer() {
  local i rc
  for i in $(seq 30); do
    for args in "api hot" "api k$((i % 4))" "login u$((i % 3))"; do
      rc=0
      # shellcheck disable=SC2086
      "$CLI" acquire "$NAME" $args >/dev/null 2>>"$TMP/writer.err" || rc=$?
      [[ "$rc" == 0 || "$rc" == 1 ]] || echo "$args: exit $rc" >>"$TMP/errors"
    done
  done
}
pids=()
for w in 1 2 3; do
  writer &
  pids+=("$!")
done
stop_writers() { kill "${pids[@]}" 2>/dev/null || true; }
trap 'stop_writers; cleanup' EXIT

# --- while the writers run --------------------------------------------------
expect 0 check "$NAME" --json
py '
import json, sys
r = json.load(sys.stdin)
assert list(r) == ["clean", "problems", "repaired", "live", "in_progress"], r
assert r["clean"] is True and r["problems"] == [], r
'
expect 0 check "$NAME" --no-repair
[[ "$OUT" == clean:* ]] || fail "check does not say clean"

expect 0 dump "$NAME" --json --policy api
py '
import json, sys
rows = json.load(sys.stdin)
assert all(r["policy"] == "api" for r in rows), rows
'
expect 0 dump "$NAME" --json --key-prefix u
py '
import json, sys
rows = json.load(sys.stdin)
assert all(r["key"].startswith("u") and r["policy"] == "login" for r in rows), rows
'

expect 0 metrics "$NAME"
for m in capacity_slots used_slots free_slots reclaimable_slots dead_slots claiming_slots \
  max_probe_length mean_probe_length segment_age_seconds clock_horizon_left_seconds \
  full_table_events_total contended_events_total repairs_total policy_buckets \
  policy_admitted_total policy_denied_total policy_limited_buckets; do
  grep -q "^# TYPE shmlimit_$m " <<<"$OUT" || fail "metrics lacks # TYPE shmlimit_$m"
  grep -q "^shmlimit_$m{" <<<"$OUT" || fail "metrics lacks a shmlimit_$m sample"
done

expect 0 watch "$NAME" --count 2 --interval 0.2
[[ "$(grep -c '^POLICY .*DECISIONS/S .*DENIALS/S' <<<"$OUT")" == 2 ]] ||
  fail "watch --count 2 did not print two per-policy blocks"
grep -q '^api ' <<<"$OUT" || fail "watch has no api row"
grep -q '^login ' <<<"$OUT" || fail "watch has no login row"
grep -q '^recent denied keys' <<<"$OUT" || fail "watch has no recent denied keys"

# --- after the writers stop -------------------------------------------------
for p in "${pids[@]}"; do wait "$p"; done
trap cleanup EXIT
if [[ -s "$TMP/errors" ]]; then
  OUT="$(cat "$TMP/errors")" ERR="$(cat "$TMP/writer.err")"
  fail "a writer's acquire failed"
fi

expect 0 dump "$NAME" --json
cp "$TMP/out" "$TMP/all.json"
py '
import json, sys
rows = json.load(sys.stdin)
allow = {"api": 5, "login": 3}
seen = {(r["policy"], r["key"]) for r in rows}
want = {("api", "hot")} | {("api", f"k{i}") for i in range(4)} | {("login", f"u{i}") for i in range(3)}
assert seen == want, seen
for r in rows:
    assert r["admitted"] <= allow[r["policy"]], r
hot = next(r for r in rows if r["key"] == "hot")
assert 0 < hot["admitted"] + hot["denied"] <= 90, hot  # per key: approximate
'

expect 0 dump "$NAME" --json --top 1 --by usage
py '
import json, sys
rows = json.load(sys.stdin)
assert [(r["policy"], r["key"]) for r in rows] == [("api", "hot")], rows
'
expect 0 dump "$NAME" --json --top 2 --by denials --policy login
py '
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 2 and all(r["policy"] == "login" for r in rows), rows
assert rows[0]["denied"] >= rows[1]["denied"], rows
'
expect 0 dump "$NAME" --json --limited-only
py '
import json, sys
rows = json.load(sys.stdin)
assert rows and all(r["state"] == "limited" for r in rows), rows
'
expect 0 dump "$NAME" --csv --key-prefix k
py '
import csv, sys
rows = list(csv.DictReader(sys.stdin))
assert sorted(r["key"] for r in rows) == ["k0", "k1", "k2", "k3"], rows
assert all(r["policy"] == "api" for r in rows), rows
'

expect 0 metrics "$NAME"
cp "$TMP/out" "$TMP/metrics.txt"
OUT="$(cat "$TMP/all.json")"
py "
import json, re, sys
rows = json.load(sys.stdin)
text = open('$TMP/metrics.txt').read()
for policy in ('api', 'login'):
    for field in ('admitted', 'denied'):
        m = re.search(r'^shmlimit_policy_%s_total\{segment=\"[^\"]*\",policy=\"%s\"\} (\S+)$' % (field, policy), text, re.M)
        assert m, (policy, field)
        per_key = sum(r[field] for r in rows if r['policy'] == policy)
        assert per_key > 0 and float(m.group(1)) >= per_key, (policy, field, m.group(1), per_key)
        # Exact: 3 writers x 30 rounds; api's 5 keys admit 5 each, login's 3 keys 3 each.
        exact = {('api', 'admitted'): 25, ('api', 'denied'): 155,
                 ('login', 'admitted'): 9, ('login', 'denied'): 81}[(policy, field)]
        assert float(m.group(1)) == exact, (policy, field, m.group(1), exact)
"

expect 1 acquire "$NAME" api hot
expect 0 reset "$NAME" api hot
[[ "$OUT" == "forgot 1 bucket" ]] || fail "reset of one key did not forget 1 bucket"
expect 0 acquire "$NAME" api hot
expect 0 reset "$NAME" login
[[ "$OUT" == "forgot 3 buckets" ]] || fail "reset of a policy did not forget its 3 buckets"
expect 2 reset "$NAME" nope
stderr_has 'unknown policy "nope"'
expect 0 reset "$NAME"
[[ "$OUT" == "forgot 5 buckets" ]] || fail "reset of everything did not forget the 5 api buckets"
expect 0 check "$NAME"
echo "ok: check, dump filters, metrics, watch and reset under concurrent writers"
