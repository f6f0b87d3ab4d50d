// SentencePiece .model tokenizers through libsentencepiece, with bos added like HF's LlamaTokenizer.
// Special-token text ("<s>") is encoded as plain text, as SentencePiece does (docs/tokenizers.md).
#include <sentencepiece_processor.h>
#include <shrink/core/error.h>

#include "tokenizers/loaders.h"

namespace shrink::tokenizers {

namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::filesystem::path& path) : name_(path.string()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(path, ec))
      fail("{}: no such file (expected a SentencePiece .model); check the path", name_);
    const auto status = sp_.Load(path.string());
    if (!status.ok())
      fail("{}: not a valid SentencePiece model ({}); re-download tokenizer.model", name_, status.ToString());
    check(sp_.GetPieceSize() > 0, "{}: the SentencePiece model has no pieces", name_);
    bos_id_ = sp_.bos_id();
    eos_id_ = sp_.eos_id();
    unk_id_ = sp_.unk_id();
    pad_id_ = sp_.pad_id() >= 0 ? sp_.pad_id() : (unk_id_ >= 0 ? unk_id_ : 0);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int> ids;
    const auto status = sp_.Encode(text, &ids);
    if (!status.ok()) fail("{}: SentencePiece could not encode the text ({})", name_, status.ToString());
    std::vector<int32_t> out;
    out.reserve(ids.size() + 1);
    if (add_special && bos_id_ >= 0) out.push_back(bos_id_);
    out.insert(out.end(), ids.begin(), ids.end());
    return out;
  }

  std::vector<std::string> tokenize(std::string_view text) const override {
    std::vector<std::string> pieces;
    const auto status = sp_.Encode(text, &pieces);
    if (!status.ok()) fail("{}: SentencePiece could not encode the text ({})", name_, status.ToString());
    return pieces;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<int> keep;
    keep.reserve(ids.size());
    for (int32_t id : ids)
      if (id >= 0 && id < sp_.GetPieceSize() && !sp_.IsControl(id)) keep.push_back(id);
    std::string text;
    const auto status = sp_.Decode(keep, &text);
    if (!status.ok()) fail("{}: SentencePiece could not decode ({})", name_, status.ToString());
    return text;
  }

  std::string id_to_piece(int32_t id) const override {
    if (id < 0 || id >= sp_.GetPieceSize())
      fail("{}: token id {} is not in the vocabulary (size {})", name_, id, sp_.GetPieceSize());
    return sp_.IdToPiece(id);
  }

  int vocab_size() const override { return sp_.GetPieceSize(); }

 private:
  std::string name_;
  sentencepiece::SentencePieceProcessor sp_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_sentencepiece(const std::filesystem::path& path) {
  return std::make_unique<SentencePieceTokenizer>(path);
}

}  // namespace shrink::tokenizers
