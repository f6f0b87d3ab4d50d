// Hugging Face tokenizer.json: added tokens (matched before and after normalization, as HF does), the
// normalizer -> pre-tokenizer -> model pipeline, post-processors (TemplateProcessing, BertProcessing,
// RobertaProcessing, ByteLevel, Sequence) and decoding. Also builds the same tokenizers from BERT vocab.txt
// and GPT-2 vocab.json + merges.txt.
#include <shrink/core/error.h>

#include <fstream>
#include <sstream>

#include "tokenizers/hf_components.h"
#include "tokenizers/loaders.h"
#include "tokenizers/unicode.h"

namespace shrink {

namespace hf {
namespace {

constexpr size_t kMaxJsonBytes = size_t{512} << 20;
constexpr int kMaxJsonDepth = 64;

// Deepest [ / { nesting outside strings; checked before parsing so a hostile file cannot exhaust the stack.
int json_depth(std::string_view s) {
  int depth = 0, max_depth = 0;
  bool in_str = false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (in_str) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_str = false;
    } else if (c == '"') {
      in_str = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
      if (max_depth > kMaxJsonDepth) return max_depth;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return max_depth;
}

Json parse_json(std::string_view text, const std::string& name) {
  check(text.size() <= kMaxJsonBytes, "{}: {} bytes is larger than the {} MiB a tokenizer file may have", name,
        text.size(), kMaxJsonBytes >> 20);
  if (json_depth(text) > kMaxJsonDepth)
    fail("{}: JSON nested deeper than {} levels; this is not a tokenizer file", name, kMaxJsonDepth);
  try {
    return Json::parse(text.begin(), text.end());
  } catch (const Json::parse_error& e) {
    fail("{}: invalid JSON at byte {}: {}; fix or re-download the file", name, e.byte, e.what());
  } catch (const Json::exception& e) {  // e.g. a number out of range
    fail("{}: invalid JSON: {}; fix or re-download the file", name, e.what());
  }
}

// A special-token string from tokenizer_config.json: "tok" or {"content": "tok", ...}.
std::string config_token(const Json* config, const char* key) {
  if (!config) return "";
  const Json* v = member(*config, key);
  if (!v) return "";
  if (v->is_string()) return v->get<std::string>();
  if (const Json* c = member(*v, "content"); c && c->is_string()) return c->get<std::string>();
  return "";
}

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = false, special = false;
};

// Byte trie over added-token patterns; finds the longest pattern starting at a position.
class Trie {
 public:
  void insert(const std::string& pattern, int32_t value) {
    int32_t node = 0;
    for (char c : pattern) {
      auto& kids = nodes_[static_cast<size_t>(node)].kids;
      auto it = std::find_if(kids.begin(), kids.end(), [&](auto& k) { return k.first == c; });
      if (it != kids.end()) {
        node = it->second;
        continue;
      }
      nodes_.push_back({});
      const int32_t fresh = static_cast<int32_t>(nodes_.size()) - 1;
      nodes_[static_cast<size_t>(node)].kids.emplace_back(c, fresh);
      node = fresh;
    }
    nodes_[static_cast<size_t>(node)].value = value;
  }
  bool empty() const { return nodes_.size() == 1; }
  // (end, value) of the longest pattern matching s[pos..], or value -1.
  std::pair<size_t, int32_t> longest(std::string_view s, size_t pos) const {
    std::pair<size_t, int32_t> best{pos, -1};
    int32_t node = 0;
    for (size_t i = pos; i < s.size(); ++i) {
      const auto& kids = nodes_[static_cast<size_t>(node)].kids;
      auto it = std::find_if(kids.begin(), kids.end(), [&](auto& k) { return k.first == s[i]; });
      if (it == kids.end()) break;
      node = it->second;
      if (nodes_[static_cast<size_t>(node)].value >= 0) best = {i + 1, nodes_[static_cast<size_t>(node)].value};
    }
    return best;
  }

