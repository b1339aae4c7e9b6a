# The benchmark drivers; included by bench/CMakeLists.txt and by bench/add_bench.cmake.
add_executable(ddp_compare_difftrain ${CMAKE_CURRENT_LIST_DIR}/ddp_compare/difftrain_ddp_bench.cpp)
target_link_libraries(ddp_compare_difftrain PRIVATE difftrain::trainer CLI11::CLI11)
target_precompile_headers(ddp_compare_difftrain REUSE_FROM difftrain_torch_pch)
target_compile_options(ddp_compare_difftrain PRIVATE ${DIFFTRAIN_WARNINGS})
