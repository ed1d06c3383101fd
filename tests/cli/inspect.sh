#!/usr/bin/env bash
# `shmlimit create` options, `policy` registration and `list`, `stat` and
# `dump` (JSON and human), `rm`.
#   usage: inspect.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

# create: capacity rounds up to a power of two; slot bytes set the key size;
# the mode is applied as given.
expect 0 create "$NAME" --capacity 100 --slot-bytes 64 --max-probe 8 --mode 0640
[[ -z "$OUT" && -z "$ERR" ]] || fail "create printed something"
if [[ -e "/dev/shm${NAME}" ]]; then
  [[ "$(stat -c %a "/dev/shm${NAME}")" == 640 ]] || fail "segment mode is not 640"
fi

# policy: register, idempotent re-registration, --replace, --burst, --on-full.
expect 0 policy "$NAME" web 10/m
expect 0 policy "$NAME" web 10/m
expect 0 policy "$NAME" api 5/day --burst 2 --on-full closed
expect 0 policy "$NAME" web "20 per 2 days" --replace
expect 0 policy "$NAME" list --json
py '
import json, sys
ps = json.load(sys.stdin)
assert [p["name"] for p in ps] == ["web", "api"], ps
web, api = ps
assert (web["rate"], web["count"], web["period_ns"], web["burst"], web["on_full"]) == \
    ("20/2d", 20, 2 * 86400 * 10**9, 20, "allow"), web
assert web["emission_interval_ns"] == 8640 * 10**9 and web["algorithm"] == "gcra", web
assert (api["rate"], api["burst"], api["on_full"]) == ("5/d", 2, "deny"), api
'
expect 0 policy "$NAME" list
grep -Eq '^NAME +ALGORITHM +RATE +BURST +ON-FULL$' <<<"$OUT" || fail "policy list header"
grep -Eq '^api +gcra +5/d +2 +deny$' <<<"$OUT" || fail "policy list row for api"

# Buckets: three keys under two policies, one limited, one with odd bytes.
expect 0 acquire "$NAME" web zeta
expect 0 acquire "$NAME" api bob
expect 0 acquire "$NAME" api bob
expect 1 acquire "$NAME" api bob
expect 1 acquire "$NAME" api bob
expect 0 acquire "$NAME" api "$(printf 'al\001ice')"
# A key longer than the segment's keys (64-byte slots: 24 bytes) is served
# by the policy's on_full and never stored.
expect 1 acquire "$NAME" api "$(printf 'x%.0s' {1..40})" --json
py 'import json,sys; d=json.load(sys.stdin); assert d["reason"] == "key_too_long" and not d["allowed"], d'

expect 0 stat "$NAME" --json
py '
import json, sys
s = json.load(sys.stdin)
for field in ["segment", "layout_version", "layout_fingerprint", "capacity", "slot_bytes",
              "max_key_bytes", "max_probe", "segment_bytes", "created_unix_ns", "created", "age_ns",
              "clock_horizon_left_ns", "used", "free", "reclaimable", "dead", "empty", "claiming",
              "max_probe_length", "mean_probe_length", "full_events", "contended_events", "repairs",
              "admitted", "denied", "processes", "policies"]:
    assert field in s, field
assert (s["capacity"], s["slot_bytes"], s["max_key_bytes"], s["max_probe"]) == (128, 64, 24, 8), s
assert s["used"] == 3, s
assert s["free"] == s["empty"] + s["dead"] and s["used"] + s["free"] + s["claiming"] == 128, s
# Exact totals: the key_too_long refusal (no bucket) counts too.
assert (s["admitted"], s["denied"]) == (4, 3), s
assert s["policy_counters"] == {"web": {"admitted": 1, "denied": 0}, "api": {"admitted": 3, "denied": 3}}, s
assert s["layout_fingerprint"].startswith("0x") and len(s["layout_fingerprint"]) == 18, s
assert s["created"].endswith("Z") and "T" in s["created"], s
assert [p["name"] for p in s["policies"]] == ["web", "api"], s
'

