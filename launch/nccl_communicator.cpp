// NCCL backend of Communicator: non-blocking NCCL communicator, own stream, event ordering;
// all-reduces watched by a CollectiveWatchdog thread, broadcast and barrier polled in place;
// ncclCommAbort at the deadline or on an error.
#include "launch/nccl_communicator.h"

#include <ATen/ATen.h>

#include <cstdio>
#include <stdexcept>
#include <thread>

#include "launch/mpi_check.h"
#include "launch/mpi_communicator.h"
#include "launch/nccl_check.h"
#include "launch/runtime.h"

#include <c10/cuda/CUDAStream.h>

namespace difftrain::launch {

void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line) {
  throw std::runtime_error(std::string(call) + " failed at " + file + ":" + std::to_string(line) +
                           ": " + cudaGetErrorString(code));
}

ncclResult_t check_nccl(ncclResult_t result, const char* call, const char* file, int line) {
  if (result == ncclSuccess || result == ncclInProgress) return result;
  const char* detail = ncclGetLastError(nullptr);
  throw std::runtime_error(
      std::string(call) + " failed at " + file + ":" + std::to_string(line) + ": " +
      ncclGetErrorString(result) +
      (detail != nullptr && *detail != '\0' ? std::string(": ") + detail : ""));
}

namespace {

ncclDataType_t nccl_type(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kFloat:
      return ncclFloat32;
    case at::kDouble:
      return ncclFloat64;
    case at::kHalf:
      return ncclFloat16;
    case at::kBFloat16:
      return ncclBfloat16;
    case at::kLong:
      return ncclInt64;
    case at::kInt:
      return ncclInt32;
    case at::kByte:
      return ncclUint8;
    case at::kChar:
      return ncclInt8;
    default:
      throw std::runtime_error(std::string("NCCL communicator: unsupported dtype ") +
                               std::string(c10::toString(tensor.scalar_type())));
  }
}

// The stream the caller's kernels run on.
cudaStream_t caller_stream(int device) {
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
}

// Polls gently: spin for the first 200 us (small collectives), then sleep up to 1 ms.
class Backoff {
 public:
  void pause() {
    if (std::chrono::steady_clock::now() - start_ < std::chrono::microseconds(200)) return;
    sleep_ = std::min(std::chrono::microseconds(1000), sleep_ + std::chrono::microseconds(20));
    std::this_thread::sleep_for(sleep_);
  }

 private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::microseconds sleep_{0};
};

// A CUDA event shared by a Work and the watchdog's probe; destroyed by whichever lets go last
// (CUDA releases an event destroyed while pending once it completes).
class Event {
 public:
  Event() { DIFFTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(event_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// watched (all-reduce): wait() orders the caller's stream after the collective and returns; the
// watchdog enforces the deadline. Otherwise (broadcast, barrier) wait() blocks until done.
class NcclWork : public Work {
 public:
  NcclWork(NcclCommunicator& communicator, std::shared_ptr<Event> done, at::Tensor tensor,
           std::string what, bool watched)
      : communicator_(communicator),
        done_(std::move(done)),
        tensor_(std::move(tensor)),
        what_(std::move(what)),
        watched_(watched) {}
  void wait() override {
    if (waited_) return;
    if (watched_) {
      communicator_.follow(done_->get());
    } else {
      communicator_.wait_for(done_->get(), what_);
    }
    waited_ = true;
  }
  bool is_completed() override { return waited_ || cudaEventQuery(done_->get()) == cudaSuccess; }

 private:
  NcclCommunicator& communicator_;
  std::shared_ptr<Event> done_;
  at::Tensor tensor_;  // keeps the buffer alive while NCCL uses it (the probe holds it too)
  std::string what_;
  bool watched_;
  bool waited_ = false;
};

}  // namespace

// Makes `device` current for the scope (autograd's device thread already has it; the training
// thread may not).
class NcclCommunicator::DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    DIFFTRAIN_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device_) DIFFTRAIN_CUDA_CHECK(cudaSetDevice(device_));
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = 0;
};

