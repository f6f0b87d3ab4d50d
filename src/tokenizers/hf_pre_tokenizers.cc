// tokenizer.json pre-tokenizers: ByteLevel (GPT-2 regex as a hand-written matcher over code points),
// BertPreTokenizer, Metaspace, Whitespace, WhitespaceSplit, Punctuation, Digits, Split, CharDelimiterSplit,
// Sequence.
#include <shrink/core/error.h>
#include <unicode/uchar.h>

#include <array>

#include "tokenizers/hf_components.h"
#include "tokenizers/icu_regex.h"
#include "tokenizers/unicode.h"

namespace shrink::hf {

namespace {

using unicode::next_cp;

struct ByteTables {
  std::array<std::string, 256> to_unicode;
  std::array<int16_t, 512> from_unicode{};  // code points used are all < 512
  ByteTables() {
    from_unicode.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      const char32_t cp = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + n++);
      unicode::append_utf8(to_unicode[b], cp);
      from_unicode[cp] = static_cast<int16_t>(b);
    }
  }
};
const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

enum class Cls : uint8_t { kLetter, kNumber, kSpace, kOther };
Cls classify(char32_t c) {
  if (c < 0x80) {
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return Cls::kLetter;
    if (c >= '0' && c <= '9') return Cls::kNumber;
    if (c == ' ' || (c >= 0x09 && c <= 0x0D)) return Cls::kSpace;
    return Cls::kOther;
  }
  if (unicode::is_js_whitespace(c)) return Cls::kSpace;
  if (unicode::is_letter(c)) return Cls::kLetter;
  if (unicode::is_number(c)) return Cls::kNumber;
  return Cls::kOther;
}

}  // namespace

int unicode_to_byte(char32_t cp) {
  return cp < 512 ? tables().from_unicode[cp] : -1;
}

void gpt2_split(std::string_view text, std::vector<std::string>& out) {
  std::vector<char32_t> cps;
  std::vector<size_t> offs;  // byte offset of each code point, plus the end
  cps.reserve(text.size());
  offs.reserve(text.size() + 1);
  for (size_t pos = 0; pos < text.size();) {
    offs.push_back(pos);
    cps.push_back(next_cp(text, pos));
  }
  offs.push_back(text.size());
  std::vector<Cls> cls(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) cls[i] = classify(cps[i]);
  const size_t n = cps.size();
  auto emit = [&](size_t b, size_t e) { out.emplace_back(text.substr(offs[b], offs[e] - offs[b])); };
  size_t i = 0;
  while (i < n) {
    // 's|'t|'re|'ve|'m|'ll|'d  (ASCII, case-sensitive, as in the GPT-2 pattern)
    if (cps[i] == '\'' && i + 1 < n) {
      const char32_t a = cps[i + 1];
      if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        emit(i, i + 2), i += 2;
        continue;
      }
      if (i + 2 < n) {
        const char32_t b = cps[i + 2];
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
          emit(i, i + 3), i += 3;
          continue;
        }
      }
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: an optional ASCII space then a run of one class.
    const size_t j = (cps[i] == ' ' && i + 1 < n) ? i + 1 : i;
    if (cls[j] != Cls::kSpace) {
      const Cls c = cls[j];
      size_t e = j + 1;
      while (e < n && cls[e] == c) ++e;
      emit(i, e), i = e;
      continue;
    }
    // `\s+(?!\S)` then `\s+`: a whitespace run; when a non-space follows, leave its last character to prefix
    // the next piece (unless the run is a single character).
    size_t e = i + 1;
    while (e < n && cls[e] == Cls::kSpace) ++e;
    if (e < n && e - i >= 2) --e;
    emit(i, e), i = e;
  }
}

