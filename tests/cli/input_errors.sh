#!/usr/bin/env bash
# Every input error is an error: a negative or
# non-numeric number for any numeric option, an option the algorithm does
# not use, capacity 0 and a name that is not ASCII exit 2 with one printable
# line, and nothing is created or registered.
#   usage: input_errors.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

# One printable line (no byte outside 0x20..0x7e), exit 2.
usage_error() {
  expect 2 "$@"
  stderr_is_one_error_line
  LC_ALL=C
  [[ "$ERR" != *[![:print:]]* ]] || fail "stderr of shmlimit $* is not printable ASCII"
}

# Row 5: numbers wrapped to 2^64-1 (`--cost -1`, `--burst -1`). Every
# numeric option of every subcommand, with every kind of bad number.
OTHER="${NAME}-other"
EXTRA_SEGMENTS+=("$OTHER")
expect 0 create "$NAME" --capacity 64
expect 0 policy "$NAME" api 5/m
for bad in -1 -0 abc 1.5 "" 1e3 0x10 " 7" 18446744073709551616; do
  usage_error create "$OTHER" --capacity "$bad"
  stderr_has "--capacity"
  usage_error create "$OTHER" --slot-bytes "$bad"
  usage_error create "$OTHER" --max-probe "$bad"
  usage_error create "$OTHER" --log-entries "$bad"
  usage_error policy "$NAME" b 5/m --burst "$bad"
  stderr_has "--burst"
  usage_error acquire "$NAME" api k --cost "$bad"
  stderr_has "--cost"
  usage_error dump "$NAME" --top "$bad"
  usage_error denials "$NAME" --since "$bad"
  usage_error watch "$NAME" --count "$bad" --interval 0.01
done
for bad in -1 nan inf abc "" 1e3 0 100000; do
  usage_error watch "$NAME" --interval "$bad" --count 1
  stderr_has "--interval"
done
usage_error acquire "$NAME" api k --cost -1
stderr_has '"-1" is not a whole number >= 0'
expect 2 stat "$OTHER"  # nothing was created
stderr_has "does not exist"
# The largest numbers are still numbers.
expect 1 acquire "$NAME" api k --cost 18446744073709551615 --json
py 'import json,sys; d=json.load(sys.stdin); assert d["reason"] == "cost_too_high", d'

# Row 6: capacity 0 became 65536; --burst 0; a burst the algorithm drops.
usage_error create "$OTHER" --capacity 0
stderr_has "--capacity"
usage_error policy "$NAME" b 5/m --burst 0
stderr_has "--burst"
for algorithm in fixed_window sliding_window quiet_period sliding_log; do
  usage_error policy "$NAME" w 10/s --algorithm "$algorithm" --burst 5
  stderr_has "--burst does not apply to $algorithm"
  usage_error policy "$NAME" w 10/s --algorithm "$algorithm" --burst 10
done
usage_error policy "$NAME" c 8 --algorithm concurrency --burst 8
stderr_has "--burst does not apply to concurrency"
usage_error policy "$NAME" c 8/s --algorithm concurrency
stderr_has "not \"8/s\""
usage_error policy "$NAME" c 99999999999999999999 --algorithm concurrency
usage_error policy "$NAME" w 10/s --wait drf
usage_error policy "$NAME" w 10/s --wait exact
stderr_has "--wait applies to --algorithm sliding_log only"
expect 0 policy "$NAME" list --json
py 'import json,sys; ps=json.load(sys.stdin); assert [p["name"] for p in ps] == ["api"], ps'
# What the algorithms that have a burst accept.
expect 0 policy "$NAME" g 10/s --burst 5
expect 0 policy "$NAME" t 10/s --algorithm token_bucket --burst 20
expect 0 policy "$NAME" l 10/s --algorithm leaky_bucket --burst 1

# Row 7: a name that is not ASCII printed half a UTF-8 character.
usage_error policy "$NAME" "p$(printf '\xc3\xa9')" 5/m
stderr_has 'invalid policy name "p\xc3\xa9"'
stderr_has "character '\\xc3\\xa9' at byte 1"
usage_error policy "$NAME" "p$(printf '\xff\xfe')" 5/m
stderr_has 'byte \xff at byte 1 is not UTF-8'
usage_error acquire "$NAME" "p$(printf '\xc3')" k
stderr_has '"p\xc3"'
usage_error create "/seg$(printf '\xc3')"
echo "ok"
