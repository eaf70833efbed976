// Gradient-check cases: softmax, log_softmax, dropout, cross_entropy, l1_loss, mse_loss and
// triplet_margin_loss.
//
// Labels are drawn from the case's generator (so every evaluation of a case sees the same ones)
// with a share of ignore_index positions; dropout builds its Generator inside the function so that
// every evaluation draws the same mask. Triplet inputs put some samples on each side of the hinge.
//
// Parity-only cases (CUDA against CPU, tests/test_cuda_parity.cpp) use large odd shapes that span
// many thread blocks and every kernel path: softmax over the class dim of (n, c, h, w) (a thread per
// position) and over the last dim (a warp or a block per row), cross entropy with 19 classes and
// ignore 255 on (2, 19, 97, 131), triplet with d = 2048 (a block per sample) and d = 129 (a warp).
#include <algorithm>
#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/support/gradcheck.h"

namespace seg::test {

namespace {

// i32 labels in [0, c), with about `ignore_share` of them set to `ignore_index`.
Tensor random_labels(const Shape& shape, int64_t c, Generator& g, double ignore_share,
                     int64_t ignore_index) {
  std::vector<double> u = to_vector<double>(rand(shape, g, DType::f64));
  std::vector<int32_t> v;
  for (double x : u) {
    if (x < ignore_share) {
      v.push_back(static_cast<int32_t>(ignore_index));
    } else {
      const double t = (x - ignore_share) / (1.0 - ignore_share);
      v.push_back(static_cast<int32_t>(std::min<int64_t>(c - 1, static_cast<int64_t>(t * c))));
    }
  }
  return from_vector(v, shape);
}

std::string reduction_str(Reduction r) {
  return r == Reduction::none ? "none" : (r == Reduction::mean ? "mean" : "sum");
}

void add_softmax_cases(std::vector<GradCase>& cases, const std::string& op, bool log) {
  auto f = [log](const Tensor& x, int dim) { return log ? log_softmax(x, dim) : softmax(x, dim); };
  struct Case {
    Shape shape;
    int dim;
  };
  for (const Case& k : std::vector<Case>{{{3, 4, 5}, 1},
                                         {{7}, 0},
                                         {{2, 3, 4, 5}, -1},
                                         {{3, 4, 5}, 0},
                                         {{4, 1}, 1},
                                         {{2, 5, 3, 3}, 1}}) {
    cases.push_back(GradCase{
        op, op + " " + shape_str(k.shape) + " dim " + std::to_string(k.dim),
        [k](Generator& g) { return std::vector<Tensor>{uniform64(k.shape, g, -3.0, 3.0)}; },
        [f, k](const std::vector<Tensor>& x) { return f(x[0], k.dim); }});
  }
  // A strided (transposed) input, and values far from 0 (the max subtraction matters).
  cases.push_back(
      GradCase{op, op + " transposed (5,4,3) dim 1",
               [](Generator& g) {
                 return std::vector<Tensor>{randn64({3, 4, 5}, g)};
               },
               [f](const std::vector<Tensor>& x) { return f(x[0].transpose(0, 2), 1); }});
  cases.push_back(GradCase{op, op + " large logits (3,6) dim 1",
                           [](Generator& g) {
                             return std::vector<Tensor>{uniform64({3, 6}, g, 40.0, 46.0)};
                           },
                           [f](const std::vector<Tensor>& x) { return f(x[0], 1); }});
}

void add_cross_entropy_cases(std::vector<GradCase>& cases) {
  struct Case {
    Shape logits;
    int64_t ignore_index;
    double ignore_share;
    bool weighted;
  };
  const std::vector<Case> shapes = {
      {{5, 4}, -100, 0.0, false},        // plain (n, c)
      {{6, 3}, 1, 0.0, true},            // ignore_index that is a class id, weights
      {{7, 5}, -100, 0.3, true},         // (n, c) with ignored positions
      {{2, 3, 4, 5}, 255, 0.25, true},   // (n, c, h, w) with 255 ignored, weights
      {{3, 4, 7}, -100, 0.2, false},     // (n, c, d1), odd sizes
      {{1, 19, 3, 2}, 255, 0.3, false},  // Cityscapes' class count
  };
  for (const Case& k : shapes) {
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      Shape label_shape = k.logits;
      label_shape.erase(label_shape.begin() + 1);
      const int64_t c = k.logits[1];
      cases.push_back(GradCase{
          "cross_entropy",
          "cross_entropy " + shape_str(k.logits) + " ignore " + std::to_string(k.ignore_index) +
              (k.weighted ? " weighted" : "") + " " + reduction_str(r),
          [k, c, label_shape](Generator& g) {
            Tensor x = randn64(k.logits, g);
            Tensor labels = random_labels(label_shape, c, g, k.ignore_share, k.ignore_index);
            Tensor w = k.weighted ? uniform64({c}, g, 0.2, 2.0, false) : Tensor();
            return std::vector<Tensor>{x, labels, w};
          },
          [k, r](const std::vector<Tensor>& in) {
            CrossEntropyOptions o;
            o.ignore_index = k.ignore_index;
            o.weight = in[2];
            o.reduction = r;
            return cross_entropy(in[0], in[1], o);
          }});
    }
  }
  // Strided logits (a permuted view) and i64 labels.
  cases.push_back(GradCase{"cross_entropy", "cross_entropy permuted (2,3,4,5) i64 labels mean",
                           [](Generator& g) {
                             return std::vector<Tensor>{
                                 randn64({2, 4, 5, 3}, g),
                                 random_labels({2, 4, 5}, 3, g, 0.2, -100).to(DType::i64)};
                           },
                           [](const std::vector<Tensor>& in) {
                             return cross_entropy(in[0].permute({0, 3, 1, 2}), in[1]);
                           }});
}

void add_pointwise_loss_cases(std::vector<GradCase>& cases, const std::string& op) {
  for (const Shape& shape : std::vector<Shape>{{3, 4, 5}, {7}, {2, 1, 3}}) {
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      cases.push_back(GradCase{op, op + " " + shape_str(shape) + " " + reduction_str(r),
                               [shape](Generator& g) {
                                 return std::vector<Tensor>{randn64(shape, g), randn64(shape, g)};
                               },
                               [op, r](const std::vector<Tensor>& in) {
                                 return op == "l1_loss" ? l1_loss(in[0], in[1], r)
                                                        : mse_loss(in[0], in[1], r);
                               }});
    }
  }
}