namespace {

enum class Behavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

Behavior parse_behavior(const Json& j, const Where& w, Behavior def) {
  const std::string b = get_string(j, "behavior", w, "");
  if (b.empty()) return def;
  if (b == "Removed") return Behavior::kRemoved;
  if (b == "Isolated") return Behavior::kIsolated;
  if (b == "MergedWithPrevious") return Behavior::kMergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::kMergedWithNext;
  if (b == "Contiguous") return Behavior::kContiguous;
  fail(
      "{}: unknown split behavior '{}' (expected Removed, Isolated, MergedWithPrevious, MergedWithNext or "
      "Contiguous)",
      w.child("behavior").str(), b);
}

// Splits `s.text` at the byte ranges `matches` (sorted, non-overlapping) with HF's delimiter behaviors.
void split_at(const Split& s, const std::vector<std::pair<size_t, size_t>>& matches, Behavior behavior, bool invert,
              std::vector<Split>& out) {
  struct Seg {
    size_t b, e;
    bool is_match;
  };
  std::vector<Seg> segs;
  size_t last = 0;
  for (auto [b, e] : matches) {
    if (b > last) segs.push_back({last, b, invert});
    segs.push_back({b, e, !invert});
    last = e;
  }
  if (last < s.text.size()) segs.push_back({last, s.text.size(), invert});
  std::vector<std::pair<size_t, size_t>> pieces;
  switch (behavior) {
    case Behavior::kRemoved:
      for (auto& g : segs)
        if (!g.is_match) pieces.emplace_back(g.b, g.e);
      break;
    case Behavior::kIsolated:
      for (auto& g : segs) pieces.emplace_back(g.b, g.e);
      break;
    case Behavior::kMergedWithPrevious: {
      bool prev_match = false;
      for (auto& g : segs) {
        if (g.is_match && !prev_match && !pieces.empty())
          pieces.back().second = g.e;
        else
          pieces.emplace_back(g.b, g.e);
        prev_match = g.is_match;
      }
      break;
    }
    case Behavior::kMergedWithNext: {
      bool prev_match = false;
      for (size_t k = segs.size(); k-- > 0;) {
        const Seg& g = segs[k];
        if (g.is_match && !prev_match && !pieces.empty())
          pieces.back().first = g.b;
        else
          pieces.emplace_back(g.b, g.e);
        prev_match = g.is_match;
      }
      std::reverse(pieces.begin(), pieces.end());
      break;
    }
    case Behavior::kContiguous: {
      bool prev_match = false;
      for (size_t k = 0; k < segs.size(); ++k) {
        const Seg& g = segs[k];
        if (k > 0 && g.is_match == prev_match)
          pieces.back().second = g.e;
        else
          pieces.emplace_back(g.b, g.e);
        prev_match = g.is_match;
      }
      break;
    }
  }
  for (auto [b, e] : pieces)
    if (e > b) out.push_back({s.text.substr(b, e - b), s.first && b == 0});
}

// Applies `fn(split, out)` to every split.
template <typename Fn>
void for_each_split(std::vector<Split>& splits, Fn&& fn) {
  std::vector<Split> out;
  out.reserve(splits.size() * 2);
  for (const Split& s : splits) fn(s, out);
  splits = std::move(out);
}

// Byte ranges of the code points for which `pred` is true, one range per code point.
template <typename Pred>
std::vector<std::pair<size_t, size_t>> cp_matches(const std::string& s, Pred&& pred) {
  std::vector<std::pair<size_t, size_t>> m;
  for (size_t pos = 0; pos < s.size();) {
    const size_t b = pos;
    if (pred(next_cp(s, pos))) m.emplace_back(b, pos);
  }
  return m;
}

class ByteLevel final : public PreTokenizer {
 public:
  ByteLevel(const Json& j, const Where& w)
      : add_prefix_space_(get_bool(j, "add_prefix_space", w, true)), use_regex_(get_bool(j, "use_regex", w, true)) {}
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [&](const Split& s, std::vector<Split>& out) {
      std::string text = s.text;
      if (add_prefix_space_ && (text.empty() || text[0] != ' ')) text.insert(text.begin(), ' ');
      std::vector<std::string> words;
      if (use_regex_)
        gpt2_split(text, words);
      else
        words.push_back(text);
      bool first = s.first;
      for (auto& word : words) {
        std::string mapped;
        mapped.reserve(word.size() * 2);
        for (char c : word) mapped += byte_to_unicode(static_cast<uint8_t>(c));
        out.push_back({std::move(mapped), first});
        first = false;
      }
    });
  }

 private:
  bool add_prefix_space_, use_regex_;
};

class BertPreTokenizer final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [](const Split& s, std::vector<Split>& out) {
      std::vector<Split> tmp;
      split_at(s, cp_matches(s.text, unicode::is_js_whitespace), Behavior::kRemoved, false, tmp);
      for (const Split& t : tmp)
        split_at(t, cp_matches(t.text, unicode::is_bert_punctuation), Behavior::kIsolated, false, out);
    });
  }
};

