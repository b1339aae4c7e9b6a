#!/usr/bin/env python3
"""Print every PromQL expression of the difftrain Grafana dashboard, variables substituted.

For checking the dashboard against a real Prometheus without a Grafana: the integration test
runs each printed expression through Prometheus' /api/v1/query.

  panel_queries.py --run cifar10-a --rank 0            # one expression per line
  panel_queries.py --run cifar10-a --json               # [{"panel", "ref_id", "instant", "expr"}]

Grafana variables replaced: $run / ${run}, $rank / ${rank} (a regex, used with =~; default
".*" = all ranks), $__rate_interval, $__interval, $__range. Any other variable in an
expression is an error (exit status 2), so a typo in the dashboard cannot slip through.
Python 3 standard library only.
"""

import argparse
import json
import pathlib
import re
import sys

DEFAULT_DASHBOARD = pathlib.Path(__file__).resolve().parent / "dashboards" / "difftrain.json"
# $name, ${name} and ${name:format}.
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def iter_panels(panels):
    """Every panel, including those nested in (collapsed) rows."""
    for panel in panels:
        yield panel
        yield from iter_panels(panel.get("panels", []))


def substitute(expr, values, where):
    def replace(match):
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"{where}: unknown variable ${name} in {expr!r}")
        return values[name]

    return " ".join(VARIABLE.sub(replace, expr).split())


def panel_queries(dashboard, values):
    queries = []
    for panel in iter_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            expr = target.get("expr")
            if not expr or target.get("hide"):
                continue
            where = f"panel {panel.get('title')!r} query {target.get('refId')}"
            queries.append({
                "panel": panel.get("title", ""),
                "ref_id": target.get("refId", ""),
                "instant": bool(target.get("instant")) and not target.get("range", False),
                "expr": substitute(expr, values, where),
            })
    return queries


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="value of the run variable")
    parser.add_argument("--rank", default=".*", help="value of the rank variable (regex; default all)")
    parser.add_argument("--rate-interval", default="1m", help="value of $__rate_interval (default 1m)")
    parser.add_argument("--interval", default="15s", help="value of $__interval (default 15s)")
    parser.add_argument("--range", default="1h", help="value of $__range (default 1h)")
    parser.add_argument("--dashboard", default=str(DEFAULT_DASHBOARD), help="dashboard JSON file")
    parser.add_argument("--json", action="store_true", help="print a JSON list with panel titles")
    args = parser.parse_args(argv)

    values = {
        "run": args.run,
        "rank": args.rank,
        "__rate_interval": args.rate_interval,
        "__interval": args.interval,
        "__range": args.range,
    }
    try:
        with open(args.dashboard, encoding="utf-8") as file:
            dashboard = json.load(file)
        queries = panel_queries(dashboard, values)
    except (OSError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        print(f"panel_queries.py: {message}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(queries, sys.stdout, indent=2)
        print()
    else:
        for query in queries:
            print(query["expr"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
