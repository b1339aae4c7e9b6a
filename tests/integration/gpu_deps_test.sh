#!/usr/bin/env bash
# scripts/gpu-deps.sh end to end, without a GPU: pack Debian's packages into the archive, unpack
# it into a prefix, then, in a private mount namespace where the system's own copies of those
# libraries, headers and CMake packages are hidden, configure difftrain against the prefix,
# build the torch-free test suites (HDF5, libpng, OpenSSL, prometheus-cpp, GoogleTest) and run
# them, and start two processes with the relocated OpenMPI. Only the prefix can satisfy them.
# Usage: gpu_deps_test.sh [repo root]. Needs the Debian archive (apt-get download) and
# unshare(1). Exit 0 = passed, 1 = failed, 77 = this machine permits no mount namespace.
set -euo pipefail

root="${1:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Root gets a private mount namespace; anyone else a user namespace mapped to root.
namespace=(unshare -m)
[ "$(id -u)" -eq 0 ] || namespace=(unshare -rm)
if ! "${namespace[@]}" true 2>/dev/null; then
  echo "SKIP: '${namespace[*]}' is not permitted here, so the system's libraries cannot be hidden"
  exit 77
fi

"$root/scripts/gpu-deps.sh" pack "$work/deps.tar.xz" || fail "pack"
"$root/scripts/gpu-deps.sh" unpack "$work/deps.tar.xz" "$work/prefix" || fail "unpack"
[ -f "$work/prefix/env.sh" ] || fail "no env.sh"
if find "$work/prefix" -type l -lname '/*' ! -lname "$work/prefix/*" | grep -q .; then
  fail "absolute links leave the prefix: $(find "$work/prefix" -type l -lname '/*' ! -lname "$work/prefix/*" | head -3)"
fi

cat >"$work/isolated.sh" <<'EOF'
set -euo pipefail
root=$1 work=$2
lib=/usr/lib/x86_64-linux-gnu
for dir in $lib/cmake/{GTest,civetweb,fmt,prometheus-cpp,spdlog,yaml-cpp} \
           /usr/share/cmake/{CLI11,nlohmann_json} $lib/{openmpi,hdf5} \
           /usr/include/{hdf5,prometheus,yaml-cpp,spdlog,fmt,CLI,nlohmann,gtest,gmock,openssl}; do
  if [ -d "$dir" ]; then mount -t tmpfs none "$dir"; fi
done
: >"$work/empty"
for tool in mpicxx mpicc mpirun mpiexec h5cc; do
  if [ -e "/usr/bin/$tool" ]; then mount --bind "$work/empty" "$(readlink -f "/usr/bin/$tool")"; fi
done
# shellcheck disable=SC1091
source "$work/prefix/env.sh"
# shellcheck disable=SC2086
cmake -S "$root" -B "$work/build" -DCMAKE_BUILD_TYPE=Release $DIFFTRAIN_DEPS_CMAKE_ARGS \
  -DCMAKE_PREFIX_PATH="$DIFFTRAIN_DEPS/usr" >"$work/configure.log" 2>&1 ||
  { tail -30 "$work/configure.log"; exit 1; }
cache=$work/build/CMakeCache.txt
for key in MPI_mpi_LIBRARY HDF5_hdf5_LIBRARY_RELEASE prometheus-cpp_DIR yaml-cpp_DIR spdlog_DIR \
           CLI11_DIR nlohmann_json_DIR GTest_DIR; do
  value=$(grep "^$key:" "$cache" | cut -d= -f2-)
  case $value in
    "$DIFFTRAIN_DEPS"/*) echo "ok   $key=$value" ;;
    *) echo "FAIL $key is '$value', not in the prefix"; exit 1 ;;
  esac
done
cmake --build "$work/build" --target data_tests monitoring_tests -j 2 >"$work/build.log" 2>&1 ||
  { grep -E "error" "$work/build.log" | head -20; exit 1; }
if ldd "$work/build/tests/data_tests" | grep -E "libhdf5|libpng|libcrypto" | grep -v "$DIFFTRAIN_DEPS"; then
  echo "FAIL data_tests loads the libraries above from outside the prefix"; exit 1
fi
for suite in data_tests monitoring_tests; do
  "$work/build/tests/$suite" --gtest_brief=1 >"$work/$suite.log" 2>&1 ||
    { tail -20 "$work/$suite.log"; exit 1; }
  passed=$(grep -o 'PASSED  \] [0-9]* tests' "$work/$suite.log" | grep -o '[0-9]*')
  [ "${passed:-0}" -gt 0 ] || { echo "FAIL $suite ran no tests"; exit 1; }
  echo "ok   $suite against the prefix: $passed tests passed"
done
[ "$(command -v mpirun)" = "$DIFFTRAIN_DEPS/usr/bin/mpirun" ] || { echo "FAIL mpirun is $(command -v mpirun)"; exit 1; }
ranks=$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
  mpirun --oversubscribe --bind-to none -np 2 printenv OMPI_COMM_WORLD_RANK | sort | tr '\n' ' ')
[ "$ranks" = "0 1 " ] || { echo "FAIL relocated mpirun started ranks '$ranks'"; exit 1; }
echo "ok   relocated OpenMPI started ranks 0 and 1"
EOF

"${namespace[@]}" bash "$work/isolated.sh" "$root" "$work" || fail "build against the prefix"
echo "gpu-deps: packed, unpacked, built and ran against the prefix alone"
