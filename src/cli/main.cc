// `shrink` — thin front end over libshrink: parse arguments, call the library, print.
#include <shrink/core/error.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"shrink: make transformer models smaller and faster on CPU, and measure what it cost"};
  app.require_subcommand(1);
  app.set_version_flag("--version", SHRINK_VERSION);
  shrink::cli::register_all(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const shrink::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  return shrink::cli::exit_code();
}
