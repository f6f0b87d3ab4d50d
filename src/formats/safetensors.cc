// safetensors: validated mmap reader, atomic writer, sharded directories (model.safetensors.index.json).
// Layout: u64 little-endian header length N, N bytes of JSON, then the data section; offsets are relative
// to the data section and 64-bit throughout.
#include <shrink/core/error.h>
#include <shrink/core/mmap.h>
#include <shrink/formats/config.h>
#include <shrink/formats/safetensors.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>
#include <vector>

namespace shrink {

using nlohmann::json;

namespace {

constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";
constexpr const char* kSupportedDtypes = "F32, F16, BF16, I8, U8, I32, I64";

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_u64_le(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// A non-negative JSON integer as uint64, or nullopt (negative, float, other type).
std::optional<uint64_t> as_u64(const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  return std::nullopt;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& file, const std::string& name, const json& v, uint64_t data_size) {
  constexpr const char* kFix = "the file is corrupt or was written by a broken exporter; re-export it";
  if (!v.is_object())
    fail("{}: tensor '{}': header entry must be an object with dtype, shape and data_offsets; {}", file, name, kFix);
  Entry e{name, DType::F32, {}, 0, 0};

  auto dt = v.find("dtype");
  if (dt == v.end() || !dt->is_string())
    fail("{}: tensor '{}': 'dtype' is missing or not a string; {}", file, name, kFix);
  const std::string dtype_str = dt->get<std::string>();
  const auto dtype = dtype_from_name(dtype_str);
  if (!dtype)
    fail("{}: tensor '{}': dtype '{}' is not supported (supported: {}); convert the checkpoint to one of those", file,
         name, dtype_str, kSupportedDtypes);
  e.dtype = *dtype;

  auto sh = v.find("shape");
  if (sh == v.end() || !sh->is_array()) fail("{}: tensor '{}': 'shape' is missing or not a list; {}", file, name, kFix);
  for (const json& d : *sh) {
    const auto dim = as_u64(d);
    if (!dim || *dim > uint64_t{std::numeric_limits<int64_t>::max()})
      fail("{}: tensor '{}': shape entries must be non-negative integers, found {}; {}", file, name,
           d.is_structured() ? "a list or object" : d.dump(-1, ' ', false, json::error_handler_t::replace), kFix);
    e.shape.push_back(static_cast<int64_t>(*dim));
  }
  // The product of the non-zero dimensions must fit int64, so that numel() over this shape can never
  // overflow, whatever the order of its factors.
  uint64_t numel = 1;
  bool has_zero = false;
  for (int64_t d : e.shape) {
    if (d == 0) {
      has_zero = true;
    } else if (__builtin_mul_overflow(numel, static_cast<uint64_t>(d), &numel) ||
               numel > uint64_t{std::numeric_limits<int64_t>::max()}) {
      fail("{}: tensor '{}': shape {} has more elements than any file can hold; {}", file, name, shape_str(e.shape),
           kFix);
    }
  }
  if (has_zero) numel = 0;

  auto off = v.find("data_offsets");
  if (off == v.end() || !off->is_array() || off->size() != 2 || !as_u64((*off)[0]) || !as_u64((*off)[1]))
    fail("{}: tensor '{}': 'data_offsets' must be [begin, end] with non-negative integers; {}", file, name, kFix);
  e.begin = *as_u64((*off)[0]);
  e.end = *as_u64((*off)[1]);
  if (e.begin > e.end)
    fail("{}: tensor '{}': data_offsets [{}, {}] has begin after end; {}", file, name, e.begin, e.end, kFix);
  if (e.end > data_size)
    fail(
        "{}: tensor '{}': data_offsets [{}, {}] run past the data section ({} bytes); the file is truncated or "
        "corrupt, re-download or re-export it",
        file, name, e.begin, e.end, data_size);
  const uint64_t range = e.end - e.begin;
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t{dtype_size(e.dtype)}, &nbytes) || nbytes != range)
    fail("{}: tensor '{}': shape {} of {} needs {} x {} bytes but data_offsets [{}, {}] hold {} bytes; {}", file, name,
         shape_str(e.shape), dtype_str, numel, dtype_size(e.dtype), e.begin, e.end, range, kFix);
  return e;
}

// Bytes of a tensor in the data section: a view when aligned to its element size, otherwise a copy.
// safetensors promises no alignment (the header length is any N), and reading a float through a
// misaligned pointer is undefined behaviour in C++ and slow or faulting in SIMD kernels.
Tensor make_tensor(const Entry& e, const uint8_t* bytes, const std::shared_ptr<const void>& owner) {
  const uint64_t nbytes = e.end - e.begin;
  if (reinterpret_cast<uintptr_t>(bytes) % dtype_size(e.dtype) == 0)
    return Tensor::view(e.dtype, e.shape, bytes, owner);
  Tensor t = Tensor::empty(e.dtype, e.shape);
  if (nbytes) std::memcpy(t.data<uint8_t>(), bytes, nbytes);
  return t;
}

// A shard file name from the index must stay inside the model directory.
bool safe_shard_name(const std::string& name) {
  if (name.empty() || name.find('\0') != std::string::npos) return false;
  const std::filesystem::path p(name);
  if (p.is_absolute()) return false;
  for (const auto& part : p)
    if (part == "..") return false;
  return true;
}

SafetensorsFile read_sharded(const std::filesystem::path& dir) {
  const std::filesystem::path index_path = dir / kIndexName;
  const std::string index_name = index_path.string();
  const json index = parse_json_text(read_text_file(index_path), index_name);
  if (!index.is_object())
    fail("{}: must be a JSON object with a 'weight_map'; the index is corrupt, re-export the model", index_name);
  auto wm = index.find("weight_map");
  if (wm == index.end() || !wm->is_object() || wm->empty())
    fail("{}: 'weight_map' (tensor name -> shard file) is missing or empty; the index is corrupt, re-export the model",
         index_name);
  std::map<std::string, std::vector<std::string>> by_file;  // sorted: model-00001-... comes first
  for (auto& [name, file] : wm->items()) {
    if (!file.is_string() || !safe_shard_name(file.get<std::string>()))
      fail("{}: weight_map['{}'] must be a shard file name inside {}; the index is corrupt, re-export the model",
           index_name, name, dir.string());
    by_file[file.get<std::string>()].push_back(name);
  }
  SafetensorsFile out;
  bool first = true;
  for (auto& [file, names] : by_file) {
    const std::filesystem::path shard = dir / file;
    std::error_code ec;
    if (!std::filesystem::exists(shard, ec))
      fail("{}: shard '{}' listed in {} (it holds tensor '{}') is missing; download or copy every shard", dir.string(),
           file, kIndexName, names.front());
    SafetensorsFile part = read_safetensors(shard);
    for (const auto& name : names) {
      auto it = part.tensors.find(name);
      if (it == part.tensors.end())
        fail(
            "{}: tensor '{}' is listed in {} for this shard but absent from it; the shard or the index is stale, "
            "re-export the model",
            shard.string(), name, kIndexName);
      out.tensors.emplace(name, std::move(it->second));
    }
    if (first) out.metadata = std::move(part.metadata);
    first = false;
  }
  return out;
}

// Writing order: tensors whose byte size is a multiple of 8 first, then of 4, 2, 1 (by name within
// each group). The data section then has no gaps (the reference reader rejects gaps) while every
// tensor starts on a multiple of its group's alignment, hence of its element size.
std::vector<std::pair<const std::string*, const Tensor*>> write_order(const TensorMap& tensors) {
  std::vector<std::pair<const std::string*, const Tensor*>> order;
  for (size_t align : {8u, 4u, 2u, 1u})
    for (const auto& [name, t] : tensors) {
      const size_t n = t.nbytes();
      const size_t a = n % 8 == 0 ? 8 : n % 4 == 0 ? 4 : n % 2 == 0 ? 2 : 1;
      if (a == align) order.emplace_back(&name, &t);
    }
  return order;
}

}  // namespace

