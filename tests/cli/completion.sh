#!/usr/bin/env bash
# The bash completion (tools/completion/shmlimit.bash): it offers every
# subcommand and every option that `shmlimit --help` and `shmlimit SUB
# --help` list (so it cannot fall behind the CLI), option values, segment
# names and the policies of the segment on the line.
#
#   completion.sh path/to/shmlimit path/to/shmlimit.bash
source "$(dirname "$0")/lib.sh" "$@"
COMPLETION="${2:?completion script}"
mkdir -p "$TMP/bin"
ln -s "$(readlink -f "$CLI")" "$TMP/bin/shmlimit"
export PATH="$TMP/bin:$PATH"
# shellcheck disable=SC1090
source "$COMPLETION"

complete_line() {  # complete_line WORD...: COMPREPLY for the last word
  COMP_WORDS=("$@")
  COMP_CWORD=$(($# - 1))
  COMP_LINE="$*"
  COMP_POINT=${#COMP_LINE}
  COMPREPLY=()
  _shmlimit
  printf '%s\n' "${COMPREPLY[@]}" | sort
}
has() {  # has TEXT WORD...: each WORD is a line of TEXT
  local text="$1" w
  shift
  for w in "$@"; do grep -qx -- "$w" <<<"$text" || fail "completion lacks \"$w\" (got: $(tr '\n' ' ' <<<"$text"))"; done
}

# Every subcommand and option the CLI lists.
subs="$("$CLI" --help | awk '/^Subcommands:/{on=1; next} on && /^  [a-z]/{print $1}')"
[[ -n "$subs" ]] || fail "no subcommands in shmlimit --help"
has "$(complete_line shmlimit '')" $subs
has "$(complete_line shmlimit --)" --version --help --allow-other-users
for sub in $subs; do
  opts="$("$CLI" "$sub" --help | { grep -oE "^ +--[a-z-]+" || true; } | tr -d " " | sort -u)"
  [[ -z "$opts" ]] && continue
  has "$(complete_line shmlimit "$sub" --)" $opts
done

# Values, segments, policies.
has "$(complete_line shmlimit policy /x api 1/m --on-full '')" allow deny
has "$(complete_line shmlimit policy /x api 1/m --algorithm s)" sliding_window sliding_log
has "$(complete_line shmlimit ac)" acquire
expect 0 create "$NAME" --capacity 16
expect 0 policy "$NAME" api 5/m
expect 0 policy "$NAME" login 5/h
has "$(complete_line shmlimit stat "${NAME:0:8}")" "$NAME"
has "$(complete_line shmlimit acquire "$NAME" '')" api login
has "$(complete_line shmlimit policy "$NAME" '')" list api login
has "$(complete_line shmlimit dump "$NAME" --policy l)" login
echo "completion: ok"
