// Version/commit/machine facts for results, and process/disk sizes.
#include <shrink/core/build_info.h>
#include <shrink/core/cpu.h>
#include <shrink/core/parallel.h>
#include <sys/resource.h>

#include <filesystem>
#include <thread>

#include "shrink_commit.h"

namespace shrink {

const char* version() {
  return SHRINK_VERSION;
}
const char* commit() {
  return SHRINK_COMMIT;
}

nlohmann::json machine_json() {
  const CpuFeatures& f = cpu_features();
  return {{"cpu", f.model},
          {"isa", isa_name(active_isa())},
          {"flags", cpu_flags_string()},
          {"cores", std::thread::hardware_concurrency()},
          {"threads", num_threads()}};
}

size_t peak_rss_bytes() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<size_t>(ru.ru_maxrss) * 1024;
}

size_t path_size_bytes(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) return std::filesystem::file_size(path, ec);
  size_t total = 0;
  if (std::filesystem::is_directory(path, ec))
    for (auto& e : std::filesystem::recursive_directory_iterator(path, ec))
      if (e.is_regular_file(ec)) total += e.file_size(ec);
  return total;
}

}  // namespace shrink
