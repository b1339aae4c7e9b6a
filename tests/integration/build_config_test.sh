#!/usr/bin/env bash
# The build is the CUDA build: `difftrain --version` names LibTorch 2.x with CUDA and NCCL
# compiled in (and MPI, HDF5), and configuring against the wrong LibTorch stops with one line:
# none at all, an old-ABI one, and a CUDA one whose NCCL cannot be found (every NCCL on the
# machine hidden in a private mount namespace).
# Usage: build_config_test.sh DIFFTRAIN_BINARY [repo root]. Exit 0 = passed, 1 = failed,
# 77 = this machine permits no mount namespace.
source "$(dirname "$0")/lib.sh"
BIN=${1:?usage: build_config_test.sh DIFFTRAIN_BINARY [repo root]}
ROOT=${2:-$(cd "$(dirname "$0")/../.." && pwd)}
make_temp_dir

version=$("$BIN" --version)
echo "$version"
for want in "^LibTorch 2\.[0-9]+" "^CUDA: compiled in \(LibTorch built with 1[0-9]\.[0-9]+, runtime 1[0-9]\.[0-9]+ loaded\)" \
            "^cuDNN: [0-9]+\.[0-9]+" "^NCCL: compiled in, 2\.[0-9]+\.[0-9]+ \(built against 2\.[0-9]+\.[0-9]+\)" \
            "^MPI: Open MPI v4" "^HDF5: 1\.[0-9]+\.[0-9]+$"; do
  grep -Eq "$want" <<<"$version" || fail "--version has no line matching '$want'"
done
# The commit named is this checkout's, and it reaches version.cpp through a generated header,
# not the library's compile flags (every object depends on those: a new commit would rebuild it).
commit=$(sed -n 's/^difftrain .* (commit \(.*\))$/\1/p' <<<"$version")
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
  if ! [[ $commit =~ ^[0-9a-f]{12}$ ]] || ! git -C "$ROOT" cat-file -e "$commit^{commit}"; then
    fail "--version names commit '$commit', not one of $ROOT"
  fi
fi
flags=$(dirname "$BIN")/CMakeFiles/difftrain_trainer.dir/flags.make
if [ -f "$flags" ] && grep -q GIT_COMMIT "$flags"; then
  fail "$flags holds the commit: every new commit would rebuild the trainer library"
fi
# The NCCL compiled against is the one loaded (LibTorch's).
nccl=$(grep '^NCCL:' <<<"$version")
if ! [[ $nccl =~ ([0-9.]+)\ \(built\ against\ ([0-9.]+)\) ]] ||
  [ "${BASH_REMATCH[1]}" != "${BASH_REMATCH[2]}" ]; then
  fail "NCCL loaded and compiled against differ: $nccl"
fi

# expect_configure_error NAME WANT cmake-args...: configuring fails with one "difftrain:" line
# that contains WANT.
expect_configure_error() {
  local name=$1 want=$2
  shift 2
  local rc=0
  cmake -S "$ROOT" -B "$TMP/build-$name" "$@" >"$TMP/$name.log" 2>&1 || rc=$?
  [ "$rc" -ne 0 ] || fail "$name: configure succeeded"
  local lines
  lines=$(grep -c 'difftrain:' "$TMP/$name.log" || true)
  [ "$lines" -eq 1 ] || { cat "$TMP/$name.log"; fail "$name: want one 'difftrain:' line, got $lines"; }
  grep 'difftrain:' "$TMP/$name.log" | grep -qF "$want" ||
    { cat "$TMP/$name.log"; fail "$name: the difftrain line does not say '$want'"; }
  echo "ok: $name -> $(grep 'difftrain:' "$TMP/$name.log" | sed 's/^ *//')"
}

expect_configure_error no-torch "cannot import torch with DIFFTRAIN_PYTHON=$TMP/no-python" \
  -DDIFFTRAIN_PYTHON="$TMP/no-python"

# A LibTorch package that says it was built with the pre-C++11 ABI, as some 2.x wheels were.
fake=$TMP/old-abi/share/cmake/Torch
mkdir -p "$fake"
cat >"$fake/TorchConfig.cmake" <<'CMAKE'
get_filename_component(TORCH_INSTALL_PREFIX "${CMAKE_CURRENT_LIST_DIR}/../../.." ABSOLUTE)
set(TORCH_CXX_FLAGS "-D_GLIBCXX_USE_CXX11_ABI=0")
set(TORCH_LIBRARIES torch)
set(Torch_FOUND TRUE)
CMAKE
echo 'set(PACKAGE_VERSION "2.5.1")
set(PACKAGE_VERSION_COMPATIBLE TRUE)' >"$fake/TorchConfigVersion.cmake"
expect_configure_error old-abi "uses the old C++ ABI (_GLIBCXX_USE_CXX11_ABI=0)" -DTorch_DIR="$fake"

# The real CUDA LibTorch with every NCCL hidden: the wheel beside torch and the toolkit's (torch
# itself cannot be imported then, so CMake is given its folder).
namespace=(unshare -m)
[ "$(id -u)" -eq 0 ] || namespace=(unshare -rm)
if ! "${namespace[@]}" true 2>/dev/null; then
  echo "SKIP: '${namespace[*]}' is not permitted here, so NCCL cannot be hidden"
  exit 77
fi
site=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))')
cat >"$TMP/hide-nccl.sh" <<'SH'
set -euo pipefail
site=$1 tmp=$2
shift 2
# Each folder is mounted over by a farm of links to its files but NCCL's; the links point into
# a second mount of the folder, which the first does not cover.
n=0
for dir in "$site/nvidia/nccl/include" "$site/nvidia/nccl/lib" \
           "$(readlink -f /usr/local/cuda/include)" "$(readlink -f /usr/local/cuda/lib64)"; do
  [ -d "$dir" ] || continue
  n=$((n + 1))
  mkdir "$tmp/original-$n" "$tmp/farm-$n"
  mount --bind "$dir" "$tmp/original-$n"
  for entry in "$tmp/original-$n"/*; do
    case $(basename "$entry") in nccl* | libnccl*) ;; *) ln -s "$entry" "$tmp/farm-$n/" ;; esac
  done
  mount --bind "$tmp/farm-$n" "$dir"
done
exec "$@"
SH
rc=0
"${namespace[@]}" bash "$TMP/hide-nccl.sh" "$site" "$TMP" \
  cmake -S "$ROOT" -B "$TMP/build-no-nccl" -DTorch_DIR="$site/torch/share/cmake/Torch" \
  >"$TMP/no-nccl.log" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "no-nccl: configure succeeded with NCCL hidden"
grep 'difftrain:' "$TMP/no-nccl.log" | grep -q "has CUDA but NCCL >= 2.14 was not found" ||
  { tail -30 "$TMP/no-nccl.log"; fail "no-nccl: no one-line NCCL error"; }
echo "ok: no-nccl -> $(grep 'difftrain:' "$TMP/no-nccl.log" | sed 's/^ *//')"
