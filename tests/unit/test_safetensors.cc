// safetensors reader/writer: round trips per dtype, hand-built files, shards, >4 GiB offsets, every error.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <shrink/core/mmap.h>
#include <shrink/core/error.h>
#include <shrink/formats/safetensors.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

#include "unit/test_util.h"

namespace shrink {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// A tensor holding exactly `bytes`, written by the test (not by code under test).
template <typename T>
Tensor tensor_of(DType dtype, Shape shape, const std::vector<T>& values) {
  Tensor t = Tensor::empty(dtype, std::move(shape));
  EXPECT_EQ(t.nbytes(), values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(t.data<uint8_t>(), values.data(), t.nbytes());
  return t;
}

std::string bytes_of(const Tensor& t) {
  return std::string(static_cast<const char*>(t.raw()), t.nbytes());
}


// The on-disk layout assembled by hand: u64 little-endian header length, header, data.
std::string file_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

std::string floats(std::initializer_list<float> v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), std::data(v), s.size());
  return s;
}

// Runs f, expects a shrink::Error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected shrink::Error containing '" << parts.front() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

TensorMap every_dtype() {
  TensorMap m;
  // Values chosen for their bit patterns: signs, extremes, subnormals, infinities.
  m["f32"] = tensor_of<float>(DType::F32, {2, 3},
                              {1.5f, -2.25f, 3e-39f, std::numeric_limits<float>::infinity(), -0.f, 65504.f});
  m["f16"] = tensor_of<uint16_t>(DType::F16, {5}, {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00});
  m["bf16"] = tensor_of<uint16_t>(DType::BF16, {2, 2}, {0x3f80, 0xc0a0, 0x7f80, 0x0001});
  m["i8"] = tensor_of<int8_t>(DType::I8, {3}, {-128, 127, 5});
  m["u8"] = tensor_of<uint8_t>(DType::U8, {1, 5}, {0, 255, 7, 128, 1});
  m["i32"] = tensor_of<int32_t>(DType::I32, {3}, {std::numeric_limits<int32_t>::min(), -1, 123456789});
  m["i64"] = tensor_of<int64_t>(DType::I64, {2}, {std::numeric_limits<int64_t>::min(), int64_t{1} << 40});
  m["scalar"] = tensor_of<float>(DType::F32, {}, {42.f});
  m["empty"] = tensor_of<float>(DType::F32, {0, 4}, {});
  return m;
}

TEST(Safetensors, RoundTripEveryDtype) {
  const auto dir = testing::temp_dir("st-roundtrip");
  const TensorMap in = every_dtype();
  write_safetensors(dir / "m.safetensors", in, {{"format", "pt"}, {"shrink", "test"}});

  const SafetensorsFile out = read_safetensors(dir / "m.safetensors");
  ASSERT_EQ(out.tensors.size(), in.size());
  for (const auto& [name, t] : in) {
    SCOPED_TRACE(name);
    const Tensor& r = out.tensors.at(name);
    EXPECT_EQ(r.dtype(), t.dtype());
    EXPECT_EQ(r.shape(), t.shape());
    EXPECT_EQ(bytes_of(r), bytes_of(t));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(r.raw()) % dtype_size(r.dtype()), 0u);
  }
  EXPECT_EQ(out.metadata.at("format"), "pt");
  EXPECT_EQ(out.metadata.at("shrink"), "test");
  // bf16/f16 decode of the stored bits, against hand-computed values.
  EXPECT_EQ(out.tensors.at("f16").to_f32().data<float>()[1], -2.f);
  EXPECT_EQ(out.tensors.at("f16").to_f32().data<float>()[2], 65504.f);
  EXPECT_EQ(out.tensors.at("bf16").to_f32().data<float>()[1], -5.f);
}

