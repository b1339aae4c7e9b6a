// Process-wide distributed runtime: MPI start-up and shut-down, this rank's place in the job
// (rank, world size, local rank on its node) and the device it owns.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "launch/settings.h"

namespace difftrain::launch {

// One per process, created before any collective and destroyed last. It also tunes the C
// library's allocator for training (see host_allocator.h). Works under `mpirun`,
// `srun --mpi=pmix` and as a plain single process (MPI singleton). When MPI is already up (a
// test main), it uses it and leaves MPI_Finalize to whoever started it. Not thread-safe: MPI is
// initialised with MPI_THREAD_FUNNELED, so only the thread that created the Runtime may call
// MPI.
class Runtime {
 public:
  // kCuda throws when this rank sees no CUDA device.
  Runtime(int* argc, char*** argv, DeviceRequest device_request = DeviceRequest::kAuto);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  // Rank among the processes on this node (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // cuda:(local rank mod GPUs) or cpu; a CUDA device is current on the constructing thread.
  const c10::Device& device() const { return device_; }
  const std::string& hostname() const { return hostname_; }
  // CPU threads this rank should use for intra-op parallelism: its share of the node's cores.
  int default_threads() const;
  // "[rank r/N]": the prefix of every log and error line.
  std::string tag() const;
  // What configure_host_allocator() did, for the start-up log.
  const std::string& host_allocator() const { return host_allocator_; }

  // Prints "[rank r/N] error: <message>" to stderr in one write, so that lines from ranks that
  // fail at the same moment never interleave.
  void report_error(const std::string& message) const;

  // Ends the whole job (every rank) with `code`; used when one rank fails so that no other rank
  // waits forever in a collective.
  [[noreturn]] void abort(int code) const;

  // Whether MPI is up in this process (false before a Runtime exists and after it is gone).
  static bool active();

 private:
  int rank_ = 0;
  int world_size_ = 1;
  int local_rank_ = 0;
  int local_size_ = 1;
  c10::Device device_{c10::kCPU};
  std::string hostname_;
  std::string host_allocator_;
  bool owns_mpi_ = false;  // this Runtime called MPI_Init_thread, so it calls MPI_Finalize
};

// Makes `device` the calling thread's current CUDA device; nothing for a CPU device. Every
// thread that touches CUDA calls it first, pinned host memory included: CUDA gives a thread
// without one GPU 0, and a context there (about 0.5 GB) for every rank of the node.
void use_device_on_this_thread(const c10::Device& device);

}  // namespace difftrain::launch
