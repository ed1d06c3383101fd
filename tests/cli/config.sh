#!/usr/bin/env bash
# `shmlimit create --config FILE`: the shipped example registers its policies
# (a rate list expanded to name, name.2), registering again changes nothing,
# a conflicting config registers nothing unless --replace, and a broken or
# unreadable config exits 2 with "file:line:column: what" on one line.
#   usage: config.sh path/to/shmlimit path/to/examples/shmlimit.toml
source "$(dirname "$0")/lib.sh"

EXAMPLE="${2:?usage: $0 path/to/shmlimit path/to/examples/shmlimit.toml}"
[[ -r "$EXAMPLE" ]] || fail "cannot read $EXAMPLE"
NAME2="${NAME}-b"
EXTRA_SEGMENTS+=("$NAME2")

# The example with this run's segment name (and nothing else changed).
CFG="$TMP/shmlimit.toml"
sed "s|^name = \"/myapp\"|name = \"$NAME\"|" "$EXAMPLE" >"$CFG"
grep -q "^name = \"$NAME\"" "$CFG" || fail "the example has no line name = \"/myapp\""

expect 0 create --config "$CFG"
[[ -z "$OUT" && -z "$ERR" ]] || fail "create --config printed something"
expect 0 policy "$NAME" list --json
py '
import json, sys
got = [(p["name"], p["algorithm"], p["rate"], p["burst"], p["on_full"]) for p in json.load(sys.stdin)]
want = [("anon", "gcra", "100/d", 100, "allow"),
        ("burst", "gcra", "60/m", 10, "deny"),
        ("sustained", "gcra", "1000/d", 1000, "allow"),
        ("multi", "gcra", "10/h", 10, "allow"),
        ("multi.2", "gcra", "100/d", 100, "allow"),
        ("refill", "token_bucket", "10/m", 100, "allow")]
assert got == want, got'
expect 0 stat "$NAME" --json
py 'import json,sys; s=json.load(sys.stdin); assert s["capacity"] == 65536 and s["slot_bytes"] == 128 and s["max_probe"] == 32, s'
[[ "$(stat -c %a "/dev/shm$NAME")" == 600 ]] || fail "mode is not 0600"

# Again (with or without the matching NAME): nothing changes.
expect 0 create --config "$CFG"
expect 0 create "$NAME" --config "$CFG"
expect 0 policy "$NAME" list --json
py 'import json,sys; assert len(json.load(sys.stdin)) == 6'
# The positional name must be the config's.
expect 2 create "$NAME2" --config "$CFG"
stderr_is_one_error_line
stderr_has "segment $NAME2 does not match the name \"$NAME\" in [segment] of $CFG"

# A conflicting config registers nothing, not even its new policies...
CONFLICT="$TMP/conflict.toml"
sed 's|^rate = "100/day"$|rate = "200/day"|' "$CFG" >"$CONFLICT"
printf '\n[policies.extra]\nrate = "1/s"\n' >>"$CONFLICT"
expect 2 create --config "$CONFLICT"
stderr_is_one_error_line
stderr_has "$CONFLICT: policy \"anon\" is already registered in $NAME"
stderr_has "nothing was registered"
stderr_has "(pass --replace to change it)"
expect 0 policy "$NAME" list --json
py 'import json,sys; ps={p["name"]: p["rate"] for p in json.load(sys.stdin)}; assert ps["anon"] == "100/d" and "extra" not in ps, ps'
# ... unless --replace.
expect 0 create --config "$CONFLICT" --replace
expect 0 policy "$NAME" list --json
py 'import json,sys; ps={p["name"]: p["rate"] for p in json.load(sys.stdin)}; assert ps["anon"] == "200/d" and ps["extra"] == "1/s" and len(ps) == 7, ps'

# A broken config exits 2 with file:line:column, and creates nothing.
BROKEN="$TMP/broken.toml"
printf '[segment]\nname = "%s"\n[policies.x]\nrate = "5/m"\nburts = 3\n' "$NAME2" >"$BROKEN"
expect 2 create --config "$BROKEN"
stderr_is_one_error_line
stderr_has "shmlimit: $BROKEN:5:1: unknown key 'burts' in [policies.x]; did you mean 'burst'?"
printf '[segment]\nname = "%s"\n[policies.burst]\nrate = "60/fortnight"\n' "$NAME2" >"$BROKEN"
expect 2 create --config "$BROKEN"
stderr_is_one_error_line
stderr_has "$BROKEN:4:8: policy \"burst\": invalid rate \"60/fortnight\": unknown unit 'fortnight'"
printf '[segment]\nname = "%s"\ncapacity = "big"\n' "$NAME2" >"$BROKEN"
expect 2 create --config "$BROKEN"
stderr_is_one_error_line
stderr_has "$BROKEN:3:12: [segment] capacity must be an integer, found a string"
printf '[segment\n' >"$BROKEN"
expect 2 create --config "$BROKEN"
stderr_is_one_error_line
stderr_has "$BROKEN:1:"
stderr_has "invalid TOML"
expect 2 stat "$NAME2"
stderr_has "does not exist"

# An unreadable config names the path and the reason.
expect 2 create --config "$TMP/missing.toml"
stderr_is_one_error_line
stderr_has "cannot read config file $TMP/missing.toml: No such file or directory"
expect 2 create --config "$TMP"
stderr_is_one_error_line
stderr_has "Is a directory"

# Options that do not go with --config, and --replace without it.
expect 2 create --config "$CFG" --capacity 64
stderr_is_one_error_line
expect 2 create --config "$CFG" --mode 0644
stderr_is_one_error_line
expect 2 create "$NAME2" --replace
stderr_is_one_error_line
expect 2 create
stderr_is_one_error_line
stderr_has "needs a segment NAME, or --config FILE"
echo "ok"
