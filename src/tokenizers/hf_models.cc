// tokenizer.json models: WordPiece (greedy longest-match-first), BPE (merge ranks, byte fallback, fused
// unknowns, word cache) and WordLevel.
#include <shrink/core/error.h>

#include <mutex>
#include <queue>

#include "tokenizers/hf_components.h"
#include "tokenizers/unicode.h"

namespace shrink::hf {

namespace {

constexpr int64_t kMaxId = (1 << 24) - 1;

// Reads model.vocab: an object {token: id}; ids must be small non-negative integers.
void read_vocab(const Json& j, const Where& w, std::unordered_map<std::string, int32_t>& vocab) {
  const Json& v = require(j, "vocab", w);
  if (!v.is_object()) bad_field(w.child("vocab"), "an object {token: id}", v);
  vocab.reserve(v.size());
  for (auto it = v.begin(); it != v.end(); ++it) {
    const Json& id = it.value();
    if (id.is_number_unsigned() && id.get<uint64_t>() <= static_cast<uint64_t>(kMaxId)) {
      vocab[it.key()] = static_cast<int32_t>(id.get<uint64_t>());
      continue;
    }
    std::string key = "'";
    key.append(it.key(), 0, std::min<size_t>(it.key().size(), 40));
    key.push_back('\'');
    as_int(id, w.child("vocab").child(key), 0, kMaxId);  // throws with the right message
    vocab[it.key()] = static_cast<int32_t>(id.get<int64_t>());
  }
}

int32_t lookup_unk(const std::unordered_map<std::string, int32_t>& vocab, const std::string& unk, const Where& w) {
  if (unk.empty()) return -1;
  auto it = vocab.find(unk);
  if (it == vocab.end())
    fail("{}: unk_token '{}' is not in the vocab; fix the tokenizer file", w.child("unk_token").str(), unk);
  return it->second;
}

class WordPiece final : public Model {
 public:
  WordPiece(const Json& j, const Where& w) {
    read_vocab(j, w, vocab_);
    unk_id_ = lookup_unk(vocab_, get_string(j, "unk_token", w, "[UNK]"), w);
    prefix_ = get_string(j, "continuing_subword_prefix", w, "##");
    max_chars_ = static_cast<size_t>(get_int(j, "max_input_chars_per_word", w, 100, 0, INT64_MAX));
    for (const auto& entry : vocab_) max_token_cps_ = std::max(max_token_cps_, unicode::count_cps(entry.first));
  }
  void tokenize(const std::string& word, std::vector<int32_t>& out) const override {
    std::vector<size_t> offs;  // byte offset of each code point
    for (size_t pos = 0; pos < word.size();) {
      offs.push_back(pos);
      unicode::next_cp(word, pos);
    }
    const size_t n = offs.size();
    offs.push_back(word.size());
    if (n > max_chars_) return push_unk(out);
    const size_t before = out.size();
    std::string sub;
    for (size_t start = 0; start < n;) {
      // Longest vocab entry first; no entry is longer than max_token_cps_ code points.
      size_t end = std::min(n, start + max_token_cps_);
      int32_t found = -1;
      for (; end > start; --end) {
        sub.clear();
        if (start > 0) sub = prefix_;
        sub.append(word, offs[start], offs[end] - offs[start]);
        if (auto it = vocab_.find(sub); it != vocab_.end()) {
          found = it->second;
          break;
        }
      }
      if (found < 0) {
        out.resize(before);
        return push_unk(out);
      }
      out.push_back(found);
      start = end;
    }
  }

