#include "engine/tensor.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "engine/autograd.h"
#include "engine/device_context.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common/half.h"

namespace seg {

// ---------------------------------------------------------------------------------------------
// helpers

std::string shape_str(const std::vector<int64_t>& sizes) {
  std::string s = "(";
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(sizes[i]);
  }
  return s + ")";
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(shape.size()) - 1; i >= 0; --i) {
    strides[i] = acc;
    acc *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

int wrap_dim(int d, int ndim, const char* what) {
  const int n = std::max(ndim, 1);  // a scalar accepts dims 0 and -1, as in PyTorch
  const int wrapped = d < 0 ? d + n : d;
  SEG_CHECK(wrapped >= 0 && wrapped < n, what, ": dim ", d, " out of range for a tensor of ", ndim,
            " dims");
  return wrapped;
}

static void check_shape(const Shape& shape, const char* what) {
  SEG_CHECK(static_cast<int>(shape.size()) <= kMaxDims, what, ": shape ", shape_str(shape),
            " has more than ", kMaxDims, " dims");
  for (int64_t s : shape) SEG_CHECK(s >= 0, what, ": negative size in shape ", shape_str(shape));
}

static Allocator& allocator_for(Device device) {
  if (device.is_cpu()) return cpu_allocator();
  SEG_CHECK(cuda_built(), "cannot allocate on ", device.str(), ": this binary was built without CUDA");
  SEG_CHECK(device.context != nullptr, "cannot allocate on ", device.str(),
            ": the device has no context; create a seg::cuda::CudaContext and use its device()");
  return device.context->allocator();
}

static Tensor make_view(const Tensor& base, Shape sizes, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->sizes = std::move(sizes);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

// Makes `out`, just made from `src` by a view op (after its autograd record), a differentiable view
// of src's base. A base whose own elements share memory takes no views: an update through one could
// not be mapped back to the base's elements one to one.
static void link_view(const Tensor& out, const Tensor& src) {
  std::shared_ptr<TensorImpl> base = src.impl()->base ? src.impl()->base : src.impl_ptr();
  if (has_internal_overlap(Tensor(base))) return;
  out.impl()->base_history = base->history;
  out.impl()->base = std::move(base);
}

Tensor alias_with_geometry(const Tensor& t, const Shape& sizes, const Shape& strides,
                           int64_t offset) {
  SEG_ASSERT(sizes.size() == strides.size() && offset >= 0);
  return make_view(t, sizes, strides, offset);
}

bool has_internal_overlap(const Tensor& t) {
  for (int d = 0; d < t.dim(); ++d) {
    if (t.strides()[d] == 0 && t.sizes()[d] > 1) return true;
  }
  return false;
}

View view_of(const Tensor& t) {
  View v;
  if (!t.defined()) return v;
  v.data = t.data_ptr();
  v.dtype = t.dtype();
  v.ndim = t.dim();
  for (int i = 0; i < v.ndim; ++i) {
    v.sizes[i] = t.sizes()[i];
    v.strides[i] = t.strides()[i];
  }
  return v;
}

ExecContext exec_context(const Tensor& t) {
  const Device d = t.device();
  ExecContext ctx;
  ctx.device = d.type;
  ctx.device_index = d.index;
  ctx.device_state = d.context ? d.context->kernel_state() : nullptr;
  return ctx;
}

// ---------------------------------------------------------------------------------------------
// metadata

DType Tensor::dtype() const { return impl_->dtype; }
Device Tensor::device() const { return impl_->storage->device(); }
const Shape& Tensor::sizes() const { return impl_->sizes; }
const Shape& Tensor::strides() const { return impl_->strides; }
int64_t Tensor::offset() const { return impl_->offset; }
int Tensor::dim() const { return static_cast<int>(impl_->sizes.size()); }
int64_t Tensor::size(int d) const { return impl_->sizes[wrap_dim(d, dim(), "size")]; }
int64_t Tensor::stride(int d) const { return impl_->strides[wrap_dim(d, dim(), "stride")]; }
int64_t Tensor::numel() const { return shape_numel(impl_->sizes); }
const std::shared_ptr<Storage>& Tensor::storage() const { return impl_->storage; }

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;  // as PyTorch: no element is out of place
  int64_t expected = 1;
  for (int i = dim() - 1; i >= 0; --i) {
    if (impl_->sizes[i] != 1 && impl_->strides[i] != expected) return false;
    expected *= impl_->sizes[i];
  }
  return true;
}

std::string Tensor::str() const {
  if (!defined()) return "undefined";
  return std::string(dtype_name(dtype())) + " " + shape_str(sizes()) + " " + device().str();
}

std::string Tensor::to_string(int64_t max_elements) const {
  if (!defined()) return "undefined";
  std::ostringstream os;
  os << str() << " [";
  std::vector<double> values = to_vector<double>(*this);
  for (int64_t i = 0; i < static_cast<int64_t>(values.size()) && i < max_elements; ++i) {
    if (i) os << ", ";
    os << values[i];
  }
  if (static_cast<int64_t>(values.size()) > max_elements) os << ", ...";
  os << "]";
  return os.str();
}

void* Tensor::data_ptr() const {
  return static_cast<char*>(impl_->storage->data()) +
         impl_->offset * static_cast<int64_t>(dtype_size(impl_->dtype));
}

template <class T>
static constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>) return DType::f32;
  if constexpr (std::is_same_v<T, double>) return DType::f64;
  if constexpr (std::is_same_v<T, int32_t>) return DType::i32;
  if constexpr (std::is_same_v<T, int64_t>) return DType::i64;
  if constexpr (std::is_same_v<T, uint8_t>) return DType::u8;
  if constexpr (std::is_same_v<T, uint16_t>) return DType::bf16;  // also f16: checked below
  return DType::f32;
}

