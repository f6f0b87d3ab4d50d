// Default block-level entry points of DecoderModel (models/model.h): architectures that do not split their forward
// into embed / run_block / head say so by name.
#include <shrink/core/error.h>
#include <shrink/models/model.h>

namespace shrink {

namespace {

[[noreturn]] void no_blocks(const DecoderModel& m, const char* what) {
  fail(
      "{}: architecture '{}' has no block-level {} (needed by sequential calibration, e.g. --method gptq); use a "
      "LLaMA or GPT-2 model or --method rtn",
      m.source().string(), m.config().architecture, what);
}

}  // namespace

void DecoderModel::embed(const int32_t*, int64_t, int64_t, float*) const {
  no_blocks(*this, "embed");
}
void DecoderModel::run_block(int, KvCache&, float*, int64_t) const {
  no_blocks(*this, "run_block");
}
void DecoderModel::head(const float*, int64_t, float*) const {
  no_blocks(*this, "head");
}
std::vector<std::vector<LinearSlot*>> DecoderModel::block_linears(int) {
  no_blocks(*this, "block_linears");
}

}  // namespace shrink
