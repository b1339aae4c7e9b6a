#!/usr/bin/env bash
# Shared helpers for integration tests: temp dirs, assertions, MPI launch flags, PNG checks.
# Source it; tests call `fail "why"` on the first broken expectation.

set -euo pipefail

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# Used by the scripts that source this file.
# shellcheck disable=SC2034
MPIRUN=(mpirun --oversubscribe --bind-to none)
# shellcheck disable=SC2034
FMNIST=/usr/share/datasets/fashion-mnist
# The project's Python (scripts/install-deps.sh makes .venv; CTest passes DIFFTRAIN_PYTHON).
PY=${DIFFTRAIN_PYTHON:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin/python}

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

make_temp_dir() {
  TMP=$(mktemp -d "${TMPDIR:-/tmp}/difftrain-it.XXXXXX")
  trap 'rm -rf "$TMP"' EXIT
}

# expect_error NAME EXPECTED_SUBSTRING -- command...: the command must exit non-zero and print
# exactly one line on stderr that contains EXPECTED_SUBSTRING.
expect_error() {
  local name=$1 want=$2
  shift 3
  local out err rc=0
  out=$("$@" 2>"$TMP/stderr") || rc=$?
  err=$(cat "$TMP/stderr")
  [ "$rc" -ne 0 ] || fail "$name: exit code 0, want non-zero (stdout: $out)"
  [ "$(printf '%s\n' "$err" | grep -c .)" -eq 1 ] || fail "$name: want one stderr line, got: $err"
  case "$err" in
    *"$want"*) echo "ok: $name -> $err" ;;
    *) fail "$name: stderr '$err' does not contain '$want'" ;;
  esac
}

# png_size FILE: prints "WIDTHxHEIGHT" from the PNG header, or fails if FILE is not a PNG.
png_size() {
  "$PY" - "$1" <<'PYEOF'
import struct, sys
data = open(sys.argv[1], "rb").read(32)
if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
    sys.exit("not a PNG: " + sys.argv[1])
w, h = struct.unpack(">II", data[16:24])
print(f"{w}x{h}")
PYEOF
}

# start_fmnist_test BIN SHARDS: the common start of a training test: a temp dir as the working
# directory, CONFIG = configs/fmnist-tiny.yaml, and Fashion-MNIST's t10k split prepared into
# ./data (padded to 32x32) in SHARDS shards; prepare's output goes to prepare.out.
start_fmnist_test() {
  # shellcheck disable=SC2034
  CONFIG=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/configs/fmnist-tiny.yaml
  make_temp_dir
  cd "$TMP" || fail "cannot enter $TMP"
  "$1" prepare --images "$FMNIST/t10k-images-idx3-ubyte.gz" --labels "$FMNIST/t10k-labels-idx1-ubyte.gz" \
    --out data --shards "$2" --pad-to 32 >prepare.out
}
