// libFuzzer target: the HTTP API's request parser (serve/api.h) over arbitrary bodies and headers. Input: byte 0
// picks the route, byte 1 says which headers follow (each up to a newline), the rest is the body. parse_request
// must never throw or crash; an error must be a 4xx with a message, and an accepted request must be within limits.
#include <shrink/serve/api.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

namespace {

void expect(bool cond, const char* what) {
  if (!cond) {
    std::fprintf(stderr, "serve request parser: %s\n", what);
    std::abort();
  }
}

std::string_view take_line(std::string_view& rest) {
  const size_t nl = rest.find('\n');
  std::string_view line = rest.substr(0, nl);
  rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
  return line;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  using namespace shrink::serve;
  const Route route = static_cast<Route>(data[0] % 3);
  std::string_view rest(reinterpret_cast<const char*>(data + 2), size - 2);
  HeaderList headers;
  if (data[1] & 1) headers.emplace_back("X-Shrink-Variant", std::string(take_line(rest)));
  if (data[1] & 2) headers.emplace_back("x-shrink-key", std::string(take_line(rest)));
  ApiLimits limits;
  limits.max_body_bytes = 1 << 16;
  limits.max_texts = 8;
  limits.max_text_bytes = 1024;
  limits.max_new_tokens = 64;
  const auto r = parse_request(route, headers, rest, limits);
  if (const auto* e = std::get_if<ApiError>(&r)) {
    expect(e->status >= 400 && e->status < 500, "error status is not 4xx");
    expect(!e->message.empty(), "error without a message");
    (void)e->to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return 0;
  }
  const ServeRequest& q = std::get<ServeRequest>(r);
  expect(q.route == route, "route changed");
  if (route == Route::Classify) {
    expect(!q.texts.empty() && q.texts.size() <= 8, "texts count outside limits");
    for (const auto& t : q.texts) expect(t.size() <= 1024, "text longer than the limit");
  } else {
    expect(!q.prompt.empty() && q.prompt.size() <= 1024, "prompt empty or longer than the limit");
    expect(q.generation.max_new_tokens >= 1 && q.generation.max_new_tokens <= 64, "max_tokens outside limits");
    expect(
        q.generation.sampling.temperature >= 0 && q.generation.sampling.top_p > 0 && q.generation.sampling.top_p <= 1,
        "sampling outside limits");
  }
  return 0;
}
