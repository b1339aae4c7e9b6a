// train.cuda_graph: the training step captured once in a CUDA graph and replayed, so that a
// step costs one graph launch instead of a few thousand kernel launches from the host.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace difftrain::trainer {

// Eager steps on the capture stream before the capture: cuDNN autotuning, cuBLAS workspaces,
// the noise schedule's device tables and the caching allocator settle during them.
constexpr int64_t kStepGraphWarmupSteps = 3;

// Why a run on `device` with this many ranks and micro-steps cannot capture its step, as a
// phrase for the log; "" when it can.
std::string step_graph_unavailable_reason(const c10::Device& device, int world_size,
                                          int64_t grad_accum_steps);

// Captures a step function on a side stream of a CUDA device and replays it on the current
// stream. The function must be the same work every time: static shapes, inputs read from
// tensors that live as long as the graph (copy each step's inputs into them before replay()),
// no reads of device values on the host, no host-to-device copies from pageable memory, and
// per-step scalars (learning rate, EMA weight, RNG seed) set outside it. Host code in it runs
// only while capturing.
class StepGraph {
 public:
  explicit StepGraph(const c10::Device& device);
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Runs `build` with the capture stream current. Make in it whatever creates autograd nodes
  // that the captured backward will run and that outlive one step: the GradientReducer, which
  // takes the parameters' gradient accumulators. Autograd runs such a node on the stream that
  // was current when it was made, and a capture cannot wait on another stream (PyTorch's rule
  // for DDP under CUDA graphs).
  void on_stream(const std::function<void()>& build);

  // Runs `body` eagerly on the capture stream (a warm-up step), after the current stream's
  // queued work and before its later work; returns body's result.
  at::Tensor run_eagerly(const std::function<at::Tensor()>& body);

  // Captures `body` (it launches, nothing runs) and returns its result, whose storage every
  // replay() rewrites. Throws std::runtime_error with CUDA's reason when the capture fails;
  // nothing is captured then. The caller should stop rather than go on eagerly: after a failed
  // capture the caching allocator and the RNG may still hold capture state.
  at::Tensor capture(const std::function<at::Tensor()>& body);

  // Launches the captured work on the current stream. Requires a successful capture().
  void replay();

  bool captured() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace difftrain::trainer