class Metaspace final : public PreTokenizer {
 public:
  Metaspace(const Json& j, const Where& w) {
    replacement_ = get_string(j, "replacement", w, "\xE2\x96\x81");
    if (unicode::count_cps(replacement_) != 1 || !unicode::is_valid_utf8(replacement_))
      fail("{}: replacement must be one character, found '{}'", w.child("replacement").str(), replacement_);
    const std::string scheme = get_string(j, "prepend_scheme", w, "");
    if (!scheme.empty()) {
      if (scheme == "always")
        prepend_ = 2;
      else if (scheme == "first")
        prepend_ = 1;
      else if (scheme == "never")
        prepend_ = 0;
      else
        fail("{}: unknown prepend_scheme '{}' (always, first or never)", w.child("prepend_scheme").str(), scheme);
    } else {
      prepend_ = get_bool(j, "add_prefix_space", w, true) ? 2 : 0;
    }
    split_ = get_bool(j, "split", w, true);
  }
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [&](const Split& s, std::vector<Split>& out) {
      Split r{std::string(), s.first};
      r.text.reserve(s.text.size() + 8);
      for (char c : s.text) {
        if (c == ' ')
          r.text += replacement_;
        else
          r.text.push_back(c);
      }
      const bool starts = r.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == 2 || (prepend_ == 1 && s.first))) r.text.insert(0, replacement_);
      if (!split_) {
        out.push_back(std::move(r));
        return;
      }
      std::vector<std::pair<size_t, size_t>> m;
      for (size_t p = r.text.find(replacement_); p != std::string::npos;
           p = r.text.find(replacement_, p + replacement_.size()))
        m.emplace_back(p, p + replacement_.size());
      split_at(r, m, Behavior::kMergedWithNext, false, out);
    });
  }

 private:
  std::string replacement_;
  int prepend_ = 2;  // 2 always, 1 first, 0 never
  bool split_ = true;
};

bool rust_whitespace(char32_t c) {
  return u_isUWhiteSpace(static_cast<UChar32>(c));
}

// Rust regex \w: alphabetic, marks, decimal numbers, connector punctuation, joiners.
bool word_char(char32_t c) {
  if (c < 0x80) return ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') || (c >= '0' && c <= '9') || c == '_';
  const auto mask = U_GET_GC_MASK(static_cast<UChar32>(c));
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_ALPHABETIC) ||
         (mask & (U_GC_M_MASK | U_GC_ND_MASK | U_GC_PC_MASK)) || c == 0x200C || c == 0x200D;
}

class Whitespace final : public PreTokenizer {
 public:
  // \w+|[^\w\s]+
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [](const Split& s, std::vector<Split>& out) {
      int prev = -1;  // 0 word, 1 other, 2 space
      size_t start = 0;
      auto flush = [&](size_t end) {
        if (prev >= 0 && prev != 2 && end > start)
          out.push_back({s.text.substr(start, end - start), s.first && start == 0});
      };
      for (size_t pos = 0; pos < s.text.size();) {
        const size_t b = pos;
        const char32_t c = next_cp(s.text, pos);
        const int k = word_char(c) ? 0 : rust_whitespace(c) ? 2 : 1;
        if (k != prev) {
          flush(b);
          start = b, prev = k;
        }
      }
      flush(s.text.size());
    });
  }
};

class WhitespaceSplit final : public PreTokenizer {
 public:
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [](const Split& s, std::vector<Split>& out) {
      split_at(s, cp_matches(s.text, rust_whitespace), Behavior::kRemoved, false, out);
    });
  }
};

class Punctuation final : public PreTokenizer {
 public:
  Punctuation(const Json& j, const Where& w) : behavior_(parse_behavior(j, w, Behavior::kIsolated)) {}
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [&](const Split& s, std::vector<Split>& out) {
      split_at(s, cp_matches(s.text, unicode::is_bert_punctuation), behavior_, false, out);
    });
  }

 private:
  Behavior behavior_;
};

class Digits final : public PreTokenizer {
 public:
  Digits(const Json& j, const Where& w) : individual_(get_bool(j, "individual_digits", w, false)) {}
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [&](const Split& s, std::vector<Split>& out) {
      split_at(s, cp_matches(s.text, unicode::is_number), individual_ ? Behavior::kIsolated : Behavior::kContiguous,
               false, out);
    });
  }

 private:
  bool individual_;
};

