// Tensor: a handle (shared pointer) to sizes, strides, a storage offset and a Storage, plus the
// autograd fields. Copying a Tensor copies the handle; views share the Storage.
//
// Design notes
// - Sizes and strides are in elements. A tensor with zero dims is a scalar (numel 1).
// - Ops on tensors live in engine/ops.h and record autograd nodes; the methods here are views,
//   factories, element access and in-place updates.
// - In-place updates (`fill_`, `copy_`, `add_`, `mul_`, the random fills) bump the storage version,
//   so a tensor saved for backward that is later changed in place is detected when backward reads
//   it. With grad mode on and a tensor involved that requires grad they are recorded as PyTorch
//   records them: the tensor's history becomes a node whose inputs are its old value and the other
//   operands. An update through a view rewrites the history of the tensor it views (its `base`),
//   and every view of that base rebuilds its own grad_fn from the new history when next used.
//   Refused (seg::Error, nothing written): an update of a leaf that requires grad, or of a view of
//   one, while grad mode is on (optimisers, initialisers and loading work under NoGradGuard); a
//   recorded update of a non-floating tensor; any update of a tensor whose elements share memory
//   (an expanded view).
// - Views made by view, permute, narrow, expand (and what builds on them: reshape, select, ...)
//   are differentiable views of their base; `detach()` aliases the memory without being one.
// - Gradients of leaves accumulate (+=) across backward calls until `zero_grad()`.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/device.h"
#include "engine/error.h"
#include "engine/random.h"
#include "engine/storage.h"
#include "kernels/common/types.h"

namespace seg {

using Shape = std::vector<int64_t>;

class Node;
struct TensorImpl;

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  TensorImpl* impl() const { return impl_.get(); }
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

  // --- metadata ---
  DType dtype() const;
  Device device() const;
  const Shape& sizes() const;
  const Shape& strides() const;
  int64_t offset() const;
  int dim() const;
  int64_t size(int d) const;    // negative d counts from the end
  int64_t stride(int d) const;
  int64_t numel() const;
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const;
  std::string str() const;      // "f32 (2,3) cpu"
  std::string to_string(int64_t max_elements = 64) const;  // values, for messages and debugging

  // --- raw data (host only for CPU tensors) ---
  void* data_ptr() const;       // points at element 0 of this view
  template <class T>
  T* data() const;              // checks that T matches dtype

  // --- views (share storage; record autograd when the source requires grad) ---
  Tensor view(const Shape& shape) const;     // requires compatible strides; one size may be -1
  Tensor reshape(const Shape& shape) const;  // view when possible, else a contiguous copy
  Tensor flatten(int start_dim = 0, int end_dim = -1) const;
  Tensor permute(const std::vector<int>& dims) const;
  Tensor transpose(int a, int b) const;
  Tensor narrow(int dim, int64_t start, int64_t length) const;
  Tensor slice(int dim, int64_t start, int64_t end) const;  // [start, end), negative allowed
  Tensor select(int dim, int64_t index) const;              // drops dim
  Tensor unsqueeze(int dim) const;
  Tensor squeeze(int dim) const;
  Tensor expand(const Shape& shape) const;  // broadcast view (stride 0); -1 keeps a size
  Tensor contiguous() const;                // this tensor when already contiguous
  Tensor clone() const;                     // contiguous copy, differentiable
  Tensor to(DType dtype) const;             // differentiable between floating dtypes
  Tensor to(Device device) const;

  // --- autograd ---
  bool requires_grad() const;
  Tensor& set_requires_grad(bool value);  // leaves only; a view becomes a leaf of its own
  bool is_leaf() const;
  Tensor grad() const;                      // undefined until a backward reaches this leaf
  void set_grad(const Tensor& g);
  void zero_grad();                         // drops the gradient (next backward writes a fresh one)
  const std::shared_ptr<Node>& grad_fn() const;
  Tensor detach() const;                    // same storage, no graph
  // Backward from this tensor: a scalar needs no gradient; otherwise pass one of the same shape.
  void backward(const Tensor& grad = Tensor(), bool retain_graph = false) const;