template <class T>
T* Tensor::data() const {
  if constexpr (std::is_same_v<T, uint16_t>) {
    SEG_CHECK(dtype() == DType::bf16 || dtype() == DType::f16, "data<uint16_t>() on a ",
              dtype_name(dtype()), " tensor");
  } else {
    SEG_CHECK(dtype() == dtype_of<T>(), "data<", dtype_name(dtype_of<T>()), ">() on a ",
              dtype_name(dtype()), " tensor");
  }
  return static_cast<T*>(data_ptr());
}
template float* Tensor::data<float>() const;
template double* Tensor::data<double>() const;
template int32_t* Tensor::data<int32_t>() const;
template int64_t* Tensor::data<int64_t>() const;
template uint8_t* Tensor::data<uint8_t>() const;
template uint16_t* Tensor::data<uint16_t>() const;

// ---------------------------------------------------------------------------------------------
// views

static Shape infer_shape(const Shape& shape, int64_t numel, const char* what, const Shape& from) {
  Shape out = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      SEG_CHECK(infer < 0, what, ": more than one -1 in ", shape_str(shape));
      infer = static_cast<int>(i);
    } else {
      SEG_CHECK(out[i] >= 0, what, ": invalid size in ", shape_str(shape));
      known *= out[i];
    }
  }
  if (infer >= 0) {
    SEG_CHECK(known > 0 && numel % known == 0, what, ": cannot reshape ", shape_str(from), " to ",
              shape_str(shape));
    out[infer] = numel / known;
  }
  SEG_CHECK(shape_numel(out) == numel, what, ": cannot reshape ", shape_str(from), " (", numel,
            " elements) to ", shape_str(shape));
  check_shape(out, what);
  return out;
}

