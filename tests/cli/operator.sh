#!/usr/bin/env bash
# The operator's commands: --version (the one version: CMake's, the
# CHANGELOG's), ls (this test's segments listed with their facts, a file
# that is not a segment skipped), metrics of several segments (one family
# each, shmlimit_up 0 for a missing one, parsed by prometheus_client),
# import registering the document's policies (a conflict refused, nothing
# written, unless --replace), on-full spelled allow/deny, a concurrency
# limit printed as its count, dump --json's per-algorithm state fields.
#
#   operator.sh path/to/shmlimit VERSION CHANGELOG.md
source "$(dirname "$0")/lib.sh" "$@"
VERSION="${2:?version}"
CHANGELOG="${3:?CHANGELOG.md}"
B="${NAME}-b"
C="${NAME}-c"
MISSING="${NAME}-missing"
EXTRA_SEGMENTS+=("$B" "$C")
NOT_OURS="/dev/shm/${NAME#/}-notours"
trap 'cleanup; rm -f "$NOT_OURS"' EXIT
pya() {  # pya CODE ARGS...: py with arguments (sys.argv[1:])
  local code="$1"
  shift
  printf '%s' "$OUT" | /usr/bin/python3 -c "$code" "$@" || fail "python check failed: $code"
}

# --version: CMake's project(VERSION), which the CHANGELOG lists.
expect 0 --version
[[ "$OUT" == "shmlimit $VERSION" ]] || fail "--version printed \"$OUT\""
grep -q "^## \[$VERSION\]" "$CHANGELOG" || fail "CHANGELOG.md has no section for $VERSION"

# on-full: allow/deny in and out; open/closed still accepted.
expect 0 create "$NAME" --capacity 64
expect 0 policy "$NAME" api 2/h --on-full deny
expect 0 policy "$NAME" web 10/m --on-full open
expect 0 policy "$NAME" conc 3 --algorithm concurrency
expect 0 policy "$NAME" win 4/m --algorithm sliding_window --on-full closed
expect 2 policy "$NAME" bad 1/m --on-full maybe
stderr_is_one_error_line
expect 0 policy "$NAME" list
grep -Eq '^api +gcra +2/h +2 +deny$' <<<"$OUT" || fail "policy list: api row"
grep -Eq '^web +gcra +10/m +10 +allow$' <<<"$OUT" || fail "policy list: web row"
grep -Eq '^conc +concurrency +3 +3 +allow$' <<<"$OUT" || fail "policy list: a concurrency limit is its count"
grep -Eq '^win +sliding_window +4/m +4 +deny$' <<<"$OUT" || fail "policy list: win row"
expect 0 policy "$NAME" list --json
py '
import json, sys
p = {x["name"]: x for x in json.load(sys.stdin)}
assert p["api"]["on_full"] == "deny" and p["web"]["on_full"] == "allow", p
assert p["conc"]["rate"] == "3", p["conc"]
'

# dump --json: the stored state named per algorithm; tat_ns for GCRA only.
for _ in 1 2 3; do run_cli acquire "$NAME" api alice; done
expect 0 acquire "$NAME" win alice
expect 0 acquire "$NAME" win alice
expect 0 dump "$NAME" --json
py '
import json, sys
rows = {r["policy"]: r for r in json.load(sys.stdin)}
api, win = rows["api"], rows["win"]
assert api["algorithm"] == "gcra" and set(api["stored"]) == {"tat_ns"}, api
assert api["tat_ns"] == api["stored"]["tat_ns"] > 0, api
assert win["algorithm"] == "sliding_window" and "tat_ns" not in win, win
assert set(win["stored"]) == {"window_index", "previous", "current"}, win
assert win["stored"]["current"] == 2 and win["stored"]["previous"] == 0, win
'

# ls: our segments with their facts; a file that is not a segment skipped.
expect 0 create "$B" --capacity 16 --mode 0640
printf 'not a segment at all, but long enough' >"$NOT_OURS"
expect 0 ls --json
pya '
import json, os, sys
name, b, notours = sys.argv[1:4]
rows = {r["segment"]: r for r in json.load(sys.stdin)}
assert name in rows and b in rows, rows.keys()
assert "/" + os.path.basename(notours) not in rows, "a file that is not a segment is listed"
r = rows[name]
assert r["capacity"] == 64 and r["used"] == 2 and r["policies"] == ["api", "web", "conc", "win"], r
assert r["mode"] == "0600" and r["size_bytes"] == os.path.getsize("/dev/shm" + name), r
assert rows[b]["mode"] == "0640" and rows[b]["policies"] == [] and rows[b]["error"] is None, rows[b]
' "$NAME" "$B" "$NOT_OURS"
expect 0 ls
grep -Eq "^$NAME +[a-z0-9_-]+ +0600 .* 64 +2 +api,web,conc,win$" <<<"$OUT" || fail "ls: the row of $NAME"
[[ "$OUT" != *notours* ]] || fail "ls lists a file that is not a segment"

