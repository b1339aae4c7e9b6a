// MPI backend of Communicator: MPI_Iallreduce / MPI_Ibcast / MPI_Ibarrier polled to a deadline.
#include "launch/mpi_communicator.h"

#include <ATen/ATen.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "launch/mpi_check.h"

namespace difftrain::launch {
namespace {

MPI_Datatype mpi_type(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kFloat: return MPI_FLOAT;
    case at::kDouble: return MPI_DOUBLE;
    case at::kLong: return MPI_INT64_T;
    case at::kInt: return MPI_INT32_T;
    case at::kByte: return MPI_UINT8_T;
    case at::kChar: return MPI_INT8_T;
    default:
      throw std::runtime_error(std::string("MPI communicator: unsupported dtype ") +
                               std::string(c10::toString(tensor.scalar_type())));
  }
}

void check_host_tensor(const at::Tensor& tensor, const char* op) {
  if (!tensor.device().is_cpu() || !tensor.is_contiguous()) {
    throw std::runtime_error(std::string("MPI communicator ") + op +
                             ": needs a contiguous CPU tensor, got one on " +
                             tensor.device().str());
  }
  if (tensor.numel() > std::numeric_limits<int>::max()) {
    throw std::runtime_error(std::string("MPI communicator ") + op + ": tensor of " +
                             std::to_string(tensor.numel()) + " elements exceeds MPI's int count");
  }
}

// "all_reduce_sum #12 of 4.00 MB": the sequence number tells which call of a rank's program
// order a timeout belongs to, so that a rank that skipped one shows up as a mismatch.
std::string describe(const char* op, uint64_t sequence, const at::Tensor& tensor) {
  char text[96];
  std::snprintf(text, sizeof(text), "%s #%llu of %.2f MB", op,
                static_cast<unsigned long long>(sequence),
                static_cast<double>(tensor.numel() * tensor.element_size()) / 1e6);
  return text;
}

class MpiWork : public Work {
 public:
  MpiWork(MPI_Request request, at::Tensor tensor, std::string what, double timeout_s, int rank,
          int world_size)
      : request_(request), tensor_(std::move(tensor)), what_(std::move(what)),
        timeout_s_(timeout_s), rank_(rank), world_size_(world_size) {}
  ~MpiWork() override {
    // An abandoned request cannot be cancelled portably; leaving it is safe only because the
    // caller is about to abort the job (the only way a Work is dropped unwaited).
  }
  void wait() override {
    if (request_ == MPI_REQUEST_NULL) return;
    wait_with_deadline(&request_, timeout_s_, what_, rank_, world_size_);
  }
  bool is_completed() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    DIFFTRAIN_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
    return done != 0;  // MPI_Test sets a completed request to MPI_REQUEST_NULL
  }

 private:
  MPI_Request request_;
  at::Tensor tensor_;  // keeps the buffer alive while MPI uses it
  std::string what_;
  double timeout_s_;
  int rank_;
  int world_size_;
};

}  // namespace

void wait_with_deadline(MPI_Request* request, double timeout_s, const std::string& what, int rank,
                        int world_size) {
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  const auto deadline = start + std::chrono::duration<double>(timeout_s);
  // Spin briefly (small collectives finish in microseconds), then back off to at most 1 ms so
  // that a waiting rank does not steal the core a slower rank is computing on.
  auto pause = std::chrono::microseconds(0);
  while (true) {
    int done = 0;
    DIFFTRAIN_MPI_CHECK(MPI_Test(request, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (Clock::now() > deadline) {
      char seconds[32];
      std::snprintf(seconds, sizeof(seconds), "%g", timeout_s);
      throw CollectiveTimeout(what + " on rank " + std::to_string(rank) + "/" +
                              std::to_string(world_size) + " did not finish within " + seconds +
                              " s (dist.timeout_s): another rank died, hangs, or skipped it");
    }
    if (Clock::now() - start > std::chrono::microseconds(200)) {
      pause = std::min(std::chrono::microseconds(1000), pause + std::chrono::microseconds(20));
      std::this_thread::sleep_for(pause);
    }
  }
}

MpiCommunicator::MpiCommunicator(double timeout_s, MPI_Comm base) : timeout_s_(timeout_s) {
  DIFFTRAIN_MPI_CHECK(MPI_Comm_dup(base, &comm_));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_size(comm_, &world_size_));
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (comm_ != MPI_COMM_NULL && !finalized) MPI_Comm_free(&comm_);
}

std::unique_ptr<Work> MpiCommunicator::all_reduce_sum_async(const at::Tensor& tensor) {
  check_host_tensor(tensor, "all_reduce_sum");
  MPI_Request request = MPI_REQUEST_NULL;
  if (world_size_ > 1) {
    DIFFTRAIN_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, tensor.data_ptr(),
                                       static_cast<int>(tensor.numel()), mpi_type(tensor), MPI_SUM,
                                       comm_, &request));
  }
  return std::make_unique<MpiWork>(request, tensor, describe("all_reduce_sum", sequence_++, tensor),
                                   timeout_s_, rank_, world_size_);
}

void MpiCommunicator::broadcast(const at::Tensor& tensor, int root) {
  check_host_tensor(tensor, "broadcast");
  if (world_size_ == 1) return;
  MPI_Request request = MPI_REQUEST_NULL;
  DIFFTRAIN_MPI_CHECK(MPI_Ibcast(tensor.data_ptr(), static_cast<int>(tensor.numel()),
                                 mpi_type(tensor), root, comm_, &request));
  wait_with_deadline(&request, timeout_s_, describe("broadcast", sequence_++, tensor), rank_,
                     world_size_);
}

void MpiCommunicator::barrier() {
  if (world_size_ == 1) return;
  MPI_Request request = MPI_REQUEST_NULL;
  DIFFTRAIN_MPI_CHECK(MPI_Ibarrier(comm_, &request));
  wait_with_deadline(&request, timeout_s_, "barrier #" + std::to_string(sequence_++), rank_,
                     world_size_);
}

}  // namespace difftrain::launch
