// Subcommand registration: each src/cli/cmd_*.cc defines one register_<name>(CLI::App&).
#pragma once

#include <CLI/CLI.hpp>

namespace shrink::cli {

void register_all(CLI::App& app);
int exit_code();          // set by a command that fails without throwing
void set_exit_code(int);  // e.g. partial failures

}  // namespace shrink::cli
