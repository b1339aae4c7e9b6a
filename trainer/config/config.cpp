// Config loading: YAML files, --set overrides, validation, the resolved YAML and README table.
#include "trainer/config/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

#include "trainer/config/model_builder.h"

namespace difftrain::trainer {
namespace {

const ConfigKey* find_key(const std::string& name) {
  for (const auto& key : config_keys()) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

// Flattens nested maps into dotted keys; lists and scalars are leaves. A key written twice in
// one mapping (yaml-cpp keeps both) is an error naming both lines: silently taking the last
// would train with a value the reader of the file did not see.
void flatten(const YAML::Node& node, const std::string& prefix,
             std::vector<std::pair<std::string, YAML::Node>>& out, const std::string& origin) {
  if (node.IsMap()) {
    std::map<std::string, int> first_line;
    for (const auto& item : node) {
      const std::string key = item.first.as<std::string>();
      const std::string name = prefix.empty() ? key : prefix + "." + key;
      const int line = item.first.Mark().line + 1;
      const auto [seen, inserted] = first_line.emplace(key, line);
      if (!inserted) {
        throw std::runtime_error(origin + ": duplicate key '" + name + "' at line " +
                                 std::to_string(line) + " (first at line " +
                                 std::to_string(seen->second) + ")");
      }
      flatten(item.second, name, out, origin);
    }
    return;
  }
  if (prefix.empty()) {
    if (node.IsNull()) return;  // an empty file is all defaults
    throw std::runtime_error(origin + ": top level must be a mapping of sections");
  }
  out.emplace_back(prefix, node);
}

void apply(Config& config, const std::string& name, const YAML::Node& value,
           const std::string& origin) {
  const ConfigKey* key = find_key(name);
  if (key == nullptr) {
    throw std::runtime_error(origin + ": unknown key '" + name +
                             "' (see the config table in README.md)");
  }
  try {
    key->set(config, value);
  } catch (const std::exception& e) {
    throw std::runtime_error(origin + ": " + name + ": " + e.what());
  }
}

void validate(const Config& config, const std::map<std::string, std::string>& origins,
              const std::string& default_origin) {
  auto origin_of = [&](const std::string& key) {
    const auto it = origins.find(key);
    return it != origins.end() ? it->second : default_origin;
  };
  for (const auto& key : config_keys()) {
    const std::string problem = key.check(config);
    if (!problem.empty()) {
      throw std::runtime_error(origin_of(key.name) + ": " + key.name + " = " + key.get(config) +
                               ": " + problem);
    }
  }
  if (const auto problem = find_shape_problem(unet_options(config))) {
    throw std::runtime_error(origin_of(problem->key) + ": " + problem->message);
  }
}

Config parse_into(const std::string& yaml_text, const std::string& origin,
                  std::map<std::string, std::string>& origins) {
  Config config;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": not valid YAML: " + e.what());
  }
  std::vector<std::pair<std::string, YAML::Node>> leaves;
  flatten(root, "", leaves, origin);
  for (const auto& [name, value] : leaves) {
    apply(config, name, value, origin);
    origins[name] = origin;
  }
  return config;
}

}  // namespace

double parse_time_limit_s(const std::string& text) {
  if (text.empty()) return 0.0;
  const std::string bad = "'" + text + "' is not a time ([D-]HH:MM:SS, MM:SS or seconds)";
  std::string rest = text;
  double days = 0;
  const auto dash = rest.find('-');
  try {
    if (dash != std::string::npos) {
      days = std::stod(rest.substr(0, dash));
      rest = rest.substr(dash + 1);
    }
    std::vector<double> parts;
    size_t start = 0;
    while (true) {
      const auto colon = rest.find(':', start);
      size_t used = 0;
      const std::string piece =
          rest.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      parts.push_back(std::stod(piece, &used));
      if (used != piece.size()) throw std::invalid_argument(bad);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    if (parts.size() > 3) throw std::invalid_argument(bad);
    double seconds = 0;
    for (double p : parts) {
      if (p < 0) throw std::invalid_argument(bad);
      seconds = seconds * 60 + p;
    }
    const double total = days * 86400 + seconds;
    if (!(total > 0)) throw std::invalid_argument(bad);
    return total;
  } catch (const std::exception&) {
    throw std::runtime_error(bad);
  }
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> origins;
  Config config;
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("config " + path + ": cannot open file");
    std::stringstream text;
    text << in.rdbuf();
    config = parse_into(text.str(), "config " + path, origins);
  }
  for (const auto& item : overrides) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::runtime_error("--set " + item + ": want key=value");
    }
    const std::string name = item.substr(0, eq);
    const std::string origin = "--set " + item;
    YAML::Node value;
    try {
      value = YAML::Load(item.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw std::runtime_error(origin + ": not valid YAML: " + e.what());
    }
    apply(config, name, value, origin);
    origins[name] = origin;
  }
  validate(config, origins, path.empty() ? "defaults" : "config " + path);
  return config;
}

Config parse_config(const std::string& yaml_text, const std::string& origin) {
  std::map<std::string, std::string> origins;
  Config config = parse_into(yaml_text, origin, origins);
  validate(config, origins, origin);
  return config;
}

std::string to_yaml(const Config& config) {
  std::ostringstream out;
  std::string section;
  for (const auto& key : config_keys()) {
    const auto dot = key.name.find('.');
    const std::string head = key.name.substr(0, dot);
    if (head != section) {
      out << head << ":\n";
      section = head;
    }
    out << "  " << key.name.substr(dot + 1) << ": " << key.get(config) << "\n";
  }
  return out.str();
}

std::string config_markdown_table() {
  const Config defaults;
  std::ostringstream out;
  out << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& key : config_keys()) {
    out << "| `" << key.name << "` | " << key.type << " | `" << key.get(defaults) << "` | "
        << key.doc << " |\n";
  }
  return out.str();
}

}  // namespace difftrain::trainer
