# shellcheck shell=bash
# What the tests that run the real trainer need first: the difftrain binary (skip when it is
# not built) and a prepared Fashion-MNIST dataset (given, or prepared here once per test).
# Sourced after testlib.sh.

readonly T_FMNIST_DIR=/usr/share/datasets/fashion-mnist

# t_trainer_require BUILD_DIR_OR_BINARY: set T_DIFFTRAIN to the difftrain binary (given
# directly, or BUILD_DIR/trainer/difftrain), or skip when it is not built.
t_trainer_require() {
  local where=$1
  if [[ -d "${where}" ]]; then
    where="${where}/trainer/difftrain"
  fi
  [[ -x "${where}" ]] || t_skip "difftrain is not built (no executable ${where})"
  T_DIFFTRAIN="$(cd "$(dirname "${where}")" && pwd)/$(basename "${where}")"
}

# t_trainer_data [DIR]: set T_DATA_DIR to DIR when it holds a prepared dataset (index.json),
# else prepare one under the cluster's temporary folder (4 shards, padded to 32x32).
t_trainer_data() {
  if [[ -n "${1:-}" ]]; then
    [[ -r "$1/index.json" ]] || t_fail "$1 is not a prepared dataset (no index.json)"
    T_DATA_DIR=$1
    return 0
  fi
  [[ -r "${T_FMNIST_DIR}/train-images-idx3-ubyte.gz" ]] ||
    t_skip "no Fashion-MNIST in ${T_FMNIST_DIR} (install dataset-fashion-mnist)"
  T_DATA_DIR="${SLURM_TEST_DIR:?start the cluster first}/data"
  local start_s=${SECONDS}
  "${T_DIFFTRAIN}" prepare --images "${T_FMNIST_DIR}/train-images-idx3-ubyte.gz" \
    --labels "${T_FMNIST_DIR}/train-labels-idx1-ubyte.gz" \
    --out "${T_DATA_DIR}" --shards 4 --pad-to 32 >"${SLURM_TEST_DIR}/log/prepare.out" 2>&1 ||
    t_fail "difftrain prepare failed: $(tail -n 5 "${SLURM_TEST_DIR}/log/prepare.out")"
  t_ok "prepared Fashion-MNIST in ${T_DATA_DIR} in $((SECONDS - start_s)) s"
}
