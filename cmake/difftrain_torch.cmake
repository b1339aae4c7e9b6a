# LibTorch, CUDA and NCCL for difftrain: one supported line, PyPI's CUDA build of PyTorch.
# Finds LibTorch through DIFFTRAIN_PYTHON (default: the project's .venv, made by
# scripts/install-deps.sh) unless Torch_DIR is given, then insists on what the GPU path needs:
# the new C++ ABI, CUDA in LibTorch, and NCCL (the one LibTorch itself loads, first).
# Sets DIFFTRAIN_TORCH_VERSION, DIFFTRAIN_CUDA_VERSION and the imported target NCCL::NCCL.

set(DIFFTRAIN_PYTHON "${PROJECT_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python whose torch package provides LibTorch (scripts/install-deps.sh makes .venv)")

# difftrain_fail(text...): a configure error of one line, then stop.
function(difftrain_fail)
  string(JOIN "" text ${ARGN})
  # The leading space keeps CMake from wrapping the line.
  message(FATAL_ERROR " difftrain: ${text}")
endfunction()

if(NOT Torch_DIR)
  execute_process(
    COMMAND "${DIFFTRAIN_PYTHON}" -c "import torch; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE _difftrain_torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
    ERROR_QUIET RESULT_VARIABLE _difftrain_python_rc)
  if(NOT _difftrain_python_rc EQUAL 0)
    difftrain_fail("cannot import torch with DIFFTRAIN_PYTHON=${DIFFTRAIN_PYTHON}: run "
                   "scripts/install-deps.sh (make deps), or pass -DTorch_DIR=<LibTorch>/share/cmake/Torch")
  endif()
  list(PREPEND CMAKE_PREFIX_PATH "${_difftrain_torch_prefix}")
  set(_difftrain_torch_dir "${_difftrain_torch_prefix}/Torch")
else()
  set(_difftrain_torch_dir "${Torch_DIR}")
endif()

# Caffe2's CUDA set-up wants nvcc; the machine's toolkit is the one at /usr/local/cuda.
if(NOT CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX} AND EXISTS /usr/local/cuda/bin/nvcc)
  set(CMAKE_CUDA_COMPILER /usr/local/cuda/bin/nvcc CACHE FILEPATH "nvcc for LibTorch's CUDA set-up")
endif()

# The CUDA runtime (and NVRTC) LibTorch was built with and loads, from the NVIDIA wheels
# beside torch, not the toolkit's, which may be older: a process holds one libcudart.so.13, and
# the one the executable names first is the one LibTorch gets too.
# <site-packages>/torch/share/cmake/Torch: a LibTorch from a pip install.
get_filename_component(_difftrain_site_packages "${_difftrain_torch_dir}/../../../.." ABSOLUTE)
foreach(_lib IN ITEMS cudart nvrtc)
  set(_wheel_lib "${_difftrain_site_packages}/nvidia/cu13/lib/lib${_lib}.so.13")
  if(NOT CUDA_${_lib}_LIBRARY AND EXISTS "${_wheel_lib}")
    set(CUDA_${_lib}_LIBRARY "${_wheel_lib}" CACHE FILEPATH "CUDA ${_lib} (the one LibTorch loads)")
  endif()
endforeach()

# difftrain compiles no CUDA kernels, so the architectures only matter to LibTorch's set-up;
# naming them skips its probe of the installed GPUs (a test program this machine cannot run).
if(NOT DEFINED TORCH_CUDA_ARCH_LIST AND NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0")
endif()
find_package(Torch QUIET)
if(NOT Torch_FOUND)
  difftrain_fail("LibTorch not found (Torch_DIR=${Torch_DIR}): run scripts/install-deps.sh")
endif()
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  difftrain_fail("LibTorch at ${TORCH_INSTALL_PREFIX} uses the old C++ ABI "
                 "(_GLIBCXX_USE_CXX11_ABI=0), which cannot link with Debian's C++ libraries: "
                 "use the pinned torch of python/requirements.txt")
endif()
set(DIFFTRAIN_TORCH_VERSION "${Torch_VERSION}")
# CI builds the pin of python/requirements.txt; a GPU node's own torch (the runbook) may be any
# release with CUDA 13 wheels, 2.9 on.
if(DIFFTRAIN_TORCH_VERSION VERSION_LESS 2.9)
  difftrain_fail("LibTorch ${DIFFTRAIN_TORCH_VERSION} at ${TORCH_INSTALL_PREFIX} is older than "
                 "2.9: use the pinned torch of python/requirements.txt")
endif()
if(NOT C10_CUDA_LIBRARY)
  difftrain_fail("LibTorch ${DIFFTRAIN_TORCH_VERSION} at ${TORCH_INSTALL_PREFIX} has no CUDA; "
                 "difftrain builds against PyPI's CUDA build (python/requirements.txt)")
endif()
find_package(CUDAToolkit REQUIRED)
set(DIFFTRAIN_CUDA_VERSION "${CUDAToolkit_VERSION}")

# NCCL: the copy LibTorch loads (the nvidia-nccl wheel beside torch, libnccl.so.2 only), then
# NCCL_ROOT, then the CUDA toolkit's. Without it GPU gradients would have to cross host memory.
list(APPEND CMAKE_MODULE_PATH ${PROJECT_SOURCE_DIR}/cmake)
get_filename_component(_difftrain_site_packages "${TORCH_INSTALL_PREFIX}/.." ABSOLUTE)
set(NCCL_HINTS "${_difftrain_site_packages}/nvidia/nccl")
find_package(NCCL 2.14 QUIET)
if(NOT NCCL_FOUND)
  difftrain_fail("LibTorch ${DIFFTRAIN_TORCH_VERSION} has CUDA but NCCL >= 2.14 was not found "
                 "(looked in ${NCCL_HINTS}, NCCL_ROOT and the CUDA toolkit at "
                 "${CUDAToolkit_LIBRARY_ROOT}): install the nvidia-nccl wheel or set NCCL_ROOT")
endif()
message(STATUS "difftrain: LibTorch ${DIFFTRAIN_TORCH_VERSION} (${TORCH_INSTALL_PREFIX}), "
               "CUDA toolkit ${CUDAToolkit_VERSION}, NCCL ${NCCL_VERSION} (${NCCL_LIBRARY})")
