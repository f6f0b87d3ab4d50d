// tokenizer.json normalizers: BertNormalizer, Sequence, NFC/NFD/NFKC/NFKD, Lowercase, Strip, StripAccents,
// Replace, Prepend, ByteLevel. BertNormalizer follows transformers.js (the reference encodings' source).
#include <shrink/core/error.h>

#include "tokenizers/hf_components.h"
#include "tokenizers/icu_regex.h"
#include "tokenizers/unicode.h"

namespace shrink::hf {

void check_growth(const std::string& s, size_t limit_bytes, const char* stage) {
  if (s.size() > limit_bytes)
    fail(
        "tokenizer: the {} stage grew the text to {} bytes (limit {}); the tokenizer file's normalizer or "
        "pre-tokenizer expands text without bound",
        stage, s.size(), limit_bytes);
}

namespace {

using unicode::next_cp;

std::string strip_accents(std::string_view s) {
  const std::string nfd = unicode::normalize(s, unicode::NormForm::kNfd);
  std::string out;
  out.reserve(nfd.size());
  size_t pos = 0;
  while (pos < nfd.size()) {
    const char32_t c = next_cp(nfd, pos);
    if (!unicode::is_nonspacing_mark(c)) unicode::append_utf8(out, c);
  }
  return out;
}

class BertNormalizer final : public Normalizer {
 public:
  BertNormalizer(const Json& j, const Where& w)
      : clean_text_(get_bool(j, "clean_text", w, true)),
        chinese_(get_bool(j, "handle_chinese_chars", w, true)),
        lowercase_(get_bool(j, "lowercase", w, true)) {
    const Json* sa = member(j, "strip_accents");
    if (sa && !sa->is_boolean()) bad_field(w.child("strip_accents"), "true, false or null", *sa);
    strip_accents_ = sa ? (sa->get<bool>() ? 1 : 0) : -1;
  }
  std::string normalize(std::string s, size_t limit) const override {
    if (clean_text_ || chinese_) {
      std::string out;
      out.reserve(s.size());
      size_t pos = 0;
      while (pos < s.size()) {
        const char32_t c = next_cp(s, pos);
        if (clean_text_) {
          const bool keep_ws = c == '\t' || c == '\n' || c == '\r';
          if (c == 0 || c == 0xFFFD || (!keep_ws && unicode::is_other_no_cn(c))) continue;
          if (unicode::is_js_whitespace(c)) {
            out.push_back(' ');
            continue;
          }
        }
        if (chinese_ && unicode::is_chinese_char(c)) {
          out.push_back(' ');
          unicode::append_utf8(out, c);
          out.push_back(' ');
        } else {
          unicode::append_utf8(out, c);
        }
      }
      s = std::move(out);
    }
    if (lowercase_) {
      s = unicode::to_lower(s);
      if (strip_accents_ != 0) s = strip_accents(s);
    } else if (strip_accents_ == 1) {
      s = strip_accents(s);
    }
    check_growth(s, limit, "BertNormalizer");
    return s;
  }

 private:
  bool clean_text_, chinese_, lowercase_;
  int strip_accents_;  // -1: follow lowercase
};

class UnicodeForm final : public Normalizer {
 public:
  explicit UnicodeForm(unicode::NormForm f) : form_(f) {}
  std::string normalize(std::string s, size_t limit) const override {
    s = unicode::normalize(s, form_);
    check_growth(s, limit, "Unicode normalization");
    return s;
  }

 private:
  unicode::NormForm form_;
};

class Lowercase final : public Normalizer {
 public:
  std::string normalize(std::string s, size_t limit) const override {
    s = unicode::to_lower(s);
    check_growth(s, limit, "Lowercase");
    return s;
  }
};

class StripAccents final : public Normalizer {
 public:
  // Removes non-spacing marks only; files put NFD before it, as HF does.
  std::string normalize(std::string s, size_t) const override {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (pos < s.size()) {
      const char32_t c = next_cp(s, pos);
      if (!unicode::is_nonspacing_mark(c)) unicode::append_utf8(out, c);
    }
    return out;
  }
};

class Strip final : public Normalizer {
 public:
  Strip(const Json& j, const Where& w)
      : left_(get_bool(j, "strip_left", w, true)), right_(get_bool(j, "strip_right", w, true)) {}
  std::string normalize(std::string s, size_t) const override {
    size_t b = 0, e = s.size();
    if (left_) {
      size_t pos = 0;
      while (pos < s.size()) {
        const size_t start = pos;
        if (!unicode::is_white_space(next_cp(s, pos))) {
          b = start;
          break;
        }
        b = pos;
      }
    }
    if (right_) {
      // Scan forward remembering the end of the last non-space code point.
      size_t pos = b, last = b;
      while (pos < s.size()) {
        const char32_t c = next_cp(s, pos);
        if (!unicode::is_white_space(c)) last = pos;
      }
      e = last;
    }
    return s.substr(b, e - b);
  }

