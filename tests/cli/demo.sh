#!/usr/bin/env bash
# `shmlimit-demo`: 3 forked workers x 20000 attempts on one key admit no more
# than the allowance, the demo says so, and it leaves the segment behind for
# `shmlimit dump`.
#   usage: demo.sh path/to/shmlimit path/to/shmlimit-demo
source "$(dirname "$0")/lib.sh"
DEMO="${2:?usage: $0 path/to/shmlimit path/to/shmlimit-demo}"

RC=0
"$DEMO" --workers 3 --attempts 20000 --name "$NAME" >"$TMP/out" 2>"$TMP/err" || RC=$?
OUT="$(cat "$TMP/out")"
ERR="$(cat "$TMP/err")"
[[ "$RC" == 0 ]] || fail "shmlimit-demo exited $RC"
grep -q '^exact: yes$' <<<"$OUT" || fail "the demo does not say \"exact: yes\""
grep -q '^over-admitted: 0$' <<<"$OUT" || fail "the demo does not say \"over-admitted: 0\""

# total <= allowance, and the burst was all taken (60000 attempts > 1000).
line="$(grep '^total admitted:' <<<"$OUT")" || fail "no \"total admitted:\" line"
total="$(sed -E 's/^total admitted: ([0-9]+) .*/\1/' <<<"$line")"
allowance="$(sed -E 's/.*allowance: ([0-9]+) .*/\1/' <<<"$line")"
[[ "$line" == *"(burst 1000 + refill "* ]] || fail "the total line does not explain the allowance"
((total <= allowance)) || fail "admitted $total > allowance $allowance"
((total >= 1000)) || fail "admitted $total < the burst of 1000"

# Three worker rows whose admitted counts add up to the total.
sum="$(awk '/^ *WORKER PID/ { on = 1; next } on && NF == 4 { n++; s += $3 } on && NF == 0 { exit }
           END { print n, s }' <<<"$OUT")"
[[ "$sum" == "3 $total" ]] || fail "worker rows (count, sum of admitted) = $sum, expected 3 $total"

# The stat and dump sections, then the segment is still there.
grep -q "^\$ shmlimit stat $NAME$" <<<"$OUT" || fail "no stat section"
grep -q "^\$ shmlimit dump $NAME$" <<<"$OUT" || fail "no dump section"
grep -Eq '^ *[0-9]+ +api +demo-user ' <<<"$OUT" || fail "the dump section has no demo-user row"
expect 0 dump "$NAME" --json
py "
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 1, rows
r = rows[0]
assert (r['policy'], r['key'], r['limit']) == ('api', 'demo-user', 1000), r
# Per-key counts are statistics (plain stores, may lose a race); the exact
# totals are stat's policy counters.
assert r['admitted'] <= $total and r['admitted'] + r['denied'] <= 60000, r
"
expect 0 stat "$NAME" --json
py "
import json, sys
c = json.load(sys.stdin)['policy_counters']['api']
assert c['admitted'] == $total and c['admitted'] + c['denied'] == 60000, c
"
# A second run replaces the segment.
RC=0
"$DEMO" --workers 2 --attempts 2000 --name "$NAME" >"$TMP/out" 2>"$TMP/err" || RC=$?
OUT="$(cat "$TMP/out")"
[[ "$RC" == 0 ]] || fail "second shmlimit-demo run exited $RC"
grep -q "replaced" <<<"$OUT" || fail "the second run does not say it replaced the segment"
echo "ok: admitted $total of allowance $allowance"
