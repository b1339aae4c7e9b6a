# The benchmark drivers; included by bench/CMakeLists.txt and by bench/add_bench.cmake.
add_executable(ddp_compare_difftrain ${CMAKE_CURRENT_LIST_DIR}/ddp_compare/difftrain_ddp_bench.cpp)
target_link_libraries(ddp_compare_difftrain PRIVATE difftrain::trainer CLI11::CLI11)
target_precompile_headers(ddp_compare_difftrain REUSE_FROM difftrain_torch_pch)
target_compile_options(ddp_compare_difftrain PRIVATE ${DIFFTRAIN_WARNINGS})
# One place whichever way bench/ was added: bench/ddp_compare/run.sh looks for it there.
set_target_properties(ddp_compare_difftrain PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