 private:
  bool left_, right_;
};

class Replace final : public Normalizer {
 public:
  Replace(const Json& j, const Where& w)
      : pattern_(get_pattern(j, "pattern", w)), content_(require_string(j, "content", w)) {
    if (pattern_.regex) regex_ = std::make_unique<IcuRegex>(pattern_.text, w.child("pattern").str());
  }
  std::string normalize(std::string s, size_t limit) const override {
    std::vector<std::pair<size_t, size_t>> matches;
    if (regex_) {
      matches = regex_->find_all(s);
    } else if (!pattern_.text.empty()) {
      for (size_t p = s.find(pattern_.text); p != std::string::npos;
           p = s.find(pattern_.text, p + pattern_.text.size()))
        matches.emplace_back(p, p + pattern_.text.size());
    }
    if (matches.empty()) return s;
    size_t removed = 0;
    for (auto& m : matches) removed += m.second - m.first;
    const size_t new_size = s.size() - removed + matches.size() * content_.size();
    if (new_size > limit) check_growth(std::string(new_size, ' '), limit, "Replace");
    std::string out;
    out.reserve(new_size);
    size_t last = 0;
    for (auto& m : matches) {
      out.append(s, last, m.first - last);
      out += content_;
      last = m.second;
    }
    out.append(s, last, std::string::npos);
    return out;
  }

 private:
  Pattern pattern_;
  std::string content_;
  std::unique_ptr<IcuRegex> regex_;
};

class Prepend final : public Normalizer {
 public:
  Prepend(const Json& j, const Where& w) : prepend_(require_string(j, "prepend", w)) {}
  std::string normalize(std::string s, size_t limit) const override {
    if (s.empty()) return s;  // HF prepends only to non-empty text
    s = prepend_ + s;
    check_growth(s, limit, "Prepend");
    return s;
  }

 private:
  std::string prepend_;
};

class ByteLevelNormalizer final : public Normalizer {
 public:
  std::string normalize(std::string s, size_t limit) const override {
    std::string out;
    out.reserve(s.size() * 2);
    for (char c : s) out += byte_to_unicode(static_cast<uint8_t>(c));
    check_growth(out, limit, "ByteLevel normalizer");
    return out;
  }
};

class SequenceNormalizer final : public Normalizer {
 public:
  SequenceNormalizer(const Json& j, const Where& w, int depth) {
    const Json& list = require(j, "normalizers", w);
    if (!list.is_array()) bad_field(w.child("normalizers"), "an array", list);
    for (size_t i = 0; i < list.size(); ++i)
      steps_.push_back(make_normalizer(list[i], w.child("normalizers").index(i), depth + 1));
  }
  std::string normalize(std::string s, size_t limit) const override {
    for (const auto& n : steps_) s = n->normalize(std::move(s), limit);
    return s;
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> steps_;
};

}  // namespace

std::unique_ptr<Normalizer> make_normalizer(const Json& j, const Where& w, int depth) {
  if (depth > kMaxNesting) fail("{}: normalizers nested deeper than {}; fix the tokenizer file", w.str(), kMaxNesting);
  if (!j.is_object()) bad_field(w, "a normalizer object", j);
  const std::string type = require_string(j, "type", w);
  if (type == "BertNormalizer") return std::make_unique<BertNormalizer>(j, w);
  if (type == "Sequence") return std::make_unique<SequenceNormalizer>(j, w, depth);
  if (type == "NFC") return std::make_unique<UnicodeForm>(unicode::NormForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeForm>(unicode::NormForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeForm>(unicode::NormForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeForm>(unicode::NormForm::kNfkd);
  if (type == "Lowercase") return std::make_unique<Lowercase>();
  if (type == "StripAccents") return std::make_unique<StripAccents>();
  if (type == "Strip") return std::make_unique<Strip>(j, w);
  if (type == "Replace") return std::make_unique<Replace>(j, w);
  if (type == "Prepend") return std::make_unique<Prepend>(j, w);
  if (type == "ByteLevel") return std::make_unique<ByteLevelNormalizer>();
  if (type == "Precompiled")
    fail(
        "{}: normalizer 'Precompiled' (SentencePiece charsmap) is not supported; load the tokenizer.model "
        "file instead",
        w.str());
  fail(
      "{}: unknown normalizer type '{}' (supported: BertNormalizer, Sequence, NFC, NFD, NFKC, NFKD, Lowercase, "
      "StripAccents, Strip, Replace, Prepend, ByteLevel)",
      w.str(), type);
}

}  // namespace shrink::hf
