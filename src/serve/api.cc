// Request parsing and validation for the HTTP API (pure: no sockets, no model), and the error body.
#include <fmt/format.h>
#include <shrink/serve/api.h>

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>

namespace shrink::serve {

using nlohmann::json;

const char* route_name(Route r) {
  switch (r) {
    case Route::Classify: return "classify";
    case Route::Generate: return "generate";
    case Route::Completions: return "completions";
  }
  return "?";
}

std::optional<Route> route_from_path(std::string_view path) {
  if (path == "/v1/classify") return Route::Classify;
  if (path == "/v1/generate") return Route::Generate;
  if (path == "/v1/completions") return Route::Completions;
  return std::nullopt;
}

const char* error_type_for_status(int status) {
  switch (status) {
    case 400: return "invalid_request_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 503: return "unavailable_error";
    case 504: return "timeout_error";
    default: return status >= 400 && status < 500 ? "invalid_request_error" : "server_error";
  }
}

ApiError api_error(int status, std::string message, std::string param) {
  return {status, std::move(message), error_type_for_status(status), std::move(param)};
}

json ApiError::to_json() const {
  return {{"error", {{"message", message}, {"type", type}, {"param", param.empty() ? json(nullptr) : json(param)}}}};
}

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

const std::string* find_header(const HeaderList& headers, std::string_view name) {
  for (const auto& [k, v] : headers)
    if (iequals(k, name)) return &v;
  return nullptr;
}

const char* json_type(const json& j) {
  return j.type_name();
}

// Thrown inside parsing only; parse_request turns it into its return value.
struct Reject {
  ApiError error;
};

[[noreturn]] void reject(std::string param, std::string message, int status = 400) {
  throw Reject{api_error(status, std::move(message), std::move(param))};
}

void expect_type(const json& v, const std::string& field, bool ok, const char* expected) {
  if (!ok) reject(field, fmt::format("field \"{}\" must be {}, found {}", field, expected, json_type(v)));
}

int64_t get_int(const json& v, const std::string& field, int64_t lo, int64_t hi) {
  expect_type(v, field, v.is_number_integer(), "an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    reject(field, fmt::format("field \"{}\" must be in [{}, {}], found {}", field, lo, hi, v.dump()));
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) reject(field, fmt::format("field \"{}\" must be in [{}, {}], found {}", field, lo, hi, x));
  return x;
}

double get_number(const json& v, const std::string& field, double lo, double hi, bool lo_open = false) {
  expect_type(v, field, v.is_number(), "a number");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x > hi || (lo_open ? x <= lo : x < lo))
    reject(field, fmt::format("field \"{}\" must be in {}{}, {}], found {}", field, lo_open ? "(" : "[", lo, hi, x));
  return x;
}

std::string get_text(const json& v, const std::string& field, const ApiLimits& limits) {
  expect_type(v, field, v.is_string(), "a string");
  std::string s = v.get<std::string>();
  if (s.size() > limits.max_text_bytes)
    reject(field,
           fmt::format("field \"{}\" holds {} bytes, more than the limit of {}; send shorter text", field, s.size(),
                       limits.max_text_bytes),
           413);
  return s;
}

void parse_generation(const json& body, ServeRequest& r, const ApiLimits& limits) {
  r.generation.max_new_tokens = 16;
  if (auto it = body.find("max_tokens"); it != body.end() && !it->is_null())
    r.generation.max_new_tokens = static_cast<int>(get_int(*it, "max_tokens", 1, limits.max_new_tokens));
  if (auto it = body.find("temperature"); it != body.end() && !it->is_null())
    r.generation.sampling.temperature = static_cast<float>(get_number(*it, "temperature", 0, 100));
  if (auto it = body.find("top_k"); it != body.end() && !it->is_null())
    r.generation.sampling.top_k = static_cast<int>(get_int(*it, "top_k", 0, std::numeric_limits<int>::max()));
  if (auto it = body.find("top_p"); it != body.end() && !it->is_null())
    r.generation.sampling.top_p = static_cast<float>(get_number(*it, "top_p", 0, 1, true));
  if (auto it = body.find("seed"); it != body.end() && !it->is_null()) {
    expect_type(*it, "seed", it->is_number_unsigned() || (it->is_number_integer() && it->get<int64_t>() >= 0),
                "a non-negative integer");
    r.generation.sampling.seed = it->get<uint64_t>();
  }
  if (auto it = body.find("stream"); it != body.end() && !it->is_null()) {
    expect_type(*it, "stream", it->is_boolean(), "a boolean");
    r.stream = it->get<bool>();
  }
}

