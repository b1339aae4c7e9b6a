# Adds the bench/ drivers to a difftrain build whose top-level CMakeLists does not name bench/:
#   cmake -S . -B build-bench -DCMAKE_PROJECT_INCLUDE=$PWD/bench/add_bench.cmake
# CMake runs this file inside project(); the targets are defined once the top level is done.
set(DIFFTRAIN_BENCH_DIR ${CMAKE_CURRENT_LIST_DIR})
function(difftrain_add_bench_late)
  if(NOT TARGET ddp_compare_difftrain)
    include(${DIFFTRAIN_BENCH_DIR}/bench_targets.cmake)
  endif()
endfunction()
cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL difftrain_add_bench_late)
