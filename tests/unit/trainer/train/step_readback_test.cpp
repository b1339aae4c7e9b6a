// StepReadback: values arrive in push order, one push late, all at drain(); a throwing callback
// loses only its own entry.
#include "trainer/train/step_readback.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>
#include <vector>

namespace difftrain::trainer {
namespace {

TEST(StepReadback, FinishesOnePushLateInOrder) {
  StepReadback readback;
  std::vector<double> seen;
  auto record = [&](const double* values) { seen.push_back(values[0] + values[1]); };
  for (int i = 0; i < 4; ++i) {
    torch::Tensor values = torch::tensor({static_cast<double>(i), 0.5}, torch::kDouble);
    readback.push(values, record);
    values.fill_(-1);  // the pushed values were taken when pushed
    EXPECT_EQ(seen.size(), static_cast<size_t>(i)) << "after push " << i;
    EXPECT_EQ(readback.pending(), 1u);
  }
  readback.drain();
  EXPECT_EQ(seen, (std::vector<double>{0.5, 1.5, 2.5, 3.5}));
  EXPECT_EQ(readback.pending(), 0u);
}

TEST(StepReadback, CallbackExceptionPropagatesAndLaterEntriesStay) {
  StepReadback readback(/*lag=*/0);
  int finished = 0;
  EXPECT_THROW(readback.push(torch::ones({1}, torch::kDouble),
                             [](const double*) { throw std::runtime_error("bad step"); }),
               std::runtime_error);
  readback.push(torch::ones({1}, torch::kDouble), [&](const double*) { ++finished; });
  EXPECT_EQ(finished, 1);
}

TEST(StepReadback, RejectsWrongValues) {
  StepReadback readback;
  EXPECT_THROW(readback.push(torch::ones({2}, torch::kFloat), [](const double*) {}),
               std::logic_error);
  EXPECT_THROW(readback.push(torch::ones({2, 2}, torch::kDouble), [](const double*) {}),
               std::logic_error);
}

}  // namespace
}  // namespace difftrain::trainer
