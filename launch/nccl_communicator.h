// Communicator over NCCL for CUDA tensors: collectives run on the communicator's own CUDA
// stream, ordered after the caller's compute stream with events. A watchdog thread polls every
// all-reduce in flight against the deadline (non-blocking communicator +
// ncclCommGetAsyncError) and aborts the communicator (ncclCommAbort) at the deadline or on an
// error; the next call on the training thread then throws CollectiveTimeout or the error.
#pragma once

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "launch/collective_watchdog.h"
#include "launch/communicator.h"

namespace difftrain::launch {

// Stream assumption: collectives wait for the caller's current c10 CUDA stream, whatever it is
// (autograd's hooks run with the stream that produced the gradient).
//
// An all-reduce's wait() does not block the host: it orders the caller's current stream after
// the collective and returns, so the host goes on queueing the optimizer step behind it; its
// deadline is the watchdog's. broadcast() and barrier() block until done (they are set-up and
// shutdown calls, and a barrier is a host rendezvous).
class NcclCommunicator : public Communicator {
 public:
  // Collective: every rank of `bootstrap` calls this, in the same order.
  // Rank 0 makes the ncclUniqueId and sends it with MPI; each rank drives CUDA device
  // `device_index`, which must differ between the ranks of one node (NCCL refuses two ranks on
  // one GPU). Throws CollectiveTimeout when set-up does not finish within timeout_s.
  NcclCommunicator(int device_index, double timeout_s, MPI_Comm bootstrap = MPI_COMM_WORLD);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  // Tensors must be contiguous and on this communicator's device.
  std::unique_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) override;
  void broadcast(const at::Tensor& tensor, int root) override;
  void barrier() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "nccl"; }
  bool launches_from_any_thread() const override { return true; }
  // Throws the watchdog's error once it has aborted the communicator.
  void check_health() override;

  // Checks health, then orders the caller's current stream after `done` (no host wait). For
  // NcclWork of a watched all-reduce.
  void follow(cudaEvent_t done);

  // Blocks until `done` has completed, polling NCCL's asynchronous error state; at the deadline
  // aborts the communicator and throws CollectiveTimeout naming `what` and this rank. Then
  // orders the caller's current stream after `done`. For NcclWork.
  void wait_for(cudaEvent_t done, const std::string& what);

 private:
  class DeviceGuard;
  using Clock = std::chrono::steady_clock;
  Clock::time_point deadline_from_now() const;
  // After an NCCL call answered ncclInProgress: polls until the communicator is ready again.
  void wait_until_ready(const std::string& what, Clock::time_point deadline);
  [[noreturn]] void abort_and_throw(const std::string& what);
  // ncclCommAbort once, whichever thread gets here first. Caller holds comm_mutex_.
  void abort_locked();
  // ncclCommGetAsyncError under comm_mutex_; an aborted communicator throws (check_health()).
  ncclResult_t async_error();
  void check_tensor(const at::Tensor& tensor, const char* op) const;
  // Makes the communicator's stream wait for the caller's stream.
  void order_after_caller();
  // Orders stream_ after the caller's stream and runs `launch` (one NCCL call on stream_) under
  // comm_mutex_, waits until NCCL has taken it (deadline), then records `done` on stream_.
  void enqueue(const std::string& what, cudaEvent_t done,
               const std::function<ncclResult_t()>& launch);
  std::string describe(const char* op, const at::Tensor* tensor);

  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr;    // recorded on the caller's stream before each collective
  int* barrier_buffer_ = nullptr;  // one int on the device, for barrier()
  int device_ = 0;
  int rank_ = 0;
  int world_size_ = 1;
  double timeout_s_;
  uint64_t sequence_ = 0;
  // Guards comm_ between the training thread's calls and the watchdog's abort.
  std::mutex comm_mutex_;
  std::atomic<bool> aborted_{false};
  std::unique_ptr<CollectiveWatchdog> watchdog_;  // made once the communicator is ready
};

}  // namespace difftrain::launch