expect 0 dump "$NAME" --json
py '
import json, sys
rows = json.load(sys.stdin)
# Sorted by policy, then key bytes.
assert [(r["policy"], r["key"]) for r in rows] == [("api", "al\\x01ice"), ("api", "bob"), ("web", "zeta")], rows
alice, bob, zeta = rows
assert alice["key_hex"] == "616c01696365", alice
assert (bob["admitted"], bob["denied"], bob["remaining"], bob["limit"]) == (2, 2, 0, 2), bob
assert bob["state"] == "limited" and bob["retry_after_ns"] > 0 and bob["reset_after_ns"] > 0, bob
# The dump shows the bucket as it is now: one of 2 used leaves 1.
assert (alice["remaining"], alice["limit"], alice["state"], alice["retry_after_ns"]) == (1, 2, "refilling", 0), alice
assert (zeta["remaining"], zeta["limit"], zeta["admitted"], zeta["denied"]) == (19, 20, 1, 0), zeta
for r in rows:
    assert isinstance(r["slot"], int) and 0 <= r["slot"] < 128 and r["tat_ns"] > 0, r
'

# Human forms: aligned lines and columns, no colour when not a terminal.
expect 0 stat "$NAME"
for label in "layout version" fingerprint capacity "slot bytes" "max key bytes" "segment bytes" \
  created age "clock horizon left" used free reclaimable dead claiming "probe length" \
  "full-table events" "contended events" repairs admitted denied processes policies; do
  grep -q "^$label:" <<<"$OUT" || fail "stat lacks \"$label:\""
done
grep -Eq '^used: +3 \(2\.3%\)$' <<<"$OUT" || fail "stat: used line"
grep -Eq '^created: +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' <<<"$OUT" ||
  fail "stat: created is not ISO 8601 UTC"
# Values start in one column.
cols="$(grep -E '^[a-z][a-z -]*: ' <<<"$OUT" | sed -E 's/^([^:]*: +).*/\1/' | awk '{ print length($0) }' | sort -u)"
[[ "$(wc -l <<<"$cols")" == 1 ]] || fail "stat values are not aligned"
[[ "$OUT" != *$'\e['* ]] || fail "stat printed colour codes to a pipe"

expect 0 dump "$NAME"
grep -Eq '^ *SLOT +POLICY +KEY +REMAINING +RETRY-AFTER +RESET-AFTER +ADMITTED +DENIED +STATE$' <<<"$OUT" ||
  fail "dump header"
grep -Eq '^ *[0-9]+ +api +al\\x01ice +1/2 +0 +[0-9][0-9a-z.]* +1 +0 +refilling$' <<<"$OUT" || fail "dump row for al\\x01ice"
grep -Eq '^ *[0-9]+ +api +bob +0/2 +[0-9.hm]+ +[0-9.hm]+ +2 +2 +limited$' <<<"$OUT" || fail "dump row for bob"
[[ "$(sed -n 2p <<<"$OUT")" == *" al\\x01ice "* && "$(sed -n 4p <<<"$OUT")" == *" zeta "* ]] ||
  fail "dump rows are not sorted by policy, then key"
[[ "$OUT" != *$'\e['* ]] || fail "dump printed colour codes to a pipe"

# An empty segment.
EMPTY="${NAME}-empty"
EXTRA_SEGMENTS+=("$EMPTY")
expect 0 create "$EMPTY" --capacity 16
expect 0 dump "$EMPTY" --json
[[ "$OUT" == "[]" ]] || fail "dump --json of an empty segment is not []"
expect 0 policy "$EMPTY" list --json
[[ "$OUT" == "[]" ]] || fail "policy list --json of an empty segment is not []"
expect 0 stat "$EMPTY" --json
py 'import json,sys; s=json.load(sys.stdin); assert s["used"] == 0 and s["policies"] == [] and s["free"] == 16, s'

# rm: silent on success; the name is gone.
expect 0 rm "$EMPTY"
[[ -z "$OUT" && -z "$ERR" ]] || fail "rm printed something"
expect 2 stat "$EMPTY"
stderr_has "does not exist"
echo "ok"
