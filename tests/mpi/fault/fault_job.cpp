// A miniature data-parallel job for the fault tests: a few steps of forward, backward (with
// GradientReducer launching buckets during backward) and a control barrier, over MPI
// communicators with a short deadline. One rank can be told to skip a step's gradient
// reduction or to die by SIGKILL; it first prints the wall-clock time of the fault, from which
// fault_test.sh measures how long the job took to end. Failures end the job as `difftrain train`
// does: one line "[rank r/N] error: ..." on stderr, then MPI_Abort so that no rank waits forever.
//
// usage: fault_job --fault none|skip|kill --victim R --at-step S --timeout-s T [--steps N]
#include <torch/torch.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <stdexcept>
#include <string>
#include <thread>

#include "launch/gradient_reducer.h"
#include "launch/mpi_communicator.h"
#include "launch/runtime.h"

namespace {

// Seconds since the Unix epoch: comparable with `date +%s.%N` in the test script (same host).
double unix_time_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

struct Options {
  std::string fault = "none";
  int victim = 1;
  int at_step = 2;
  double timeout_s = 10.0;
  int steps = 5;
};

Options parse(int argc, char** argv) {
  Options options;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    const std::string value = argv[i + 1];
    if (key == "--fault") {
      options.fault = value;
    } else if (key == "--victim") {
      options.victim = std::stoi(value);
    } else if (key == "--at-step") {
      options.at_step = std::stoi(value);
    } else if (key == "--timeout-s") {
      options.timeout_s = std::stod(value);
    } else if (key == "--steps") {
      options.steps = std::stoi(value);
    } else {
      throw std::runtime_error("fault_job: unknown option " + key);
    }
  }
  if (options.fault != "none" && options.fault != "skip" && options.fault != "kill") {
    throw std::runtime_error("fault_job: --fault " + options.fault + ": want none, skip or kill");
  }
  return options;
}

void run(const Options& options, const difftrain::launch::Runtime& runtime) {
  using difftrain::launch::GradientReducer;
  using difftrain::launch::MpiCommunicator;
  torch::set_num_threads(1);
  MpiCommunicator gradients(options.timeout_s);
  MpiCommunicator control(options.timeout_s);
  torch::manual_seed(0);
  torch::nn::Sequential model(torch::nn::Linear(64, 256), torch::nn::ReLU(),
                              torch::nn::Linear(256, 256), torch::nn::ReLU(),
                              torch::nn::Linear(256, 8));
  GradientReducer reducer(gradients, model->parameters(), /*bucket_bytes=*/64 * 1024);
  const bool victim = runtime.rank() == options.victim;
  for (int step = 0; step < options.steps; ++step) {
    if (victim && step == options.at_step && options.fault == "kill") {
      std::fprintf(stderr, "%s fault_job: SIGKILL at step %d at t=%.3f s\n", runtime.tag().c_str(),
                   step, unix_time_s());
      std::raise(SIGKILL);
    }
    reducer.zero_grad();
    const bool skip = victim && step == options.at_step && options.fault == "skip";
    // The victim skips this step's gradient reduction (as a rank with a diverging control
    // flow would) and goes on to the next collective of its program order.
    reducer.prepare_for_backward(/*sync=*/!skip);
    model->forward(torch::randn({32, 64})).square().mean().backward();
    if (skip) {
      std::fprintf(stderr,
                   "%s fault_job: skipping the gradient all-reduce of step %d at t=%.3f s\n",
                   runtime.tag().c_str(), step, unix_time_s());
    } else {
      reducer.reduce();
    }
    control.barrier();
  }
  std::printf("%s fault_job: %d steps done\n", runtime.tag().c_str(), options.steps);
}

}  // namespace

int main(int argc, char** argv) {
  difftrain::launch::Runtime runtime(&argc, &argv, difftrain::launch::DeviceRequest::kCpu);
  try {
    run(parse(argc, argv), runtime);
  } catch (const std::exception& e) {
    runtime.report_error(e.what());
    if (runtime.world_size() > 1) runtime.abort(1);
    return 1;
  }
  return 0;
}
