// StepGraph where LibTorch has no CUDA: nothing to capture.
#include <stdexcept>

#include "trainer/step_graph.h"

namespace difftrain::trainer {

struct StepGraph::Impl {};

bool step_graphs_built() { return false; }

StepGraph::StepGraph(const c10::Device& device) {
  throw std::logic_error("StepGraph on " + device.str() + ": this LibTorch has no CUDA");
}

StepGraph::~StepGraph() = default;

at::Tensor StepGraph::run_eagerly(const std::function<at::Tensor()>& body) { return body(); }

at::Tensor StepGraph::capture(const std::function<at::Tensor()>& /*body*/) {
  throw std::logic_error("StepGraph::capture: this LibTorch has no CUDA");
}

void StepGraph::replay() { throw std::logic_error("StepGraph::replay: nothing captured"); }

bool StepGraph::captured() const { return false; }

}  // namespace difftrain::trainer
