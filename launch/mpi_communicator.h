// Communicator over MPI for host tensors. Every collective is non-blocking underneath and
// polled against a deadline, so a missing rank ends the job with a message instead of a hang.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>

#include "launch/communicator.h"

namespace difftrain::launch {

class MpiCommunicator : public Communicator {
 public:
  // Duplicates MPI_COMM_WORLD so that our traffic never matches anyone else's.
  // Collective: every rank calls this, in the same order.
  // `base` is the group to duplicate (MPI_COMM_SELF gives a one-rank communicator, for tests).
  explicit MpiCommunicator(double timeout_s, MPI_Comm base = MPI_COMM_WORLD);
  ~MpiCommunicator() override;

  std::unique_ptr<Work> all_reduce_sum_async(const at::Tensor& tensor) override;
  void broadcast(const at::Tensor& tensor, int root) override;
  void barrier() override;

  int rank() const override { return rank_; }
  int world_size() const override { return world_size_; }
  std::string backend() const override { return "mpi"; }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int world_size_ = 1;
  double timeout_s_;
  uint64_t sequence_ = 0;  // collectives issued so far, named in timeout messages
};

// Waits for `request`, polling so MPI makes progress, until it completes or `timeout_s` passes;
// then throws CollectiveTimeout with "<what> on rank r/N did not finish within T s".
void wait_with_deadline(MPI_Request* request, double timeout_s, const std::string& what, int rank,
                        int world_size);

}  // namespace difftrain::launch