// anchor, positive, negative (n, d) leaves: positives at spread 0.5 around the anchor, negatives
// alternately close (spread 0.2: the sample is active) and far (spread 3: inactive), so every case
// has samples on both sides of the hinge.
std::vector<Tensor> triplet_inputs(const Shape& shape, Generator& g) {
  Tensor a = randn64(shape, g, false);
  Tensor p, n;
  {
    NoGradGuard no_grad;
    std::vector<double> spread;
    for (int64_t i = 0; i < shape[0]; ++i) spread.push_back(i % 2 == 0 ? 0.2 : 3.0);
    p = add(a, mul_scalar(randn64(shape, g, false), 0.5));
    n = add(a, mul(randn64(shape, g, false), from_vector(spread, {shape[0], 1})));
  }
  a.set_requires_grad(true);
  p.set_requires_grad(true);
  n.set_requires_grad(true);
  return {a, p, n};
}

void add_triplet_cases(std::vector<GradCase>& cases) {
  struct Case {
    Shape shape;
    int p;
    double margin;
  };
  for (const Case& k :
       std::vector<Case>{{{8, 5}, 2, 0.5}, {{8, 5}, 1, 1.0}, {{5, 3}, 2, 0.2}, {{7, 7}, 1, 0.5}}) {
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      cases.push_back(
          GradCase{"triplet_margin_loss",
                   "triplet_margin_loss " + shape_str(k.shape) + " p " + std::to_string(k.p) +
                       " margin " + std::to_string(k.margin) + " " + reduction_str(r),
                   [k](Generator& g) { return triplet_inputs(k.shape, g); },
                   [k, r](const std::vector<Tensor>& in) {
                     return triplet_margin_loss(in[0], in[1], in[2], k.margin, k.p, 1e-6, r);
                   }});
    }
  }
}

GradCase parity(GradCase c) {
  c.name = "parity " + c.name;
  c.parity_only = true;
  return c;
}

void add_softmax_parity_cases(std::vector<GradCase>& cases, const std::string& op, bool log) {
  auto f = [log](const Tensor& x, int dim) { return log ? log_softmax(x, dim) : softmax(x, dim); };
  struct Case {
    Shape shape;
    int dim;
    double low, high;
  };
  for (const Case& k : std::vector<Case>{
           {{3, 19, 61, 53}, 1, -6.0, 6.0},    // class dim of (n, c, h, w): a thread per position
           {{2, 37, 33, 29}, -1, -3.0, 3.0},   // last dim, short rows: a warp per row
           {{7, 3, 2063}, -1, -3.0, 3.0},      // last dim, long rows: a block per row
           {{45, 999}, 0, -3.0, 3.0},          // first dim
           {{5, 19, 131}, 1, 30.0, 40.0},      // far from 0: the max subtraction matters
           {{301, 1}, 1, -3.0, 3.0},           // a dim of one
       }) {
    cases.push_back(parity(GradCase{
        op, op + " " + shape_str(k.shape) + " dim " + std::to_string(k.dim),
        [k](Generator& g) { return std::vector<Tensor>{uniform64(k.shape, g, k.low, k.high)}; },
        [f, k](const std::vector<Tensor>& x) { return f(x[0], k.dim); }}));
  }
  cases.push_back(parity(GradCase{op, op + " permuted (2,61,53,19) dim 1",
                                  [](Generator& g) { return std::vector<Tensor>{randn64({2, 61, 53, 19}, g)}; },
                                  [f](const std::vector<Tensor>& x) { return f(x[0].permute({0, 3, 1, 2}), 1); }}));
}

