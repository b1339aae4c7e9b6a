// MetricsLog: one parseable JSON object per line, appended across reopenings.
#include "monitoring/metrics_log.h"

#include <gtest/gtest.h>

#include <cmath>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/monitoring/exposition_parser.h"

namespace difftrain::monitoring {
namespace {

std::vector<nlohmann::json> read_lines(const std::string& path) {
  std::vector<nlohmann::json> records;
  std::istringstream text(testing::read_file(path));
  std::string line;
  while (std::getline(text, line)) records.push_back(nlohmann::json::parse(line));
  return records;
}

TEST(MetricsLog, EachAppendIsOneParseableLineVisibleAtOnce) {
  const std::string path = testing::make_scratch_dir() + "/metrics.jsonl";
  MetricsLog log(path);
  log.append({{"step", 1}, {"loss", 0.5}, {"phase", "train"}});
  // Flushed per line: readable before the log is closed.
  EXPECT_EQ(read_lines(path).size(), 1u);
  log.append({{"step", 2}, {"loss", 0.25}, {"nested", {{"a", 1}}}});

  const auto records = read_lines(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].at("step"), 1);
  EXPECT_EQ(records[0].at("phase"), "train");
  EXPECT_EQ(records[1].at("loss"), 0.25);
  EXPECT_EQ(records[1].at("nested").at("a"), 1);
}

TEST(MetricsLog, ReopeningAppendsInsteadOfTruncating) {
  const std::string path = testing::make_scratch_dir() + "/metrics.jsonl";
  MetricsLog(path).append({{"step", 1}});
  MetricsLog(path).append({{"step", 2}});
  const auto records = read_lines(path);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[1].at("step"), 2);
}

TEST(MetricsLog, NonFiniteNumbersAndBadUtf8StillGiveValidJson) {
  const std::string path = testing::make_scratch_dir() + "/metrics.jsonl";
  MetricsLog log(path);
  log.append(
      {{"loss", std::nan("")}, {"grad_norm", INFINITY}, {"note", std::string("bad \xff byte")}});
  const auto records = read_lines(path);
  ASSERT_EQ(records.size(), 1u);
  EXPECT_TRUE(records[0].at("loss").is_null());
  EXPECT_TRUE(records[0].at("grad_norm").is_null());
  EXPECT_TRUE(records[0].at("note").is_string());
}

TEST(MetricsLog, RejectsNonObjectsAndUnopenablePaths) {
  const std::string dir = testing::make_scratch_dir();
  MetricsLog log(dir + "/metrics.jsonl");
  EXPECT_THROW(log.append(nlohmann::json::array({1, 2})), std::runtime_error);
  try {
    MetricsLog bad(dir + "/missing/metrics.jsonl");
    FAIL() << "opened a file in a missing folder";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), ("metrics log " + dir +
                            "/missing/metrics.jsonl: cannot open for appending: No such file or "
                            "directory")
                               .c_str());
  }
}

}  // namespace
}  // namespace difftrain::monitoring