NcclCommunicator::NcclCommunicator(int device_index, double timeout_s, MPI_Comm bootstrap)
    : device_(device_index), timeout_s_(timeout_s) {
  DIFFTRAIN_MPI_CHECK(MPI_Comm_rank(bootstrap, &rank_));
  DIFFTRAIN_MPI_CHECK(MPI_Comm_size(bootstrap, &world_size_));
  DeviceGuard guard(device_);
  try {
    ncclUniqueId id{};
    if (rank_ == 0) DIFFTRAIN_NCCL_CHECK(ncclGetUniqueId(&id));
    MPI_Request request = MPI_REQUEST_NULL;
    DIFFTRAIN_MPI_CHECK(
        MPI_Ibcast(&id, static_cast<int>(sizeof(id)), MPI_BYTE, 0, bootstrap, &request));
    wait_with_deadline(&request, timeout_s_, "NCCL set-up (ncclUniqueId broadcast)", rank_,
                       world_size_);
    DIFFTRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    DIFFTRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    DIFFTRAIN_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&barrier_buffer_), sizeof(int)));
    // Non-blocking: every NCCL call returns at once and is polled, so a missing peer cannot
    // hang set-up or a collective past the deadline.
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    DIFFTRAIN_NCCL_CHECK(ncclCommInitRankConfig(&comm_, world_size_, id, rank_, &config));
    wait_until_ready("NCCL set-up (ncclCommInitRankConfig)", deadline_from_now());
    const int device = device_;
    watchdog_ = std::make_unique<CollectiveWatchdog>(
        timeout_s_,
        [this] {
          std::lock_guard<std::mutex> lock(comm_mutex_);
          abort_locked();
        },
        " on rank " + std::to_string(rank_) + "/" + std::to_string(world_size_),
        [device] { DIFFTRAIN_CUDA_CHECK(cudaSetDevice(device)); });
  } catch (...) {
    watchdog_.reset();
    if (comm_ != nullptr && !aborted_) ncclCommAbort(comm_);
    if (barrier_buffer_ != nullptr) cudaFree(barrier_buffer_);
    if (ready_ != nullptr) cudaEventDestroy(ready_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
    throw;
  }
}

NcclCommunicator::~NcclCommunicator() {
  try {
    watchdog_.reset();  // stops its thread: nothing else touches comm_ from here on
    DeviceGuard guard(device_);
    if (comm_ != nullptr && !aborted_) {
      // Flush what is queued, bounded by the deadline; a peer that is gone makes us abort.
      const ncclResult_t finalize = ncclCommFinalize(comm_);
      const bool clean = finalize == ncclSuccess || finalize == ncclInProgress;
      const auto deadline = deadline_from_now();
      ncclResult_t state = ncclInProgress;
      Backoff backoff;
      while (clean && ncclCommGetAsyncError(comm_, &state) == ncclSuccess &&
             state == ncclInProgress && Clock::now() < deadline) {
        backoff.pause();
      }
      if (clean && state == ncclSuccess) {
        ncclCommDestroy(comm_);
      } else {
        ncclCommAbort(comm_);
      }
    }
    cudaFree(barrier_buffer_);
    cudaEventDestroy(ready_);
    cudaStreamDestroy(stream_);
  } catch (...) {
    // A destructor must not throw; the process is ending or the device is gone.
  }
}

NcclCommunicator::Clock::time_point NcclCommunicator::deadline_from_now() const {
  return Clock::now() +
         std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s_));
}

void NcclCommunicator::wait_until_ready(const std::string& what, Clock::time_point deadline) {
  Backoff backoff;
  while (true) {
    const ncclResult_t state = async_error();
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) {
      std::string detail;
      {
        std::lock_guard<std::mutex> lock(comm_mutex_);
        if (!aborted_) detail = ncclGetLastError(comm_);
        abort_locked();
      }
      throw std::runtime_error(what + " on rank " + std::to_string(rank_) + "/" +
                               std::to_string(world_size_) + ": NCCL reported " +
                               ncclGetErrorString(state) + (detail.empty() ? "" : ": " + detail));
    }
    if (Clock::now() > deadline) abort_and_throw(what);
    backoff.pause();
  }
}

void NcclCommunicator::abort_and_throw(const std::string& what) {
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    abort_locked();
  }
  char seconds[32];
  std::snprintf(seconds, sizeof(seconds), "%g", timeout_s_);
  throw CollectiveTimeout(what + " on rank " + std::to_string(rank_) + "/" +
                          std::to_string(world_size_) + " did not finish within " + seconds +
                          " s (dist.timeout_s): another rank died, hangs, or skipped it; NCCL "
                          "communicator aborted");
}

void NcclCommunicator::abort_locked() {
  if (aborted_) return;
  ncclCommAbort(comm_);
  aborted_ = true;
}

ncclResult_t NcclCommunicator::async_error() {
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (!aborted_) {
      ncclResult_t state = ncclInProgress;
      DIFFTRAIN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &state));
      return state;
    }
  }
  check_health();  // throws: the communicator is gone
  return ncclInternalError;
}

void NcclCommunicator::check_health() {
  if (watchdog_) watchdog_->check();
  if (aborted_) {
    throw std::runtime_error(
        "NCCL communicator: the communicator was aborted after an earlier failure");
  }
}

void NcclCommunicator::follow(cudaEvent_t done) {
  check_health();
  DeviceGuard guard(device_);
  DIFFTRAIN_CUDA_CHECK(cudaStreamWaitEvent(caller_stream(device_), done, 0));
}

void NcclCommunicator::check_tensor(const at::Tensor& tensor, const char* op) const {
  if (!tensor.is_cuda() || tensor.device().index() != device_ || !tensor.is_contiguous()) {
    throw std::runtime_error(std::string("NCCL communicator ") + op +
                             ": needs a contiguous tensor on cuda:" + std::to_string(device_) +
                             ", got one on " + tensor.device().str());
  }
}

