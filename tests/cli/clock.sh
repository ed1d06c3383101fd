#!/usr/bin/env bash
# The decision clock as an operator sees it: `shmlimit stat` (text and
# --json) and `shmlimit metrics` show the clock of the process that runs
# them, chosen from that process's own SHMLIMIT_CLOCK (each command is a
# fresh process): exact, a value not understood (exact, the value quoted in
# the reason), unset (as the host allows), and a hostile value (quotes, a
# backslash, a newline) that must leave the exposition parseable and the
# stat output one line per field.
#
#   clock.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh" "$@"

with_clock() {  # with_clock VALUE ARGS...: run_cli with SHMLIMIT_CLOCK=VALUE
  local value="$1"
  shift
  RC=0
  env SHMLIMIT_CLOCK="$value" "$CLI" "$@" >"$TMP/out" 2>"$TMP/err" || RC=$?
  OUT="$(cat "$TMP/out")"
  ERR="$(cat "$TMP/err")"
  [[ "$RC" == 0 ]] || fail "SHMLIMIT_CLOCK=$value shmlimit $* exited $RC"
}

pya() {  # pya CODE ARGS...: py with arguments (sys.argv[1:])
  printf '%s' "$OUT" | /usr/bin/python3 -c "$1" "${@:2}" || fail "python check failed: $1"
}

expect 0 create "$NAME" --capacity 64
expect 0 policy "$NAME" api 2/h
expect 0 acquire "$NAME" api alice

# SHMLIMIT_CLOCK=exact: exact, and the variable is the reason.
with_clock exact stat "$NAME"
grep -Eq '^decision clock: +exact \(SHMLIMIT_CLOCK=exact\)$' <<<"$OUT" ||
  fail "stat: no decision clock line for SHMLIMIT_CLOCK=exact"
with_clock exact stat "$NAME" --json
py '
import json, sys
j = json.load(sys.stdin)
assert j["decision_clock"] == {"clock": "exact", "reason": "SHMLIMIT_CLOCK=exact"}, j["decision_clock"]
assert j["admitted"] == 1, j["admitted"]
'

# A value not understood: exact, and the reason quotes it.
with_clock garbage stat "$NAME"
grep -Eq '^decision clock: +exact \(SHMLIMIT_CLOCK="garbage" is not auto, tsc or exact\)$' <<<"$OUT" ||
  fail "stat: no decision clock line for SHMLIMIT_CLOCK=garbage"
with_clock garbage stat "$NAME" --json
py '
import json, sys
c = json.load(sys.stdin)["decision_clock"]
assert c == {"clock": "exact", "reason": "SHMLIMIT_CLOCK=\"garbage\" is not auto, tsc or exact"}, c
'

# Unset: the host decides; tsc without a reason, or exact for a reason of
# the host's (never the variable's).
RC=0
env -u SHMLIMIT_CLOCK "$CLI" stat "$NAME" --json >"$TMP/out" 2>"$TMP/err" || RC=$?
OUT="$(cat "$TMP/out")"
[[ "$RC" == 0 ]] || fail "stat --json without SHMLIMIT_CLOCK exited $RC"
py '
import json, sys
c = json.load(sys.stdin)["decision_clock"]
assert c["clock"] in ("tsc", "exact"), c
assert (c["reason"] == "") == (c["clock"] == "tsc"), c
assert "SHMLIMIT_CLOCK" not in c["reason"], c
'

# metrics: one info sample, no segment label, the reason as a label.
with_clock exact metrics "$NAME"
[[ "$(grep -c '^shmlimit_decision_clock_info' <<<"$OUT")" == 1 ]] || fail "metrics: not one info sample"
grep -qxF 'shmlimit_decision_clock_info{clock="exact",reason="SHMLIMIT_CLOCK=exact"} 1' <<<"$OUT" ||
  fail "metrics: the info sample for SHMLIMIT_CLOCK=exact"
grep -qxF '# TYPE shmlimit_decision_clock_info gauge' <<<"$OUT" || fail "metrics: the info TYPE line"
lines_exact="$(wc -l <<<"$OUT")"

# A hostile value: quotes, a backslash, a byte above 0x7f, a newline and
# a sample line after it. The library quotes it byte by byte (its first 32
# bytes); the exposition still parses, has the same lines, and its reason
# label reads back as stat --json's reason.
hostile=$'x"\\\xff} 1\nshmlimit_up{segment="evil"} 0'
with_clock "$hostile" stat "$NAME" --json
reason="$(printf '%s' "$OUT" | /usr/bin/python3 -c '
import json, sys
c = json.load(sys.stdin)["decision_clock"]
assert c["clock"] == "exact", c
assert c["reason"].startswith("SHMLIMIT_CLOCK=\"x\\x22\\x5c\\xff} 1\\x0ashmlimit_up{"), c
assert c["reason"].endswith("\"... is not auto, tsc or exact"), c
assert all(0x20 <= ord(ch) < 0x7f for ch in c["reason"]), c
print(c["reason"])
')" || fail "stat --json with a hostile SHMLIMIT_CLOCK"
with_clock exact stat "$NAME"
lines_stat="$(wc -l <<<"$OUT")"
with_clock "$hostile" stat "$NAME"
[[ "$(wc -l <<<"$OUT")" == "$lines_stat" ]] || fail "stat: a hostile value changed the line count"
[[ "$OUT" == *"decision clock:"*" exact ($reason)"* ]] || fail "stat: the hostile reason is not the JSON's"
with_clock "$hostile" metrics "$NAME"
[[ "$(wc -l <<<"$OUT")" == "$lines_exact" ]] || fail "metrics: a hostile value changed the line count"
pya '
import re, sys
from prometheus_client.parser import text_string_to_metric_families
text, name, reason = sys.stdin.read(), sys.argv[1], sys.argv[2]
sample = re.compile(r"^shmlimit_[a-z_]+\{([a-z_]+=\"([^\"\\\n]|\\[\\\"n])*\",?)+\} \S+$")
for line in text.splitlines():
    assert line.startswith("# ") or sample.match(line), line
fams = {f.name: f for f in text_string_to_metric_families(text)}
info = fams["shmlimit_decision_clock_info"].samples
assert [(s.labels, s.value) for s in info] == [({"clock": "exact", "reason": reason}, 1.0)], info
up = {s.labels["segment"]: s.value for s in fams["shmlimit_up"].samples}
assert up == {name: 1.0}, up
' "$NAME" "$reason"
echo "clock.sh: ok"
