// shrink tokenize MODEL|TOKENIZER_FILE --text T: token ids and pieces.
#include <shrink/core/error.h>
#include <shrink/formats/config.h>

#include <cstdio>
#include <filesystem>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_tokenize(CLI::App& app) {
  auto* sub = app.add_subcommand("tokenize", "token ids (and pieces) of a text");
  static std::string path, text;
  static bool no_special = false;
  static int vocab_size = 0;
  static CommonFlags f;
  sub->add_option("tokenizer", path, "model directory, tokenizer.json, tokenizer.model or llama2.c tokenizer .bin")
      ->required();
  sub->add_option("--text", text, "text to encode")->required();
  sub->add_flag("--no-special", no_special, "do not add special tokens");
  sub->add_option("--vocab-size", vocab_size, "vocabulary size (llama2.c tokenizer .bin)");
  add_common_flags(sub, f);
  sub->callback([] {
    apply(f);
    int vs = vocab_size;
    const auto p = std::filesystem::path(path);
    if (vs == 0 && std::filesystem::is_directory(p) && std::filesystem::exists(p / "config.json"))
      vs = read_config(p / "config.json").vocab_size;
    auto tok = load_tokenizer(p, vs);
    const auto ids = tok->encode(text, !no_special);
    nlohmann::json tokens = nlohmann::json::array();
    for (int32_t id : ids) tokens.push_back(tok->id_to_piece(id));
    if (f.json) return print_json({{"ids", ids}, {"tokens", tokens}, {"count", ids.size()}});
    for (size_t i = 0; i < ids.size(); ++i) std::printf("%d\t%s\n", ids[i], tokens[i].get<std::string>().c_str());
  });
}

}  // namespace shrink::cli
