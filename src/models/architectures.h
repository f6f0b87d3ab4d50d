// Factories of the supported architectures (the registry in model.cc maps config names to these).
#pragma once

#include <shrink/models/model.h>

namespace shrink::models {

std::unique_ptr<Model> make_llama();
std::unique_ptr<Model> make_gpt2();
std::unique_ptr<Model> make_bert();
std::unique_ptr<Model> make_distilbert();
std::unique_ptr<Model> make_vit();

// Prefix under which an HF checkpoint stores the base model ("bert.", "transformer.", ...) or "".
std::string detect_prefix(const TensorMap& t, const std::string& probe, const std::vector<std::string>& prefixes);

}  // namespace shrink::models