 private:
  struct Node {
    std::vector<std::pair<char, int32_t>> kids;
    int32_t value = -1;
  };
  std::vector<Node> nodes_{Node{}};
};

struct TemplateItem {
  bool special = false;
  std::vector<int32_t> ids;  // special tokens
  int seq = 0;               // 0 = A, 1 = B
  int32_t type_id = 0;
};

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual void apply(std::vector<int32_t>& ids, std::vector<int32_t>& types, const std::vector<int32_t>* second,
                     bool add_special) const = 0;
  virtual int added(bool pair) const = 0;
};

class TemplatePost final : public PostProcessor {
 public:
  TemplatePost(std::vector<TemplateItem> single, std::vector<TemplateItem> pair)
      : single_(std::move(single)), pair_(std::move(pair)) {}
  void apply(std::vector<int32_t>& ids, std::vector<int32_t>& types, const std::vector<int32_t>* second,
             bool add_special) const override {
    const std::vector<int32_t> first = std::move(ids);
    ids.clear(), types.clear();
    for (const TemplateItem& it : second ? pair_ : single_) {
      if (it.special) {
        if (!add_special) continue;
        ids.insert(ids.end(), it.ids.begin(), it.ids.end());
        types.insert(types.end(), it.ids.size(), it.type_id);
      } else {
        const std::vector<int32_t>& s = it.seq == 0 ? first : *second;
        ids.insert(ids.end(), s.begin(), s.end());
        types.insert(types.end(), s.size(), it.type_id);
      }
    }
  }
  int added(bool pair) const override {
    int n = 0;
    for (const TemplateItem& it : pair ? pair_ : single_) n += it.special ? static_cast<int>(it.ids.size()) : 0;
    return n;
  }

