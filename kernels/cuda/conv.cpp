// CUDA 2-D convolution (groups 1, NCHW, f32 and f64) through cuDNN 9's legacy convolution API.
//
// Design notes
// - The four kernels of Conv2dKernels map onto cudnnConvolutionForward (+ cudnnAddTensor for the
//   bias), cudnnConvolutionBackwardData (+ cudnnAddTensor for conv_transpose2d's bias),
//   cudnnConvolutionBackwardFilter and cudnnConvolutionBackwardBias (a deterministic reduction:
//   cuDNN's reproducibility notes list only some convolution algorithms, max pooling backward and
//   a few others as non-deterministic). Results are written (beta = 0), never accumulated.
// - Algorithms: the first call of a shape runs cudnnFind*AlgorithmEx on the call's own buffers
//   (the output is overwritten right after, so the search's writes do not matter; the weight
//   gradient searches into a scratch buffer, because a batch split accumulates into it) and caches
//   (algorithm, workspace bytes, math type) in env.conv_algos under a key naming the direction,
//   every size, stride, padding, dilation, the dtype and the math mode. The backward passes take
//   the fastest result with determinism == CUDNN_DETERMINISTIC, and another only when cuDNN offers
//   no deterministic one (noted on stderr); the forward takes the fastest.
// - Math: f32 with env.allow_tf32 searches with CUDNN_DEFAULT_MATH (TF32 tensor cores allowed, as
//   PyTorch's cudnn.allow_tf32), otherwise CUDNN_FMA_MATH (no TF32), and results with another math
//   type are rejected; CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION (down-conversion to f16) is never
//   accepted. The chosen result's math type is set on the descriptor before the call, as cuDNN
//   requires (an algorithm is only defined together with its math type).
// - Workspace: the one shared env.workspace. The search may use up to kSearchWorkspaceCap (1 GiB):
//   the largest need of any algorithm cuDNN's heuristics list, capped; when that much cannot be
//   allocated the cap is halved down to nothing (algorithms needing more are then skipped).
// - Descriptors are created per call (a few microseconds of host work against kernels of tens of
//   microseconds or more); correctness first, no descriptor state to invalidate.
// - 64-bit sizes: cuDNN's legacy descriptors hold int sizes and strides, so a call whose input or
//   output has more than INT_MAX elements is split along the batch (images are independent; the
//   weight and bias gradients of later chunks accumulate with beta = 1, in chunk order). One image
//   larger than INT_MAX elements is an error.
// - Output sizes: the shape's p and q are authoritative. A transposed convolution with an
//   output_padding >= stride (allowed when the dilation is larger) describes a conv whose cuDNN
//   output (the formula on h, w) is larger than (p, q): the rows and columns past (p, q) then go
//   through a zero-padded copy of gy (backward passes) or a cropped copy of y (forward), made with
//   cudnnTransformTensor on strided descriptors. Everything else is passed in place.
// - Empty work (n == 0) writes what the definitions give: nothing for empty outputs, zero weight
//   and bias gradients.
#include <algorithm>
#include <climits>
#include <cstdio>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/common/registry.h"
#include "kernels/cuda/conv_algo_cache.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"
#include "kernels/cuda/cudnn_desc.h"

namespace seg::cuda {
namespace {

constexpr size_t kSearchWorkspaceCap = size_t{1} << 30;  // 1 GiB

// ---- descriptors (RAII) ----

class FilterDesc {
 public:
  FilterDesc() { SEG_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d_)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d_); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  cudnnFilterDescriptor_t get() const { return d_; }

 private:
  cudnnFilterDescriptor_t d_ = nullptr;
};

class ConvDesc {
 public:
  ConvDesc() { SEG_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d_)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d_); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  cudnnConvolutionDescriptor_t get() const { return d_; }

 private:
  cudnnConvolutionDescriptor_t d_ = nullptr;
};

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT_MAX) {
    throw std::invalid_argument(std::string("conv2d (cuDNN): ") + what + " = " + std::to_string(v) +
                                " is outside the range of cuDNN's int sizes");
  }
  return static_cast<int>(v);
}

void set_nchw(const TensorDesc& d, cudnnDataType_t type, int64_t n, int64_t c, int64_t h,
              int64_t w) {
  SEG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(d.get(), CUDNN_TENSOR_NCHW, type, to_int(n, "n"),
                                             to_int(c, "channels"), to_int(h, "height"),
                                             to_int(w, "width")));
}

