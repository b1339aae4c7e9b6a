// Test helpers for the monitoring suite: parse Prometheus text exposition into samples, run
// promtool on text, make scratch folders.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

namespace difftrain::monitoring::testing {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// Parses `name{a="x",b="y"} value` lines (no timestamps, as prometheus-cpp writes them).
inline std::vector<Sample> parse_exposition(const std::string& text) {
  std::vector<Sample> samples;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    Sample sample;
    size_t i = line.find_first_of("{ ");
    sample.name = line.substr(0, i);
    if (line[i] == '{') {
      ++i;
      while (line[i] != '}') {
        const size_t eq = line.find('=', i);
        const std::string key = line.substr(i, eq - i);
        std::string value;
        for (i = eq + 2; line[i] != '"'; ++i) {  // skip ="
          if (line[i] == '\\') {
            ++i;
            value += line[i] == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
        }
        sample.labels[key] = value;
        ++i;  // closing quote
        if (line[i] == ',') ++i;
      }
      ++i;  // }
    }
    sample.value = std::stod(line.substr(i + 1));
    samples.push_back(sample);
  }
  return samples;
}

// The samples named `name` whose labels include every label in `labels`.
inline std::vector<Sample> find_samples(const std::vector<Sample>& samples, const std::string& name,
                                        const std::map<std::string, std::string>& labels = {}) {
  std::vector<Sample> found;
  for (const Sample& sample : samples) {
    if (sample.name != name) continue;
    bool match = true;
    for (const auto& [key, value] : labels) {
      auto it = sample.labels.find(key);
      match = match && it != sample.labels.end() && it->second == value;
    }
    if (match) found.push_back(sample);
  }
  return found;
}

// The value of the one sample that matches; fails the test (and returns NaN) otherwise.
inline double value_of(const std::vector<Sample>& samples, const std::string& name,
                       const std::map<std::string, std::string>& labels = {}) {
  const auto found = find_samples(samples, name, labels);
  EXPECT_EQ(found.size(), 1u) << "samples named " << name;
  return found.size() == 1 ? found[0].value : std::nan("");
}

inline bool have_promtool() { return std::system("command -v promtool >/dev/null 2>&1") == 0; }

// A fresh folder under the test temp dir.
inline std::string make_scratch_dir() {
  std::string pattern = ::testing::TempDir() + "difftrain_monitoring_XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp " << pattern << " failed";
  }
  return pattern;
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

struct CommandResult {
  int status = -1;
  std::string output;
};

// Pipes `input` into `command`; returns its exit status and its stdout+stderr.
inline CommandResult run_with_input(const std::string& command, const std::string& input) {
  const std::string out_path = make_scratch_dir() + "/output.txt";
  CommandResult result;
  std::FILE* pipe = ::popen((command + " >" + out_path + " 2>&1").c_str(), "w");
  if (pipe == nullptr) return result;
  std::fwrite(input.data(), 1, input.size(), pipe);
  const int status = ::pclose(pipe);
  result.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  result.output = read_file(out_path);
  return result;
}

}  // namespace difftrain::monitoring::testing
