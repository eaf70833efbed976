// Gradient-check cases: views, copies, padding and concatenation.
#include "engine/ops.h"
#include "tests/support/gradcheck.h"

namespace seg::test {

namespace {
std::vector<Tensor> one_input(Generator& g) { return {randn64({2, 3, 4}, g)}; }

// Parity-only cases (CUDA vs CPU): copies of every layout the CUDA copy kernel distinguishes, at
// sizes that span many blocks and are not multiples of the tile (32) or vector (4) widths.
GradCase parity_case(const std::string& op, const std::string& name, const Shape& shape,
                     std::function<Tensor(const std::vector<Tensor>&)> fn) {
  GradCase c{op, name + " [parity]", [shape](Generator& g) { return std::vector<Tensor>{randn64(shape, g)}; },
             std::move(fn)};
  c.parity_only = true;
  return c;
}

const Shape kOdd = {3, 37, 61, 53};

void add_shape_parity_cases(std::vector<GradCase>& cases) {
  // Permutes: the tiled transpose (a dim contiguous in the destination, another in the source).
  cases.push_back(parity_case("permute", "permute {0,3,1,2} of " + shape_str(kOdd), kOdd,
                              [](const std::vector<Tensor>& x) { return x[0].permute({0, 3, 1, 2}).contiguous(); }));
  cases.push_back(parity_case("permute", "permute {3,2,1,0} of " + shape_str(kOdd), kOdd,
                              [](const std::vector<Tensor>& x) { return x[0].permute({3, 2, 1, 0}).contiguous(); }));
  cases.push_back(parity_case("permute", "transpose (2,3) of (2,3,1000,33)", {2, 3, 1000, 33},
                              [](const std::vector<Tensor>& x) { return x[0].transpose(2, 3).contiguous(); }));
  cases.push_back(parity_case("permute", "permute {1,0} of (5,70001): a short side below a tile", {5, 70001},
                              [](const std::vector<Tensor>& x) { return x[0].transpose(0, 1).contiguous(); }));
  // Narrow: strided rows.
  cases.push_back(parity_case("narrow", "narrow and slice of " + shape_str(kOdd), kOdd,
                              [](const std::vector<Tensor>& x) {
                                Tensor a = x[0].narrow(3, 1, 50);   // rows of 50 at odd offsets
                                Tensor b = x[0].narrow(2, 7, 33).narrow(3, 4, 48);
                                Tensor c = x[0].select(1, 36);
                                return cat({a.flatten(), b.flatten(), c.flatten()}, 0);
                              }));
  // Expand: broadcast sources (stride 0 inner and outer).
  cases.push_back(parity_case("expand", "expand (37,1,53) -> (3,37,61,53)", {37, 1, 53},
                              [](const std::vector<Tensor>& x) { return x[0].expand({3, 37, 61, 53}).contiguous(); }));
  cases.push_back(parity_case("expand", "expand (37,1) -> (3,37,4099)", {37, 1},
                              [](const std::vector<Tensor>& x) { return x[0].expand({3, 37, 4099}).contiguous(); }));
  // Copies: dtype round trips (f64, bf16, f16: round to nearest even, both ways).
  cases.push_back(parity_case("copy", "f32 -> f64 -> f32, bf16 and f16 round trips of " + shape_str(kOdd), kOdd,
                              [](const std::vector<Tensor>& x) {
                                Tensor a = x[0].to(DType::f64).to(DType::f32);
                                Tensor b = x[0].to(DType::bf16).to(DType::f32);
                                Tensor c = x[0].to(DType::f16).to(DType::f32);
                                return cat({a.flatten(), b.flatten(), c.flatten()}, 0);
                              }));
  cases.push_back(parity_case("copy", "clone of a permuted view with a dtype change", kOdd,
                              [](const std::vector<Tensor>& x) {
                                return x[0].permute({2, 0, 3, 1}).to(DType::f64).to(DType::f32);
                              }));
  // Destination views: cat and pad write into narrowed slices of a larger tensor.
  cases.push_back(GradCase{"cat", "cat of three (3,*,61,53) along dim 1 [parity]",
                           [](Generator& g) {
                             return std::vector<Tensor>{randn64({3, 5, 61, 53}, g), randn64({3, 37, 61, 53}, g),
                                                        randn64({3, 2, 61, 53}, g)};
                           },
                           [](const std::vector<Tensor>& x) { return cat({x[0], x[1], x[2]}, 1); }, kGradCheckTolerance,
                           true});
  cases.push_back(GradCase{"cat", "cat along the last dim of (3,37,61,*) [parity]",
                           [](Generator& g) {
                             return std::vector<Tensor>{randn64({3, 37, 61, 53}, g), randn64({3, 37, 61, 3}, g)};
                           },
                           [](const std::vector<Tensor>& x) { return cat({x[0], x[1]}, 3); }, kGradCheckTolerance,
                           true});
  cases.push_back(parity_case("pad2d", "pad {3,4,1,2} value 0.25 and crop {-2,0,1,-3} of " + shape_str(kOdd), kOdd,
                              [](const std::vector<Tensor>& x) {
                                Tensor a = pad2d(x[0], {3, 4, 1, 2}, 0.25);
                                Tensor b = pad2d(x[0], {-2, 0, 1, -3});
                                return cat({a.flatten(), b.flatten()}, 0);
                              }));
  cases.push_back(parity_case("view", "reshape of a transposed view of " + shape_str(kOdd), kOdd,
                              [](const std::vector<Tensor>& x) { return x[0].transpose(0, 3).reshape({53, -1}); }));
}
}  // namespace

void add_shape_grad_cases(std::vector<GradCase>& cases) {
  // Each view is followed by a multiplication with a fixed non-uniform tensor so that the output's
  // layout matters to the gradient.
  cases.push_back(GradCase{"view", "view (2,3,4) -> (6,4) and reshape of a transposed view",
                           one_input, [](const std::vector<Tensor>& x) {
                             Tensor a = x[0].view({6, 4});
                             Tensor b = x[0].transpose(0, 2).reshape({4, 6});
                             return cat({a.flatten(), b.flatten()}, 0);
                           }});
  cases.push_back(GradCase{"permute", "permute {2,0,1}", one_input, [](const std::vector<Tensor>& x) {
                             return x[0].permute({2, 0, 1}).contiguous();
                           }});
  cases.push_back(GradCase{"narrow", "narrow, slice and select", one_input,
                           [](const std::vector<Tensor>& x) {
                             Tensor a = x[0].narrow(1, 1, 2);
                             Tensor b = x[0].slice(2, -3, -1);
                             Tensor c = x[0].select(0, 1);
                             return cat({a.flatten(), b.flatten(), c.flatten()}, 0);
                           }});
  cases.push_back(GradCase{"expand", "expand (3,1) -> (2,3,4)",
                           [](Generator& g) { return std::vector<Tensor>{randn64({3, 1}, g)}; },
                           [](const std::vector<Tensor>& x) { return x[0].expand({2, 3, 4}).contiguous(); }});
  cases.push_back(GradCase{"copy", "contiguous of a transpose, clone, f32 round trip", one_input,
                           [](const std::vector<Tensor>& x) {
                             Tensor a = x[0].transpose(1, 2).contiguous();
                             Tensor b = x[0].clone();
                             return cat({a.flatten(), b.flatten()}, 0);
                           }});
  cases.push_back(GradCase{"pad2d", "pad {1,2,0,3} value 0.5 and crop {-1,0,1,-1}",
                           [](Generator& g) { return std::vector<Tensor>{randn64({2, 2, 3, 4}, g)}; },
                           [](const std::vector<Tensor>& x) {
                             Tensor a = pad2d(x[0], {1, 2, 0, 3}, 0.5);
                             Tensor b = pad2d(x[0], {-1, 0, 1, -1});
                             return cat({a.flatten(), b.flatten()}, 0);
                           }});
  cases.push_back(GradCase{"cat", "cat of three along dim 1",
                           [](Generator& g) {
                             return std::vector<Tensor>{randn64({2, 1, 3}, g), randn64({2, 4, 3}, g),
                                                        randn64({2, 2, 3}, g)};
                           },
                           [](const std::vector<Tensor>& x) { return cat({x[0], x[1], x[2]}, 1); }});

  add_shape_parity_cases(cases);
}

}  // namespace seg::test
