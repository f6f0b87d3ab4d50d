// The HTTP API's requests and errors as plain data: parse_request is a pure function of (route, headers, body)
// that returns a validated request or the 4xx error to send, so it is fuzzed without sockets.
#pragma once

#include <shrink/models/generate.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace shrink::serve {

enum class Route { Classify, Generate, Completions };
const char* route_name(Route r);  // "classify", "generate", "completions"
// "/v1/classify" -> Classify, ...; nullopt for any other path.
std::optional<Route> route_from_path(std::string_view path);

// The body of every error response: {"error": {"message", "type", "param"}} (OpenAI's shape).
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the field or header at fault; empty when none
  nlohmann::json to_json() const;
};
// The error type spelled for an HTTP status: 400 invalid_request_error, 404 not_found_error, 413
// request_too_large, 429 rate_limit_error, 503 unavailable_error, 504 timeout_error, else server_error.
const char* error_type_for_status(int status);
ApiError api_error(int status, std::string message, std::string param = {});

struct ApiLimits {
  size_t max_body_bytes = 1 << 20;
  int max_texts = 64;               // texts per classify request
  size_t max_text_bytes = 1 << 16;  // bytes per text or prompt
  int max_new_tokens = 1024;        // per generate / completions request
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

struct ServeRequest {
  Route route = Route::Classify;
  std::string variant;             // forced: X-Shrink-Variant header, or the completions "model" field
  std::string key;                 // X-Shrink-Key: sticky A/B assignment
  std::vector<std::string> texts;  // classify
  std::string prompt;              // generate, completions
  GenerateOptions generation;      // max_new_tokens from max_tokens (default 16), sampling fields
  bool stream = false;
  double timeout_ms = 0;  // 0: the server's --deadline-ms
};

// Validates the body (a JSON object with the route's fields and types, within `limits`) and the headers (names
// compared case-insensitively). Never throws.
std::variant<ServeRequest, ApiError> parse_request(Route route, const HeaderList& headers, std::string_view body,
                                                   const ApiLimits& limits);

}  // namespace shrink::serve