void NcclCommunicator::order_after_caller() {
  DIFFTRAIN_CUDA_CHECK(cudaEventRecord(ready_, caller_stream(device_)));
  DIFFTRAIN_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
}

std::string NcclCommunicator::describe(const char* op, const at::Tensor* tensor) {
  char text[96];
  std::snprintf(text, sizeof(text), "%s #%llu", op, static_cast<unsigned long long>(sequence_++));
  if (tensor == nullptr) return text;
  char size[48];
  std::snprintf(size, sizeof(size), " of %.2f MB",
                static_cast<double>(tensor->numel() * tensor->element_size()) / 1e6);
  return std::string(text) + size;
}

void NcclCommunicator::wait_for(cudaEvent_t done, const std::string& what) {
  DeviceGuard guard(device_);
  const auto deadline = deadline_from_now();
  Backoff backoff;
  while (true) {
    const cudaError_t query = cudaEventQuery(done);
    if (query == cudaSuccess) break;
    if (query != cudaErrorNotReady) DIFFTRAIN_CUDA_CHECK(query);
    const ncclResult_t state = async_error();
    if (state != ncclSuccess && state != ncclInProgress) {
      wait_until_ready(what, deadline);  // reports NCCL's error and aborts
    }
    if (Clock::now() > deadline) abort_and_throw(what);
    backoff.pause();
  }
  DIFFTRAIN_CUDA_CHECK(cudaStreamWaitEvent(caller_stream(device_), done, 0));
}

void NcclCommunicator::enqueue(const std::string& what, cudaEvent_t done,
                               const std::function<ncclResult_t()>& launch) {
  {
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (!aborted_) {
      order_after_caller();
      DIFFTRAIN_NCCL_CHECK(launch());
    }
  }
  wait_until_ready(what, deadline_from_now());  // throws if the communicator was aborted
  DIFFTRAIN_CUDA_CHECK(cudaEventRecord(done, stream_));
}

std::unique_ptr<Work> NcclCommunicator::all_reduce_sum_async(const at::Tensor& tensor) {
  check_health();
  check_tensor(tensor, "all_reduce_sum");
  const std::string what = describe("all_reduce_sum", &tensor);
  DeviceGuard guard(device_);
  auto done = std::make_shared<Event>();
  enqueue(what, done->get(), [&] {
    return ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                         nccl_type(tensor), ncclSum, comm_, stream_);
  });
  // Polled on the watchdog thread; holds the event and the buffer until the sum is done.
  watchdog_->watch(what, [this, done, tensor]() -> CollectiveWatchdog::Poll {
    using State = CollectiveWatchdog::State;
    const cudaError_t query = cudaEventQuery(done->get());
    if (query == cudaSuccess) return {State::kDone, ""};
    if (query != cudaErrorNotReady) {
      return {State::kFailed, std::string("CUDA reported ") + cudaGetErrorString(query)};
    }
    std::lock_guard<std::mutex> lock(comm_mutex_);
    if (aborted_) return {State::kFailed, "the communicator was aborted"};
    ncclResult_t state = ncclSuccess;
    const ncclResult_t call = ncclCommGetAsyncError(comm_, &state);
    if (call != ncclSuccess) state = call;
    if (state == ncclSuccess || state == ncclInProgress) return {};
    const char* detail = ncclGetLastError(comm_);
    return {State::kFailed,
            std::string("NCCL reported ") + ncclGetErrorString(state) +
                (detail != nullptr && *detail != '\0' ? std::string(": ") + detail : "")};
  });
  return std::make_unique<NcclWork>(*this, std::move(done), tensor, what, /*watched=*/true);
}

void NcclCommunicator::broadcast(const at::Tensor& tensor, int root) {
  check_health();
  check_tensor(tensor, "broadcast");
  const std::string what = describe("broadcast", &tensor);
  DeviceGuard guard(device_);
  auto done = std::make_shared<Event>();
  enqueue(what, done->get(), [&] {
    return ncclBroadcast(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                         nccl_type(tensor), root, comm_, stream_);
  });
  NcclWork(*this, std::move(done), tensor, what, /*watched=*/false).wait();
}

void NcclCommunicator::barrier() {
  check_health();
  const std::string what = describe("barrier", nullptr);
  DeviceGuard guard(device_);
  auto done = std::make_shared<Event>();
  enqueue(what, done->get(), [&] {
    return ncclAllReduce(barrier_buffer_, barrier_buffer_, 1, ncclInt32, ncclSum, comm_, stream_);
  });
  NcclWork(*this, std::move(done), at::Tensor(), what, /*watched=*/false).wait();
}

// Collective: every rank calls this, in the same order.
std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& runtime, double timeout_s) {
  return std::make_unique<NcclCommunicator>(runtime.device().index(), timeout_s);
}

}  // namespace difftrain::launch