SafetensorsFile parse_safetensors(const uint8_t* data, size_t size, std::shared_ptr<const void> owner,
                                  const std::string& name) {
  if (size < 8)
    fail(
        "{}: {} bytes is too short for safetensors (an 8-byte header length comes first); the file is truncated "
        "or not safetensors",
        name, size);
  const uint64_t header_len = read_u64_le(data);
  if (header_len > kMaxSafetensorsHeaderBytes)
    fail("{}: header length {} exceeds the {} bytes safetensors allows; the file is corrupt or not safetensors", name,
         header_len, kMaxSafetensorsHeaderBytes);
  if (header_len > size - 8)
    fail(
        "{}: header length {} runs past the end of the file ({} bytes after the length field); the file is "
        "truncated, re-download or re-export it",
        name, header_len, size - 8);
  const std::string_view text(reinterpret_cast<const char*>(data + 8), header_len);
  const json header = parse_json_text(text, name + " (safetensors header)");
  if (!header.is_object())
    fail("{}: the header must be a JSON object of tensors; the file is corrupt or not safetensors", name);

  const uint64_t data_start = 8 + header_len;
  const uint64_t data_size = size - data_start;
  SafetensorsFile out;
  std::vector<Entry> entries;
  for (auto& [key, value] : header.items()) {
    if (key == "__metadata__") {
      if (!value.is_object())
        fail("{}: '__metadata__' must be an object of strings; the file is corrupt, re-export it", name);
      for (auto& [mk, mv] : value.items()) {
        if (!mv.is_string())
          fail("{}: __metadata__['{}'] must be a string (safetensors metadata is string to string); re-export the file",
               name, mk);
        out.metadata[mk] = mv.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, key, value, data_size));
  }

  std::vector<const Entry*> by_offset;
  for (const auto& e : entries)
    if (e.end > e.begin) by_offset.push_back(&e);  // empty ranges overlap nothing
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  for (size_t i = 1; i < by_offset.size(); ++i)
    if (by_offset[i]->begin < by_offset[i - 1]->end)
      fail("{}: tensor '{}' (bytes [{}, {})) overlaps tensor '{}' (bytes [{}, {})); the file is corrupt, re-export it",
           name, by_offset[i]->name, by_offset[i]->begin, by_offset[i]->end, by_offset[i - 1]->name,
           by_offset[i - 1]->begin, by_offset[i - 1]->end);

  for (const auto& e : entries) out.tensors.emplace(e.name, make_tensor(e, data + data_start + e.begin, owner));
  return out;
}