// (n, c, h, w) inside a contiguous (n, c, H, W) buffer (H >= h, W >= w).
void set_nchw_in(const TensorDesc& d, cudnnDataType_t type, int64_t n, int64_t c, int64_t h,
                 int64_t w, int64_t H, int64_t W) {
  SEG_CUDNN_CHECK(cudnnSetTensor4dDescriptorEx(
      d.get(), type, to_int(n, "n"), to_int(c, "channels"), to_int(h, "height"),
      to_int(w, "width"), to_int(c * H * W, "image stride"), to_int(H * W, "plane stride"),
      to_int(W, "row stride"), 1));
}

// Host scaling factors of the data type (cuDNN reads float for f32, double for f64).
struct Scalars {
  float f32[2] = {0.0f, 1.0f};
  double f64[2] = {0.0, 1.0};
  bool is64 = false;
  const void* zero() const { return is64 ? static_cast<const void*>(&f64[0]) : &f32[0]; }
  const void* one() const { return is64 ? static_cast<const void*>(&f64[1]) : &f32[1]; }
};

// ---- one convolution geometry, on a chunk of images ----

struct Conv {
  const CudaKernelEnv& env;
  Conv2dShape s;  // s.n is the whole batch; descriptors describe `chunk` images
  DType dtype;
  cudnnDataType_t type;
  size_t elem;
  Scalars scalars;
  bool tf32 = false;        // f32 with TF32 allowed
  int64_t pe = 0, qe = 0;   // cuDNN's output size (the formula); >= s.p, s.q
  int64_t chunk = 0;        // images per cuDNN call
  TensorDesc x, y;          // (chunk, c, h, w), (chunk, k, pe, qe)
  FilterDesc w;             // (k, c, r, s)
  ConvDesc conv;

  Conv(const CudaKernelEnv& e, const Conv2dShape& shape, DType dt, const char* kernel)
      : env(e), s(shape), dtype(dt) {
    switch (dt) {
      case DType::f32:
        type = CUDNN_DATA_FLOAT;
        elem = 4;
        tf32 = env.allow_tf32;
        break;
      case DType::f64:
        type = CUDNN_DATA_DOUBLE;
        elem = 8;
        scalars.is64 = true;
        break;
      default:
        throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dt) +
                                    " is not supported on CUDA (f32 and f64 only)");
    }
    pe = conv_out_size(s.h, s.r, s.stride_h, s.pad_h, s.dil_h);
    qe = conv_out_size(s.w, s.s, s.stride_w, s.pad_w, s.dil_w);
    if (pe < s.p || qe < s.q || s.p < 1 || s.q < 1) {
      throw std::invalid_argument(std::string(kernel) + ": output size (" + std::to_string(s.p) +
                                  "," + std::to_string(s.q) + ") does not fit the input (" +
                                  std::to_string(s.h) + "," + std::to_string(s.w) +
                                  ") and kernel geometry (cuDNN gives (" + std::to_string(pe) +
                                  "," + std::to_string(qe) + "))");
    }
    const int64_t per_image = std::max(s.c * s.h * s.w, s.k * pe * qe);
    if (per_image > INT_MAX) {
      throw std::invalid_argument(std::string(kernel) + ": one image of " +
                                  std::to_string(per_image) +
                                  " elements exceeds cuDNN's 32-bit tensor sizes");
    }
    chunk = std::clamp<int64_t>(INT_MAX / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(s.n, 1));
    SEG_CUDNN_CHECK(cudnnSetFilter4dDescriptor(w.get(), type, CUDNN_TENSOR_NCHW, to_int(s.k, "k"),
                                               to_int(s.c, "c"), to_int(s.r, "r"),
                                               to_int(s.s, "s")));
    SEG_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        conv.get(), to_int(s.pad_h, "pad_h"), to_int(s.pad_w, "pad_w"),
        to_int(s.stride_h, "stride_h"), to_int(s.stride_w, "stride_w"), to_int(s.dil_h, "dil_h"),
        to_int(s.dil_w, "dil_w"), CUDNN_CROSS_CORRELATION, type));
    SEG_CUDNN_CHECK(cudnnSetConvolutionMathType(conv.get(), search_math()));
    set_chunk(chunk);
  }

  bool padded() const { return pe != s.p || qe != s.q; }
  cudnnMathType_t search_math() const {
    return dtype == DType::f32 && !tf32 ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH;
  }
  void set_chunk(int64_t images) {
    set_nchw(x, type, images, s.c, s.h, s.w);
    set_nchw(y, type, images, s.k, pe, qe);
  }
  size_t x_image_bytes() const { return static_cast<size_t>(s.c * s.h * s.w) * elem; }
  size_t y_image_bytes() const { return static_cast<size_t>(s.k * s.p * s.q) * elem; }
  size_t ye_image_bytes() const { return static_cast<size_t>(s.k * pe * qe) * elem; }

  std::string key(const char* direction, int64_t images) const {
    return std::string(direction) + " n" + std::to_string(images) + " c" + std::to_string(s.c) +
           " h" + std::to_string(s.h) + " w" + std::to_string(s.w) + " k" + std::to_string(s.k) +
           " r" + std::to_string(s.r) + " s" + std::to_string(s.s) + " p" + std::to_string(pe) +
           " q" + std::to_string(qe) + " st" + std::to_string(s.stride_h) + "," +
           std::to_string(s.stride_w) + " pad" + std::to_string(s.pad_h) + "," +
           std::to_string(s.pad_w) + " dil" + std::to_string(s.dil_h) + "," +
           std::to_string(s.dil_w) + " " + dtype_name(dtype) +
           (dtype == DType::f32 ? (tf32 ? " tf32" : " fma") : "");
  }
  std::string describe() const {
    return "x (" + std::to_string(s.n) + "," + std::to_string(s.c) + "," + std::to_string(s.h) +
           "," + std::to_string(s.w) + "), w (" + std::to_string(s.k) + "," + std::to_string(s.c) +
           "," + std::to_string(s.r) + "," + std::to_string(s.s) + "), stride (" +
           std::to_string(s.stride_h) + "," + std::to_string(s.stride_w) + "), padding (" +
           std::to_string(s.pad_h) + "," + std::to_string(s.pad_w) + "), dilation (" +
           std::to_string(s.dil_h) + "," + std::to_string(s.dil_w) + "), " + dtype_name(dtype);
  }
};