 private:
  void push_unk(std::vector<int32_t>& out) const {
    if (unk_id_ < 0) fail("tokenizer: WordPiece has no unk_token in its vocab to stand for an unknown word");
    out.push_back(unk_id_);
  }
  std::string prefix_;
  size_t max_chars_ = 100;
  size_t max_token_cps_ = 1;
};

class WordLevel final : public Model {
 public:
  WordLevel(const Json& j, const Where& w) {
    read_vocab(j, w, vocab_);
    unk_id_ = lookup_unk(vocab_, get_string(j, "unk_token", w, ""), w);
  }
  void tokenize(const std::string& word, std::vector<int32_t>& out) const override {
    if (auto it = vocab_.find(word); it != vocab_.end()) return out.push_back(it->second);
    if (unk_id_ < 0)
      fail("tokenizer: WordLevel word '{}' is not in the vocab and there is no unk_token", word.substr(0, 40));
    out.push_back(unk_id_);
  }
};

class Bpe final : public Model {
 public:
  Bpe(const Json& j, const Where& w) {
    read_vocab(j, w, vocab_);
    unk_id_ = lookup_unk(vocab_, get_string(j, "unk_token", w, ""), w);
    prefix_ = get_string(j, "continuing_subword_prefix", w, "");
    suffix_ = get_string(j, "end_of_word_suffix", w, "");
    fuse_unk_ = get_bool(j, "fuse_unk", w, false);
    byte_fallback_ = get_bool(j, "byte_fallback", w, false);
    ignore_merges_ = get_bool(j, "ignore_merges", w, false);
    if (byte_fallback_) {
      for (int b = 0; b < 256; ++b) {
        auto it = vocab_.find(fmt::format("<0x{:02X}>", b));
        byte_ids_[b] = it == vocab_.end() ? -1 : it->second;
      }
    }
    const Json& merges = require(j, "merges", w);
    if (!merges.is_array()) bad_field(w.child("merges"), "an array", merges);
    merges_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      const Where wi = w.child("merges").index(i);
      const Json& m = merges[i];
      std::string a, b;
      if (m.is_string()) {
        const std::string s = m.get<std::string>();
        const size_t sp = s.find(' ');
        if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
          fail("{}: merge '{}' must be two tokens separated by one space; fix the tokenizer file", wi.str(), s);
        a = s.substr(0, sp), b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>(), b = m[1].get<std::string>();
      } else {
        bad_field(wi, "\"a b\" or [\"a\", \"b\"]", m);
      }
      const int32_t ia = token_id(a, wi), ib = token_id(b, wi);
      const std::string bb =
          !prefix_.empty() && b.compare(0, prefix_.size(), prefix_) == 0 ? b.substr(prefix_.size()) : b;
      const int32_t inew = token_id(a + bb, wi);
      merges_[key(ia, ib)] = {static_cast<int32_t>(i), inew};  // a repeated pair keeps its last rank, as HF
    }
  }

  void tokenize(const std::string& word, std::vector<int32_t>& out) const override {
    if (word.empty()) return;
    if (ignore_merges_) {
      if (auto it = vocab_.find(word); it != vocab_.end()) return out.push_back(it->second);
    }
    const bool cacheable = word.size() <= kMaxCachedWordBytes;
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (auto it = cache_.find(word); it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> ids = merge_word(word);
    out.insert(out.end(), ids.begin(), ids.end());
    if (cacheable) {
      std::lock_guard<std::mutex> lock(cache_mutex_);
      if (cache_.size() >= kMaxCacheEntries) cache_.clear();
      cache_.emplace(word, std::move(ids));
    }
  }

 private:
  static constexpr size_t kMaxCachedWordBytes = 256;
  static constexpr size_t kMaxCacheEntries = 1 << 17;
  static uint64_t key(int32_t a, int32_t b) { return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b); }

  int32_t token_id(const std::string& t, const Where& w) const {
    auto it = vocab_.find(t);
    if (it == vocab_.end())
      fail(
          "{}: merge refers to token '{}', which is not in the vocab; the vocab and merges do not belong "
          "together (re-export the tokenizer)",
          w.str(), t.substr(0, 60));
    return it->second;
  }

