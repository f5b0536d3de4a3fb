#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Issue 17: the shipped alert rules load and fire when they should
# (promtool check rules / test rules), and the Grafana dashboard is JSON
# whose panels all query tiercache metrics.
#   monitoring.sh DEPLOY_DIR
set -eu
deploy=$1
promtool check rules "$deploy/prometheus/tiercache.rules.yml"
(cd "$deploy/prometheus" && promtool test rules tiercache.rules.test.yml)
python3 - "$deploy/grafana/tiercache.json" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
assert d["panels"], "no panels"
for p in d["panels"]:
    for t in p["targets"]:
        assert re.search(r"tiercache_[a-z_]+", t["expr"]), (p["title"], t["expr"])
print("dashboard: %d panels" % len(d["panels"]))
PY
echo "monitoring: ok"