// The shared workspace with at least `bytes` (the pointer may be null for 0).
void* workspace(const CudaKernelEnv& env, size_t bytes) {
  return env.workspace(env.workspace_owner, bytes);
}

// The search workspace: `want` capped at kSearchWorkspaceCap, halved while it cannot be allocated.
void* search_workspace(const CudaKernelEnv& env, size_t want, size_t& got) {
  size_t bytes = std::min(want, kSearchWorkspaceCap);
  for (;;) {
    try {
      void* p = workspace(env, bytes);
      got = bytes;
      return p;
    } catch (const std::exception&) {
      if (bytes == 0) throw;
      bytes = bytes > (size_t{1} << 20) ? bytes / 2 : 0;
    }
  }
}

bool math_allowed(const Conv& cv, cudnnMathType_t m) {
  if (m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION) return false;  // would convert to f16
  if (cv.dtype == DType::f32 && !cv.tf32) return m == CUDNN_FMA_MATH;
  return true;
}

// The fastest acceptable result of a search (results come sorted by time). With `deterministic`,
// the fastest deterministic one; when cuDNN offers none that fits (seen on an H200 for the
// backward data of a 7x7 stride-2 convolution of 3 channels at 1024x2048, where only algorithm 0,
// which accumulates with atomics, was returned), the fastest other one, and a note on stderr: the
// search runs once per shape, so the note appears once.
template <class Perf>
ConvAlgoChoice pick(const Conv& cv, const std::vector<Perf>& perf, int returned, bool deterministic,
                    size_t workspace_bytes, const char* direction) {
  std::ostringstream seen;  // for the messages
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[static_cast<size_t>(i)];
    if (p.status != CUDNN_STATUS_SUCCESS) continue;
    seen << " algo " << static_cast<int>(p.algo) << " (deterministic "
         << (p.determinism == CUDNN_DETERMINISTIC) << ", math " << static_cast<int>(p.mathType)
         << ", " << p.memory << " B)";
  }
  for (bool require_deterministic : {deterministic, false}) {
    for (int i = 0; i < returned; ++i) {
      const Perf& p = perf[static_cast<size_t>(i)];
      if (p.status != CUDNN_STATUS_SUCCESS) continue;
      if (require_deterministic && p.determinism != CUDNN_DETERMINISTIC) continue;
      if (!math_allowed(cv, p.mathType)) continue;
      if (p.memory > workspace_bytes) continue;
      if (deterministic && !require_deterministic) {
        std::fprintf(stderr,
                     "segtrain: conv2d (cuDNN) %s for %s: no deterministic algorithm within a "
                     "%zu-byte workspace; using algo %d, whose results may differ in the last "
                     "bits from run to run (cuDNN returned:%s)\n",
                     direction, cv.describe().c_str(), workspace_bytes, static_cast<int>(p.algo),
                     seen.str().c_str());
      }
      return ConvAlgoChoice{static_cast<int>(p.algo), p.memory, static_cast<int>(p.mathType)};
    }
  }
  std::ostringstream msg;
  msg << "conv2d (cuDNN) " << direction << ": no acceptable algorithm for " << cv.describe()
      << " within a " << workspace_bytes << "-byte workspace; cuDNN returned:"
      << (seen.str().empty() ? std::string(" none") : seen.str());
  throw std::runtime_error(msg.str());
}

