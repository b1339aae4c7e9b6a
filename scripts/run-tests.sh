#!/usr/bin/env bash
# `make test`: runs the CTest suite of a build directory, then fails the run if any test was
# skipped that is not labelled `gpu` (a test that skips on a fresh machine is a test that does
# not run: `make deps` installs what every other test needs).
# Usage: scripts/run-tests.sh BUILD_DIR [ctest options...]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:?usage: run-tests.sh BUILD_DIR [ctest options]}" && pwd)
shift
python=${DIFFTRAIN_PYTHON:-$root/.venv/bin/python}

junit=$build/ctest-junit.xml
rm -f "$junit"
rc=0
(cd "$build" && ctest --output-on-failure --timeout 900 --output-junit "$junit" "$@") || rc=$?
[ -f "$junit" ] || { echo "run-tests: ctest wrote no $junit" >&2; exit 1; }

# Names of the gpu-labelled tests, one per line.
gpu_tests=$(cd "$build" && ctest -N -L '^gpu$' | sed -n 's/^ *Test *#[0-9]*: //p')
GPU_TESTS=$gpu_tests "$python" - "$junit" <<'PYEOF' || rc=1
import os, sys, xml.etree.ElementTree as ET
gpu = set(filter(None, os.environ["GPU_TESTS"].splitlines()))
skipped = [(case.get("name"), case.find("skipped").get("message", ""))
           for case in ET.parse(sys.argv[1]).getroot().iter("testcase")
           if case.find("skipped") is not None]
allowed = [name for name, _ in skipped if name in gpu]
if allowed:
    print(f"run-tests: {len(allowed)} gpu test(s) skipped (no GPU here)")
wrong = [(name, why) for name, why in skipped if name not in gpu]
for name, why in wrong:
    print(f"run-tests: FAIL: {name} was skipped ({why}); only gpu-labelled tests may skip")
sys.exit(1 if wrong else 0)
PYEOF
exit "$rc"
