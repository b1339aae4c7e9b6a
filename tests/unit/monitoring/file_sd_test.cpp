// write_file_sd: Prometheus file_sd JSON of the right shape, replaced whole, bad input named.
#include "monitoring/file_sd.h"

#include <dirent.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "tests/unit/monitoring/exposition_parser.h"

namespace difftrain::monitoring {
namespace {

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (const dirent* entry = ::readdir(d)) {
      const std::string name = entry->d_name;
      if (name != "." && name != "..") names.push_back(name);
    }
    ::closedir(d);
  }
  return names;
}

TEST(WriteFileSd, WritesOneTargetGroupWithLabels) {
  const std::string dir = testing::make_scratch_dir();
  const std::string path = dir + "/cifar10-a.json";
  write_file_sd(path, {"node1:9100", "node1:9101"}, {{"cluster", "hpc"}, {"job_id", "42"}});

  const auto json = nlohmann::json::parse(testing::read_file(path));
  ASSERT_TRUE(json.is_array());
  ASSERT_EQ(json.size(), 1u);
  const auto& group = json[0];
  ASSERT_TRUE(group.is_object());
  EXPECT_EQ(group.size(), 2u);  // exactly "targets" and "labels"
  EXPECT_EQ(group.at("targets"), nlohmann::json::array({"node1:9100", "node1:9101"}));
  EXPECT_EQ(group.at("labels"), nlohmann::json({{"cluster", "hpc"}, {"job_id", "42"}}));
  EXPECT_EQ(list_dir(dir), std::vector<std::string>{"cifar10-a.json"}) << "temporary file left";
}

TEST(WriteFileSd, ReplacesTheFileWhole) {
  const std::string dir = testing::make_scratch_dir();
  const std::string path = dir + "/run.json";
  write_file_sd(path, {"a:1", "b:2", "c:3"}, {{"long_label_value", std::string(500, 'x')}});
  write_file_sd(path, {"[::1]:9100"}, {});
  const auto json = nlohmann::json::parse(testing::read_file(path));
  EXPECT_EQ(json[0].at("targets"), nlohmann::json::array({"[::1]:9100"}));
  EXPECT_TRUE(json[0].at("labels").is_object());
  EXPECT_TRUE(json[0].at("labels").empty());
}

TEST(WriteFileSd, NamesTheBadTargetLabelOrPath) {
  const std::string dir = testing::make_scratch_dir();
  auto message_of = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(message_of([&] { write_file_sd(dir + "/x.json", {"node1"}, {}); }),
            "file_sd target 'node1': want host:port with port 1..65535");
  EXPECT_EQ(message_of([&] { write_file_sd(dir + "/x.json", {"node1:99999"}, {}); }),
            "file_sd target 'node1:99999': want host:port with port 1..65535");
  EXPECT_EQ(message_of([&] {
              write_file_sd(dir + "/x.json", {"node1:1"}, {{"9lives", "x"}});
            }),
            "file_sd label '9lives': want a Prometheus label name [a-zA-Z_][a-zA-Z0-9_]*");
  EXPECT_NE(message_of([&] { write_file_sd(dir + "/x.json", {}, {}); }).find("no targets"),
            std::string::npos);
  const std::string missing = dir + "/no/such/folder/x.json";
  const std::string error = message_of([&] { write_file_sd(missing, {"node1:1"}, {}); });
  EXPECT_NE(error.find(missing), std::string::npos) << error;
  EXPECT_NE(error.find("No such file or directory"), std::string::npos) << error;
  EXPECT_TRUE(list_dir(dir).empty());
}

}  // namespace
}  // namespace difftrain::monitoring
