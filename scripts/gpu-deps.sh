#!/usr/bin/env bash
# difftrain's build and runtime dependencies for a GPU node with no network, where LibTorch
# comes from the node's Python torch and the CUDA toolkit and a C++ compiler are installed.
#
#   scripts/gpu-deps.sh pack OUT.tar.xz
#       On a Debian 12 machine with its archive: downloads MPI (OpenMPI), HDF5, prometheus-cpp,
#       yaml-cpp, spdlog, CLI11, nlohmann-json, libpng, OpenSSL and GoogleTest with their
#       libraries (not the C library, the compiler or what every Linux system has), unpacks them
#       and writes one archive (about 17 MB).
#   scripts/gpu-deps.sh unpack ARCHIVE PREFIX
#       On the node: extracts the archive into PREFIX and writes PREFIX/env.sh, which sets PATH,
#       LD_LIBRARY_PATH and OPAL_PREFIX (Debian's OpenMPI, relocated) and
#       DIFFTRAIN_DEPS_CMAKE_ARGS for the configure step:
#
#         source PREFIX/env.sh
#         cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release $DIFFTRAIN_DEPS_CMAKE_ARGS \
#           -DCMAKE_PREFIX_PATH="$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)');$DIFFTRAIN_DEPS/usr"
set -euo pipefail

usage() {
  sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# What the build needs, as Debian 12 packages (their dependencies are added).
packages=(
  libopenmpi-dev openmpi-bin libhdf5-dev prometheus-cpp-dev libcli11-dev libyaml-cpp-dev
  libspdlog-dev nlohmann-json3-dev libpng-dev libssl-dev libgtest-dev zlib1g-dev
)
# Dependencies left out: the C library, the compilers and tools, base-system libraries, and
# libxml2, ICU and libpciaccess, which only hwloc's plugins (left out) need.
left_out=(
  adduser autoconf automake autotools-dev binutils binutils-common binutils-x86-64-linux-gnu
  catch2 cpp-12 debconf debianutils dpkg gcc-12 gcc-12-base gfortran-12 googletest libacl1
  libasan8 libaudit-common libaudit1 libbinutils libbsd0 libbz2-1.0 libc-dev-bin libc6 libc6-dev
  libcap-ng0 libcbor0.8 libcc1-0 libcrypt-dev libcrypt1 libctf-nobfd0 libctf0 libdb5.3 libedit2
  libfido2-1 libgcc-12-dev libgcc-s1 libgdbm-compat4 libgdbm6 libgfortran-12-dev libgmp10
  libgprofng0 libhwloc-plugins libicu72 libisl23 libitm1 libjansson4 libjs-jquery libjs-jquery-ui
  liblsan0 libltdl-dev liblzma5 libmd0 libmpc3 libmpfr6 libnsl-dev libnsl2 libpam-modules
  libpam-modules-bin libpam0g libpciaccess0 libpcre2-8-0 libperl5.36 libselinux1
  libsemanage-common libsemanage2 libsepol2 libstdc++6 libtinfo6 libtirpc-common libtirpc-dev
  libtirpc3 libtsan2 libubsan1 libudev1 libuuid1 libx11-6 libx11-data libxau6 libxcb1 libxdmcp6
  libxext6 libxml2 libxnvctrl0 libzstd1 linux-libc-dev m4 ocl-icd-libopencl1 openssh-client passwd
  perl perl-base perl-modules-5.36 rpcsvc-proto tar
)

pack() {
  local out=$1
  [[ $out == /* ]] || out=$PWD/$out
  local work
  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  # The full install set on an empty system, resolved by apt as an install would.
  : >"$work/empty-status"
  apt-get -o Dir::State::status="$work/empty-status" -s install --no-install-recommends \
    "${packages[@]}" | awk '/^Inst /{print $2}' | sort -u >"$work/all"
  printf '%s\n' "${left_out[@]}" | sort -u >"$work/left-out"
  comm -23 "$work/all" "$work/left-out" >"$work/wanted"
  echo "gpu-deps: $(wc -l <"$work/wanted") packages"
  mkdir -p "$work/debs" "$work/root"
  (cd "$work/debs" && xargs apt-get download -q <"$work/wanted" >/dev/null)
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done
  # Documentation and static libraries are not needed (GoogleTest ships only static ones).
  rm -rf "$work"/root/usr/share/{doc,man,info,lintian}
  find "$work/root" -name '*.a' ! -name 'libgtest*' ! -name 'libgmock*' -delete
  ls "$work/debs" >"$work/root/PACKAGES"
  tar -C "$work/root" -cJf "$out" .
  echo "gpu-deps: wrote $out ($(du -h "$out" | cut -f1))"
}

unpack() {
  local archive=$1 prefix=$2
  [[ -f $archive ]] || { echo "gpu-deps: no archive $archive" >&2; exit 1; }
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd)
  tar -C "$prefix" -xJf "$archive"
  # Absolute links (Debian's point into /usr) would leave the prefix: re-point them inside it.
  local link target
  while IFS= read -r link; do
    target=$prefix$(readlink "$link")
    [[ -e $target ]] || { echo "gpu-deps: $link points to missing $target" >&2; exit 1; }
    ln -sfn "$target" "$link"
  done < <(find "$prefix" -type l -lname '/*' ! -lname "$prefix/*")
  # Debian reaches these through update-alternatives, which dpkg -x does not run.
  local bin=$prefix/usr/bin
  for tool in mpirun mpiexec mpicc mpicxx mpic++; do
    [[ -e $bin/$tool.openmpi ]] && ln -sfn "$tool.openmpi" "$bin/$tool"
  done
  local lib=$prefix/usr/lib/x86_64-linux-gnu
  cat >"$prefix/env.sh" <<EOF
# difftrain's dependencies in $prefix (written by scripts/gpu-deps.sh)
export DIFFTRAIN_DEPS=$prefix
export PATH=$bin:\$PATH
export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib:$lib/hdf5/serial\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
export OPAL_PREFIX=$prefix/usr
export DIFFTRAIN_DEPS_CMAKE_ARGS="-DMPI_CXX_COMPILER=$bin/mpicxx.openmpi -DHDF5_ROOT=$lib/hdf5/serial"
EOF
  echo "gpu-deps: unpacked into $prefix; source $prefix/env.sh"
}

case ${1:-} in
  pack) [[ $# -eq 2 ]] || usage; pack "$2" ;;
  unpack) [[ $# -eq 3 ]] || usage; unpack "$2" "$3" ;;
  *) usage ;;
esac
