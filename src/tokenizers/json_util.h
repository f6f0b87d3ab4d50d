// Typed access to tokenizer.json fields; every failure is a shrink::Error naming the file and the field.
#pragma once

#include <shrink/core/error.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace shrink::hf {

using Json = nlohmann::json;

// Where a value sits, for messages: "gpt2/tokenizer.json: model.merges[12]".
struct Where {
  const std::string& file;
  std::string path;
  Where child(const std::string& key) const { return {file, path.empty() ? key : path + "." + key}; }
  Where index(size_t i) const { return {file, path + "[" + std::to_string(i) + "]"}; }
  std::string str() const { return path.empty() ? file : file + ": " + path; }
};

inline const char* type_name(const Json& j) {
  return j.type_name();
}

// The member `key` of object `j`, or nullptr when it is absent or null.
inline const Json* member(const Json& j, const char* key) {
  if (!j.is_object()) return nullptr;
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

[[noreturn]] inline void bad_field(const Where& w, const char* expected, const Json& found) {
  fail("{}: expected {} but found {} ({}); fix or re-export the tokenizer file", w.str(), expected, type_name(found),
       found.dump().substr(0, 80));
}

inline const Json& require(const Json& j, const char* key, const Where& w) {
  const Json* v = member(j, key);
  if (!v) fail("{}: required field '{}' is missing; fix or re-export the tokenizer file", w.str(), key);
  return *v;
}

inline std::string get_string(const Json& j, const char* key, const Where& w, const std::string& def) {
  const Json* v = member(j, key);
  if (!v) return def;
  if (!v->is_string()) bad_field(w.child(key), "a string", *v);
  return v->get<std::string>();
}

inline std::string require_string(const Json& j, const char* key, const Where& w) {
  const Json& v = require(j, key, w);
  if (!v.is_string()) bad_field(w.child(key), "a string", v);
  return v.get<std::string>();
}

inline bool get_bool(const Json& j, const char* key, const Where& w, bool def) {
  const Json* v = member(j, key);
  if (!v) return def;
  if (!v->is_boolean()) bad_field(w.child(key), "true or false", *v);
  return v->get<bool>();
}

inline int64_t get_int(const Json& j, const char* key, const Where& w, int64_t def, int64_t lo, int64_t hi) {
  const Json* v = member(j, key);
  if (!v) return def;
  if (!v->is_number_integer()) bad_field(w.child(key), "an integer", *v);
  const int64_t x =
      v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
  if (x < lo || x > hi) fail("{}: {} is out of range [{}, {}]; fix the tokenizer file", w.child(key).str(), x, lo, hi);
  return x;
}

inline int64_t as_int(const Json& v, const Where& w, int64_t lo, int64_t hi) {
  if (!v.is_number_integer()) bad_field(w, "an integer", v);
  const int64_t x =
      v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX) ? INT64_MAX : v.get<int64_t>();
  if (x < lo || x > hi) fail("{}: {} is out of range [{}, {}]; fix the tokenizer file", w.str(), x, lo, hi);
  return x;
}

// A {"String": "..."} or {"Regex": "..."} pattern object.
struct Pattern {
  bool regex = false;
  std::string text;
};
inline Pattern get_pattern(const Json& j, const char* key, const Where& w) {
  const Json& p = require(j, key, w);
  if (const Json* s = member(p, "String"); s && s->is_string()) return {false, s->get<std::string>()};
  if (const Json* r = member(p, "Regex"); r && r->is_string()) return {true, r->get<std::string>()};
  bad_field(w.child(key), "{\"String\": ...} or {\"Regex\": ...}", p);
}

}  // namespace shrink::hf
