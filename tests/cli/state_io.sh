#!/usr/bin/env bash
# `shmlimit export` / `shmlimit import`: a limited key carried to a new
# segment (another epoch) stays limited with the same counters; --policy and
# --key filter; import from stdin; --keep-existing; a document whose policy
# changed, a malformed one and a missing file are refused with one line,
# exit 2, writing nothing.
#   usage: state_io.sh path/to/shmlimit
source "$(dirname "$0")/lib.sh"

expect 0 create "$NAME" --capacity 256
expect 0 policy "$NAME" api 3/hour
expect 0 policy "$NAME" login 10/day --burst 2
for _ in 1 2 3 4; do run_cli acquire "$NAME" api alice; done
expect 0 acquire "$NAME" api bob
expect 0 acquire "$NAME" login bob
expect 0 export "$NAME"
printf '%s\n' "$OUT" >"$TMP/all.json"
py '
import json, sys
d = json.load(sys.stdin)
assert d["format"] == "shmlimit-state" and d["version"] == 1, d
assert sorted((b["policy"], b["key"]) for b in d["buckets"]) == [("api", "alice"), ("api", "bob"), ("login", "bob")], d
alice = [b for b in d["buckets"] if b["key"] == "alice"][0]
assert alice["admitted"] == 3 and alice["denied"] == 1 and alice["state"]["tat"].endswith("Z"), alice
'
expect 0 export "$NAME" --policy api --key bob
py '
import json, sys
d = json.load(sys.stdin)
assert [(b["policy"], b["key"]) for b in d["buckets"]] == [("api", "bob")], d
assert [p["name"] for p in d["policies"]] == ["api"], d
'
expect 2 export "$NAME" --policy nope
stderr_is_one_error_line

# A new segment (new epoch): alice is still limited, with her counters.
expect 0 rm "$NAME"
expect 0 create "$NAME" --capacity 256
expect 0 policy "$NAME" api 3/hour
expect 0 policy "$NAME" login 10/day --burst 2
expect 0 import "$NAME" "$TMP/all.json"
[[ "$OUT" == "imported 3 buckets; skipped 0 already full, 0 existing; 0 without room" ]] || fail "import summary: $OUT"
expect 1 acquire "$NAME" api alice --peek
expect 0 dump "$NAME" --json --policy api --key-prefix alice
py '
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 1 and rows[0]["admitted"] == 3 and rows[0]["denied"] == 1 and rows[0]["state"] == "limited", rows
'

# From stdin, keeping what is there: nothing changes.
run_cli acquire "$NAME" api carol
RC=0
"$CLI" import "$NAME" - --keep-existing <"$TMP/all.json" >"$TMP/out" 2>"$TMP/err" || RC=$?
OUT="$(cat "$TMP/out")"
[[ "$RC" == 0 && "$OUT" == *"3 existing"* ]] || fail "import --keep-existing from stdin: $OUT"

# Refusals: changed policy, malformed JSON, missing file. Nothing written.
expect 0 reset "$NAME"
expect 0 policy "$NAME" api 4/hour --replace
expect 2 import "$NAME" "$TMP/all.json"
stderr_is_one_error_line
stderr_has 'policy "api" is gcra 4/h burst 4 on_full allow in '
stderr_has ' but gcra 3/h burst 3 on_full allow in the document; nothing was imported (pass --replace'
printf '{"format": "shmlimit-state", "version": 1, "policies": [' >"$TMP/bad.json"
expect 2 import "$NAME" "$TMP/bad.json"
stderr_is_one_error_line
stderr_has "not valid JSON"
expect 2 import "$NAME" "$TMP/missing.json"
stderr_has "cannot read"
expect 0 dump "$NAME" --json
py 'import json, sys; assert json.load(sys.stdin) == []'
echo "ok: export and import"