SafetensorsFile read_safetensors(const std::filesystem::path& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  return parse_safetensors(file->data(), file->size(), file, path.string());
}

SafetensorsFile read_safetensors_model(const std::filesystem::path& path) {
  std::error_code ec;  // the non-throwing overloads: failures become shrink::Error below
  if (!std::filesystem::is_directory(path, ec)) return read_safetensors(path);
  if (std::filesystem::exists(path / kIndexName, ec)) return read_sharded(path);
  if (std::filesystem::exists(path / kSingleName, ec)) return read_safetensors(path / kSingleName);
  std::vector<std::filesystem::path> found;
  for (auto it = std::filesystem::directory_iterator(path, ec); !ec && it != std::filesystem::directory_iterator();
       it.increment(ec))
    if (it->path().extension() == ".safetensors") found.push_back(it->path());
  if (ec) fail("{}: cannot list the directory ({}); check its permissions", path.string(), ec.message());
  if (found.size() == 1) return read_safetensors(found.front());
  fail("{}: expected {} or {} (+ shards){}; pass a model directory or a .safetensors file", path.string(), kSingleName,
       kIndexName, found.empty() ? ", found no .safetensors file" : ", found several .safetensors files and no index");
}

void write_safetensors(const std::filesystem::path& path, const TensorMap& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const auto order = write_order(tensors);
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : order) {
    if (*name == "__metadata__")
      fail("{}: a tensor may not be named '__metadata__' (the key is reserved for metadata); rename it", path.string());
    if (t->numel() > 0 && t->raw() == nullptr)
      fail("{}: tensor '{}' of shape {} has no data; fill it before saving", path.string(), *name,
           shape_str(t->shape()));
    const uint64_t n = t->nbytes();
    header[*name] = {{"dtype", dtype_name(t->dtype())}, {"shape", t->shape()}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string text;
  try {
    text = header.dump();
  } catch (const json::exception& e) {
    fail("{}: cannot write the header ({}); tensor names and metadata must be valid UTF-8", path.string(), e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  if (text.size() > kMaxSafetensorsHeaderBytes)
    fail("{}: header of {} bytes exceeds the {} bytes readers accept; split the tensors across shards", path.string(),
         text.size(), kMaxSafetensorsHeaderBytes);

  AtomicFileWriter out(path);
  uint8_t len[8];
  put_u64_le(len, text.size());
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const auto& [name, t] : order)
    if (t->nbytes()) out.write(t->raw(), t->nbytes());
  out.commit();
}

void write_safetensors_model(const std::filesystem::path& dir, const TensorMap& tensors,
                             const std::map<std::string, std::string>& metadata, uint64_t max_shard_bytes) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec)
    fail("{}: cannot create the output directory ({}); check the path and permissions", dir.string(), ec.message());
  uint64_t total = 0;
  for (const auto& [name, t] : tensors) total += t.nbytes();

  if (total <= max_shard_bytes) {
    write_safetensors(dir / kSingleName, tensors, metadata);
    // A stale index would win over the new file on the next load.
    std::filesystem::remove(dir / kIndexName, ec);
    return;
  }

  // Greedy in name order; a tensor larger than max_shard_bytes gets a shard of its own.
  std::vector<TensorMap> shards(1);
  uint64_t in_shard = 0;
  for (const auto& [name, t] : tensors) {
    if (!shards.back().empty() && in_shard + t.nbytes() > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().emplace(name, t);
    in_shard += t.nbytes();
  }
  json weight_map = json::object();
  const size_t n = shards.size();
  for (size_t i = 0; i < n; ++i) {
    const std::string file = fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, n);
    write_safetensors(dir / file, shards[i], metadata);
    for (const auto& [name, t] : shards[i]) weight_map[name] = file;
  }
  // The index goes last: it is what makes the shards a model.
  const json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  const std::string text = index.dump(2) + "\n";
  AtomicFileWriter out(dir / kIndexName);
  out.write(text.data(), text.size());
  out.commit();
}

}  // namespace shrink
