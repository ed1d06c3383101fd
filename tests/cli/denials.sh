#!/usr/bin/env bash
# The recent-denials ring through the CLI: four background loops of
# `shmlimit acquire` make known denials on their own keys; `shmlimit denials
# --json` then lists exactly those (key, cost) pairs, each from the process
# that made it, with consecutive cursors and nothing lost; --since reads only
# newer ones; `watch` shows denied keys from the ring. No timing assertions.
#   usage: denials.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

expect 0 create "$NAME" --capacity 1024
expect 0 policy "$NAME" api 3/day
expect 0 denials "$NAME"
[[ "$OUT" == "no recent denials" ]] || fail "a fresh segment has denials"

# Worker W, key K: takes the burst (cost 3, admitted), then asks for cost
# 1 + K % 3 (denied, exit 1) and logs "key cost".
worker() {
  local w="$1" k rc cost
  for k in $(seq 8); do
    "$CLI" acquire "$NAME" api "w$w-k$k" --cost 3 >/dev/null 2>>"$TMP/errors" || echo "w$w-k$k: burst refused" >>"$TMP/errors"
    cost=$((1 + k % 3))
    rc=0
    "$CLI" acquire "$NAME" api "w$w-k$k" --cost "$cost" >/dev/null 2>>"$TMP/errors" || rc=$?
    if [[ "$rc" == 1 ]]; then echo "w$w-k$k $cost" >>"$TMP/denied.$w"; else echo "w$w-k$k: exit $rc" >>"$TMP/errors"; fi
  done
}
pids=()
for w in 1 2 3 4; do
  worker "$w" &
  pids+=("$!")
done
wait "${pids[@]}"
[[ ! -s "$TMP/errors" ]] || fail "workers: $(cat "$TMP/errors")"
cat "$TMP"/denied.* >"$TMP/want"
[[ "$(wc -l <"$TMP/want")" == 32 ]] || fail "expected 32 logged denials, got $(wc -l <"$TMP/want")"

expect 0 denials "$NAME" --json
printf '%s' "$OUT" >"$TMP/ring.json"
/usr/bin/python3 - "$TMP/ring.json" "$TMP/want" <<'PY' || fail "ring does not match the workers' log"
import collections, json, sys
ring = json.load(open(sys.argv[1]))
want = collections.Counter(tuple(l.split()) for l in open(sys.argv[2]) if l.strip())
got = collections.Counter((d["key"], str(d["cost"])) for d in ring["denials"])
assert got == want, (got - want, want - got)
assert ring["lost"] == 0 and ring["next_cursor"] == 32, ring
assert [d["cursor"] for d in ring["denials"]] == list(range(32))
assert all(d["policy"] == "api" and d["reason"] == "limited" and d["retry_after_ns"] > 0 for d in ring["denials"])
# One process per acquire: each denial's pid is its own.
assert len({d["pid"] for d in ring["denials"]}) == 32
PY

expect 0 denials "$NAME" --since 24 --json
py '
import json, sys
r = json.load(sys.stdin)
assert [d["cursor"] for d in r["denials"]] == list(range(24, 32)), r
assert r["lost"] == 0
'
expect 0 denials "$NAME"
grep -q '^TIME  *POLICY  *KEY' <<<"$OUT" || fail "denials has no header row"

# watch: denials made while it runs appear as recent denied keys.
( for _ in $(seq 400); do "$CLI" acquire "$NAME" api w1-k1 >/dev/null 2>&1 || true; done ) &
loop=$!
expect 0 watch "$NAME" --count 2 --interval 0.5
kill "$loop" 2>/dev/null || true
wait "$loop" 2>/dev/null || true
grep -q '^  api  *w1-k1  *[0-9]' <<<"$OUT" || fail "watch does not show the denied key from the ring"
echo "ok: denials ring through the CLI"
