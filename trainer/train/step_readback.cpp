// Lagged device-to-host reads: pinned buffers and events on CUDA, plain tensors on the CPU.
#include "trainer/train/step_readback.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>

#include <optional>
#include <stdexcept>
#include <utility>

namespace difftrain::trainer {

struct StepReadback::Entry {
  at::Tensor host;                   // float64 values on the host (pinned on CUDA)
  std::optional<c10::Event> copied;  // recorded after the copy on a CUDA device
  Finish finish;
};

StepReadback::StepReadback(size_t lag) : lag_(lag) {}

StepReadback::~StepReadback() = default;

void StepReadback::push(const at::Tensor& values, Finish finish) {
  if (values.dim() != 1 || values.scalar_type() != at::kDouble) {
    throw std::logic_error("StepReadback: want a 1-D float64 tensor");
  }
  auto entry = std::make_unique<Entry>();
  entry->finish = std::move(finish);
  if (values.is_cuda()) {
    entry->host = at::empty(values.sizes(), values.options().device(at::kCPU).pinned_memory(true));
    entry->host.copy_(values, /*non_blocking=*/true);
    const c10::impl::DeviceGuardImplInterface* impl =
        c10::impl::getDeviceGuardImpl(values.device().type());
    entry->copied.emplace(values.device().type());
    entry->copied->record(impl->getStream(values.device()));
  } else {
    entry->host = values.to(at::kCPU).clone();  // the caller may reuse `values`
  }
  pending_.push_back(std::move(entry));
  while (pending_.size() > lag_) finish_oldest();
}

void StepReadback::drain() {
  while (!pending_.empty()) finish_oldest();
}

void StepReadback::finish_oldest() {
  std::unique_ptr<Entry> entry = std::move(pending_.front());
  pending_.pop_front();
  if (entry->copied) {
    entry->copied->synchronize();  // normally done by now
  }
  entry->finish(entry->host.data_ptr<double>());
}

}  // namespace difftrain::trainer
