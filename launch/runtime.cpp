// MPI bootstrap and device selection for one data-parallel worker.
#include "launch/runtime.h"

#include <c10/cuda/CUDAFunctions.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "launch/host_allocator.h"
#include "launch/mpi_check.h"

namespace difftrain::launch {

void throw_mpi_error(int code, const char* call, const char* file, int line) {
  char message[MPI_MAX_ERROR_STRING] = {};
  int length = 0;
  MPI_Error_string(code, message, &length);
  throw std::runtime_error(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                           ": " + std::string(message, static_cast<size_t>(length)));
}

namespace {
bool g_active = false;
}

Runtime::Runtime(int* argc, char*** argv, DeviceRequest device_request) {
  // A test harness (or a host program) may have started MPI already; then it also ends it.
  int initialized = 0;
  DIFFTRAIN_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    DIFFTRAIN_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided));
    owns_mpi_ = true;
  }
  g_active = true;
  // Errors come back as return codes so that the check macro can report them.
  DIFFTRAIN_MPI_CHECK(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank_));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &world_size_));

  // Local rank from the shared-memory split: right under mpirun, srun and Slurm alike
  // (SLURM_LOCALID is 0 for every rank that mpirun starts inside a job).
  MPI_Comm node_comm = MPI_COMM_NULL;
  DIFFTRAIN_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node_comm));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_rank(node_comm, &local_rank_));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_size(node_comm, &local_size_));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_free(&node_comm));

  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  hostname_ = name;

  const bool cuda = torch::cuda::is_available();
  if (device_request == DeviceRequest::kCuda && !cuda) {
    throw std::runtime_error("a CUDA device was asked for, but none is visible to rank " +
                             std::to_string(rank_) + " on " + hostname_);
  }
  if (cuda && device_request != DeviceRequest::kCpu) {
    const int count = static_cast<int>(torch::cuda::device_count());
    device_ = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(local_rank_ % count));
    use_device_on_this_thread(device_);
  }
  host_allocator_ = configure_host_allocator();
}

Runtime::~Runtime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_mpi_ && !finalized) MPI_Finalize();
  g_active = false;
}

int Runtime::default_threads() const {
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, cores / std::max(1, local_size_));
}

std::string Runtime::tag() const {
  return "[rank " + std::to_string(rank_) + "/" + std::to_string(world_size_) + "]";
}

void Runtime::report_error(const std::string& message) const {
  const std::string line = tag() + " error: " + message + "\n";
  size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
}

void Runtime::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort does not return; this keeps the [[noreturn]] promise.
}

bool Runtime::active() { return g_active; }

void use_device_on_this_thread(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::set_device(device.index());
}

}  // namespace difftrain::launch
