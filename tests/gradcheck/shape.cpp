// Gradient-check cases: views, copies, padding and concatenation.
#include "engine/ops.h"
#include "tests/support/gradcheck.h"

namespace seg::test {

namespace {
std::vector<Tensor> one_input(Generator& g) { return {randn64({2, 3, 4}, g)}; }
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
}

}  // namespace seg::test
