// train.cuda_graph: when it can be honoured, and StepGraph with LibTorch's CUDA graphs (warm-up
// and capture on a side stream, replay on the current stream).
#include "trainer/train/step_graph.h"

#include <ATen/cuda/CUDAEvent.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <stdexcept>

namespace difftrain::trainer {
namespace {

// The capture forbids unsafe CUDA calls in the capturing thread only, so that the prefetch
// thread may go on allocating pinned memory while the step is captured.
void begin_capture(at::cuda::CUDAGraph& graph) {
  graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
}

}  // namespace

std::string step_graph_unavailable_reason(const c10::Device& device, int world_size,
                                          int64_t grad_accum_steps) {
  if (!device.is_cuda()) return "the device is " + device.str() + ", not a GPU";
  if (grad_accum_steps != 1) {
    return "train.grad_accum_steps = " + std::to_string(grad_accum_steps) +
           " (a graph holds one micro-step)";
  }
  if (world_size != 1) {
    return std::to_string(world_size) +
           " ranks (the all-reduce watchdog polls events that a replay would not record)";
  }
  return "";
}

struct StepGraph::Impl {
  c10::Device device;
  c10::cuda::CUDAStream stream;  // warm-up and capture
  std::unique_ptr<at::cuda::CUDAGraph> graph;
};

namespace {
const c10::Device& cuda_device(const c10::Device& device) {
  if (!device.is_cuda()) throw std::logic_error("StepGraph on " + device.str() + ": not CUDA");
  return device;
}
}  // namespace

StepGraph::StepGraph(const c10::Device& device)
    : impl_(std::make_unique<Impl>(
          Impl{cuda_device(device),
               c10::cuda::getStreamFromPool(/*isHighPriority=*/false, device.index()), nullptr})) {}

StepGraph::~StepGraph() = default;

void StepGraph::on_stream(const std::function<void()>& build) {
  const c10::cuda::CUDAGuard device_guard(impl_->device);
  const c10::cuda::CUDAStream current = c10::cuda::getCurrentCUDAStream(impl_->device.index());
  // The side stream starts after the current stream's queued work (this step's input copies)
  // and the current stream's later work starts after the side stream's. Memory the step frees
  // is reused on the side stream only after it has waited for the current stream again.
  at::cuda::CUDAEvent inputs_ready;
  inputs_ready.record(current);
  inputs_ready.block(impl_->stream);
  {
    const c10::cuda::CUDAStreamGuard stream_guard(impl_->stream);
    build();
  }
  at::cuda::CUDAEvent done;
  done.record(impl_->stream);
  done.block(current);
}

at::Tensor StepGraph::run_eagerly(const std::function<at::Tensor()>& body) {
  at::Tensor result;
  on_stream([&] { result = body(); });
  return result;
}

at::Tensor StepGraph::capture(const std::function<at::Tensor()>& body) {
  const c10::cuda::CUDAGuard device_guard(impl_->device);
  c10::cuda::device_synchronize();  // nothing of the eager steps left in flight
  auto graph = std::make_unique<at::cuda::CUDAGraph>();
  at::Tensor result;
  {
    const c10::cuda::CUDAStreamGuard stream_guard(impl_->stream);
    begin_capture(*graph);
    try {
      result = body();
    } catch (const std::exception& e) {
      // End the capture (and the allocator's private pool) before reporting; its own error,
      // the invalidated capture, says nothing new.
      try {
        graph->capture_end();
      } catch (const std::exception&) {
      }
      throw std::runtime_error(std::string("capturing the step failed: ") + e.what());
    }
    try {
      graph->capture_end();
    } catch (const std::exception& e) {
      throw std::runtime_error(std::string("ending the capture failed: ") + e.what());
    }
  }
  impl_->graph = std::move(graph);
  return result;
}

void StepGraph::replay() {
  if (!impl_->graph) throw std::logic_error("StepGraph::replay: nothing captured");
  const c10::cuda::CUDAGuard device_guard(impl_->device);
  impl_->graph->replay();
}

bool StepGraph::captured() const { return impl_->graph != nullptr; }

}  // namespace difftrain::trainer