# metrics of several segments: every family once, shmlimit_up 1 1 0, exit 0
# with one line on stderr for the missing one.
expect 0 metrics "$NAME" "$B" "$MISSING"
[[ "$ERR" == *"$MISSING does not exist"*"(shmlimit_up 0)" ]] || fail "metrics: stderr for the missing segment"
pya '
import collections, sys
from prometheus_client.parser import text_string_to_metric_families
text = sys.stdin.read()
types = collections.Counter(l.split()[2] for l in text.splitlines() if l.startswith("# TYPE"))
assert all(n == 1 for n in types.values()), [t for t, n in types.items() if n > 1]
fams = {f.name: f for f in text_string_to_metric_families(text)}
up = {s.labels["segment"]: s.value for s in fams["shmlimit_up"].samples}
name, b, missing = sys.argv[1:4]
assert up == {name: 1, b: 1, missing: 0}, up
segs = {s.labels["segment"] for s in fams["shmlimit_capacity_slots"].samples}
assert segs == {name, b}, segs
adm = {s.labels["policy"]: s.value for s in fams["shmlimit_policy_admitted"].samples
       if s.name == "shmlimit_policy_admitted_total" and s.labels["segment"] == name}
den = {s.labels["policy"]: s.value for s in fams["shmlimit_policy_denied"].samples
       if s.name == "shmlimit_policy_denied_total" and s.labels["segment"] == name}
assert adm["api"] == 2 and den["api"] == 1 and adm["win"] == 2, (adm, den)
' "$NAME" "$B" "$MISSING"
expect 2 metrics "bad name"
stderr_is_one_error_line

# import: the document's policies are registered; a conflict is refused and
# nothing is written; --replace changes the policy and imports.
expect 0 export "$NAME" --policy api
printf '%s\n' "$OUT" >"$TMP/api.json"
expect 0 create "$C" --capacity 64
expect 0 import "$C" "$TMP/api.json"
[[ "$OUT" == "registered 1 policy, replaced 0"*"imported 1 bucket;"* ]] || fail "import: $OUT"
expect 0 policy "$C" list --json
py 'import json, sys; p = json.load(sys.stdin); assert [(x["name"], x["rate"], x["on_full"]) for x in p] == [("api", "2/h", "deny")], p'
expect 1 acquire "$C" api alice   # the imported bucket: alice has used her 2
expect 0 import "$C" "$TMP/api.json"
[[ "$OUT" == "imported 1 bucket;"* ]] || fail "import again: $OUT"
expect 0 rm "$C"
expect 0 create "$C" --capacity 64
expect 0 policy "$C" api 3/h
expect 2 import "$C" "$TMP/api.json"
stderr_is_one_error_line
stderr_has 'policy "api" is gcra 3/h burst 3 on_full allow in'
stderr_has "pass --replace"
expect 0 dump "$C" --json
[[ "$OUT" == "[]" ]] || fail "a refused import wrote buckets: $OUT"
expect 0 import "$C" "$TMP/api.json" --replace
[[ "$OUT" == "registered 0 policies, replaced 1"* ]] || fail "import --replace: $OUT"
expect 0 policy "$C" list
grep -Eq '^api +gcra +2/h +2 +deny$' <<<"$OUT" || fail "import --replace did not change api"
# A document whose policy is impossible: one line naming it, nothing registered.
sed 's/"burst": *2/"burst": 0/' "$TMP/api.json" >"$TMP/bad.json"
/usr/bin/python3 - "$TMP/api.json" "$TMP/bad2.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["policies"][0]["name"] = "new"; d["policies"][0]["algorithm"] = "no_such"
json.dump(d, open(sys.argv[2], "w"))
PY
expect 2 import "$C" "$TMP/bad2.json"
stderr_is_one_error_line
stderr_has 'policies[0] ("new")'
expect 0 policy "$C" list --json
py 'import json, sys; assert [x["name"] for x in json.load(sys.stdin)] == ["api"]'
echo "operator: ok"
