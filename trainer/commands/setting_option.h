// A command-line option that takes one of a setting's names (trainer/config/settings.h), so
// that commands and config keys accept and print the same words.
#pragma once

#include <CLI/CLI.hpp>
#include <map>
#include <string>

#include "trainer/config/settings.h"

namespace difftrain::trainer {

// Adds `flag` to `cmd`, parsing one of E's names into *value (which must outlive the command);
// the help ends with the choices.
template <typename E>
CLI::Option* add_setting_option(CLI::App* cmd, const std::string& flag, E* value,
                                const std::string& help) {
  std::map<std::string, E> names;
  for (const auto& entry : SettingNames<E>::kAll) names.emplace(entry.name, entry.value);
  return cmd->add_option(flag, *value, help + ": " + setting_choices<E>())
      ->transform(CLI::CheckedTransformer(names));
}

}  // namespace difftrain::trainer
