// libFuzzer target: arbitrary bytes through the safetensors parser. Only shrink::Error may come out;
// every accepted tensor is read end to end so ASan sees any range outside the input.
#include <shrink/core/error.h>
#include <shrink/formats/safetensors.h>

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const shrink::SafetensorsFile f = shrink::parse_safetensors(data, size, nullptr, "fuzz.safetensors");
    uint64_t sum = 0;
    for (const auto& [name, t] : f.tensors) {
      const auto* p = static_cast<const uint8_t*>(t.raw());
      for (size_t i = 0; i < t.nbytes(); ++i) sum += p[i];
      if (t.numel() <= 4096) sum += static_cast<uint64_t>(t.to_f32().numel());
    }
    for (const auto& [k, v] : f.metadata) sum += k.size() + v.size();
    volatile uint64_t sink = sum;
    (void)sink;
  } catch (const shrink::Error&) {
  }
  return 0;
}
