// llama2.c tokenizer: an exact replica of run.c's encode (dummy-prefix space, UTF-8 code point lookup, byte
// fallback id = byte + 3, best-score pair merges with the leftmost pair winning ties) and decode (leading
// space dropped after BOS, <0xNN> pieces as raw bytes). Merging uses a heap, so it is O(n log n), not O(n^2).
#include <shrink/core/error.h>
#include <shrink/formats/llama2c.h>

#include <cctype>
#include <queue>
#include <unordered_map>

#include "tokenizers/loaders.h"

namespace shrink::tokenizers {

namespace {

constexpr int32_t kBos = 1, kEos = 2;

class Llama2cTokenizer final : public Tokenizer {
 public:
  Llama2cTokenizer(const std::filesystem::path& path, int vocab_size) : name_(path.string()) {
    Llama2cVocab v = read_llama2c_vocab(path, vocab_size);
    pieces_ = std::move(v.pieces);
    scores_ = std::move(v.scores);
    // run.c keeps pieces as C strings: anything after an embedded NUL is invisible to it.
    for (auto& p : pieces_)
      if (auto z = p.find('\0'); z != std::string::npos) p.resize(z);
    lookup_.reserve(pieces_.size());
    for (size_t i = 0; i < pieces_.size(); ++i) lookup_.emplace(pieces_[i], static_cast<int32_t>(i));  // first wins
    bos_id_ = kBos < vocab_size ? kBos : -1;
    eos_id_ = kEos < vocab_size ? kEos : -1;
    unk_id_ = 0;
    pad_id_ = 0;
  }

  std::vector<int32_t> encode(std::string_view input, bool add_special) const override {
    const std::string_view text = input.substr(0, input.find('\0'));  // run.c reads a C string
    std::vector<int32_t> tokens;
    tokens.reserve(text.size() + 2);
    if (add_special && bos_id_ >= 0) tokens.push_back(bos_id_);
    if (!text.empty())
      if (int32_t dummy = find(" "); dummy >= 0) tokens.push_back(dummy);
    // One token per UTF-8 code point (at most 4 bytes), else its bytes as byte-fallback tokens.
    std::string buf;
    for (size_t i = 0; i < text.size(); ++i) {
      const auto c = static_cast<uint8_t>(text[i]);
      if ((c & 0xC0) != 0x80) buf.clear();
      buf.push_back(static_cast<char>(c));
      const uint8_t next = i + 1 < text.size() ? static_cast<uint8_t>(text[i + 1]) : 0;
      if ((next & 0xC0) == 0x80 && buf.size() < 4) continue;
      if (int32_t id = find(buf); id >= 0) {
        tokens.push_back(id);
      } else {
        for (char b : buf) {
          const int32_t byte_id = static_cast<uint8_t>(b) + 3;
          tokens.push_back(byte_id < vocab_size() ? byte_id : unk_id_);
        }
      }
      buf.clear();
    }
    merge(tokens);
    return tokens;
  }

  std::vector<std::string> tokenize(std::string_view text) const override {
    std::vector<std::string> out;
    for (int32_t id : encode(text, false)) out.push_back(pieces_[static_cast<size_t>(id)]);
    return out;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::string out;
    int32_t prev = -1;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_size()) continue;
      if (id != bos_id_ && id != eos_id_) out += decode_piece(prev, id);
      prev = id;
    }
    return out;
  }

  std::string id_to_piece(int32_t id) const override {
    if (id < 0 || id >= vocab_size())
      fail("{}: token id {} is not in the vocabulary (size {})", name_, id, vocab_size());
    return pieces_[static_cast<size_t>(id)];
  }

  int vocab_size() const override { return static_cast<int>(pieces_.size()); }

 private:
  int32_t find(const std::string& s) const {
    auto it = lookup_.find(s);
    return it == lookup_.end() ? -1 : it->second;
  }

