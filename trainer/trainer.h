// The training loop: one data-parallel worker's view of a run, from dataset and model set-up
// through the steps to the final checkpoint and sample grid.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "trainer/config.h"

namespace difftrain::launch {
class Communicator;
}

namespace difftrain::trainer {

// Where a run ended up.
struct TrainResult {
  int64_t first_step = 0;       // the step training started from (> 0 after a resume)
  int64_t final_step = 0;       // optimizer steps completed
  double last_loss = 0;         // mean loss over all ranks in the last log interval
  std::string checkpoint_path;  // the final checkpoint (rank 0)
  std::string samples_path;     // the final sample grid (rank 0; empty on other ranks)
  std::string stop_reason;      // non-empty when the run stopped early: "SIGTERM", "time limit"
  int64_t skipped_steps = 0;    // non-finite steps skipped
};

struct TrainerOptions {
  std::string run_dir;
  std::string resume = "auto";  // "auto": newest checkpoint in run_dir if any; "never"; or a path
  bool write_samples = true;    // the end-of-run grid
  int local_rank = 0;           // rank on this node: monitoring.port offset
  std::string hostname;         // this node's name: the Prometheus target host
};

// One rank of a run. `gradients` averages gradients (MPI or NCCL), `control` is a host (MPI)
// communicator for small agreements (when to log, mean loss); both span the same ranks, and
// their rank and world size define this worker's slice of every global batch.
class Trainer {
 public:
  Trainer(Config config, TrainerOptions options, launch::Communicator& gradients,
          launch::Communicator& control, const c10::Device& device);

  // Collective: every rank calls this, in the same order.
  TrainResult run();

 private:
  Config config_;
  TrainerOptions options_;
  launch::Communicator& gradients_;
  launch::Communicator& control_;
  c10::Device device_;
};

// Learning rate at `step` (0-based): linear warm-up to train.lr over train.warmup_steps, then
// constant.
double learning_rate_at(const Config& config, int64_t step);

}  // namespace difftrain::trainer