 private:
  std::vector<TemplateItem> single_, pair_;
};

class SequencePost final : public PostProcessor {
 public:
  explicit SequencePost(std::vector<std::unique_ptr<PostProcessor>> steps) : steps_(std::move(steps)) {}
  void apply(std::vector<int32_t>& ids, std::vector<int32_t>& types, const std::vector<int32_t>* second,
             bool add_special) const override {
    bool first = true;
    for (const auto& s : steps_) {
      std::vector<int32_t> t;
      s->apply(ids, t, first ? second : nullptr, add_special);
      if (first || types.size() != t.size()) types = std::move(t);
      first = false;
    }
    if (first) {  // empty sequence: plain concatenation
      types.assign(ids.size(), 0);
      if (second) ids.insert(ids.end(), second->begin(), second->end()), types.insert(types.end(), second->size(), 1);
    }
  }
  int added(bool pair) const override {
    int n = 0;
    bool first = true;
    for (const auto& s : steps_) n += s->added(first && pair), first = false;
    return n;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> steps_;
};

// [token, id] of BertProcessing / RobertaProcessing.
int32_t token_pair_id(const Json& j, const char* key, const Where& w) {
  const Json& v = require(j, key, w);
  if (!v.is_array() || v.size() != 2 || !v[0].is_string()) bad_field(w.child(key), "[\"token\", id]", v);
  return static_cast<int32_t>(as_int(v[1], w.child(key).index(1), 0, (1 << 24) - 1));
}

std::unique_ptr<PostProcessor> make_post(const Json& j, const Where& w, int depth) {
  if (depth > kMaxNesting) fail("{}: post-processors nested deeper than {}", w.str(), kMaxNesting);
  if (!j.is_object()) bad_field(w, "a post-processor object", j);
  const std::string type = require_string(j, "type", w);
  auto sp = [](int32_t id, int32_t type_id) { return TemplateItem{true, {id}, 0, type_id}; };
  auto sq = [](int seq, int32_t type_id) { return TemplateItem{false, {}, seq, type_id}; };
  if (type == "TemplateProcessing") {
    std::unordered_map<std::string, std::vector<int32_t>> specials;
    if (const Json* st = member(j, "special_tokens")) {
      if (!st->is_object()) bad_field(w.child("special_tokens"), "an object", *st);
      for (auto it = st->begin(); it != st->end(); ++it) {
        const Where wi = w.child("special_tokens").child(it.key());
        const Json& ids = require(it.value(), "ids", wi);
        if (!ids.is_array()) bad_field(wi.child("ids"), "an array of ids", ids);
        std::vector<int32_t> v;
        for (size_t k = 0; k < ids.size(); ++k)
          v.push_back(static_cast<int32_t>(as_int(ids[k], wi.child("ids").index(k), 0, (1 << 24) - 1)));
        specials[it.key()] = std::move(v);
      }
    }
    auto items = [&](const char* key) {
      std::vector<TemplateItem> out;
      const Json& list = require(j, key, w);
      if (!list.is_array()) bad_field(w.child(key), "an array of template items", list);
      for (size_t i = 0; i < list.size(); ++i) {
        const Where wi = w.child(key).index(i);
        if (const Json* s = member(list[i], "SpecialToken")) {
          const std::string id = require_string(*s, "id", wi);
          auto f = specials.find(id);
          if (f == specials.end()) fail("{}: special token '{}' is not listed in special_tokens", wi.str(), id);
          out.push_back({true, f->second, 0, static_cast<int32_t>(get_int(*s, "type_id", wi, 0, 0, 255))});
        } else if (const Json* q = member(list[i], "Sequence")) {
          const std::string id = require_string(*q, "id", wi);
          if (id != "A" && id != "B") fail("{}: sequence id must be A or B, found '{}'", wi.str(), id);
          out.push_back(sq(id == "A" ? 0 : 1, static_cast<int32_t>(get_int(*q, "type_id", wi, 0, 0, 255))));
        } else {
          bad_field(wi, "{\"SpecialToken\": ...} or {\"Sequence\": ...}", list[i]);
        }
      }
      return out;
    };
    auto single = items("single");
    for (const auto& it : single)
      if (!it.special && it.seq == 1) fail("{}: the single template refers to sequence B", w.child("single").str());
    return std::make_unique<TemplatePost>(std::move(single), items("pair"));
  }
  if (type == "BertProcessing") {
    const int32_t cls = token_pair_id(j, "cls", w), sep = token_pair_id(j, "sep", w);
    return std::make_unique<TemplatePost>(
        std::vector<TemplateItem>{sp(cls, 0), sq(0, 0), sp(sep, 0)},
        std::vector<TemplateItem>{sp(cls, 0), sq(0, 0), sp(sep, 0), sq(1, 1), sp(sep, 1)});
  }
  if (type == "RobertaProcessing") {
    const int32_t cls = token_pair_id(j, "cls", w), sep = token_pair_id(j, "sep", w);
    return std::make_unique<TemplatePost>(
        std::vector<TemplateItem>{sp(cls, 0), sq(0, 0), sp(sep, 0)},
        std::vector<TemplateItem>{sp(cls, 0), sq(0, 0), sp(sep, 0), sp(sep, 0), sq(1, 0), sp(sep, 0)});
  }
  if (type == "ByteLevel")
    return std::make_unique<TemplatePost>(std::vector<TemplateItem>{sq(0, 0)},
                                          std::vector<TemplateItem>{sq(0, 0), sq(1, 1)});
  if (type == "Sequence") {
    const Json& list = require(j, "processors", w);
    if (!list.is_array()) bad_field(w.child("processors"), "an array", list);
    std::vector<std::unique_ptr<PostProcessor>> steps;
    for (size_t i = 0; i < list.size(); ++i)
      steps.push_back(make_post(list[i], w.child("processors").index(i), depth + 1));
    return std::make_unique<SequencePost>(std::move(steps));
  }
  fail(
      "{}: unknown post-processor type '{}' (supported: TemplateProcessing, BertProcessing, RobertaProcessing, "
      "ByteLevel, Sequence)",
      w.str(), type);
}

class HfTokenizer final : public Tokenizer {
 public:
  HfTokenizer(const Json& root, const std::string& name, const Json* config) : name_(name) {
    const Where w{name_, ""};
    if (!root.is_object()) bad_field(w, "a tokenizer.json object", root);
    model_ = make_model(require(root, "model", w), w.child("model"));
    if (const Json* n = member(root, "normalizer")) normalizer_ = make_normalizer(*n, w.child("normalizer"));
    if (const Json* p = member(root, "pre_tokenizer"))
      pre_tokenizer_ = make_pre_tokenizer(*p, w.child("pre_tokenizer"));
    if (const Json* p = member(root, "post_processor")) post_ = make_post(*p, w.child("post_processor"), 0);
    if (const Json* d = member(root, "decoder")) decoder_ = make_decoder(*d, w.child("decoder"));
    read_added_tokens(root, w);
    build_id_table(w);
    assign_special_ids(root, config, w);
  }