  // The symbols of `word` (one per code point, byte fallback, fused unknowns) merged by rank (lowest first,
  // leftmost on ties), as HF's Word::merge_all.
  std::vector<int32_t> merge_word(const std::string& word) const {
    struct Sym {
      int32_t id;
      int32_t prev, next;
      bool alive;
    };
    std::vector<Sym> syms;
    syms.reserve(word.size());
    auto add = [&](int32_t id) { syms.push_back({id, static_cast<int32_t>(syms.size()) - 1, -1, true}); };
    int32_t pending_unk = -1;
    std::string s;
    for (size_t pos = 0; pos < word.size();) {
      const size_t b = pos;
      unicode::next_cp(word, pos);
      const bool first = b == 0, last = pos == word.size();
      s.clear();
      if (!first) s += prefix_;
      s.append(word, b, pos - b);
      if (last) s += suffix_;
      if (auto it = vocab_.find(s); it != vocab_.end()) {
        if (pending_unk >= 0) add(pending_unk), pending_unk = -1;
        add(it->second);
        continue;
      }
      if (byte_fallback_) {
        bool all = true;
        for (char c : s) all = all && byte_ids_[static_cast<uint8_t>(c)] >= 0;
        if (all) {
          // HF adds the bytes before a pending unknown (its order, kept for parity).
          for (char c : s) add(byte_ids_[static_cast<uint8_t>(c)]);
          continue;
        }
      }
      if (unk_id_ >= 0) {
        if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
        pending_unk = unk_id_;
      }
    }
    if (pending_unk >= 0) add(pending_unk);
    const int32_t n = static_cast<int32_t>(syms.size());
    for (int32_t i = 0; i + 1 < n; ++i) syms[i].next = i + 1;

    struct Cand {
      int32_t rank, pos, new_id;
      bool operator>(const Cand& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand, std::vector<Cand>, std::greater<Cand>> queue;
    auto push_pair = [&](int32_t i) {
      const int32_t j = syms[i].next;
      if (j < 0) return;
      if (auto it = merges_.find(key(syms[i].id, syms[j].id)); it != merges_.end())
        queue.push({it->second.first, i, it->second.second});
    };
    for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
    while (!queue.empty()) {
      const Cand c = queue.top();
      queue.pop();
      Sym& left = syms[c.pos];
      if (!left.alive || left.next < 0) continue;
      const int32_t j = left.next;
      auto it = merges_.find(key(left.id, syms[j].id));
      if (it == merges_.end() || it->second.second != c.new_id) continue;  // stale entry
      left.id = c.new_id;
      syms[j].alive = false;
      left.next = syms[j].next;
      if (left.next >= 0) syms[left.next].prev = c.pos;
      if (left.prev >= 0) push_pair(left.prev);
      push_pair(c.pos);
    }
    std::vector<int32_t> ids;
    for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = syms[i].next) ids.push_back(syms[i].id);
    return ids;
  }

  std::string prefix_, suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  int32_t byte_ids_[256] = {};
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a, b) -> (rank, merged id)
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace

std::unique_ptr<Model> make_model(const Json& j, const Where& w) {
  if (!j.is_object()) bad_field(w, "a model object", j);
  std::string type = get_string(j, "type", w, "");
  if (type.empty()) {
    // Older files omit the type: infer it the way HF's untagged deserialization does.
    const Json* vocab = member(j, "vocab");
    if (member(j, "merges"))
      type = "BPE";
    else if (vocab && vocab->is_array())
      type = "Unigram";
    else if (member(j, "continuing_subword_prefix") || member(j, "max_input_chars_per_word"))
      type = "WordPiece";
    else if (vocab)
      type = "WordLevel";
    else
      fail("{}: the model has no 'type' and no vocab; fix or re-export the tokenizer file", w.str());
  }
  if (type == "WordPiece") return std::make_unique<WordPiece>(j, w);
  if (type == "BPE") return std::make_unique<Bpe>(j, w);
  if (type == "WordLevel") return std::make_unique<WordLevel>(j, w);
  if (type == "Unigram")
    fail("{}: Unigram models are not supported in tokenizer.json; load the SentencePiece tokenizer.model instead",
         w.str());
  fail("{}: unknown model type '{}' (supported: WordPiece, BPE, WordLevel)", w.child("type").str(), type);
}

}  // namespace shrink::hf