// Largest workspace any heuristic candidate wants (sizes the search).
template <class Perf>
size_t largest_need(const std::vector<Perf>& perf, int returned) {
  size_t need = 0;
  for (int i = 0; i < returned; ++i) {
    const Perf& p = perf[static_cast<size_t>(i)];
    if (p.status == CUDNN_STATUS_SUCCESS) need = std::max(need, p.memory);
  }
  return need;
}

ConvAlgoChoice find_forward(Conv& cv, const void* x, const void* w, void* y, int64_t images) {
  const std::string key = cv.key("fwd", images);
  if (auto hit = cv.env.conv_algos->find(key)) return *hit;
  cudnnHandle_t h = cv.env.cudnn;
  // An earlier chunk may have set its result's math type: search with the requested one.
  SEG_CUDNN_CHECK(cudnnSetConvolutionMathType(cv.conv.get(), cv.search_math()));
  int count = 0;
  SEG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithmMaxCount(h, &count));
  std::vector<cudnnConvolutionFwdAlgoPerf_t> perf(static_cast<size_t>(std::max(count, 1)));
  int returned = 0;
  SEG_CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, cv.x.get(), cv.w.get(), cv.conv.get(),
                                                         cv.y.get(), count, &returned,
                                                         perf.data()));
  size_t got = 0;
  void* ws = search_workspace(cv.env, largest_need(perf, returned), got);
  returned = 0;
  SEG_CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithmEx(h, cv.x.get(), x, cv.w.get(), w,
                                                         cv.conv.get(), cv.y.get(), y, count,
                                                         &returned, perf.data(), ws, got));
  const ConvAlgoChoice choice = pick(cv, perf, returned, false, got, "forward");
  cv.env.conv_algos->insert(key, choice);
  return choice;
}

ConvAlgoChoice find_backward_data(Conv& cv, const void* w, const void* dy, void* dx,
                                  int64_t images) {
  const std::string key = cv.key("bwd_data", images);
  if (auto hit = cv.env.conv_algos->find(key)) return *hit;
  cudnnHandle_t h = cv.env.cudnn;
  // An earlier chunk may have set its result's math type: search with the requested one.
  SEG_CUDNN_CHECK(cudnnSetConvolutionMathType(cv.conv.get(), cv.search_math()));
  int count = 0;
  SEG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithmMaxCount(h, &count));
  std::vector<cudnnConvolutionBwdDataAlgoPerf_t> perf(static_cast<size_t>(std::max(count, 1)));
  int returned = 0;
  SEG_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      h, cv.w.get(), cv.y.get(), cv.conv.get(), cv.x.get(), count, &returned, perf.data()));
  size_t got = 0;
  void* ws = search_workspace(cv.env, largest_need(perf, returned), got);
  returned = 0;
  SEG_CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithmEx(
      h, cv.w.get(), w, cv.y.get(), dy, cv.conv.get(), cv.x.get(), dx, count, &returned,
      perf.data(), ws, got));
  const ConvAlgoChoice choice = pick(cv, perf, returned, true, got, "backward data");
  cv.env.conv_algos->insert(key, choice);
  return choice;
}