// Strides for viewing (sizes, strides) as `shape` without copying, if possible (PyTorch's
// computeStride): splits and merges of dims that are contiguous with each other.
static std::optional<Shape> view_strides(const Shape& sizes, const Shape& strides, const Shape& shape) {
  Shape out(shape.size());
  if (shape_numel(sizes) == 0 || sizes.empty()) {
    Shape cs = contiguous_strides(shape);
    return cs;
  }
  int64_t view_d = static_cast<int64_t>(shape.size()) - 1;
  int64_t chunk_base_stride = strides.back();
  int64_t tensor_numel = 1;
  int64_t view_numel = 1;
  for (int64_t tensor_d = static_cast<int64_t>(sizes.size()) - 1; tensor_d >= 0; --tensor_d) {
    tensor_numel *= sizes[tensor_d];
    if (tensor_d == 0 || (sizes[tensor_d - 1] != 1 &&
                          strides[tensor_d - 1] != tensor_numel * chunk_base_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_base_stride;
        view_numel *= shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (tensor_d > 0) {
        chunk_base_stride = strides[tensor_d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

Tensor Tensor::view(const Shape& shape) const {
  Shape target = infer_shape(shape, numel(), "view", sizes());
  auto strides_opt = view_strides(sizes(), strides(), target);
  SEG_CHECK(strides_opt.has_value(), "view: cannot view ", str(), " with strides ",
            shape_str(strides()), " as ", shape_str(target), " without a copy; use reshape");
  Tensor out = make_view(*this, target, *strides_opt, offset());
  Shape input_shape = sizes();
  record("ViewBackward", {*this}, {&out},
         [input_shape](const std::vector<Tensor>& g, const std::vector<bool>&) {
           return std::vector<Tensor>{g[0].reshape(input_shape)};
         });
  link_view(out, *this);
  return out;
}

Tensor Tensor::reshape(const Shape& shape) const {
  Shape target = infer_shape(shape, numel(), "reshape", sizes());
  if (view_strides(sizes(), strides(), target)) return view(target);
  return contiguous().view(target);
}

Tensor Tensor::flatten(int start_dim, int end_dim) const {
  if (dim() == 0) return reshape({1});
  int s = wrap_dim(start_dim, dim(), "flatten");
  int e = wrap_dim(end_dim, dim(), "flatten");
  SEG_CHECK(s <= e, "flatten: start_dim ", start_dim, " after end_dim ", end_dim);
  Shape shape(sizes().begin(), sizes().begin() + s);
  int64_t merged = 1;
  for (int i = s; i <= e; ++i) merged *= sizes()[i];
  shape.push_back(merged);
  shape.insert(shape.end(), sizes().begin() + e + 1, sizes().end());
  return reshape(shape);
}

Tensor Tensor::permute(const std::vector<int>& dims) const {
  SEG_CHECK(static_cast<int>(dims.size()) == dim(), "permute: ", dims.size(),
            " dims given for a tensor of ", dim(), " dims");
  std::vector<int> perm(dims.size());
  std::vector<bool> seen(dims.size(), false);
  Shape sz(dims.size()), st(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    int d = wrap_dim(dims[i], dim(), "permute");
    SEG_CHECK(!seen[d], "permute: dim ", d, " repeated");
    seen[d] = true;
    perm[i] = d;
    sz[i] = sizes()[d];
    st[i] = strides()[d];
  }
  Tensor out = make_view(*this, sz, st, offset());
  std::vector<int> inverse(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) inverse[perm[i]] = static_cast<int>(i);
  record("PermuteBackward", {*this}, {&out},
         [inverse](const std::vector<Tensor>& g, const std::vector<bool>&) {
           return std::vector<Tensor>{g[0].permute(inverse)};
         });
  link_view(out, *this);
  return out;
}

Tensor Tensor::transpose(int a, int b) const {
  std::vector<int> dims(dim());
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[wrap_dim(a, dim(), "transpose")], dims[wrap_dim(b, dim(), "transpose")]);
  return permute(dims);
}

Tensor Tensor::narrow(int d, int64_t start, int64_t length) const {
  d = wrap_dim(d, dim(), "narrow");
  SEG_CHECK(start >= 0 && length >= 0 && start + length <= sizes()[d], "narrow: [", start, ", ",
            start + length, ") out of range for dim ", d, " of ", str());
  Shape sz = sizes();
  sz[d] = length;
  Tensor out = make_view(*this, sz, strides(), offset() + start * strides()[d]);
  Shape input_shape = sizes();
  DType dt = dtype();
  Device dev = device();
  record("NarrowBackward", {*this}, {&out},
         [input_shape, dt, dev, d, start, length](const std::vector<Tensor>& g,
                                                  const std::vector<bool>&) {
           Tensor gx = zeros(input_shape, dt, dev);
           gx.narrow(d, start, length).copy_(g[0]);
           return std::vector<Tensor>{gx};
         });
  link_view(out, *this);
  return out;
}

Tensor Tensor::slice(int d, int64_t start, int64_t end) const {
  d = wrap_dim(d, dim(), "slice");
  int64_t n = sizes()[d];
  if (start < 0) start += n;
  if (end < 0) end += n;
  start = std::clamp<int64_t>(start, 0, n);
  end = std::clamp<int64_t>(end, start, n);
  return narrow(d, start, end - start);
}

Tensor Tensor::select(int d, int64_t index) const {
  d = wrap_dim(d, dim(), "select");
  if (index < 0) index += sizes()[d];
  SEG_CHECK(index >= 0 && index < sizes()[d], "select: index ", index, " out of range for dim ", d,
            " of ", str());
  return narrow(d, index, 1).squeeze(d);
}

Tensor Tensor::unsqueeze(int d) const {
  d = wrap_dim(d, dim() + 1, "unsqueeze");
  Shape sz = sizes();
  sz.insert(sz.begin() + d, 1);
  return view(sz);
}

Tensor Tensor::squeeze(int d) const {
  d = wrap_dim(d, dim(), "squeeze");
  if (sizes()[d] != 1) return *this;
  Shape sz = sizes();
  sz.erase(sz.begin() + d);
  return view(sz);
}

Tensor Tensor::expand(const Shape& shape) const {
  SEG_CHECK(static_cast<int>(shape.size()) >= dim(), "expand: cannot expand ", str(), " to ",
            shape_str(shape));
  int lead = static_cast<int>(shape.size()) - dim();
  Shape sz(shape.size()), st(shape.size());
  for (int i = 0; i < static_cast<int>(shape.size()); ++i) {
    if (i < lead) {
      SEG_CHECK(shape[i] >= 0, "expand: invalid size in ", shape_str(shape));
      sz[i] = shape[i];
      st[i] = 0;
      continue;
    }
    int64_t own = sizes()[i - lead];
    int64_t want = shape[i] == -1 ? own : shape[i];
    SEG_CHECK(own == want || own == 1, "expand: cannot expand ", str(), " to ", shape_str(shape));
    sz[i] = want;
    st[i] = (own == want) ? strides()[i - lead] : 0;
  }
  check_shape(sz, "expand");
  Tensor out = make_view(*this, sz, st, offset());
  Shape input_shape = sizes();
  record("ExpandBackward", {*this}, {&out},
         [input_shape](const std::vector<Tensor>& g, const std::vector<bool>&) {
           return std::vector<Tensor>{sum_to(g[0], input_shape)};
         });
  link_view(out, *this);
  return out;
}

// Copy into a new contiguous tensor of `dtype`, recording a differentiable copy.
static Tensor copy_as(const Tensor& src, DType dtype, const char* what) {
  Tensor out = empty(src.sizes(), dtype, src.device());
  out.copy_(src.detach());  // recorded below as this op, not as an in-place copy
  if (any_requires_grad({src})) {
    SEG_CHECK(is_floating(dtype) && is_floating(src.dtype()), what, ": cannot differentiate a cast from ",
              dtype_name(src.dtype()), " to ", dtype_name(dtype));
  }
  DType src_dtype = src.dtype();
  record("CopyBackward", {src}, {&out},
         [src_dtype](const std::vector<Tensor>& g, const std::vector<bool>&) {
           return std::vector<Tensor>{g[0].dtype() == src_dtype ? g[0] : g[0].to(src_dtype)};
         });
  return out;
}

Tensor Tensor::contiguous() const {
  if (is_contiguous()) return *this;
  return copy_as(*this, dtype(), "contiguous");
}

Tensor Tensor::clone() const { return copy_as(*this, dtype(), "clone"); }

Tensor Tensor::to(DType dt) const {
  if (dt == dtype()) return *this;
  return copy_as(*this, dt, "to");
}

// Moves the bytes of `src` (any layout) into a new contiguous tensor on `dev`.
static Tensor transfer(const Tensor& src, Device dev) {
  Tensor s = src.detach().contiguous();  // on the source device
  Tensor out = empty(s.sizes(), s.dtype(), dev);
  const size_t bytes = static_cast<size_t>(s.numel()) * dtype_size(s.dtype());
  const Device from = s.device();
  if (from.is_cpu()) {
    dev.context->copy_from_host(out.data_ptr(), s.data_ptr(), bytes);
  } else if (dev.is_cpu()) {
    from.context->copy_to_host(out.data_ptr(), s.data_ptr(), bytes);
  } else {
    from.context->synchronize();  // the source's queued writes land before the other device reads
    dev.context->copy_device(out.data_ptr(), s.data_ptr(), bytes);
  }
  return out;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return *this;
  if (dev.is_cuda()) {
    SEG_CHECK(cuda_built(), "to: cannot move ", str(), " to ", dev.str(), ": this binary was built without CUDA");
    SEG_CHECK(dev.context != nullptr, "to: cannot move ", str(), " to ", dev.str(),
              ": the device has no context; create a seg::cuda::CudaContext and use its device()");
  }
  Tensor out = transfer(*this, dev);
  Device from = device();
  record("ToDeviceBackward", {*this}, {&out},
         [from](const std::vector<Tensor>& g, const std::vector<bool>&) {
           return std::vector<Tensor>{g[0].to(from)};
         });
  return out;
}

// ---------------------------------------------------------------------------------------------
// autograd accessors

bool Tensor::requires_grad() const {
  refresh_view_history(*this);
  return impl_->requires_grad;
}

Tensor& Tensor::set_requires_grad(bool value) {
  SEG_CHECK(is_leaf(), "set_requires_grad: only leaves can be set (", str(), " was produced by ",
            impl_->grad_fn->name(), ")");
  SEG_CHECK(!value || is_floating(dtype()), "set_requires_grad: ", dtype_name(dtype()),
            " tensors cannot require gradients");
  // A view becomes a leaf of its own (PyTorch's x.view(...).requires_grad_()): no longer a view
  // of its base for autograd, as after detach().
  impl_->base = nullptr;
  if (impl_->requires_grad != value) {
    impl_->requires_grad = value;
    ++impl_->history;  // its views now do (or no longer do) lead to it
  }
  return *this;
}

bool Tensor::is_leaf() const {
  return grad_fn() == nullptr;
}
Tensor Tensor::grad() const { return impl_->grad; }

void Tensor::set_grad(const Tensor& g) {
  if (g.defined()) {
    SEG_CHECK(g.sizes() == sizes(), "set_grad: gradient ", g.str(), " for tensor ", str());
  }
  impl_->grad = g;
}

void Tensor::zero_grad() { impl_->grad = Tensor(); }
const std::shared_ptr<Node>& Tensor::grad_fn() const {
  refresh_view_history(*this);
  return impl_->grad_fn;
}

Tensor Tensor::detach() const { return make_view(*this, sizes(), strides(), offset()); }

void Tensor::backward(const Tensor& grad, bool retain_graph) const {
  run_backward({*this}, {grad}, retain_graph);
}

// ---------------------------------------------------------------------------------------------
// in-place updates

void Tensor::bump_version() const { impl_->storage->bump_version(); }

// Records an update that overwrites every element of `t`: nothing flows back to its old value.
static void record_overwrite(const char* name, const Tensor& t) {
  record_inplace(name, t, {}, [](const std::vector<Tensor>&, const std::vector<bool>&) {
    return std::vector<Tensor>{Tensor()};
  });
}

Tensor& Tensor::fill_(double value) {
  const bool recorded = begin_inplace("fill_", *this, {});
  kernels_for<OpId::fill>(device()).fill(exec_context(*this), view_of(*this), value);
  bump_version();
  if (recorded) record_overwrite("InplaceFillBackward", *this);
  return *this;
}

Tensor& Tensor::copy_(const Tensor& src) {
  SEG_CHECK(src.defined(), "copy_: undefined source for ", str());
  const bool recorded = begin_inplace("copy_", *this, {src});
  Tensor moved = src.device() == device() ? src.detach() : transfer(src, device());
  Tensor s = moved.sizes() == sizes() ? moved : moved.expand(sizes());
  kernels_for<OpId::copy>(device()).copy(exec_context(*this), view_of(s), view_of(*this));
  bump_version();
  if (recorded) {
    const Shape src_shape = src.sizes();
    const DType src_dtype = src.dtype();
    const Device src_device = src.device();
    record_inplace("InplaceCopyBackward", *this, {src},
                   [src_shape, src_dtype, src_device](const std::vector<Tensor>& g,
                                                      const std::vector<bool>& needs) {
                     Tensor gs;
                     if (needs[1]) gs = sum_to(g[0], src_shape).to(src_dtype).to(src_device);
                     return std::vector<Tensor>{Tensor(), gs};  // the old value is overwritten
                   });
  }
  return *this;
}

Tensor& Tensor::add_(const Tensor& other, double alpha) {
  SEG_CHECK(other.defined(), "add_: undefined operand for ", str());
  SEG_CHECK(other.dtype() == dtype() && other.device() == device(), "add_: ", other.str(), " into ",
            str());
  const bool recorded = begin_inplace("add_", *this, {other});
  Tensor o = other.sizes() == sizes() ? other.detach() : other.detach().expand(sizes());
  const ExecContext ctx = exec_context(*this);
  if (alpha != 1.0) {
    Tensor scaled = empty(sizes(), dtype(), device());
    kernels_for<OpId::copy>(device()).copy(ctx, view_of(o), view_of(scaled));
    kernels_for<OpId::mul_scalar>(device()).forward(ctx, UnaryOp::mul_scalar, alpha,
                                                    view_of(scaled), view_of(scaled));
    o = scaled;
  }
  const auto& k = kernels_for<OpId::add>(device());
  if (is_contiguous()) {
    k.forward(ctx, BinaryOp::add, view_of(*this), view_of(o), view_of(*this));
  } else {  // the kernel writes contiguous outputs only
    Tensor sum = empty(sizes(), dtype(), device());
    k.forward(ctx, BinaryOp::add, view_of(*this), view_of(o), view_of(sum));
    kernels_for<OpId::copy>(device()).copy(ctx, view_of(sum), view_of(*this));
  }
  bump_version();
  if (recorded) {
    const Shape other_shape = other.sizes();
    record_inplace(
        "InplaceAddBackward", *this, {other},
        [alpha, other_shape](const std::vector<Tensor>& g, const std::vector<bool>& needs) {
          Tensor go;
          if (needs[1]) {
            go = sum_to(g[0], other_shape);
            if (alpha != 1.0) go = mul_scalar(go, alpha);
          }
          return std::vector<Tensor>{g[0], go};
        });
  }
  return *this;
}

Tensor& Tensor::mul_(double value) {
  const bool recorded = begin_inplace("mul_", *this, {});
  const ExecContext ctx = exec_context(*this);
  const auto& k = kernels_for<OpId::mul_scalar>(device());
  if (is_contiguous()) {
    k.forward(ctx, UnaryOp::mul_scalar, value, view_of(*this), view_of(*this));
  } else {  // the kernel takes contiguous tensors only
    Tensor tmp = empty(sizes(), dtype(), device());
    kernels_for<OpId::copy>(device()).copy(ctx, view_of(*this), view_of(tmp));
    k.forward(ctx, UnaryOp::mul_scalar, value, view_of(tmp), view_of(tmp));
    kernels_for<OpId::copy>(device()).copy(ctx, view_of(tmp), view_of(*this));
  }
  bump_version();
  if (recorded) {
    record_inplace("InplaceMulBackward", *this, {},
                   [value](const std::vector<Tensor>& g, const std::vector<bool>&) {
                     return std::vector<Tensor>{mul_scalar(g[0], value)};
                   });
  }
  return *this;
}

static Tensor& fill_random(Tensor& t, const char* op, Generator& gen, RandomKind kind, double a,
                           double b) {
  SEG_CHECK(is_floating(t.dtype()), op, ": random fill of a ", dtype_name(t.dtype()), " tensor");
  const bool recorded = begin_inplace(op, t, {});
  const auto& k = kernels_for<OpId::random>(t.device());
  uint64_t call = gen.next_call();
  if (t.is_contiguous()) {
    k.fill(exec_context(t), view_of(t), kind, a, b, gen.seed(), call);
  } else {
    Tensor tmp = empty(t.sizes(), t.dtype(), t.device());
    k.fill(exec_context(t), view_of(tmp), kind, a, b, gen.seed(), call);
    kernels_for<OpId::copy>(t.device()).copy(exec_context(t), view_of(tmp), view_of(t));
  }
  t.bump_version();
  if (recorded) record_overwrite("InplaceRandomFillBackward", t);
  return t;
}

Tensor& Tensor::uniform_(Generator& gen, double low, double high) {
  return fill_random(*this, "uniform_", gen, RandomKind::uniform, low, high);
}
Tensor& Tensor::normal_(Generator& gen, double mean, double std) {
  return fill_random(*this, "normal_", gen, RandomKind::normal, mean, std);
}
Tensor& Tensor::bernoulli_(Generator& gen, double p) {
  SEG_CHECK(p >= 0.0 && p <= 1.0, "bernoulli_: probability ", p, " outside [0, 1]");
  return fill_random(*this, "bernoulli_", gen, RandomKind::bernoulli, p, 0.0);
}

double Tensor::item() const {
  SEG_CHECK(numel() == 1, "item: tensor ", str(), " has ", numel(), " elements, not 1");
  return to_vector<double>(*this)[0];
}

// ---------------------------------------------------------------------------------------------
// factories

Tensor empty(const Shape& shape, DType dtype, Device device) { return empty(shape, dtype, allocator_for(device)); }

Tensor empty(const Shape& shape, DType dtype, Allocator& allocator) {
  check_shape(shape, "empty");
  auto impl = std::make_shared<TensorImpl>();
  int64_t n = shape_numel(shape);
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(n) * dtype_size(dtype), allocator);
  impl->sizes = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.fill_(value);
  return t;
}
Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }
Tensor empty_like(const Tensor& t) { return empty(t.sizes(), t.dtype(), t.device()); }
Tensor zeros_like(const Tensor& t) { return zeros(t.sizes(), t.dtype(), t.device()); }
Tensor ones_like(const Tensor& t) { return ones(t.sizes(), t.dtype(), t.device()); }
Tensor scalar_tensor(double value, DType dtype, Device device) { return full({}, value, dtype, device); }

Tensor arange(double start, double end, double step, DType dtype, Device device) {
  SEG_CHECK(step != 0.0, "arange: step is 0");
  double count = std::ceil((end - start) / step);
  int64_t n = count > 0 ? static_cast<int64_t>(count) : 0;
  Tensor t = empty({n}, dtype, device);
  kernels_for<OpId::arange>(device).arange(exec_context(t), view_of(t), start, step);
  return t;
}

Tensor arange(int64_t n, DType dtype, Device device) {
  return arange(0.0, static_cast<double>(n), 1.0, dtype, device);
}

Tensor rand(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.uniform_(gen);
  return t;
}
Tensor randn(const Shape& shape, Generator& gen, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.normal_(gen);
  return t;
}
Tensor bernoulli(const Shape& shape, double p, Generator& gen, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  t.bernoulli_(gen, p);
  return t;
}

template <class T>
static Tensor from_host(const std::vector<T>& values, const Shape& shape, DType dtype, Device device) {
  SEG_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector: ", values.size(),
            " values for shape ", shape_str(shape));
  Tensor t = empty(shape, dtype, Device::cpu());
  if (!values.empty()) std::memcpy(t.data_ptr(), values.data(), values.size() * sizeof(T));
  return t.to(device);
}

Tensor from_vector(const std::vector<float>& v, const Shape& s, Device d) {
  return from_host(v, s, DType::f32, d);
}
Tensor from_vector(const std::vector<double>& v, const Shape& s, Device d) {
  return from_host(v, s, DType::f64, d);
}
Tensor from_vector(const std::vector<int32_t>& v, const Shape& s, Device d) {
  return from_host(v, s, DType::i32, d);
}

template <class T>
std::vector<T> to_vector(const Tensor& t) {
  SEG_CHECK(t.defined(), "to_vector: undefined tensor");
  Tensor values = t.detach().to(Device::cpu()).to(dtype_of<T>()).contiguous();
  std::vector<T> out(static_cast<size_t>(values.numel()));
  if (!out.empty()) std::memcpy(out.data(), values.data_ptr(), out.size() * sizeof(T));
  return out;
}
template std::vector<float> to_vector<float>(const Tensor&);
template std::vector<double> to_vector<double>(const Tensor&);
template std::vector<int32_t> to_vector<int32_t>(const Tensor&);
template std::vector<int64_t> to_vector<int64_t>(const Tensor&);
template std::vector<uint8_t> to_vector<uint8_t>(const Tensor&);

}  // namespace seg