  // --- in-place updates (bump the version; recorded by autograd, see the notes above) ---
  Tensor& fill_(double value);
  Tensor& zero_() { return fill_(0.0); }
  Tensor& copy_(const Tensor& src);          // broadcasts src, converts dtype; same device
  Tensor& add_(const Tensor& other, double alpha = 1.0);  // this += alpha * other (broadcast)
  Tensor& mul_(double value);
  Tensor& uniform_(Generator& gen, double low = 0.0, double high = 1.0);
  Tensor& normal_(Generator& gen, double mean = 0.0, double std = 1.0);
  Tensor& bernoulli_(Generator& gen, double p);
  void bump_version() const;

  // --- scalar access ---
  double item() const;  // numel must be 1; any dtype
  template <class T>
  T item() const {
    return static_cast<T>(item());
  }

 private:
  std::shared_ptr<TensorImpl> impl_;
};

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape sizes;
  Shape strides;
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  // autograd
  bool requires_grad = false;
  Tensor grad;
  std::shared_ptr<Node> grad_fn;       // null for leaves
  int output_nr = 0;                   // which output of grad_fn this tensor is
  std::weak_ptr<Node> grad_accumulator;  // leaves: the node that accumulates into `grad`
  // Differentiable views: the tensor whose memory this one views (never itself such a view), and
  // that tensor's `history` when this view's grad_fn was made; null for everything else.
  std::shared_ptr<TensorImpl> base;
  uint64_t base_history = 0;
  // Counts rewrites of this tensor's autograd history (an in-place update recorded on it or through
  // a view of it, set_requires_grad): a view whose base_history differs rebuilds its grad_fn.
  uint64_t history = 0;
};

// --- factories ---
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
// A tensor whose storage comes from `allocator` (e.g. a context's pinned host memory for loading);
// its device is the allocator's.
Tensor empty(const Shape& shape, DType dtype, Allocator& allocator);
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
Tensor empty_like(const Tensor& t);
Tensor zeros_like(const Tensor& t);
Tensor ones_like(const Tensor& t);
Tensor scalar_tensor(double value, DType dtype = DType::f32, Device device = Device::cpu());
// 0, step, 2*step, ... (n values)
Tensor arange(int64_t n, DType dtype = DType::f32, Device device = Device::cpu());
Tensor arange(double start, double end, double step, DType dtype = DType::f32,
              Device device = Device::cpu());
Tensor rand(const Shape& shape, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu());
Tensor randn(const Shape& shape, Generator& gen, DType dtype = DType::f32, Device device = Device::cpu());
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType dtype = DType::f32,
                 Device device = Device::cpu());
// Host values into a new tensor (CPU). The vector's size must match the shape.
Tensor from_vector(const std::vector<float>& values, const Shape& shape, Device device = Device::cpu());
Tensor from_vector(const std::vector<double>& values, const Shape& shape, Device device = Device::cpu());
Tensor from_vector(const std::vector<int32_t>& values, const Shape& shape, Device device = Device::cpu());
// All values, converted to T, in row-major order (copies to the host when needed).
template <class T>
std::vector<T> to_vector(const Tensor& t);

int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);
// The dim index for a possibly negative `d` in a tensor of `ndim` dims; throws naming `what`.
int wrap_dim(int d, int ndim, const char* what);
// An alias of `t`'s storage with the given geometry (offset in elements from the storage's start).
// Records nothing and is not a differentiable view: for the engine's own gradient buffers.
Tensor alias_with_geometry(const Tensor& t, const Shape& sizes, const Shape& strides,
                           int64_t offset);
// True when two elements of `t` share memory (a stride of 0 on a dim of size > 1: an expanded
// view).
bool has_internal_overlap(const Tensor& t);
// Kernel view of a tensor (no copy).
View view_of(const Tensor& t);
ExecContext exec_context(const Tensor& t);

}  // namespace seg