  std::vector<int32_t> encode(std::string_view text, bool add_special) const override {
    std::vector<int32_t> ids;
    run(text, &ids, nullptr);
    if (!add_special) return ids;
    std::vector<int32_t> types;
    post_process(ids, types, nullptr, true);
    return ids;
  }

  std::vector<std::string> tokenize(std::string_view text) const override {
    std::vector<std::string> tokens;
    run(text, nullptr, &tokens);
    return tokens;
  }

  std::string decode(const std::vector<int32_t>& ids) const override {
    std::vector<std::string> tokens;
    tokens.reserve(ids.size());
    for (int32_t id : ids) {
      if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[static_cast<size_t>(id)]) continue;
      if (special_[static_cast<size_t>(id)]) continue;
      tokens.push_back(id_to_token_[static_cast<size_t>(id)]);
    }
    if (!decoder_) {
      std::string out;
      for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
      return out;
    }
    decoder_->decode_chain(tokens);
    std::string out;
    for (auto& t : tokens) out += t;
    return out;
  }

  std::string id_to_piece(int32_t id) const override {
    if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[static_cast<size_t>(id)])
      fail("{}: token id {} is not in the vocabulary (size {})", name_, id, id_to_token_.size());
    return id_to_token_[static_cast<size_t>(id)];
  }

  int vocab_size() const override { return static_cast<int>(id_to_token_.size()); }

 protected:
  void post_process(std::vector<int32_t>& ids, std::vector<int32_t>& types, const std::vector<int32_t>* second,
                    bool add_special) const override {
    if (post_) return post_->apply(ids, types, second, add_special);
    types.assign(ids.size(), 0);
    if (second) ids.insert(ids.end(), second->begin(), second->end()), types.insert(types.end(), second->size(), 1);
  }
  int num_special_tokens(bool pair) const override { return post_ ? post_->added(pair) : 0; }

 private:
  void read_added_tokens(const Json& root, const Where& w) {
    const Json* list = member(root, "added_tokens");
    if (!list) return;
    if (!list->is_array()) bad_field(w.child("added_tokens"), "an array", *list);
    for (size_t i = 0; i < list->size(); ++i) {
      const Where wi = w.child("added_tokens").index(i);
      const Json& t = (*list)[i];
      if (!t.is_object()) bad_field(wi, "an added-token object", t);
      AddedToken a;
      a.id = static_cast<int32_t>(as_int(require(t, "id", wi), wi.child("id"), 0, (1 << 24) - 1));
      a.content = require_string(t, "content", wi);
      a.single_word = get_bool(t, "single_word", wi, false);
      a.lstrip = get_bool(t, "lstrip", wi, false);
      a.rstrip = get_bool(t, "rstrip", wi, false);
      a.normalized = get_bool(t, "normalized", wi, !get_bool(t, "special", wi, false));
      a.special = get_bool(t, "special", wi, false);
      if (a.content.empty() || !unicode::is_valid_utf8(a.content)) continue;  // can never match
      added_.push_back(std::move(a));
    }
    // Normalized tokens are matched in normalized text, so their pattern is their normalized content.
    const size_t limit = size_t{1} << 20;
    for (size_t k = 0; k < added_.size(); ++k) {
      const AddedToken& a = added_[k];
      if (!a.normalized) {
        raw_trie_.insert(a.content, static_cast<int32_t>(k));
        continue;
      }
      const std::string pattern = normalizer_ ? normalizer_->normalize(a.content, limit) : a.content;
      if (!pattern.empty()) norm_trie_.insert(pattern, static_cast<int32_t>(k));
    }
  }

