#!/usr/bin/env bash
# The segment's trust boundary from the command line (doc/design.md, "What
# can go wrong with the segment and what we do"): a FIFO, a directory or a
# symlink at the name is refused at once by every command (never a hang);
# a segment writable by 'other' or owned by another user needs
# --allow-other-users; a truncated segment is an error, never a SIGBUS; a
# create that does not fit /dev/shm fails and leaves no file.
source "$(dirname "$0")/lib.sh" "$@"

PATH_OF() { echo "/dev/shm$1"; }

# --- a FIFO at the name: every command fails at once (exit 2), none blocks.
FIFO="${NAME}-fifo"
EXTRA_SEGMENTS+=("$FIFO")
mkfifo -m 666 "$(PATH_OF "$FIFO")"
for args in "stat $FIFO" "dump $FIFO" "check $FIFO" "check $FIFO --no-repair" "policy $FIFO list" \
            "acquire $FIFO api k --peek" "acquire $FIFO api k" "reset $FIFO" \
            "export $FIFO" "--allow-other-users stat $FIFO"; do
  RC=0
  # shellcheck disable=SC2086  # word splitting of $args is meant
  timeout 10 "$CLI" $args >"$TMP/out" 2>"$TMP/err" || RC=$?
  ERR="$(cat "$TMP/err")"
  [[ "$RC" == 2 ]] || fail "shmlimit $args on a FIFO exited $RC, expected 2 (124: it hung)"
  stderr_is_one_error_line
  stderr_has "FIFO"
done
# metrics reports it as down (shmlimit_up 0, the reason on stderr), exit 0, at once.
RC=0
timeout 10 "$CLI" metrics "$FIFO" >"$TMP/out" 2>"$TMP/err" || RC=$?
ERR="$(cat "$TMP/err")"
[[ "$RC" == 0 ]] || fail "shmlimit metrics on a FIFO exited $RC, expected 0 (124: it hung)"
stderr_is_one_error_line
stderr_has "FIFO"
grep -qx "shmlimit_up{segment=\"$FIFO\"} 0" "$TMP/out" || fail "metrics on a FIFO: shmlimit_up 0"
# create does not take the name over either.
expect 2 create "$FIFO" --capacity 1024
stderr_has "already exists"
rm -f "$(PATH_OF "$FIFO")"

# --- a directory and a symlink.
DIR="${NAME}-dir"
mkdir "$(PATH_OF "$DIR")"
expect 2 stat "$DIR"
stderr_has "directory"
rmdir "$(PATH_OF "$DIR")"
expect 0 create "$NAME" --capacity 1024
LINK="${NAME}-link"
ln -s "$(PATH_OF "$NAME")" "$(PATH_OF "$LINK")"
expect 2 stat "$LINK"
stderr_has "symbolic link"
rm -f "$(PATH_OF "$LINK")"

# --- writable by 'other': create refuses the mode, open refuses the file.
OPEN="${NAME}-open"
EXTRA_SEGMENTS+=("$OPEN")
expect 2 create "$OPEN" --capacity 1024 --mode 0666
stderr_is_one_error_line
stderr_has "--allow-other-users"
[[ ! -e "$(PATH_OF "$OPEN")" ]] || fail "a refused create left $(PATH_OF "$OPEN") behind"
expect 0 create "$OPEN" --capacity 1024 --mode 0666 --allow-other-users
expect 2 stat "$OPEN"
stderr_has "writable by every user (mode 0666"
expect 2 policy "$OPEN" api 5/m
expect 0 policy "$OPEN" api 5/m --allow-other-users
expect 0 --allow-other-users acquire "$OPEN" api k
expect 0 stat "$OPEN" --allow-other-users

# --- another user's segment (needs root to create one as nobody).
if [[ "$(id -u)" == 0 ]] && command -v setpriv >/dev/null; then
  FOREIGN="${NAME}-foreign"
  EXTRA_SEGMENTS+=("$FOREIGN")
  cp "$CLI" "$TMP/shmlimit"
  chmod 755 "$TMP" "$TMP/shmlimit"
  setpriv --reuid=65534 --regid=65534 --clear-groups "$TMP/shmlimit" create "$FOREIGN" --capacity 1024 --mode 0660 \
    || fail "nobody could not create $FOREIGN"
  for args in "stat $FOREIGN" "check $FOREIGN" "acquire $FOREIGN api k" "reset $FOREIGN"; do
    # shellcheck disable=SC2086
    expect 2 $args
    stderr_is_one_error_line
    stderr_has "owned by uid 65534"
    stderr_has "0660"
  done
  expect 0 policy "$FOREIGN" api 5/m --allow-other-users
  expect 0 check "$FOREIGN" --allow-other-users
else
  echo "skipped: another user's segment (needs root and setpriv)"
fi

# --- truncated: an error naming both sizes, never a SIGBUS (exit 135).
expect 0 policy "$NAME" api 5/m
expect 0 acquire "$NAME" api k
truncate -s 4096 "$(PATH_OF "$NAME")"
for args in "stat $NAME" "dump $NAME" "acquire $NAME api k" "acquire $NAME api k --peek" "policy $NAME list"; do
  # shellcheck disable=SC2086
  expect 2 $args
  stderr_has "truncated"
done
expect 1 check "$NAME"
[[ "$OUT" == *"truncated"* ]] || fail "check does not report the truncation"

# --- a /dev/shm too small: in a private mount namespace, where permitted.
if unshare -m true 2>/dev/null; then
  RC=0
  # shellcheck disable=SC2016  # expanded by the inner shell
  unshare -m bash -c '
    set -u
    mount --make-rprivate / && mount -t tmpfs -o size=16m tmpfs /dev/shm || exit 77
    "$1" create /big --capacity 1048576 2>"$2/err"; rc=$?
    [[ $rc == 2 ]] || { echo "create /big exited $rc"; exit 1; }
    grep -q -- "--shm-size" "$2/err" || { cat "$2/err"; exit 1; }
    [[ ! -e /dev/shm/big ]] || { echo "left /dev/shm/big"; exit 1; }
    "$1" create /huge --capacity 268435456 --log-entries 4096 2>"$2/err"; rc=$?
    [[ $rc == 2 ]] || { echo "create /huge exited $rc"; exit 1; }
    grep -q "8830453788736 bytes" "$2/err" || { cat "$2/err"; exit 1; }
    "$1" create /a --capacity 65536 || exit 1
    "$1" create /b --capacity 65536 2>"$2/err"; rc=$?
    [[ $rc == 2 ]] || { echo "create /b exited $rc"; exit 1; }
    grep -q "free" "$2/err" || { cat "$2/err"; exit 1; }
    [[ ! -e /dev/shm/b ]] || { echo "left /dev/shm/b"; exit 1; }
    "$1" policy /a api 5/m && "$1" acquire /a api k >/dev/null && "$1" check /a >/dev/null || exit 1
  ' _ "$CLI" "$TMP" >"$TMP/ns" 2>&1 || RC=$?
  if [[ "$RC" == 77 ]]; then
    echo "skipped: full tmpfs (mount not permitted in a private namespace)"
  elif [[ "$RC" != 0 ]]; then
    OUT="$(cat "$TMP/ns")"
    fail "full tmpfs: $OUT"
  fi
else
  echo "skipped: full tmpfs (unshare -m not permitted)"
fi

echo "ok"
