#!/usr/bin/env bash
# `create --log-entries` and `policy --algorithm/--wait`: every algorithm can
# be registered from the command line, with its own parameters.
source "$(dirname "$0")/lib.sh" "$@"

expect 0 create "$NAME" --capacity 64 --log-entries 4

for algo in gcra token_bucket fixed_window sliding_window quiet_period leaky_bucket; do
  expect 0 policy "$NAME" "p_$algo" 3/h --algorithm "$algo"
done
expect 0 policy "$NAME" p_leaky_burst 3/h --algorithm leaky-bucket --burst 5
expect 0 policy "$NAME" p_concurrency 8 --algorithm concurrency
expect 0 policy "$NAME" p_log 4/h --algorithm sliding_log --wait drf
expect 0 policy "$NAME" p_log_exact 2/m --algorithm sliding_log
expect 0 policy "$NAME" p_log 4/h --algorithm sliding_log --wait drf  # idempotent

expect 0 policy "$NAME" list --json
py '
import json, sys
got = {p["name"]: p for p in json.load(sys.stdin)}
for a in ["gcra", "token_bucket", "fixed_window", "sliding_window", "quiet_period", "leaky_bucket"]:
    assert got["p_" + a]["algorithm"] == a and got["p_" + a]["count"] == 3, got["p_" + a]
assert got["p_leaky_burst"]["algorithm"] == "leaky_bucket" and got["p_leaky_burst"]["burst"] == 5, got
c = got["p_concurrency"]
assert c["algorithm"] == "concurrency" and c["count"] == 8 and c["period_ns"] == 0, c
assert got["p_log"]["algorithm"] == "sliding_log" and got["p_log"]["wait"] == "drf", got["p_log"]
assert got["p_log_exact"]["wait"] == "exact", got["p_log_exact"]
assert "wait" not in got["p_gcra"], got["p_gcra"]
'
# The table names each policy's algorithm (and the sliding log's DRF wait).
expect 0 policy "$NAME" list
grep -Eq '^p_token_bucket +token_bucket +3/h ' <<<"$OUT" || fail "policy list: token_bucket row"
grep -Eq '^p_log +sliding_log \(wait drf\) +4/h ' <<<"$OUT" || fail "policy list: sliding_log drf row"
grep -Eq '^p_log_exact +sliding_log +2/m ' <<<"$OUT" || fail "policy list: sliding_log exact row"

# The sliding log admits exactly its count, then refuses.
for _ in 1 2 3 4; do expect 0 acquire "$NAME" p_log k; done
expect 1 acquire "$NAME" p_log k
expect 0 dump "$NAME" --json --policy p_log
py '
import json, sys
rows = json.load(sys.stdin)
assert len(rows) == 1 and rows[0]["remaining"] == 0 and rows[0]["state"] == "limited", rows
'
# A concurrency policy is taken through leases, not acquire.
expect 1 acquire "$NAME" p_concurrency k --json
py 'import json, sys; d = json.load(sys.stdin); assert d["reason"] == "needs_lease", d'

# Bad parameters: one clear line each, nothing registered.
expect 2 policy "$NAME" bad 3/h --algorithm sliding_window_log
stderr_is_one_error_line
stderr_has "sliding_window_log"
expect 2 policy "$NAME" bad 3/h --wait drf
stderr_has "--wait applies to --algorithm sliding_log only"
expect 2 policy "$NAME" bad 5/h --algorithm sliding_log
stderr_has "log_entries >= 5"
expect 2 policy "$NAME" bad 3/h --algorithm sliding_log --wait soon
expect 2 policy "$NAME" list --algorithm gcra
stderr_has "apply when registering a policy"
expect 0 policy "$NAME" list --json
py 'import json, sys; assert all(p["name"] != "bad" for p in json.load(sys.stdin))'

# Without --log-entries a segment has no room for sliding-log admissions.
SECOND="${NAME}-nolog"
EXTRA_SEGMENTS+=("$SECOND")
expect 0 create "$SECOND" --capacity 64
expect 2 policy "$SECOND" p_log 1/h --algorithm sliding_log
stderr_has "log_entries = 0"
echo "PASS algorithms"
