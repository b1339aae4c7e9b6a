#!/usr/bin/env bash
# Runs shellcheck on every shell script in slurm/, launch/ and tests/integration/ (by extension
# .sh/.sbatch or a shell shebang); any finding, at any severity, fails the test.
# Exit 77 when shellcheck is not installed.
set -uo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "${repo_root}" || exit 1

if ! command -v shellcheck >/dev/null 2>&1; then
  echo "skipped: shellcheck not found (apt-get install shellcheck)"
  exit 77
fi

scripts=()
while IFS= read -r -d '' file; do
  case "${file}" in
    *.sh | *.sbatch) scripts+=("${file}") ;;
    *) head -n 1 "${file}" | grep -qE '^#!.*\b(ba|da)?sh\b' && scripts+=("${file}") ;;
  esac
done < <(find slurm launch scripts tests/integration bench -type f -print0 | sort -z)

if ((${#scripts[@]} == 0)); then
  echo "FAIL: no shell scripts found under slurm/, launch/, tests/integration/"
  exit 1
fi
# -x follows `source` lines; -P SCRIPTDIR resolves `source "$(dirname "$0")/lib.sh"` beside
# the script, and `# shellcheck source=` paths resolve from the repository root (cwd).
if shellcheck -x -P SCRIPTDIR "${scripts[@]}"; then
  echo "ok: shellcheck clean on ${#scripts[@]} scripts: ${scripts[*]}"
else
  echo "FAIL: shellcheck findings above"
  exit 1
fi
