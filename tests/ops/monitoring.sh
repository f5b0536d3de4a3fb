#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: the shipped alert rules load and fire when they should
# (promtool check rules / test rules), the Grafana dashboard is JSON, and
# every tiercache_* series the rules and the dashboard query is one a
# running server exports (a renamed metric fails here, not on a pager).
#   monitoring.sh DEPLOY_DIR TIERCACHE
set -eu
deploy=$1
bin=$2
. "$(dirname "$0")/../support/server.sh"
tc_test_begin tc17mon
promtool check rules "$deploy/prometheus/tiercache.rules.yml"
(cd "$deploy/prometheus" && promtool test rules tiercache.rules.test.yml)

tc_server_start "$bin" "$tmp/server.log" --workers 1 --tier "shm://$seg?size=8M" \
    --tier "lmdb://$tmp/l2?map_size=16M"
curl -sf "http://127.0.0.1:$port/cache/warm" >/dev/null || true
curl -sf "http://127.0.0.1:$port/metrics" >"$tmp/metrics"
python3 - "$deploy/grafana/tiercache.json" "$deploy/prometheus/tiercache.rules.yml" "$tmp/metrics" <<'PY'
import json, re, sys
dash, rules, metrics = sys.argv[1:4]
exported = set()
for line in open(metrics):
    if line.startswith("# TYPE "):
        name, kind = line.split()[2:4]
        exported.add(name)
        if kind == "histogram":
            exported.update(name + s for s in ("_bucket", "_count", "_sum"))
d = json.load(open(dash))
assert d["panels"], "no panels"
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
exprs.append(open(rules).read())
used = set()
for e in exprs:
    used.update(re.findall(r"\btiercache_[a-z0-9_]+", e))
missing = sorted(used - exported)
assert not missing, "queried but not exported: %s" % missing
print("dashboard: %d panels; %d series used, all exported" % (len(d["panels"]), len(used)))
PY
echo "monitoring: ok"