class CharDelimiterSplit final : public PreTokenizer {
 public:
  CharDelimiterSplit(const Json& j, const Where& w) : delim_(require_string(j, "delimiter", w)) {
    if (unicode::count_cps(delim_) != 1) fail("{}: delimiter must be one character", w.child("delimiter").str());
  }
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [&](const Split& s, std::vector<Split>& out) {
      std::vector<std::pair<size_t, size_t>> m;
      for (size_t p = s.text.find(delim_); p != std::string::npos; p = s.text.find(delim_, p + delim_.size()))
        m.emplace_back(p, p + delim_.size());
      split_at(s, m, Behavior::kRemoved, false, out);
    });
  }

 private:
  std::string delim_;
};

class SplitPattern final : public PreTokenizer {
 public:
  SplitPattern(const Json& j, const Where& w)
      : pattern_(get_pattern(j, "pattern", w)),
        behavior_(parse_behavior(j, w, Behavior::kRemoved)),
        invert_(get_bool(j, "invert", w, false)) {
    if (!member(j, "behavior")) fail("{}: Split needs a 'behavior'", w.str());
    if (pattern_.regex) regex_ = std::make_unique<IcuRegex>(pattern_.text, w.child("pattern").str());
  }
  void pre_tokenize(std::vector<Split>& splits) const override {
    for_each_split(splits, [&](const Split& s, std::vector<Split>& out) {
      std::vector<std::pair<size_t, size_t>> m;
      if (regex_) {
        m = regex_->find_all(s.text);
      } else if (!pattern_.text.empty()) {
        for (size_t p = s.text.find(pattern_.text); p != std::string::npos;
             p = s.text.find(pattern_.text, p + pattern_.text.size()))
          m.emplace_back(p, p + pattern_.text.size());
      }
      split_at(s, m, behavior_, invert_, out);
    });
  }

 private:
  Pattern pattern_;
  Behavior behavior_;
  bool invert_;
  std::unique_ptr<IcuRegex> regex_;
};

class SequencePreTokenizer final : public PreTokenizer {
 public:
  SequencePreTokenizer(const Json& j, const Where& w, int depth) {
    const Json& list = require(j, "pretokenizers", w);
    if (!list.is_array()) bad_field(w.child("pretokenizers"), "an array", list);
    for (size_t i = 0; i < list.size(); ++i)
      steps_.push_back(make_pre_tokenizer(list[i], w.child("pretokenizers").index(i), depth + 1));
  }
  void pre_tokenize(std::vector<Split>& splits) const override {
    for (const auto& p : steps_) p->pre_tokenize(splits);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> steps_;
};

}  // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const Json& j, const Where& w, int depth) {
  if (depth > kMaxNesting)
    fail("{}: pre-tokenizers nested deeper than {}; fix the tokenizer file", w.str(), kMaxNesting);
  if (!j.is_object()) bad_field(w, "a pre-tokenizer object", j);
  const std::string type = require_string(j, "type", w);
  if (type == "ByteLevel") return std::make_unique<ByteLevel>(j, w);
  if (type == "BertPreTokenizer") return std::make_unique<BertPreTokenizer>();
  if (type == "Metaspace") return std::make_unique<Metaspace>(j, w);
  if (type == "Whitespace") return std::make_unique<Whitespace>();
  if (type == "WhitespaceSplit") return std::make_unique<WhitespaceSplit>();
  if (type == "Punctuation") return std::make_unique<Punctuation>(j, w);
  if (type == "Digits") return std::make_unique<Digits>(j, w);
  if (type == "CharDelimiterSplit") return std::make_unique<CharDelimiterSplit>(j, w);
  if (type == "Split") return std::make_unique<SplitPattern>(j, w);
  if (type == "Sequence") return std::make_unique<SequencePreTokenizer>(j, w, depth);
  fail(
      "{}: unknown pre-tokenizer type '{}' (supported: ByteLevel, BertPreTokenizer, Metaspace, Whitespace, "
      "WhitespaceSplit, Punctuation, Digits, CharDelimiterSplit, Split, Sequence)",
      w.str(), type);
}

}  // namespace shrink::hf

namespace shrink {

const std::string& byte_to_unicode(uint8_t b) {
  return hf::tables().to_unicode[b];
}

}  // namespace shrink
