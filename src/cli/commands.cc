// The list of subcommands.
#include "cli/commands.h"

namespace shrink::cli {

namespace {
int g_exit_code = 0;
}

int exit_code() {
  return g_exit_code;
}
void set_exit_code(int c) {
  g_exit_code = c;
}

void register_info(CLI::App&);
void register_tokenize(CLI::App&);
void register_generate(CLI::App&);
void register_classify(CLI::App&);
void register_ppl(CLI::App&);
void register_bench(CLI::App&);
void register_synth(CLI::App&);
void register_train(CLI::App&);
void register_quantize(CLI::App&);
void register_compare(CLI::App&);
void register_distill(CLI::App&);
void register_eval(CLI::App&);
void register_qat(CLI::App&);
void register_lowrank(CLI::App&);
void register_prune(CLI::App&);
void register_report(CLI::App&);
void register_serve(CLI::App&);
void register_loadtest(CLI::App&);
void register_compress(CLI::App&);
void register_sweep(CLI::App&);
void register_demo(CLI::App&);

void register_all(CLI::App& app) {
  register_info(app);
  register_tokenize(app);
  register_generate(app);
  register_classify(app);
  register_ppl(app);
  register_bench(app);
  register_synth(app);
  register_train(app);
  register_quantize(app);
  register_compare(app);
  register_distill(app);
  register_eval(app);
  register_qat(app);
  register_lowrank(app);
  register_prune(app);
  register_report(app);
  register_serve(app);
  register_loadtest(app);
  register_compress(app);
  register_sweep(app);
  register_demo(app);
}

}  // namespace shrink::cli