  void build_id_table(const Where& w) {
    size_t max_id = 0, count = model_->vocab().size() + added_.size();
    for (const auto& [tok, id] : model_->vocab()) max_id = std::max(max_id, static_cast<size_t>(id));
    for (const auto& a : added_) max_id = std::max(max_id, static_cast<size_t>(a.id));
    if (count == 0) fail("{}: the vocabulary is empty", w.str());
    if (max_id >= 2 * count + 65536)
      fail("{}: token ids go up to {} for {} tokens; ids must be dense (0..N-1); fix the tokenizer file", w.str(),
           max_id, count);
    id_to_token_.resize(max_id + 1);
    has_id_.assign(max_id + 1, false);
    special_.assign(max_id + 1, false);
    for (const auto& [tok, id] : model_->vocab()) {
      id_to_token_[static_cast<size_t>(id)] = tok;
      has_id_[static_cast<size_t>(id)] = true;
    }
    for (const auto& a : added_) {
      id_to_token_[static_cast<size_t>(a.id)] = a.content;
      has_id_[static_cast<size_t>(a.id)] = true;
      special_[static_cast<size_t>(a.id)] = a.special;
    }
  }

  int32_t find_token(const std::string& t) const {
    if (t.empty()) return -1;
    for (const auto& a : added_)
      if (a.content == t) return a.id;
    auto it = model_->vocab().find(t);
    return it == model_->vocab().end() ? -1 : it->second;
  }
  int32_t first_token(std::initializer_list<const char*> names) const {
    for (const char* n : names)
      if (int32_t id = find_token(n); id >= 0) return id;
    return -1;
  }

  void assign_special_ids(const Json& root, const Json* config, const Where& w) {
    unk_id_ = model_->unk_id();
    if (int32_t id = find_token(config_token(config, "unk_token")); id >= 0) unk_id_ = id;
    bos_id_ = find_token(config_token(config, "bos_token"));
    if (bos_id_ < 0) bos_id_ = first_token({"<s>", "<|begin_of_text|>", "<|startoftext|>", "<|endoftext|>"});
    eos_id_ = find_token(config_token(config, "eos_token"));
    if (eos_id_ < 0) eos_id_ = first_token({"</s>", "<|end_of_text|>", "<|endoftext|>"});
    cls_id_ = find_token(config_token(config, "cls_token"));
    if (cls_id_ < 0) cls_id_ = first_token({"[CLS]"});
    sep_id_ = find_token(config_token(config, "sep_token"));
    if (sep_id_ < 0) sep_id_ = first_token({"[SEP]"});
    int32_t pad = -1;
    if (const Json* p = member(root, "padding"))
      pad = static_cast<int32_t>(get_int(*p, "pad_id", w.child("padding"), -1, -1, (1 << 24) - 1));
    if (pad < 0) pad = find_token(config_token(config, "pad_token"));
    if (pad < 0) pad = first_token({"[PAD]", "<pad>", "<|pad|>"});
    if (pad < 0) pad = unk_id_;
    if (pad < 0) pad = eos_id_;
    pad_id_ = pad < 0 ? 0 : pad;
  }

  struct Piece {
    std::string text;
    int32_t added = -1;  // index into added_, or -1 for text still to tokenize
    bool first = false;  // starts at offset 0 of the input
  };

