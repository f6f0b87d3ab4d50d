// tokenizer.json decoders (HF decode_chain semantics): WordPiece, ByteLevel, Metaspace, Replace, ByteFallback,
// Fuse, Strip, BPEDecoder, Sequence.
#include <shrink/core/error.h>

#include "tokenizers/hf_components.h"
#include "tokenizers/icu_regex.h"
#include "tokenizers/unicode.h"

namespace shrink::hf {

std::string bytes_to_text(std::string_view bytes) {
  return unicode::sanitize_utf8(bytes);
}

namespace {

void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::string out;
  size_t last = 0;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + from.size())) {
    out.append(s, last, p - last);
    out += to;
    last = p + from.size();
  }
  if (last == 0) return;
  out.append(s, last, std::string::npos);
  s = std::move(out);
}

class WordPieceDecoder final : public Decoder {
 public:
  WordPieceDecoder(const Json& j, const Where& w)
      : prefix_(get_string(j, "prefix", w, "##")), cleanup_(get_bool(j, "cleanup", w, true)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      std::string& t = tokens[i];
      if (i > 0) {
        if (!prefix_.empty() && t.compare(0, prefix_.size(), prefix_) == 0)
          t.erase(0, prefix_.size());
        else
          t.insert(t.begin(), ' ');
      }
      if (cleanup_) {
        // HF's clean_up_tokenization.
        static const std::pair<const char*, const char*> kRules[] = {
            {" .", "."},   {" ?", "?"},           {" !", "!"},   {" ,", ","},     {" ' ", "'"},   {" n't", "n't"},
            {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
        for (auto& [from, to] : kRules) replace_all(t, from, to);
      }
    }
  }

 private:
  std::string prefix_;
  bool cleanup_;
};

class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string bytes;
    std::string tb;
    for (const std::string& t : tokens) {
      tb.clear();
      bool mapped = true;
      for (size_t pos = 0; pos < t.size() && mapped;) {
        const int byte = unicode_to_byte(unicode::next_cp(t, pos));
        mapped = byte >= 0;
        tb.push_back(static_cast<char>(byte));
      }
      bytes += mapped ? tb : t;  // a token that is not byte-level text (an added token) stays as it is
    }
    tokens.assign(1, bytes_to_text(bytes));
  }
};

class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(const Json& j, const Where& w) : replacement_(get_string(j, "replacement", w, "\xE2\x96\x81")) {
    const std::string scheme = get_string(j, "prepend_scheme", w, "");
    strip_first_ = scheme.empty() ? get_bool(j, "add_prefix_space", w, true) : scheme != "never";
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i == 0 && strip_first_)
        replace_all(tokens[i], replacement_, "");
      else
        replace_all(tokens[i], replacement_, " ");
    }
  }

 private:
  std::string replacement_;
  bool strip_first_ = true;
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(const Json& j, const Where& w)
      : pattern_(get_pattern(j, "pattern", w)), content_(require_string(j, "content", w)) {
    if (pattern_.regex) regex_ = std::make_unique<IcuRegex>(pattern_.text, w.child("pattern").str());
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (std::string& t : tokens) {
      if (!regex_) {
        replace_all(t, pattern_.text, content_);
        continue;
      }
      std::string out;
      size_t last = 0;
      for (auto [b, e] : regex_->find_all(t)) {
        out.append(t, last, b - last);
        out += content_;
        last = e;
      }
      out.append(t, last, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
  std::unique_ptr<IcuRegex> regex_;
};

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string bytes;
    auto flush = [&] {
      if (bytes.empty()) return;
      if (unicode::is_valid_utf8(bytes))
        out.push_back(bytes);
      else
        for (size_t k = 0; k < bytes.size(); ++k) out.emplace_back("\xEF\xBF\xBD");
      bytes.clear();
    };
    for (std::string& t : tokens) {
      const bool is_byte =
          t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' && hex_digit(t[3]) >= 0 && hex_digit(t[4]) >= 0;
      if (is_byte) {
        bytes.push_back(static_cast<char>(hex_digit(t[3]) * 16 + hex_digit(t[4])));
        continue;
      }
      flush();
      out.push_back(std::move(t));
    }
    flush();
    tokens = std::move(out);
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class StripDecoder final : public Decoder {
 public:
  StripDecoder(const Json& j, const Where& w)
      : content_(require_string(j, "content", w)),
        start_(static_cast<size_t>(get_int(j, "start", w, 0, 0, INT32_MAX))),
        stop_(static_cast<size_t>(get_int(j, "stop", w, 0, 0, INT32_MAX))) {
    if (unicode::count_cps(content_) != 1) fail("{}: content must be one character", w.child("content").str());
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    const size_t c = content_.size();
    for (std::string& t : tokens) {
      size_t b = 0, e = t.size();
      for (size_t k = 0; k < start_ && b + c <= e && t.compare(b, c, content_) == 0; ++k) b += c;
      for (size_t k = 0; k < stop_ && e >= b + c && t.compare(e - c, c, content_) == 0; ++k) e -= c;
      t = t.substr(b, e - b);
    }
  }

 private:
  std::string content_;
  size_t start_, stop_;
};

class BpeDecoder final : public Decoder {
 public:
  BpeDecoder(const Json& j, const Where& w) : suffix_(get_string(j, "suffix", w, "</w>")) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t i = 0; i < tokens.size(); ++i) replace_all(tokens[i], suffix_, i + 1 == tokens.size() ? "" : " ");
  }

 private:
  std::string suffix_;
};

class SequenceDecoder final : public Decoder {
 public:
  SequenceDecoder(const Json& j, const Where& w, int depth) {
    const Json& list = require(j, "decoders", w);
    if (!list.is_array()) bad_field(w.child("decoders"), "an array", list);
    for (size_t i = 0; i < list.size(); ++i)
      steps_.push_back(make_decoder(list[i], w.child("decoders").index(i), depth + 1));
  }
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& d : steps_) d->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> steps_;
};

}  // namespace

std::unique_ptr<Decoder> make_decoder(const Json& j, const Where& w, int depth) {
  if (depth > kMaxNesting) fail("{}: decoders nested deeper than {}; fix the tokenizer file", w.str(), kMaxNesting);
  if (!j.is_object()) bad_field(w, "a decoder object", j);
  const std::string type = require_string(j, "type", w);
  if (type == "WordPiece") return std::make_unique<WordPieceDecoder>(j, w);
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") return std::make_unique<MetaspaceDecoder>(j, w);
  if (type == "Replace") return std::make_unique<ReplaceDecoder>(j, w);
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") return std::make_unique<StripDecoder>(j, w);
  if (type == "BPEDecoder") return std::make_unique<BpeDecoder>(j, w);
  if (type == "Sequence") return std::make_unique<SequenceDecoder>(j, w, depth);
  fail(
      "{}: unknown decoder type '{}' (supported: WordPiece, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, "
      "Strip, BPEDecoder, Sequence)",
      w.str(), type);
}

}  // namespace shrink::hf