// What the reference (Rust) reader demands of a file, checked on the raw bytes: header length a
// multiple of 8 and padded with spaces, data ranges contiguous from 0 to the end of the file.
TEST(Safetensors, WrittenLayoutFollowsTheSpec) {
  const auto dir = testing::temp_dir("st-layout");
  write_safetensors(dir / "m.safetensors", every_dtype());
  const std::string bytes = read_text_file(dir / "m.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
  ASSERT_LE(8 + n, bytes.size());
  EXPECT_EQ(n % 8, 0u);
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.front(), '{');
  EXPECT_EQ(header.find_last_not_of(' '), header.rfind('}'));
  const json j = json::parse(header);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  for (auto& [name, v] : j.items())
    if (name != "__metadata__") ranges.emplace_back(v["data_offsets"][0], v["data_offsets"][1]);
  std::sort(ranges.begin(), ranges.end());
  uint64_t expect_begin = 0;
  for (auto [b, e] : ranges) {
    EXPECT_EQ(b, expect_begin);
    expect_begin = e;
  }
  EXPECT_EQ(8 + n + expect_begin, bytes.size());
  // Tensors of a byte size divisible by 8 start 8-aligned in the file.
  for (auto& [name, v] : j.items()) {
    if (name == "__metadata__") continue;
    const uint64_t begin = v["data_offsets"][0], end = v["data_offsets"][1];
    if ((end - begin) % 8 == 0) {
      EXPECT_EQ((8 + n + begin) % 8, 0u) << name;
    }
  }
}

TEST(Safetensors, ReadsHandBuiltFileWithUnalignedData) {
  const auto dir = testing::temp_dir("st-hand");
  // Header of odd length: the F32 data lands at an odd file offset, so it must be copied to read it.
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
      R"("b":{"dtype":"BF16","shape":[3],"data_offsets":[16,22]},"z":{"dtype":"I64","shape":[0],"data_offsets":[22,22]}})";
  ASSERT_NE(header.size() % 4, 0u);
  const std::string bf16 = std::string("\x80\x3f\x00\xc0\x40\x40", 6);  // 1.0, -2.0, 3.0
  testing::write_bytes(dir / "hand.safetensors", file_bytes(header, floats({0.5f, -1.f, 2.f, 1e-3f}) + bf16));

  const SafetensorsFile f = read_safetensors(dir / "hand.safetensors");
  ASSERT_EQ(f.tensors.size(), 3u);
  const Tensor& w = f.tensors.at("w");
  EXPECT_EQ(w.dtype(), DType::F32);
  EXPECT_EQ(w.shape(), (Shape{2, 2}));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(w.raw()) % 4, 0u);
  EXPECT_EQ(w.data<float>()[0], 0.5f);
  EXPECT_EQ(w.data<float>()[1], -1.f);
  EXPECT_EQ(w.data<float>()[3], 1e-3f);
  const Tensor b = f.tensors.at("b").to_f32();
  EXPECT_EQ(b.data<float>()[0], 1.f);
  EXPECT_EQ(b.data<float>()[1], -2.f);
  EXPECT_EQ(b.data<float>()[2], 3.f);
  EXPECT_EQ(f.tensors.at("z").numel(), 0);
  EXPECT_EQ(f.metadata.at("format"), "pt");
}

TEST(Safetensors, ShardedWriteAndRead) {
  const auto dir = testing::temp_dir("st-shards");
  TensorMap in;
  for (int i = 0; i < 5; ++i) {
    std::vector<float> v(25);
    for (int k = 0; k < 25; ++k) v[k] = static_cast<float>(i * 100 + k);
    in[fmt::format("layer.{}.weight", i)] = tensor_of<float>(DType::F32, {5, 5}, v);  // 100 bytes each
  }
  write_safetensors_model(dir, in, {{"source", "unit"}}, 250);

  // Greedy by name, 2 x 100 bytes fit under 250: three shards.
  for (int i = 1; i <= 3; ++i) EXPECT_TRUE(fs::exists(dir / fmt::format("model-0000{}-of-00003.safetensors", i)));
  EXPECT_FALSE(fs::exists(dir / "model.safetensors"));
  const json index = json::parse(read_text_file(dir / "model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"].get<uint64_t>(), 500u);
  EXPECT_EQ(index["weight_map"].size(), 5u);
  EXPECT_EQ(index["weight_map"]["layer.0.weight"], "model-00001-of-00003.safetensors");
  EXPECT_EQ(index["weight_map"]["layer.4.weight"], "model-00003-of-00003.safetensors");

  const SafetensorsFile out = read_safetensors_model(dir);
  ASSERT_EQ(out.tensors.size(), 5u);
  for (const auto& [name, t] : in) EXPECT_EQ(bytes_of(out.tensors.at(name)), bytes_of(t)) << name;
  EXPECT_EQ(out.tensors.at("layer.3.weight").data<float>()[7], 307.f);
  EXPECT_EQ(out.metadata.at("source"), "unit");

  // Rewriting the same directory unsharded must not leave the index in charge.
  write_safetensors_model(dir, {{"only", tensor_of<float>(DType::F32, {1}, {9.f})}});
  const SafetensorsFile single = read_safetensors_model(dir);
  ASSERT_EQ(single.tensors.size(), 1u);
  EXPECT_EQ(single.tensors.at("only").data<float>()[0], 9.f);
}