  // Splits `s` around added tokens of `trie` (leftmost, then longest), honouring lstrip/rstrip/single_word.
  void split_added(std::string&& s, bool first, const Trie& trie, std::vector<Piece>& out) const {
    if (trie.empty()) {
      if (!s.empty()) out.push_back({std::move(s), -1, first});
      return;
    }
    size_t last = 0, i = 0;
    while (i < s.size()) {
      auto [end, k] = trie.longest(s, i);
      if (k < 0) {
        ++i;
        continue;
      }
      const AddedToken& a = added_[static_cast<size_t>(k)];
      size_t b = i, e = end;
      if (a.single_word) {
        const bool word_before = b > 0 && is_word_char_before(s, b);
        const bool word_after = e < s.size() && is_word_char_at(s, e);
        if (word_before || word_after) {
          ++i;
          continue;
        }
      }
      if (a.lstrip)
        while (b > last) {
          size_t p = b - 1;
          while (p > last && (static_cast<uint8_t>(s[p]) & 0xC0) == 0x80) --p;
          size_t q = p;
          if (!unicode::is_white_space(unicode::next_cp(s, q))) break;
          b = p;
        }
      if (a.rstrip)
        while (e < s.size()) {
          size_t q = e;
          if (!unicode::is_white_space(unicode::next_cp(s, q))) break;
          e = q;
        }
      if (b > last) out.push_back({s.substr(last, b - last), -1, first && last == 0});
      out.push_back({s.substr(b, e - b), k, first && b == 0});
      last = i = e;
    }
    if (last < s.size()) out.push_back({s.substr(last), -1, first && last == 0});
  }
  static bool is_word_char_at(const std::string& s, size_t pos) {
    const char32_t c = unicode::next_cp(s, pos);
    return unicode::is_letter(c) || unicode::is_number(c) || c == '_';
  }
  static bool is_word_char_before(const std::string& s, size_t pos) {
    size_t p = pos - 1;
    while (p > 0 && (static_cast<uint8_t>(s[p]) & 0xC0) == 0x80) --p;
    return is_word_char_at(s, p);
  }

  // The whole pipeline; appends ids and/or token strings.
  void run(std::string_view input, std::vector<int32_t>* ids, std::vector<std::string>* tokens) const {
    std::string text = unicode::sanitize_utf8(input);
    const size_t limit = text.size() * 64 + (size_t{1} << 20);
    std::vector<Piece> raw;
    split_added(std::move(text), true, raw_trie_, raw);
    std::vector<Piece> pieces;
    for (Piece& p : raw) {
      if (p.added >= 0) {
        pieces.push_back(std::move(p));
        continue;
      }
      std::string norm = normalizer_ ? normalizer_->normalize(std::move(p.text), limit) : std::move(p.text);
      split_added(std::move(norm), p.first, norm_trie_, pieces);
    }
    std::vector<int32_t> word_ids;
    std::vector<Split> splits;
    for (Piece& p : pieces) {
      if (p.added >= 0) {
        if (ids) ids->push_back(added_[static_cast<size_t>(p.added)].id);
        if (tokens) tokens->push_back(std::move(p.text));
        continue;
      }
      splits.assign(1, Split{std::move(p.text), p.first});
      if (pre_tokenizer_) pre_tokenizer_->pre_tokenize(splits);
      for (const Split& s : splits) {
        if (s.text.empty()) continue;
        word_ids.clear();
        model_->tokenize(s.text, word_ids);
        if (ids) ids->insert(ids->end(), word_ids.begin(), word_ids.end());
        if (tokens)
          for (int32_t id : word_ids) tokens->push_back(id_to_token_[static_cast<size_t>(id)]);
      }
    }
  }

  std::string name_;
  std::unique_ptr<Normalizer> normalizer_;
  std::unique_ptr<PreTokenizer> pre_tokenizer_;
  std::unique_ptr<Model> model_;
  std::unique_ptr<PostProcessor> post_;
  std::unique_ptr<Decoder> decoder_;
  std::vector<AddedToken> added_;
  Trie raw_trie_, norm_trie_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_, special_;
};

