// `difftrain` command line: subcommand registration and the one-line error contract.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "launch/runtime.h"
#include "trainer/commands/commands.h"
#include "trainer/common/version.h"

namespace difftrain::trainer {

int run_cli(int argc, char** argv) {
  CLI::App app{"difftrain: data-parallel diffusion-model training (DDPM/DDIM) on clusters"};
  app.set_version_flag("--version", [] { return build_report(); });
  app.require_subcommand(1);
  add_prepare_command(app);
  add_train_command(app);
  add_sample_command(app);
  add_denoise_command(app);
  add_inspect_command(app);
  add_eval_command(app);
  add_export_command(app);
  add_import_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const ReportedError&) {
    return 1;
  } catch (const std::exception& e) {
    // Commands that start MPI report and abort themselves; this covers the rest.
    std::cerr << "error: " << e.what() << std::endl;
    return 1;
  }
  return 0;
}

}  // namespace difftrain::trainer
