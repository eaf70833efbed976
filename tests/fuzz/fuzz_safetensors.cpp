// Fuzz target of the safetensors reader (engine/io/safetensors.h): each input is opened as a file
// (an in-memory one, fuzz_util.h's MemFile) and every tensor read. An accepted file must be what
// the header says: one tensor per entry with its dtype and shape, bytes equal to the file's at the
// entry's offsets, and the entries tiling the data section exactly.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "engine/error.h"
#include "engine/io/safetensors.h"
#include "tests/fuzz/fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static seg::fuzz::MemFile file("fuzz.safetensors");
  const std::filesystem::path path = file.write(data, size);
  try {
    const seg::SafetensorsFile st(path);
    const seg::NamedTensors all = st.read_all();
    FUZZ_CHECK(size >= 8);
    uint64_t header = 0;
    std::memcpy(&header, data, sizeof(header));  // little-endian host (checked by the reader)
    const uint64_t data_start = 8 + header;
    FUZZ_CHECK(data_start <= size);
    FUZZ_CHECK(all.size() == st.entries().size());
    uint64_t covered = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      const seg::SafetensorsEntry& e = st.entries()[i];
      const seg::Tensor& t = all[i].second;
      const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * seg::dtype_size(t.dtype());
      FUZZ_CHECK(all[i].first == e.name && t.dtype() == e.dtype && t.sizes() == e.shape);
      FUZZ_CHECK(nbytes == e.end - e.begin && e.end <= size - data_start);
      FUZZ_CHECK(nbytes == 0 ||
                 std::memcmp(t.data_ptr(), data + data_start + e.begin, nbytes) == 0);
      FUZZ_CHECK(st.read(e.name).sizes() == e.shape);
      covered += nbytes;
    }
    FUZZ_CHECK(data_start + covered == size);
  } catch (const seg::Error&) {
  }
  return 0;
}