ConvAlgoChoice find_backward_filter(Conv& cv, const void* x, const void* dy, int64_t images) {
  const std::string key = cv.key("bwd_filter", images);
  if (auto hit = cv.env.conv_algos->find(key)) return *hit;
  cudnnHandle_t h = cv.env.cudnn;
  // An earlier chunk may have set its result's math type: search with the requested one.
  SEG_CUDNN_CHECK(cudnnSetConvolutionMathType(cv.conv.get(), cv.search_math()));
  int count = 0;
  SEG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithmMaxCount(h, &count));
  std::vector<cudnnConvolutionBwdFilterAlgoPerf_t> perf(static_cast<size_t>(std::max(count, 1)));
  int returned = 0;
  SEG_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      h, cv.x.get(), cv.y.get(), cv.conv.get(), cv.w.get(), count, &returned, perf.data()));
  // The search writes the gradient it times: into scratch, since a batch split accumulates into
  // the real one.
  ScratchBuffer dw(cv.env, static_cast<size_t>(cv.s.k * cv.s.c * cv.s.r * cv.s.s) * cv.elem);
  size_t got = 0;
  void* ws = search_workspace(cv.env, largest_need(perf, returned), got);
  returned = 0;
  SEG_CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithmEx(
      h, cv.x.get(), x, cv.y.get(), dy, cv.conv.get(), cv.w.get(), dw.get(), count, &returned,
      perf.data(), ws, got));
  const ConvAlgoChoice choice = pick(cv, perf, returned, true, got, "backward filter");
  cv.env.conv_algos->insert(key, choice);
  return choice;
}

void set_math(const Conv& cv, const ConvAlgoChoice& choice) {
  SEG_CUDNN_CHECK(
      cudnnSetConvolutionMathType(cv.conv.get(), static_cast<cudnnMathType_t>(choice.math_type)));
}

// Copies `images` images of (k, p, q) between a contiguous (k, p, q) layout and the (k, pe, qe)
// layout cuDNN computes in: to_extended pads (the destination must be zeroed), else crops.
void copy_extended(const Conv& cv, const void* src, void* dst, int64_t images, bool to_extended) {
  TensorDesc compact, extended;
  set_nchw(compact, cv.type, images, cv.s.k, cv.s.p, cv.s.q);
  set_nchw_in(extended, cv.type, images, cv.s.k, cv.s.p, cv.s.q, cv.pe, cv.qe);
  const TensorDesc& sd = to_extended ? compact : extended;
  const TensorDesc& dd = to_extended ? extended : compact;
  SEG_CUDNN_CHECK(cudnnTransformTensor(cv.env.cudnn, cv.scalars.one(), sd.get(), src,
                                       cv.scalars.zero(), dd.get(), dst));
}

// y[chunk] += bias over (n, channels, h, w).
void add_bias(const Conv& cv, const void* bias, int64_t channels, void* out, int64_t images,
              int64_t h, int64_t w) {
  TensorDesc bd, od;
  set_nchw(bd, cv.type, 1, channels, 1, 1);
  set_nchw(od, cv.type, images, channels, h, w);
  SEG_CUDNN_CHECK(cudnnAddTensor(cv.env.cudnn, cv.scalars.one(), bd.get(), bias, cv.scalars.one(),
                                 od.get(), out));
}

void check_dtypes(const char* kernel, std::initializer_list<const View*> views, DType dtype) {
  for (const View* v : views) {
    if (v->defined() && v->dtype != dtype) {
      throw std::invalid_argument(std::string(kernel) + ": mixed dtypes " + dtype_name(v->dtype) +
                                  " and " + dtype_name(dtype));
    }
  }
}

void bind(const CudaKernelEnv& env) { SEG_CUDNN_CHECK(cudnnSetStream(env.cudnn, env.stream)); }

// ---- the kernels ----