  // run.c: repeatedly merge the adjacent pair whose concatenation is in the vocab with the highest score
  // (strictly above -1e10), the leftmost such pair on ties. Positions are the original indices, which keep
  // their order in the linked list, so (score desc, position asc) in a heap picks the same pair.
  void merge(std::vector<int32_t>& tokens) const {
    const int32_t n = static_cast<int32_t>(tokens.size());
    if (n < 2) return;
    std::vector<int32_t> next(static_cast<size_t>(n)), prev(static_cast<size_t>(n));
    std::vector<bool> alive(static_cast<size_t>(n), true);
    for (int32_t i = 0; i < n; ++i)
      next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1, prev[static_cast<size_t>(i)] = i - 1;
    struct Cand {
      float score;
      int32_t left, right, left_id, right_id, merged;
    };
    auto worse = [](const Cand& a, const Cand& b) { return a.score != b.score ? a.score < b.score : a.left > b.left; };
    std::priority_queue<Cand, std::vector<Cand>, decltype(worse)> heap(worse);
    std::string cat;
    auto consider = [&](int32_t l) {
      if (l < 0) return;
      const int32_t r = next[static_cast<size_t>(l)];
      if (r < 0) return;
      const int32_t a = tokens[static_cast<size_t>(l)], b = tokens[static_cast<size_t>(r)];
      cat = pieces_[static_cast<size_t>(a)];
      cat += pieces_[static_cast<size_t>(b)];
      const int32_t id = find(cat);
      if (id < 0) return;
      const float score = scores_[static_cast<size_t>(id)];
      if (!(score > -1e10f)) return;  // run.c's initial best_score; also drops NaN
      heap.push({score, l, r, a, b, id});
    };
    for (int32_t i = 0; i + 1 < n; ++i) consider(i);
    while (!heap.empty()) {
      const Cand c = heap.top();
      heap.pop();
      const auto l = static_cast<size_t>(c.left), r = static_cast<size_t>(c.right);
      if (!alive[l] || !alive[r] || next[l] != c.right || tokens[l] != c.left_id || tokens[r] != c.right_id) continue;
      tokens[l] = c.merged;
      alive[r] = false;
      next[l] = next[r];
      if (next[l] >= 0) prev[static_cast<size_t>(next[l])] = c.left;
      consider(prev[l]);
      consider(c.left);
    }
    std::vector<int32_t> out;
    for (int32_t i = 0; i >= 0; i = next[static_cast<size_t>(i)]) out.push_back(tokens[static_cast<size_t>(i)]);
    tokens = std::move(out);
  }

  // run.c decode(): drop the leading space of a piece that follows BOS; "<0xNN>" is the raw byte NN.
  std::string decode_piece(int32_t prev, int32_t id) const {
    std::string_view piece = pieces_[static_cast<size_t>(id)];
    if (prev == kBos && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    int byte = -1;
    if (scan_byte(piece, byte)) return std::string(1, static_cast<char>(byte));
    return std::string(piece);
  }

  // sscanf(piece, "<0x%02hhX>", &b) == 1: "<0x", optional white space, then a field of at most 2 characters
  // (an optional sign and hex digits).
  static bool scan_byte(std::string_view p, int& byte) {
    if (p.substr(0, 3) != "<0x") return false;
    size_t i = 3;
    while (i < p.size() && std::isspace(static_cast<unsigned char>(p[i]))) ++i;
    size_t width = 2;
    bool neg = false;
    if (i < p.size() && (p[i] == '+' || p[i] == '-')) neg = p[i] == '-', ++i, --width;
    int value = 0, digits = 0;
    for (; width > 0 && i < p.size() && std::isxdigit(static_cast<unsigned char>(p[i])); ++i, --width, ++digits) {
      const char c = p[i];
      value = value * 16 + (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : (std::tolower(c) - 'a' + 10));
    }
    if (digits == 0) return false;
    byte = static_cast<uint8_t>(neg ? -value : value);
    return true;
  }

  std::string name_;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int32_t> lookup_;
};

}  // namespace

std::unique_ptr<Tokenizer> load_llama2c_tokenizer(const std::filesystem::path& path, int vocab_size) {
  return std::make_unique<Llama2cTokenizer>(path, vocab_size);
}

}  // namespace shrink::tokenizers
