// Types shared by every backend: dtypes, device kinds, and the strided View that kernels receive.
//
// Kernels are plain functions over Views and small parameter structs; they never see a Tensor or the
// autograd graph. A View is a borrowed pointer plus sizes and strides in elements (not bytes).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define SEG_HD __host__ __device__ inline
#else
#define SEG_HD inline
#endif

namespace seg {

enum class DType : uint8_t { f32, f64, f16, bf16, i32, i64, u8 };
constexpr int kNumDTypes = 7;

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::f16: return 2;
    case DType::bf16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
  }
  return 0;
}

constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
  }
  return "?";
}

constexpr bool is_floating(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::f16 || t == DType::bf16;
}

enum class DeviceType : uint8_t { cpu, cuda };
constexpr int kNumDeviceTypes = 2;

constexpr const char* device_type_name(DeviceType d) { return d == DeviceType::cpu ? "cpu" : "cuda"; }

constexpr int kMaxDims = 8;

// A borrowed, strided window onto typed memory. Sizes and strides are in elements.
struct View {
  void* data = nullptr;
  DType dtype = DType::f32;
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[kMaxDims] = {};

  SEG_HD int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= sizes[i];
    return n;
  }
  SEG_HD bool is_contiguous() const {
    if (numel() == 0) return true;
    int64_t expected = 1;
    for (int i = ndim - 1; i >= 0; --i) {
      if (sizes[i] != 1 && strides[i] != expected) return false;
      expected *= sizes[i];
    }
    return true;
  }
  SEG_HD bool defined() const { return data != nullptr; }
  template <class T>
  SEG_HD T* ptr() const {
    return static_cast<T*>(data);
  }
};

// What a kernel needs from the device it runs on. The CPU backend ignores it; the CUDA backend
// finds its stream, library handles and workspace through `device_state` (owned by the per-rank
// device context, never global).
struct ExecContext {
  DeviceType device = DeviceType::cpu;
  int device_index = 0;
  void* device_state = nullptr;
};

}  // namespace seg
