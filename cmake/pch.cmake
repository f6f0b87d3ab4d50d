# Precompiled headers (SHRINK_PCH, default ON). CLI11, nlohmann/json and gtest are large header-only
# libraries; parsing them again in every src/cli/*.cc and tests/unit/test_*.cc was most of the CI build time.
# Only third-party and standard headers go in: a change to include/shrink/ never rebuilds a PCH.
#
# ccache: a compile that uses a PCH is cached only with `sloppiness = pch_defines,time_macros`, so when the
# compiler launcher is ccache the launcher gets that setting through CCACHE_SLOPPINESS (this build only;
# ~/.config/ccache is left alone). Configure with -DSHRINK_PCH=OFF to build without PCHs.

set(SHRINK_PCH_STD_HEADERS
    <algorithm> <array> <atomic> <chrono> <cmath> <cstddef> <cstdint> <cstdio> <cstdlib> <cstring>
    <filesystem> <fstream> <functional> <limits> <map> <memory> <mutex> <numeric> <optional> <random>
    <set> <sstream> <stdexcept> <string> <string_view> <thread> <unordered_map> <utility> <vector>)

if(SHRINK_PCH AND CMAKE_CXX_COMPILER_LAUNCHER MATCHES "ccache" AND NOT CMAKE_CXX_COMPILER_LAUNCHER MATCHES "SLOPPINESS")
  set(CMAKE_CXX_COMPILER_LAUNCHER env CCACHE_SLOPPINESS=pch_defines,time_macros
      ${CMAKE_CXX_COMPILER_LAUNCHER})
endif()

# The CLI: CLI11 (via src/cli/common.h), nlohmann/json and fmt in every command file.
function(shrink_cli_pch target)
  if(SHRINK_PCH)
    target_precompile_headers(${target} PRIVATE <CLI/CLI.hpp> <nlohmann/json.hpp> <fmt/format.h>
                              ${SHRINK_PCH_STD_HEADERS})
  endif()
endfunction()

# The tests' PCH, built once by `target` (shrink_test_util) and reused by every test executable.
function(shrink_test_pch target)
  if(SHRINK_PCH)
    target_precompile_headers(${target} PRIVATE <gtest/gtest.h> <nlohmann/json.hpp> ${SHRINK_PCH_STD_HEADERS})
  endif()
endfunction()

function(shrink_reuse_pch target from)
  if(SHRINK_PCH)
    target_precompile_headers(${target} REUSE_FROM ${from})
  endif()
endfunction()
