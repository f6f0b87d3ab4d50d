// The list of subcommands.
#include "cli/commands.h"

namespace shrink::cli {

namespace {
int g_exit_code = 0;
}

int exit_code() { return g_exit_code; }
void set_exit_code(int c) { g_exit_code = c; }

void register_all(CLI::App& app) { (void)app; }

}  // namespace shrink::cli
