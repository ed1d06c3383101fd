#!/usr/bin/env bash
# Every setup error exits 2 with one line "shmlimit: ..." naming the problem.
#   usage: errors.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

# A missing segment.
for cmd in "acquire $NAME api k" "acquire $NAME api k --peek" "stat $NAME" "dump $NAME" \
  "policy $NAME list" "policy $NAME api 5/m" "rm $NAME"; do
  # shellcheck disable=SC2086
  expect 2 $cmd
  stderr_is_one_error_line
  stderr_has "does not exist"
  stderr_has "$NAME"
done

expect 0 create "$NAME" --capacity 64
# create on an existing name.
expect 2 create "$NAME" --capacity 64
stderr_is_one_error_line
stderr_has "already exists"

# Invalid names.
for bad in noslash / "/a/b" "/sp ace"; do
  expect 2 create "$bad"
  stderr_is_one_error_line
  stderr_has "invalid segment name"
  expect 2 acquire "$bad" api k
  stderr_is_one_error_line
  stderr_has "invalid segment name"
done

# Malformed rates name the column.
expect 2 policy "$NAME" api 5/fortnight
stderr_is_one_error_line
stderr_has "column 3"
stderr_has "fortnight"
expect 2 policy "$NAME" api abc
stderr_is_one_error_line
stderr_has "column 1"
expect 2 policy "$NAME" api "5 per"
stderr_is_one_error_line
stderr_has "column"

# A bad policy name, a missing RATE.
expect 2 policy "$NAME" "bad name" 5/m
stderr_is_one_error_line
stderr_has "invalid policy name"
expect 2 policy "$NAME" api
stderr_is_one_error_line
stderr_has "RATE"
# Control bytes quoted from the input never break the one-line message.
expect 2 policy "$NAME" "$(printf 'two\nlines')" 5/m
stderr_is_one_error_line
stderr_has 'two\x0alines'


# Re-registration with other parameters needs --replace.
expect 0 policy "$NAME" api 5/day
expect 2 policy "$NAME" api 6/day
stderr_is_one_error_line
stderr_has "--replace"
expect 2 policy "$NAME" api 5/day --burst 3
stderr_has "--replace"
expect 0 policy "$NAME" list --json
py 'import json,sys; ps=json.load(sys.stdin); assert [(p["rate"], p["burst"]) for p in ps] == [("5/d", 5)], ps'

# Options that do not apply.
expect 2 policy "$NAME" list --replace
stderr_is_one_error_line
expect 2 policy "$NAME" api 5/day --json
stderr_is_one_error_line

# An unknown policy is an error, not a denial.
expect 2 acquire "$NAME" nosuch k
stderr_is_one_error_line
stderr_has '"nosuch"'
stderr_has "shmlimit policy $NAME list"
[[ -z "$OUT" ]] || fail "acquire of an unknown policy printed a decision"
expect 2 acquire "$NAME" nosuch k --json
stderr_is_one_error_line

# Bad create options.
OTHER="${NAME}-other"
EXTRA_SEGMENTS+=("$OTHER")
expect 2 create "$OTHER" --mode 0999
stderr_is_one_error_line
stderr_has "--mode"
expect 2 create "$OTHER" --slot-bytes 100
stderr_is_one_error_line
stderr_has "64, 128 or 256"
expect 2 create "$OTHER" --max-probe 0
stderr_is_one_error_line
expect 2 stat "$OTHER"
stderr_has "does not exist"

# Not a shmlimit segment.
if [[ -d /dev/shm ]]; then
  head -c 8192 /dev/zero | tr '\0' 'x' >"/dev/shm${OTHER}"
  expect 2 stat "$OTHER"
  stderr_is_one_error_line
  stderr_has "not a shmlimit segment"
  expect 0 rm "$OTHER"
fi
echo "ok"