std::unique_ptr<Tokenizer> from_json(const Json& root, const std::string& name, const Json* config) {
  try {
    return std::make_unique<HfTokenizer>(root, name, config);
  } catch (const Json::exception& e) {
    fail("{}: unexpected JSON content ({}); fix or re-export the tokenizer file", name, e.what());
  }
}

// Special token text from the config, or `def`.
std::string special_or(const Json* config, const char* key, const char* def) {
  std::string s = config_token(config, key);
  return s.empty() ? def : s;
}

std::unique_ptr<Json> read_config_beside(const std::filesystem::path& file) {
  const auto cfg = file.parent_path() / "tokenizer_config.json";
  if (!std::filesystem::exists(cfg)) return nullptr;
  const std::string text = tokenizers::read_text_file(cfg, "tokenizer_config.json", size_t{16} << 20);
  auto j = std::make_unique<Json>(parse_json(text, cfg.string()));
  if (!j->is_object()) fail("{}: expected a JSON object", cfg.string());
  return j;
}

}  // namespace
}  // namespace hf

std::unique_ptr<Tokenizer> parse_tokenizer_json(std::string_view json_text, const std::string& name,
                                                std::string_view config_json) {
  const hf::Json root = hf::parse_json(json_text, name);
  std::unique_ptr<hf::Json> config;
  if (!config_json.empty()) {
    config = std::make_unique<hf::Json>(hf::parse_json(config_json, name + " (tokenizer_config.json)"));
    if (!config->is_object()) config.reset();
  }
  return hf::from_json(root, name, config.get());
}

namespace tokenizers {

std::string read_text_file(const std::filesystem::path& path, const char* what, size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec))
    fail("{}: no such file (expected {}); check the path", path.string(), what);
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) fail("{}: cannot read its size ({})", path.string(), ec.message());
  if (size > max_bytes)
    fail("{}: {} bytes is larger than the {} MiB a {} may have", path.string(), size, max_bytes >> 20, what);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open {} for reading; check permissions", path.string(), what);
  std::string text(static_cast<size_t>(size), '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size)
    fail("{}: short read ({} of {} bytes)", path.string(), in.gcount(), size);
  return text;
}

std::unique_ptr<Tokenizer> load_hf_tokenizer_json(const std::filesystem::path& path) {
  const std::string text = read_text_file(path, "tokenizer.json", hf::kMaxJsonBytes);
  const auto config = hf::read_config_beside(path);
  return hf::from_json(hf::parse_json(text, path.string()), path.string(), config.get());
}