TEST(Safetensors, IndexPointingToMissingShard) {
  const auto dir = testing::temp_dir("st-missing-shard");
  TensorMap in;
  for (int i = 0; i < 3; ++i) in[fmt::format("t{}", i)] = tensor_of<float>(DType::F32, {4}, {1, 2, 3, 4});
  write_safetensors_model(dir, in, {}, 16);
  fs::remove(dir / "model-00002-of-00003.safetensors");
  expect_error([&] { read_safetensors_model(dir); }, {dir.string(), "model-00002-of-00003.safetensors", "'t1'"});
}

TEST(Safetensors, IndexListsTensorAbsentFromShard) {
  const auto dir = testing::temp_dir("st-ghost");
  write_safetensors(dir / "a.safetensors", {{"real", tensor_of<float>(DType::F32, {1}, {1.f})}});
  testing::write_bytes(dir / "model.safetensors.index.json",
              R"({"metadata":{"total_size":8},"weight_map":{"real":"a.safetensors","ghost":"a.safetensors"}})");
  expect_error([&] { read_safetensors_model(dir); }, {"a.safetensors", "'ghost'", "absent"});
  // Shard names must stay inside the model directory.
  testing::write_bytes(dir / "model.safetensors.index.json", R"({"weight_map":{"real":"../a.safetensors"}})");
  expect_error([&] { read_safetensors_model(dir); }, {"model.safetensors.index.json", "'real'"});
}

// A tensor stored past 4 GiB in a sparse file: offsets and sizes must be 64-bit end to end.
TEST(Safetensors, OffsetsPastFourGiB) {
  const auto dir = testing::temp_dir("st-big");
  const fs::path path = dir / "big.safetensors";
  const uint64_t filler = (uint64_t{1} << 32) + 16;
  std::string header = fmt::format(R"({{"filler":{{"dtype":"U8","shape":[{0}],"data_offsets":[0,{0}]}},)"
                                   R"("far":{{"dtype":"F32","shape":[4],"data_offsets":[{0},{1}]}}}})",
                                   filler, filler + 16);
  header.append((8 - header.size() % 8) % 8, ' ');
  const std::string head = file_bytes(header, "");
  const std::string far = floats({1.25f, -7.f, 3.5e10f, 0.125f});
  const uint64_t total = head.size() + filler + far.size();

  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 0);
  bool ok = ::write(fd, head.data(), head.size()) == static_cast<ssize_t>(head.size()) &&
            ::ftruncate(fd, static_cast<off_t>(total)) == 0 &&
            ::pwrite(fd, far.data(), far.size(), static_cast<off_t>(head.size() + filler)) ==
                static_cast<ssize_t>(far.size());
  struct stat st {};
  ok = ok && ::fstat(fd, &st) == 0;
  ::close(fd);
  // A file system without sparse files would have to allocate 4 GiB: not worth it for a unit test.
  if (!ok || static_cast<uint64_t>(st.st_blocks) * 512 > (uint64_t{1} << 30)) {
    fs::remove(path);
    GTEST_SKIP() << "temp file system refuses a sparse 4 GiB file";
  }

  {
    const SafetensorsFile f = read_safetensors(path);
    const Tensor& t = f.tensors.at("far");
    ASSERT_EQ(t.shape(), (Shape{4}));
    EXPECT_EQ(t.data<float>()[0], 1.25f);
    EXPECT_EQ(t.data<float>()[1], -7.f);
    EXPECT_EQ(t.data<float>()[2], 3.5e10f);
    EXPECT_EQ(t.data<float>()[3], 0.125f);
    EXPECT_EQ(f.tensors.at("filler").numel(), static_cast<int64_t>(filler));
  }
  fs::remove(path);
}

