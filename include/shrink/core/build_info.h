// What a result needs to say about where it was measured: version, commit, machine.
#pragma once

#include <cstddef>
#include <nlohmann/json.hpp>
#include <string>

namespace shrink {

const char* version();
const char* commit();                             // git commit of the build ("-dirty" when the tree had changes)
nlohmann::json machine_json();                    // {"cpu", "isa", "flags", "cores", "threads"}
size_t peak_rss_bytes();                          // getrusage high-water mark of this process
size_t path_size_bytes(const std::string& path);  // a file, or the sum of the files in a directory

}  // namespace shrink
