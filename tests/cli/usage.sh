#!/usr/bin/env bash
# --help for the tool and every subcommand (exit 0, a one-line description),
# and usage errors (exit 2, one line on stderr).
#   usage: usage.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

expect 0 --help
for sub in create policy acquire stat dump rm; do
  grep -Eq "^ +$sub +[A-Z]" <<<"$OUT" || fail "shmlimit --help does not describe $sub"
done

for sub in create policy acquire stat dump rm; do
  expect 0 "$sub" --help
  first="$(head -n 1 <<<"$OUT")"
  [[ "$first" =~ [A-Za-z].*\.$ ]] || fail "$sub --help does not start with a one-line description"
  grep -q "NAME" <<<"$OUT" || fail "$sub --help does not show NAME"
done

expect 2
stderr_is_one_error_line
expect 2 frobnicate /x
stderr_is_one_error_line
stderr_has "unknown subcommand"
expect 2 acquire "$NAME" api
stderr_is_one_error_line
stderr_has "KEY"
expect 2 acquire "$NAME" api k --cost lots
stderr_is_one_error_line
expect 2 acquire "$NAME" api k extra
stderr_is_one_error_line
expect 2 policy "$NAME" api 5/m --on-full sometimes
stderr_is_one_error_line
expect 2 stat "$NAME" --bogus
stderr_is_one_error_line
echo "ok"
