// shrink loadtest URL: closed-loop load at several concurrencies against a running `shrink serve`.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/serve/loadtest.h>

#include <cstdio>

#include "cli/commands.h"
#include "cli/common.h"

namespace shrink::cli {

void register_loadtest(CLI::App& app) {
  auto* sub = app.add_subcommand("loadtest", "closed-loop HTTP load against `shrink serve`: p50/p99, throughput");
  static serve::LoadtestOptions o;
  static std::string route = "classify", body_file;
  static CommonFlags f;
  sub->add_option("url", o.url, "server URL, e.g. http://127.0.0.1:8080")->required();
  sub->add_option("--concurrency", o.concurrency, "clients, comma separated (e.g. 1,2,4,8,16,32)")
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  sub->add_option("--seconds", o.seconds, "seconds per concurrency level")->check(CLI::PositiveNumber);
  sub->add_option("--route", route, "classify | generate | completions")
      ->check(CLI::IsMember({"classify", "generate", "completions"}));
  sub->add_option("--body", body_file, "JSON file sent as every request's body (default: a small request)");
  sub->add_option("--pid", o.server_pid, "server process id: report its resident memory");
  sub->add_option("--timeout-s", o.timeout_s, "per-request read timeout")->check(CLI::PositiveNumber);
  add_common_flags(sub, f);
  sub->callback([] {
    o.route = *serve::route_from_path("/v1/" + route);
    if (!body_file.empty()) o.body = read_text_file(body_file);
    nlohmann::json levels = nlohmann::json::array();
    serve::run_loadtest(o, [&](const serve::LoadtestLevel& l) {
      levels.push_back(l.to_json());
      if (f.json) return;
      const auto& h = l.latency_ms;
      std::string st;
      for (const auto& [code, n] : l.status) st += fmt::format(" {}:{}", serve::status_name(code), n);
      std::printf("c=%-3d %8.1f req/s  p50 %8.2f ms  p99 %8.2f ms  status%s", l.concurrency,
                  l.seconds > 0 ? l.ok / l.seconds : 0, h.percentile(0.5), h.percentile(0.99), st.c_str());
      if (l.rss_max_bytes > 0)
        std::printf("  server RSS %.1f -> %.1f MiB (max %.1f)", l.rss_start_bytes / 1048576.0,
                    l.rss_end_bytes / 1048576.0, l.rss_max_bytes / 1048576.0);
      std::printf("\n");
      std::fflush(stdout);
    });
    if (f.json) print_json({{"url", o.url}, {"route", route}, {"levels", levels}});
  });
}

}  // namespace shrink::cli
