#!/usr/bin/env bash
# Offline checks of the shipped monitoring files: the alert rules compile and pass their
# promtool unit tests, the Prometheus config is valid, and the Grafana dashboard is well formed
# (every panel on the ${datasource} variable with at least one query).
# Usage: promtool_rules_test.sh [repo root]. Exit 0 = all passed, 1 = a check failed,
# 77 = promtool or the project's Python missing (CTest SKIP_RETURN_CODE).
set -euo pipefail

root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
prom="$root/monitoring/prometheus"
grafana="$root/monitoring/grafana"
export PY=${DIFFTRAIN_PYTHON:-$root/.venv/bin/python}  # also for the bash -c check below

for tool in promtool "$PY"; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "SKIP: $tool not found (make deps)"
    exit 77
  fi
done

failures=0
check() {  # check <name> <command...>: run it, report, count failures
  local name="$1"
  shift
  if output="$("$@" 2>&1)"; then
    echo "ok   $name"
  else
    echo "FAIL $name"
    while IFS= read -r line; do echo "     $line"; done <<<"$output"
    failures=$((failures + 1))
  fi
}

check "promtool check rules alerts.yml" promtool check rules "$prom/alerts.yml"
check "promtool test rules alerts_test.yml" promtool test rules "$prom/alerts_test.yml"
check "promtool check config prometheus.yml" promtool check config "$prom/prometheus.yml"

# Every alert named in the brief exists, and its unit tests show it both firing and quiet.
check "each alert has a firing and a quiet test" "$PY" - "$prom/alerts.yml" "$prom/alerts_test.yml" <<'EOF'
import re, sys
rules, tests = (open(path, encoding="utf-8").read() for path in sys.argv[1:3])
alerts = ["TrainingStalled", "LossNotFinite", "StragglerRank", "CheckpointStale", "ThroughputDropped"]
cases = {name: set() for name in alerts}
current = None
for line in tests.splitlines():
    match = re.match(r"\s*alertname:\s*(\S+)", line)
    if match:
        current = match.group(1)
    match = re.match(r"\s*exp_alerts:\s*(\[\])?", line)
    if match and current in cases:
        cases[current].add("quiet" if match.group(1) else "firing")
errors = []
for name in alerts:
    if not re.search(rf"^\s*- alert: {name}\s*$", rules, re.M):
        errors.append(f"alerts.yml: no alert {name}")
    for kind in ("firing", "quiet"):
        if kind not in cases[name]:
            errors.append(f"alerts_test.yml: no {kind} test for {name}")
for name in re.findall(r"^\s*- alert: (\S+)", rules, re.M):
    block = rules.split(f"- alert: {name}", 1)[1].split("- alert:", 1)[0]
    for key in ("summary:", "description:"):
        if key not in block:
            errors.append(f"alerts.yml: {name} has no {key[:-1]} annotation")
print("\n".join(errors))
sys.exit(1 if errors else 0)
EOF

check "dashboard structure" "$PY" - "$grafana/dashboards/difftrain.json" <<'EOF'
import json, sys
path = sys.argv[1]
text = open(path, encoding="utf-8").read()
dashboard = json.loads(text)
errors = []
want_ds = {"type": "prometheus", "uid": "${datasource}"}

def same_ds(ds):
    return ds == want_ds or ds == "${datasource}"

if "${DS_" in text or "__inputs" in dashboard:
    errors.append("uses ${DS_...}/__inputs, which file provisioning does not resolve")
variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
ds_var = variables.get("datasource", {})
if ds_var.get("type") != "datasource" or ds_var.get("query") != "prometheus":
    errors.append("templating: want a variable 'datasource' of type datasource, query prometheus")
for name in ("run", "rank"):
    var = variables.get(name, {})
    query = var.get("query")
    query = query.get("query", "") if isinstance(query, dict) else (query or "")
    if var.get("type") != "query" or not query.startswith("label_values(") or not same_ds(var.get("datasource")):
        errors.append(f"templating: want a label_values query variable '{name}' on ${{datasource}}")

def panels(items):
    for item in items:
        yield item
        yield from panels(item.get("panels", []))

ids = []
all_panels = list(panels(dashboard.get("panels", [])))
if not all_panels:
    errors.append("no panels")
for panel in all_panels:
    title = panel.get("title", "<untitled>")
    ids.append(panel.get("id"))
    if panel.get("type") == "row":
        continue
    if not same_ds(panel.get("datasource")):
        errors.append(f"panel {title!r}: datasource {panel.get('datasource')!r}, want ${{datasource}}")
    targets = panel.get("targets", [])
    if not any(t.get("expr", "").strip() for t in targets):
        errors.append(f"panel {title!r}: no target with an expr")
    for t in targets:
        if "datasource" in t and not same_ds(t["datasource"]):
            errors.append(f"panel {title!r} query {t.get('refId')}: datasource {t['datasource']!r}")
    if not all(k in panel.get("gridPos", {}) for k in ("x", "y", "w", "h")):
        errors.append(f"panel {title!r}: gridPos incomplete")
if len(ids) != len(set(ids)):
    errors.append(f"panel ids not unique: {ids}")
print("\n".join(errors) or f"{len(all_panels)} panels")
sys.exit(1 if errors else 0)
EOF

# panel_queries.py substitutes every variable (it fails on an unknown one) and prints one
# expression per query.
# shellcheck disable=SC2016  # the script is bash -c's, expanded there
check "panel_queries.py prints every query" bash -c '
  set -euo pipefail
  exprs="$("$PY" "$1/panel_queries.py" --run r1 --rank 0)"
  want="$("$PY" -c "import json,sys; d=json.load(open(sys.argv[1])); print(sum(1 for p in d[\"panels\"] for t in p.get(\"targets\", []) if t.get(\"expr\")))" "$1/dashboards/difftrain.json")"
  got="$(printf "%s\n" "$exprs" | grep -c .)"
  [ "$got" = "$want" ] || { echo "printed $got expressions, dashboard has $want"; exit 1; }
  if printf "%s\n" "$exprs" | grep -F "\$"; then echo "unsubstituted variable above"; exit 1; fi
' _ "$grafana"

for file in provisioning/datasources/prometheus.yml provisioning/dashboards/difftrain.yml; do
  check "$file exists" test -s "$grafana/$file"
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all monitoring file checks passed"