std::unique_ptr<Tokenizer> load_bert_vocab_txt(const std::filesystem::path& vocab_txt) {
  using hf::Json;
  const std::string text = read_text_file(vocab_txt, "BERT vocab.txt", size_t{256} << 20);
  const auto config = hf::read_config_beside(vocab_txt);
  const Json* cfg = config.get();
  Json vocab = Json::object();
  size_t line_start = 0;
  int32_t index = 0;
  while (line_start < text.size()) {
    size_t nl = text.find('\n', line_start);
    if (nl == std::string::npos) nl = text.size();
    vocab[text.substr(line_start, nl - line_start)] = index++;  // HF keeps the last of duplicate lines
    line_start = nl + 1;
  }
  check(index > 0, "{}: the vocabulary is empty", vocab_txt.string());
  const std::string unk = hf::special_or(cfg, "unk_token", "[UNK]"), cls = hf::special_or(cfg, "cls_token", "[CLS]"),
                    sep = hf::special_or(cfg, "sep_token", "[SEP]"), pad = hf::special_or(cfg, "pad_token", "[PAD]"),
                    mask = hf::special_or(cfg, "mask_token", "[MASK]");
  for (const std::string& t : {unk, cls, sep})
    if (!vocab.contains(t))
      fail("{}: special token '{}' is not in the vocabulary; fix tokenizer_config.json or vocab.txt",
           vocab_txt.string(), t);
  const hf::Where w{vocab_txt.string(), "tokenizer_config.json"};
  Json root;
  root["model"] = {{"type", "WordPiece"},
                   {"unk_token", unk},
                   {"continuing_subword_prefix", "##"},
                   {"max_input_chars_per_word", 100},
                   {"vocab", vocab}};
  const bool lower = cfg ? hf::get_bool(*cfg, "do_lower_case", w, true) : true;
  Json strip = nullptr;
  if (cfg)
    if (const Json* s = hf::member(*cfg, "strip_accents"); s && s->is_boolean()) strip = *s;
  root["normalizer"] = {{"type", "BertNormalizer"},
                        {"clean_text", true},
                        {"handle_chinese_chars", cfg ? hf::get_bool(*cfg, "tokenize_chinese_chars", w, true) : true},
                        {"strip_accents", strip},
                        {"lowercase", lower}};
  root["pre_tokenizer"] = {{"type", "BertPreTokenizer"}};
  root["post_processor"] = {{"type", "BertProcessing"}, {"sep", {sep, vocab[sep]}}, {"cls", {cls, vocab[cls]}}};
  root["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  Json added = Json::array();
  for (const std::string& t : {pad, unk, cls, sep, mask})
    if (vocab.contains(t))
      added.push_back({{"id", vocab[t]}, {"content", t}, {"special", true}, {"normalized", false}});
  root["added_tokens"] = added;
  return hf::from_json(root, vocab_txt.string(), cfg);
}

std::unique_ptr<Tokenizer> load_gpt2_vocab_merges(const std::filesystem::path& vocab_json,
                                                  const std::filesystem::path& merges_txt) {
  using hf::Json;
  const auto config = hf::read_config_beside(vocab_json);
  const Json* cfg = config.get();
  Json vocab = hf::parse_json(read_text_file(vocab_json, "GPT-2 vocab.json", hf::kMaxJsonBytes), vocab_json.string());
  if (!vocab.is_object()) fail("{}: expected a JSON object {{token: id}}", vocab_json.string());
  const std::string text = read_text_file(merges_txt, "GPT-2 merges.txt", size_t{256} << 20);
  Json merges = Json::array();
  size_t line_start = 0;
  while (line_start < text.size()) {
    size_t nl = text.find('\n', line_start);
    if (nl == std::string::npos) nl = text.size();
    std::string line = text.substr(line_start, nl - line_start);
    line_start = nl + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line.rfind("#version", 0) == 0) continue;
    merges.push_back(line);
  }
  const hf::Where w{vocab_json.string(), "tokenizer_config.json"};
  const bool prefix_space = cfg ? hf::get_bool(*cfg, "add_prefix_space", w, false) : false;
  Json root;
  root["model"] = {{"type", "BPE"},
                   {"vocab", vocab},
                   {"merges", merges},
                   {"continuing_subword_prefix", ""},
                   {"end_of_word_suffix", ""},
                   {"fuse_unk", false},
                   {"byte_fallback", false}};
  root["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", prefix_space}, {"use_regex", true}};
  root["decoder"] = {{"type", "ByteLevel"}};
  const std::string eos = hf::special_or(cfg, "eos_token", "<|endoftext|>");
  const std::string bos = hf::special_or(cfg, "bos_token", "<|endoftext|>");
  Json added = Json::array();
  for (const std::string& t : {bos, eos})
    if (vocab.contains(t) && (added.empty() || added[0]["content"] != t))
      added.push_back({{"id", vocab[t]}, {"content", t}, {"special", true}, {"normalized", true}});
  root["added_tokens"] = added;
  if (cfg && hf::get_bool(*cfg, "add_bos_token", w, false) && vocab.contains(bos)) {
    root["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair",
         {{{"SpecialToken", {{"id", bos}, {"type_id", 0}}}},
          {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
          {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}},
          {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens", {{bos, {{"id", bos}, {"ids", {vocab[bos]}}, {"tokens", {bos}}}}}}};
  } else {
    root["post_processor"] = {{"type", "ByteLevel"}};
  }
  return hf::from_json(root, vocab_json.string(), cfg);
}

}  // namespace tokenizers
}  // namespace shrink
