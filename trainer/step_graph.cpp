// When train.cuda_graph can be honoured; the capture itself is in step_graph_cuda.cpp.
#include "trainer/step_graph.h"

namespace difftrain::trainer {

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

}  // namespace difftrain::trainer
