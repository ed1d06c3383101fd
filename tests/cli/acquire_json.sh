#!/usr/bin/env bash
# `shmlimit acquire --json`: the schema, a fresh key counting down 4..0, then
# a denial with a retry-after; exit 0 when allowed, 1 when limited. Also
# --peek (never charges) and --cost.
#   usage: acquire_json.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

expect 0 create "$NAME" --capacity 64
expect 0 policy "$NAME" api 5/day

for want in 4 3 2 1 0; do
  expect 0 acquire "$NAME" api fresh --json
  py "
import json, sys
d = json.load(sys.stdin)
keys = ['allowed', 'limit', 'remaining', 'retry_after_ns', 'reset_after_ns', 'retry_after_s',
        'reset_after_s', 'reason', 'policy', 'key', 'cost']
assert list(d) == keys, list(d)
assert d['allowed'] is True and d['limit'] == 5 and d['remaining'] == $want, d
assert d['retry_after_ns'] == 0 and d['retry_after_s'] == 0, d
assert d['reset_after_ns'] > 0 and abs(d['reset_after_s'] - d['reset_after_ns'] / 1e9) < 1e-3, d
assert (d['reason'], d['policy'], d['key'], d['cost']) == ('ok', 'api', 'fresh', 1), d
"
done

expect 1 acquire "$NAME" api fresh --json
py '
import json, sys
d = json.load(sys.stdin)
assert d["allowed"] is False and d["limit"] == 5 and d["remaining"] == 0, d
assert d["retry_after_ns"] > 0 and d["retry_after_s"] > 0, d
# One unit of a 5/day policy refills every 4.8 hours.
assert d["retry_after_ns"] <= 86400 * 10**9 // 5, d
assert d["reason"] == "ok", d
'
[[ "$(printf '%s\n' "$OUT" | wc -l)" == 1 ]] || fail "acquire --json is not one line"

# --peek never charges: the same answer twice, and the key stays untouched.
expect 0 acquire "$NAME" api other --peek --json
py 'import json,sys; d=json.load(sys.stdin); assert d["allowed"] and d["remaining"] == 4, d'
expect 0 acquire "$NAME" api other --peek --json
py 'import json,sys; d=json.load(sys.stdin); assert d["allowed"] and d["remaining"] == 4, d'
expect 1 acquire "$NAME" api fresh --peek
[[ "$OUT" == *"allowed:"*"no"* ]] || fail "human peek output lacks 'allowed: no'"

# --cost charges several units at once; a cost above the burst never fits.
expect 0 acquire "$NAME" api other --cost 3 --json
py 'import json,sys; d=json.load(sys.stdin); assert d["remaining"] == 2 and d["cost"] == 3, d'
expect 1 acquire "$NAME" api other --cost 3 --json
py 'import json,sys; d=json.load(sys.stdin); assert not d["allowed"] and d["remaining"] == 2, d'
expect 1 acquire "$NAME" api other --cost 6 --json
py '
import json, sys
d = json.load(sys.stdin)
assert d["reason"] == "cost_too_high" and d["retry_after_ns"] is None and d["retry_after_s"] is None, d
'

# Odd key bytes are escaped as \xNN text in "key" and kept valid JSON.
expect 0 acquire "$NAME" api "$(printf 'tab\there\\back')" --json
py 'import json,sys; d=json.load(sys.stdin); assert d["key"] == "tab\\x09here\\x5cback", d'

# The human block: six aligned "label: value" lines.
expect 0 acquire "$NAME" api human
[[ "$(printf '%s\n' "$OUT" | wc -l)" == 6 ]] || fail "human acquire output is not 6 lines"
for label in allowed limit remaining "retry after" "reset after" reason; do
  grep -q "^$label: *[^ ]" <<<"$OUT" || fail "human acquire output lacks \"$label:\""
done
grep -q '^remaining: *4$' <<<"$OUT" || fail "human acquire output: remaining is not 4"
grep -q '^retry after: *0$' <<<"$OUT" || fail "human acquire output: retry after is not 0"
echo "ok"
