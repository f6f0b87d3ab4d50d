// Read-only memory-mapped files; the mapping lives as long as any Tensor viewing it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>

namespace shrink {

class MappedFile {
 public:
  // Throws shrink::Error naming the path when it is missing or unreadable. Empty files map to size 0.
  static std::shared_ptr<MappedFile> open(const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::filesystem::path path_;
};

// Writes to `path` atomically: the bytes go to a temporary file beside it, renamed into place on
// commit(); destroyed without commit() (an error), the temporary file is removed.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::filesystem::path path);
  ~AtomicFileWriter();
  void write(const void* data, size_t n);
  void commit();

 private:
  std::filesystem::path path_, tmp_;
  int fd_ = -1;
};

std::string read_text_file(const std::filesystem::path& path);

// Drops the resident pages of [p, p + n) when the range lies in a read-only private file mapping (a MappedFile's
// tensors): madvise(MADV_DONTNEED) on the whole pages inside the range, which leaves RSS and reload from the file
// when read again, so views stay valid. Anything else (heap, writable or anonymous memory, a range spanning two
// mappings) is left alone. Returns whether pages were dropped. Costs a scan of /proc/self/maps.
bool drop_mapped_pages(const void* p, size_t n);

}  // namespace shrink