void add_cross_entropy_parity_cases(std::vector<GradCase>& cases) {
  struct Case {
    Shape logits;
    int64_t ignore_index;
    double ignore_share;
    bool weighted;
  };
  const std::vector<Case> shapes = {
      {{2, 19, 97, 131}, 255, 0.2, false},  // Cityscapes classes, ignore 255
      {{2, 19, 97, 131}, 255, 0.2, true},
      {{1003, 37}, -100, 0.1, false},       // (n, c): inner 1
      {{3, 5, 4097}, -100, 0.0, true},      // (n, c, d1), nothing ignored
      {{2, 7, 33, 1}, 255, 1.0, false},     // every position ignored
  };
  for (const Case& k : shapes) {
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      // Every position ignored: 'mean' is 0 / 0 = NaN on both backends; compared anyway for the
      // gradient (zero) through the other reductions.
      if (k.ignore_share >= 1.0 && r == Reduction::mean) continue;
      Shape label_shape = k.logits;
      label_shape.erase(label_shape.begin() + 1);
      const int64_t c = k.logits[1];
      cases.push_back(parity(GradCase{
          "cross_entropy",
          "cross_entropy " + shape_str(k.logits) + " ignore " + std::to_string(k.ignore_index) +
              (k.weighted ? " weighted" : "") + " " + reduction_str(r),
          [k, c, label_shape](Generator& g) {
            Tensor x = uniform64(k.logits, g, -4.0, 4.0);
            Tensor labels = random_labels(label_shape, c, g, k.ignore_share, k.ignore_index);
            Tensor w = k.weighted ? uniform64({c}, g, 0.2, 2.0, false) : Tensor();
            return std::vector<Tensor>{x, labels, w};
          },
          [k, r](const std::vector<Tensor>& in) {
            CrossEntropyOptions o;
            o.ignore_index = k.ignore_index;
            o.weight = in[2];
            o.reduction = r;
            return cross_entropy(in[0], in[1], o);
          }}));
    }
  }
  // Strided logits (a permuted view) and i64 labels.
  cases.push_back(parity(GradCase{"cross_entropy", "cross_entropy permuted (2,19,61,53) i64 labels mean",
                                  [](Generator& g) {
                                    return std::vector<Tensor>{
                                        randn64({2, 61, 53, 19}, g),
                                        random_labels({2, 61, 53}, 19, g, 0.2, 255).to(DType::i64)};
                                  },
                                  [](const std::vector<Tensor>& in) {
                                    CrossEntropyOptions o;
                                    o.ignore_index = 255;
                                    return cross_entropy(in[0].permute({0, 3, 1, 2}), in[1], o);
                                  }}));
}

void add_triplet_parity_cases(std::vector<GradCase>& cases) {
  struct Case {
    Shape shape;
    int p;
    double margin;
  };
  for (const Case& k : std::vector<Case>{{{37, 2048}, 2, 1.0},
                                         {{37, 2048}, 1, 20.0},
                                         {{301, 129}, 2, 1.0},
                                         {{301, 129}, 1, 5.0},
                                         {{3, 1}, 2, 0.5}}) {
    for (Reduction r : {Reduction::none, Reduction::mean, Reduction::sum}) {
      cases.push_back(parity(
          GradCase{"triplet_margin_loss",
                   "triplet_margin_loss " + shape_str(k.shape) + " p " + std::to_string(k.p) +
                       " margin " + std::to_string(k.margin) + " " + reduction_str(r),
                   [k](Generator& g) { return triplet_inputs(k.shape, g); },
                   [k, r](const std::vector<Tensor>& in) {
                     return triplet_margin_loss(in[0], in[1], in[2], k.margin, k.p, 1e-6, r);
                   }}));
    }
  }
}

}  // namespace

void add_loss_grad_cases(std::vector<GradCase>& cases) {
  add_softmax_cases(cases, "softmax", false);
  add_softmax_cases(cases, "log_softmax", true);

  for (const auto& [shape, p] : std::vector<std::pair<Shape, double>>{
           {{3, 4, 5}, 0.3}, {{17}, 0.5}, {{2, 3, 3}, 0.9}, {{4, 3}, 1.0}}) {
    cases.push_back(
        GradCase{"dropout", "dropout " + shape_str(shape) + " p " + std::to_string(p),
                 [shape](Generator& g) { return std::vector<Tensor>{randn64(shape, g)}; },
                 [p](const std::vector<Tensor>& in) {
                   Generator gen(42);  // the same mask at every evaluation
                   return dropout(in[0], p, /*training=*/true, gen);
                 }});
  }

  add_cross_entropy_cases(cases);
  add_pointwise_loss_cases(cases, "l1_loss");
  add_pointwise_loss_cases(cases, "mse_loss");
  add_triplet_cases(cases);

  add_softmax_parity_cases(cases, "softmax", false);
  add_softmax_parity_cases(cases, "log_softmax", true);
  add_cross_entropy_parity_cases(cases);
  add_triplet_parity_cases(cases);
}

}  // namespace seg::test
