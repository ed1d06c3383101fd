#!/usr/bin/env bash
# `shmlimit check` on segments corrupted on purpose in /dev/shm: random
# bytes over the header, a changed version field, truncation, random bytes
# over the slots, a policy kind out of range, an orphaned claim. Each
# expected problem line appears, the exit status is 1, and nothing crashes
# (a signal would give 128+N). A missing segment is one line, exit 2.
#   usage: check_corrupt.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"
FILE="/dev/shm$NAME"

fresh() {
  "$CLI" rm "$NAME" >/dev/null 2>&1 || true
  expect 0 create "$NAME" --capacity 64
  expect 0 policy "$NAME" api 5/day
  local k
  for k in a b; do expect 0 acquire "$NAME" api "$k"; done
  expect 0 check "$NAME"
}

# patch OFFSET HEX: overwrites bytes of the segment file in place.
patch() {
  /usr/bin/python3 - "$FILE" "$1" "$2" <<'PY'
import sys
path, off, data = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
with open(path, "r+b") as f:
    f.seek(off); f.write(data)
PY
}
# random_over OFFSET N: N random bytes (seeded) at OFFSET.
random_over() {
  patch "$1" "$(/usr/bin/python3 -c "import random; random.seed($2); print(random.randbytes($2).hex())")"
}
# u64 OFFSET: reads a little-endian 64-bit field.
u64() { /usr/bin/python3 -c "import struct,sys; f=open('$FILE','rb'); f.seek($1); print(struct.unpack('<Q', f.read(8))[0])"; }

check_has() {  # check_has TEXT...: exit 1 and every TEXT among the problem lines
  expect 1 check "$NAME" "${CHECK_ARGS[@]}"
  local t
  for t in "$@"; do [[ "$OUT" == *"$t"* ]] || fail "check does not report \"$t\""; done
  [[ "$OUT" == *"NOT CLEAN"* ]] || fail "check does not say NOT CLEAN"
}
CHECK_ARGS=()

fresh
random_over 0 192
check_has "header: bad magic" "layout version" "layout fingerprint" "policies and slots not checked"
expect 1 check "$NAME" --json
py '
import json, sys
r = json.load(sys.stdin)
assert r["clean"] is False and len(r["problems"]) >= 4, r
'

fresh
patch 8 "63000000"  # layout_version = 99
check_has "header: layout version 99, this build reads version"

fresh
SLOTS=$(u64 72)  # slot_offset
truncate -s $((SLOTS + 10 * 128)) "$FILE"
check_has "(truncated)" "slots 10 to 63 lie beyond the end of the object"

fresh
random_over "$SLOTS" 4096
CHECK_ARGS=(--no-repair)
check_has "slot "
CHECK_ARGS=()

fresh
patch 4136 "6300000000000000"  # policy 0, params[0].kind = algorithm 99
check_has "policy 0 (\"api\"): corrupt parameters"

fresh
expect 0 dump "$NAME" --json
SLOT=$(printf '%s' "$OUT" | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["slot"])')
META_AT=$((SLOTS + SLOT * 128))
META=$(u64 "$META_AT")
patch "$META_AT" "$(/usr/bin/python3 -c "import struct; print(struct.pack('<Q', ($META & ~3) | 1).hex())")"  # CLAIMING, no owner
CHECK_ARGS=(--no-repair)
check_has "slot $SLOT: orphaned claim"
CHECK_ARGS=()

# A file of zero bytes, and one of garbage: listed, exit 1.
"$CLI" rm "$NAME" >/dev/null 2>&1 || true
: >"$FILE"
check_has "0 bytes, smaller than a header"
rm -f "$FILE"
/usr/bin/python3 -c "import random; random.seed(5); open('$FILE','wb').write(random.randbytes(100000))"
check_has "header: bad magic"
rm -f "$FILE"

expect 2 check "$NAME"
stderr_is_one_error_line
stderr_has "does not exist"
echo "ok: check lists the problems of corrupted segments"