void conv_forward(const ExecContext& ctx, const Conv2dShape& s, const View& xv, const View& wv,
                  const View& bv, const View& yv) {
  const char* kernel = "conv2d forward";
  check_dtypes(kernel, {&xv, &wv, &bv}, yv.dtype);
  if (s.n == 0 || s.k == 0 || s.p == 0 || s.q == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  bind(env);
  Conv cv(env, s, yv.dtype, kernel);
  const char* x = static_cast<const char*>(xv.data);
  char* y = static_cast<char*>(yv.data);
  for (int64_t n0 = 0; n0 < s.n; n0 += cv.chunk) {
    const int64_t images = std::min(cv.chunk, s.n - n0);
    if (images != cv.chunk) cv.set_chunk(images);
    const char* xc = x + static_cast<size_t>(n0) * cv.x_image_bytes();
    char* yc = y + static_cast<size_t>(n0) * cv.y_image_bytes();
    ScratchBuffer extended(env, cv.padded() ? static_cast<size_t>(images) * cv.ye_image_bytes() : 0);
    void* out = cv.padded() ? extended.get() : yc;
    const ConvAlgoChoice choice = find_forward(cv, xc, wv.data, out, images);
    set_math(cv, choice);
    void* ws = workspace(env, choice.workspace_bytes);
    SEG_CUDNN_CHECK(cudnnConvolutionForward(
        env.cudnn, cv.scalars.one(), cv.x.get(), xc, cv.w.get(), wv.data, cv.conv.get(),
        static_cast<cudnnConvolutionFwdAlgo_t>(choice.algo), ws, choice.workspace_bytes,
        cv.scalars.zero(), cv.y.get(), out));
    if (cv.padded()) copy_extended(cv, out, yc, images, /*to_extended=*/false);
    if (bv.defined()) add_bias(cv, bv.data, s.k, yc, images, s.p, s.q);
  }
}

void conv_backward_input(const ExecContext& ctx, const Conv2dShape& s, const View& gyv,
                         const View& wv, const View& bv, const View& gxv) {
  const char* kernel = "conv2d backward_input";
  check_dtypes(kernel, {&gyv, &wv, &bv}, gxv.dtype);
  if (s.n == 0 || s.c == 0 || s.h == 0 || s.w == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  bind(env);
  if (s.k == 0 || s.p == 0 || s.q == 0) {  // nothing flows back: the bias (or zeros) only
    const size_t elem = dtype_size(gxv.dtype);
    SEG_CUDA_CHECK(cudaMemsetAsync(gxv.data, 0, static_cast<size_t>(s.n * s.c * s.h * s.w) * elem,
                                   env.stream));
    if (bv.defined()) {
      Conv2dShape one = s;  // any valid geometry: only the type, handle and scalars are used
      one.k = one.c;
      one.r = one.s = 1;
      one.stride_h = one.stride_w = one.dil_h = one.dil_w = 1;
      one.pad_h = one.pad_w = 0;
      one.p = one.h;
      one.q = one.w;
      Conv cv(env, one, gxv.dtype, kernel);
      for (int64_t n0 = 0; n0 < s.n; n0 += cv.chunk) {
        const int64_t images = std::min(cv.chunk, s.n - n0);
        add_bias(cv, bv.data, s.c, static_cast<char*>(gxv.data) + static_cast<size_t>(n0) * cv.x_image_bytes(),
                 images, s.h, s.w);
      }
    }
    return;
  }
  Conv cv(env, s, gxv.dtype, kernel);
  const char* gy = static_cast<const char*>(gyv.data);
  char* gx = static_cast<char*>(gxv.data);
  for (int64_t n0 = 0; n0 < s.n; n0 += cv.chunk) {
    const int64_t images = std::min(cv.chunk, s.n - n0);
    if (images != cv.chunk) cv.set_chunk(images);
    const char* gyc = gy + static_cast<size_t>(n0) * cv.y_image_bytes();
    char* gxc = gx + static_cast<size_t>(n0) * cv.x_image_bytes();
    ScratchBuffer extended(env, cv.padded() ? static_cast<size_t>(images) * cv.ye_image_bytes() : 0);
    const void* dy = gyc;
    if (cv.padded()) {  // gy with zero rows and columns past (p, q)
      SEG_CUDA_CHECK(cudaMemsetAsync(extended.get(), 0, static_cast<size_t>(images) * cv.ye_image_bytes(),
                                     env.stream));
      copy_extended(cv, gyc, extended.get(), images, /*to_extended=*/true);
      dy = extended.get();
    }
    const ConvAlgoChoice choice = find_backward_data(cv, wv.data, dy, gxc, images);
    set_math(cv, choice);
    void* ws = workspace(env, choice.workspace_bytes);
    SEG_CUDNN_CHECK(cudnnConvolutionBackwardData(
        env.cudnn, cv.scalars.one(), cv.w.get(), wv.data, cv.y.get(), dy, cv.conv.get(),
        static_cast<cudnnConvolutionBwdDataAlgo_t>(choice.algo), ws, choice.workspace_bytes,
        cv.scalars.zero(), cv.x.get(), gxc));
    if (bv.defined()) add_bias(cv, bv.data, s.c, gxc, images, s.h, s.w);
  }
}

void conv_backward_weight(const ExecContext& ctx, const Conv2dShape& s, const View& xv,
                          const View& gyv, const View& gwv) {
  const char* kernel = "conv2d backward_weight";
  check_dtypes(kernel, {&xv, &gyv}, gwv.dtype);
  const int64_t wsize = s.k * s.c * s.r * s.s;
  if (wsize == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  bind(env);
  Conv cv(env, s, gwv.dtype, kernel);
  if (s.n == 0) {  // an empty sum
    SEG_CUDA_CHECK(cudaMemsetAsync(gwv.data, 0, static_cast<size_t>(wsize) * cv.elem, env.stream));
    return;
  }
  const char* x = static_cast<const char*>(xv.data);
  const char* gy = static_cast<const char*>(gyv.data);
  for (int64_t n0 = 0; n0 < s.n; n0 += cv.chunk) {
    const int64_t images = std::min(cv.chunk, s.n - n0);
    if (images != cv.chunk) cv.set_chunk(images);
    const char* xc = x + static_cast<size_t>(n0) * cv.x_image_bytes();
    const char* gyc = gy + static_cast<size_t>(n0) * cv.y_image_bytes();
    ScratchBuffer extended(env, cv.padded() ? static_cast<size_t>(images) * cv.ye_image_bytes() : 0);
    const void* dy = gyc;
    if (cv.padded()) {
      SEG_CUDA_CHECK(cudaMemsetAsync(extended.get(), 0, static_cast<size_t>(images) * cv.ye_image_bytes(),
                                     env.stream));
      copy_extended(cv, gyc, extended.get(), images, /*to_extended=*/true);
      dy = extended.get();
    }
    const ConvAlgoChoice choice = find_backward_filter(cv, xc, dy, images);
    set_math(cv, choice);
    void* ws = workspace(env, choice.workspace_bytes);
    SEG_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
        env.cudnn, cv.scalars.one(), cv.x.get(), xc, cv.y.get(), dy, cv.conv.get(),
        static_cast<cudnnConvolutionBwdFilterAlgo_t>(choice.algo), ws, choice.workspace_bytes,
        n0 == 0 ? cv.scalars.zero() : cv.scalars.one(), cv.w.get(), gwv.data));
  }
}

// Only s.n, s.k, s.p and s.q are meaningful here (conv_transpose2d passes nothing else).
void conv_backward_bias(const ExecContext& ctx, const Conv2dShape& s, const View& gyv,
                        const View& gbv) {
  const char* kernel = "conv2d backward_bias";
  check_dtypes(kernel, {&gyv}, gbv.dtype);
  if (s.k == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  bind(env);
  cudnnDataType_t type;
  Scalars sc;
  size_t elem;
  switch (gbv.dtype) {
    case DType::f32: type = CUDNN_DATA_FLOAT; elem = 4; break;
    case DType::f64: type = CUDNN_DATA_DOUBLE; elem = 8; sc.is64 = true; break;
    default:
      throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(gbv.dtype) +
                                  " is not supported on CUDA (f32 and f64 only)");
  }
  const int64_t image = s.k * s.p * s.q;
  if (s.n == 0 || image == 0) {
    SEG_CUDA_CHECK(cudaMemsetAsync(gbv.data, 0, static_cast<size_t>(s.k) * elem, env.stream));
    return;
  }
  const int64_t chunk = std::clamp<int64_t>(INT_MAX / image, 1, s.n);
  TensorDesc db, dy;
  set_nchw(db, type, 1, s.k, 1, 1);
  const char* gy = static_cast<const char*>(gyv.data);
  for (int64_t n0 = 0; n0 < s.n; n0 += chunk) {
    const int64_t images = std::min(chunk, s.n - n0);
    set_nchw(dy, type, images, s.k, s.p, s.q);
    SEG_CUDNN_CHECK(cudnnConvolutionBackwardBias(
        env.cudnn, sc.one(), dy.get(), gy + static_cast<size_t>(n0 * image) * elem,
        n0 == 0 ? sc.zero() : sc.one(), db.get(), gbv.data));
  }
}

const Conv2dKernels kConv2dKernels{conv_forward, conv_backward_input, conv_backward_weight,
                                   conv_backward_bias};

}  // namespace

void register_conv_kernels(KernelRegistry& r) {
  r.set<OpId::conv2d>(DeviceType::cuda, &kConv2dKernels);
  r.set<OpId::conv_transpose2d>(DeviceType::cuda, &kConv2dKernels);
}

}  // namespace seg::cuda
