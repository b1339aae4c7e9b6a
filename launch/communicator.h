// The collective operations data-parallel training needs, behind one interface with one
// backend per file (MPI for host tensors; NCCL for CUDA tensors where it is built).
#pragma once

#include <ATen/core/Tensor.h>

#include <memory>
#include <stdexcept>
#include <string>

#include "launch/settings.h"

namespace difftrain::launch {

class Runtime;

// Thrown when a collective does not finish within the communicator's deadline: a rank died,
// hangs, or skipped the call. The message names the collective, the size and the rank.
class CollectiveTimeout : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A collective in flight. wait() returns once it is complete (then the tensor holds the result)
// or throws CollectiveTimeout at the deadline; on a backend that watches collectives from a
// thread of its own (NCCL), wait() instead orders the caller's current CUDA stream after the
// collective and returns at once, and a missed deadline is thrown by the next call on the
// communicator or by check_health(). Must be waited on before the tensor is touched.
// Called from the thread that launched it (or, for a backend that launches_from_any_thread(),
// from any thread, never two at once).
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
  // Non-blocking: lets the backend make progress (MPI moves data only inside MPI calls) and
  // says whether wait() would return at once. Never throws CollectiveTimeout.
  virtual bool is_completed() = 0;
};

// Collectives over all ranks of the job. Not thread-safe: one thread (the training loop) issues
// every call, and every rank issues the same calls in the same order.
class Communicator {
 public:
  virtual ~Communicator() = default;

  // Collective: every rank calls this, in the same order.
  // In-place element-wise sum across ranks of a contiguous tensor.
  virtual std::unique_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) = 0;
  // Collective: every rank calls this, in the same order.
  void all_reduce_sum(const at::Tensor& tensor) { all_reduce_sum_async(tensor)->wait(); }
  // Collective: every rank calls this, in the same order.
  // Copies root's contiguous tensor into every rank's tensor of the same shape and dtype.
  virtual void broadcast(const at::Tensor& tensor, int root) = 0;
  // Collective: every rank calls this, in the same order.
  virtual void barrier() = 0;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;
  // Whether collectives may be launched (and waited on) from a thread other than the one that
  // created the communicator, provided no two calls overlap. Autograd runs the backward pass of
  // CUDA tensors on its own thread, so this decides whether gradient buckets can be launched
  // during backward there. MPI: no (MPI_THREAD_FUNNELED); NCCL: yes.
  virtual bool launches_from_any_thread() const { return false; }
  // Throws (CollectiveTimeout, or the backend's error) if a collective waited on without
  // blocking has since failed or missed its deadline, which aborted the communicator; returns
  // at once otherwise. Call it after synchronising with the device and before trusting what the
  // collectives produced (e.g. before writing a checkpoint). Backends whose wait() blocks never
  // throw here.
  virtual void check_health() {}
};

// kMpi: host tensors; kNccl: CUDA tensors (throws when the runtime's device is not CUDA);
// kAuto: NCCL when the runtime's device is CUDA, else MPI. timeout_s (> 0) bounds every
// collective.
// Collective: every rank calls this, in the same order.
std::unique_ptr<Communicator> make_communicator(Backend backend, const Runtime& runtime,
                                                double timeout_s);

}  // namespace difftrain::launch