void check_fields(const json& body, Route route, std::initializer_list<const char*> known,
                  std::initializer_list<const char*> ignored = {}) {
  for (const auto& item : body.items()) {
    const std::string& name = item.key();  // not a structured binding: clang cannot capture those
    auto is = [&](const char* k) { return name == k; };
    if (std::any_of(known.begin(), known.end(), is) || std::any_of(ignored.begin(), ignored.end(), is)) continue;
    std::string list;
    for (const char* k : known) list += (list.empty() ? "" : ", ") + std::string(k);
    reject(name, fmt::format("unknown field \"{}\" for /v1/{}; it accepts {}", name, route_name(route), list));
  }
}

ServeRequest parse(Route route, const HeaderList& headers, std::string_view body_text, const ApiLimits& limits) {
  if (body_text.size() > limits.max_body_bytes)
    reject("body",
           fmt::format("request body of {} bytes exceeds the limit of {} bytes (--max-body-bytes); send fewer or "
                       "shorter texts",
                       body_text.size(), limits.max_body_bytes),
           413);
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {
    reject("body", fmt::format("request body is not valid JSON ({}); send a JSON object", e.what()));
  }
  if (!body.is_object()) reject("body", fmt::format("request body must be a JSON object, found {}", json_type(body)));

  ServeRequest r;
  r.route = route;
  if (const std::string* v = find_header(headers, "X-Shrink-Variant")) {
    if (v->empty() || v->size() > 128)
      reject("X-Shrink-Variant", "header X-Shrink-Variant must name a variant (1 to 128 characters)");
    r.variant = *v;
  }
  if (const std::string* k = find_header(headers, "X-Shrink-Key")) r.key = *k;
  if (auto it = body.find("timeout_ms"); it != body.end() && !it->is_null())
    r.timeout_ms = get_number(*it, "timeout_ms", 0, 3.6e6, true);

  switch (route) {
    case Route::Classify: {
      check_fields(body, route, {"texts", "timeout_ms"});
      auto it = body.find("texts");
      if (it == body.end()) reject("texts", "field \"texts\" is missing: send {\"texts\": [\"some text\", ...]}");
      expect_type(*it, "texts", it->is_array(), "an array of strings");
      if (it->empty() || it->size() > static_cast<size_t>(limits.max_texts))
        reject("texts",
               fmt::format("field \"texts\" must hold 1 to {} strings, found {}", limits.max_texts, it->size()),
               it->empty() ? 400 : 413);
      for (size_t i = 0; i < it->size(); ++i)
        r.texts.push_back(get_text((*it)[i], fmt::format("texts[{}]", i), limits));
      break;
    }
    case Route::Generate: {
      check_fields(body, route,
                   {"prompt", "max_tokens", "temperature", "top_k", "top_p", "seed", "stream", "timeout_ms"});
      auto it = body.find("prompt");
      if (it == body.end()) reject("prompt", "field \"prompt\" is missing: send {\"prompt\": \"Once upon a time\"}");
      r.prompt = get_text(*it, "prompt", limits);
      parse_generation(body, r, limits);
      break;
    }
    case Route::Completions: {
      // OpenAI fields that change nothing here are accepted and ignored so existing clients work.
      check_fields(
          body, route,
          {"model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed", "stream", "n", "timeout_ms"},
          {"user", "stop", "logprobs", "echo", "presence_penalty", "frequency_penalty", "logit_bias", "best_of",
           "suffix"});
      if (auto m = body.find("model"); m != body.end() && !m->is_null()) {
        expect_type(*m, "model", m->is_string(), "a string");
        if (!m->get<std::string>().empty()) r.variant = m->get<std::string>();
      }
      auto it = body.find("prompt");
      if (it == body.end()) reject("prompt", "field \"prompt\" is missing");
      if (it->is_array()) {
        if (it->size() != 1)
          reject("prompt", fmt::format("only one prompt per request is served, found {}", it->size()));
        r.prompt = get_text((*it)[0], "prompt[0]", limits);
      } else {
        r.prompt = get_text(*it, "prompt", limits);
      }
      if (auto n = body.find("n"); n != body.end() && !n->is_null()) get_int(*n, "n", 1, 1);
      parse_generation(body, r, limits);
      break;
    }
  }
  if (r.route != Route::Classify && r.prompt.empty())
    reject("prompt", "field \"prompt\" is empty; send at least one character");
  return r;
}

}  // namespace

std::variant<ServeRequest, ApiError> parse_request(Route route, const HeaderList& headers, std::string_view body,
                                                   const ApiLimits& limits) {
  try {
    return parse(route, headers, body, limits);
  } catch (const Reject& r) {
    return r.error;
  } catch (const std::exception& e) {  // e.g. a string that nlohmann cannot convert: still the client's input
    return api_error(400, fmt::format("cannot read the request: {}", e.what()), "body");
  }
}

}  // namespace shrink::serve
