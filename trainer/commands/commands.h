// The `difftrain` subcommands. Each add_* registers one CLI11 subcommand whose callback does the
// work; errors are exceptions that run_cli turns into one line and a non-zero exit.
#pragma once

namespace CLI {
class App;
}

#include <stdexcept>

namespace difftrain::trainer {

// An error the command has already printed (with its rank) before unwinding; run_cli only sets
// the exit code.
class ReportedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

void add_prepare_command(CLI::App& app);
void add_train_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_denoise_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_import_command(CLI::App& app);

// Entry point of the `difftrain` executable; returns the exit code.
int run_cli(int argc, char** argv);

}  // namespace difftrain::trainer
