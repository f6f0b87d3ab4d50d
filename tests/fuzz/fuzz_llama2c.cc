// libFuzzer target: arbitrary bytes through the llama2.c checkpoint parser. Only shrink::Error may
// come out; every accepted tensor is read end to end so ASan sees any range outside the input.
#include <shrink/core/error.h>
#include <shrink/formats/llama2c.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const shrink::Llama2cModel m = shrink::parse_llama2c_model(data, size, nullptr, "fuzz.bin");
    float sum = 0;
    for (const auto& [name, t] : m.tensors)
      for (int64_t i = 0; i < t.numel(); ++i) {
        float v;
        std::memcpy(&v, t.data<float>() + i, sizeof v);
        sum += v;
      }
    volatile float sink = sum;
    (void)sink;
    (void)shrink::config_to_json(m.config);
  } catch (const shrink::Error&) {
  }
  return 0;
}
