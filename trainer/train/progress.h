// The steps since the last progress line: their count, the losses of those that were finite,
// and where their time went, for the line and its mean loss over ranks.
#pragma once

#include <chrono>
#include <cstdint>

#include "monitoring/training_metrics.h"

namespace difftrain::trainer {

struct ProgressInterval {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  int64_t steps = 0;       // steps launched in the interval
  int64_t good_steps = 0;  // steps whose numbers came back finite
  double loss_sum = 0;     // sum of the good steps' losses
  double data_s = 0, forward_backward_s = 0, reduce_s = 0, optimizer_s = 0;

  // A step launched: its host-side phase times.
  void add_step(const monitoring::StepSample& sample) {
    ++steps;
    data_s += sample.data_wait_s;
    forward_backward_s += sample.forward_backward_s;
    reduce_s += sample.allreduce_s;
    optimizer_s += sample.optimizer_s;
  }
  // A step's loss came back finite.
  void add_good_loss(double loss) {
    loss_sum += loss;
    ++good_steps;
  }
  // Starts the next interval now.
  void reset() { *this = ProgressInterval{}; }
};

}  // namespace difftrain::trainer