// --- every error names the file and, where there is one, the tensor -------------------------------

class SafetensorsErrors : public ::testing::Test {
 protected:
  fs::path dir_ = testing::temp_dir("st-errors");
  fs::path path_ = dir_ / "bad.safetensors";
  void write(const std::string& header, const std::string& data) { testing::write_bytes(path_, file_bytes(header, data)); }
  void expect(const std::vector<std::string>& parts) {
    std::vector<std::string> all = parts;
    all.insert(all.begin(), path_.string());
    expect_error([&] { read_safetensors(path_); }, all);
  }
};

TEST_F(SafetensorsErrors, TruncatedFile) {
  write_safetensors(path_, {{"weight", tensor_of<float>(DType::F32, {16}, std::vector<float>(16, 1.f))}});
  const std::string full = read_text_file(path_);
  testing::write_bytes(path_, full.substr(0, full.size() - 10));
  expect({"'weight'", "truncated"});
  testing::write_bytes(path_, full.substr(0, 5));
  expect({"5 bytes", "truncated"});
}

TEST_F(SafetensorsErrors, HeaderLengthPastTheEnd) {
  std::string bytes = file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", floats({1.f}));
  bytes[0] = static_cast<char>(0xff);  // header length 255 + ..., far beyond the 64-byte file
  testing::write_bytes(path_, bytes);
  expect({"header length", "past the end"});
  bytes[5] = 0x7f;  // and beyond the 100 MB limit
  testing::write_bytes(path_, bytes);
  expect({"header length", "100000000"});
}

TEST_F(SafetensorsErrors, BadJson) {
  write(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]})", floats({1.f}));  // missing '}'
  expect({"not valid JSON"});
  write(R"([1,2,3])", "");
  expect({"JSON object"});
  write(std::string(1000, '[') + std::string(1000, ']'), "");
  expect({"nested deeper"});
}

TEST_F(SafetensorsErrors, UnknownDtype) {
  write(R"({"wide":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", std::string(8, '\0'));
  expect({"'wide'", "F64", "F32, F16, BF16, I8, U8, I32, I64"});
}

TEST_F(SafetensorsErrors, ShapeTimesSizeIsNotTheByteRange) {
  write(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", std::string(24, '\0'));
  expect({"'w'", "[2, 3]", "[0, 20]"});
  write(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", "");
  expect({"'w'"});
  write(R"({"w":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})", std::string(24, '\0'));
  expect({"'w'", "non-negative"});
}

TEST_F(SafetensorsErrors, OverlappingRanges) {
  write(R"({"first":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
        R"("second":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
        std::string(16, '\0'));
  expect({"'first'", "'second'", "overlaps"});
}

TEST_F(SafetensorsErrors, OutOfRangeOffsets) {
  write(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[16,32]}})", std::string(16, '\0'));
  expect({"'w'", "[16, 32]", "16 bytes"});
  write(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", std::string(16, '\0'));
  expect({"'w'", "begin after end"});
  write(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", std::string(16, '\0'));
  expect({"'w'", "data_offsets"});
}

TEST_F(SafetensorsErrors, MetadataMustBeStrings) {
  write(R"({"__metadata__":{"step":5}})", "");
  expect({"'step'", "string"});
}

TEST(Safetensors, WriterLeavesNothingBehindOnError) {
  const auto dir = testing::temp_dir("st-atomic");
  TensorMap bad = every_dtype();
  bad["__metadata__"] = tensor_of<float>(DType::F32, {1}, {1.f});
  expect_error([&] { write_safetensors(dir / "out.safetensors", bad); }, {"out.safetensors", "__metadata__"});
  Tensor hollow = Tensor::view(DType::F32, {4}, nullptr, nullptr);
  expect_error([&] { write_safetensors(dir / "out.safetensors", {{"hollow", hollow}}); }, {"'hollow'"});
  expect_error([&] { write_safetensors(dir / "no" / "such" / "dir.safetensors", every_dtype()); }, {"dir.safetensors"});
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(Safetensors, ModelDirectoryWithoutWeights) {
  const auto dir = testing::temp_dir("st-nodir");
  expect_error([&] { read_safetensors_model(dir); }, {dir.string(), "model.safetensors"});
}

}  // namespace
}  // namespace shrink
