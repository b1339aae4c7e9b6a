# The benchmark drivers; included by bench/CMakeLists.txt and by bench/add_bench.cmake.
add_executable(ddp_compare_difftrain ${CMAKE_CURRENT_LIST_DIR}/ddp_compare/difftrain_ddp_bench.cpp)
target_link_libraries(ddp_compare_difftrain PRIVATE difftrain::trainer CLI11::CLI11)
target_precompile_headers(ddp_compare_difftrain REUSE_FROM difftrain_torch_pch)
target_compile_options(ddp_compare_difftrain PRIVATE ${DIFFTRAIN_WARNINGS})
# One place whichever way bench/ was added: bench/ddp_compare/run.sh looks for it there.
set_target_properties(ddp_compare_difftrain PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)

# Single-GPU comparison with PyTorch eager / torch.compile (bench/gpu_compare/run.sh). Peak
# device memory from LibTorch's CUDA allocator where LibTorch has CUDA, as trainer/ does.
if(C10_CUDA_LIBRARY)
  set(DIFFTRAIN_BENCH_PEAK_MEMORY ${CMAKE_CURRENT_LIST_DIR}/gpu_compare/peak_memory_cuda.cpp)
else()
  set(DIFFTRAIN_BENCH_PEAK_MEMORY ${CMAKE_CURRENT_LIST_DIR}/gpu_compare/peak_memory_host.cpp)
endif()
add_executable(gpu_compare_difftrain ${CMAKE_CURRENT_LIST_DIR}/gpu_compare/difftrain_gpu_bench.cpp
                                     ${DIFFTRAIN_BENCH_PEAK_MEMORY})
target_link_libraries(gpu_compare_difftrain PRIVATE difftrain::trainer CLI11::CLI11)
target_precompile_headers(gpu_compare_difftrain REUSE_FROM difftrain_torch_pch)
target_compile_options(gpu_compare_difftrain PRIVATE ${DIFFTRAIN_WARNINGS})
set_target_properties(gpu_compare_difftrain PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bench)
