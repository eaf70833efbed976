// Gradient-check cases: batch_norm2d, max_pool2d, adaptive_avg_pool2d, upsample_bilinear2d.
//
// Batch norm is checked for x, weight and bias in training mode (batch statistics: the x gradient
// includes the mean and variance terms) and evaluation mode (running statistics, which are
// constant inputs that do not require grad). In training mode the running statistics, when given,
// are updated by every evaluation of the function; that does not change the output.
// Max pooling uses random inputs: ties (kinks) then have probability zero, and a window whose
// maximum a perturbation of h would change is skipped by the harness as a kink.
//
// Parity-only cases (CUDA against CPU, tests/test_cuda_parity.cpp) use large odd shapes that span
// many thread blocks and are not multiples of block sizes, transposed (strided) inputs, every
// kernel path (warp- and thread-per-bin adaptive pooling, the fused and the two-pass upsampling
// backward) and full-HD-like upsampling.
#include <string>

#include "engine/ops.h"
#include "tests/support/gradcheck.h"

namespace seg::test {

namespace {

struct BnSetup {
  Shape shape;
  bool training;
  bool weight;
  bool bias;
  bool running;  // pass running statistics (always in evaluation mode)
};

GradCase batch_norm_case(const BnSetup& b) {
  std::string name = std::string(b.training ? "train " : "eval ") + shape_str(b.shape) +
                     (b.weight ? " weight" : "") + (b.bias ? " bias" : "") +
                     (b.weight || b.bias ? "" : " no affine") + (b.running ? " running stats" : "");
  return GradCase{
      "batch_norm2d", name,
      [b](Generator& g) {
        const int64_t c = b.shape[1];
        return std::vector<Tensor>{
            uniform64(b.shape, g, -2.0, 3.0),
            b.weight ? uniform64({c}, g, 0.5, 1.5) : Tensor(),
            b.bias ? randn64({c}, g) : Tensor(),
            b.running ? randn64({c}, g, /*requires_grad=*/false) : Tensor(),
            b.running ? uniform64({c}, g, 0.5, 2.0, /*requires_grad=*/false) : Tensor()};
      },
      [b](const std::vector<Tensor>& x) {
        return batch_norm2d(x[0], x[1], x[2], x[3], x[4], b.training, 0.1, 1e-5);
      }};
}

GradCase max_pool_case(const Shape& shape, const MaxPool2dOptions& o) {
  std::string name = shape_str(shape) + " kernel (" + std::to_string(o.kernel_h) + "," +
                     std::to_string(o.kernel_w) + ") stride (" + std::to_string(o.stride_h) + "," +
                     std::to_string(o.stride_w) + ") pad (" + std::to_string(o.pad_h) + "," +
                     std::to_string(o.pad_w) + ")" + (o.ceil_mode ? " ceil" : "");
  return GradCase{"max_pool2d", name,
                  [shape](Generator& g) { return std::vector<Tensor>{randn64(shape, g)}; },
                  [o](const std::vector<Tensor>& x) { return max_pool2d(x[0], o); }};
}

GradCase adaptive_case(const Shape& shape, int64_t p, int64_t q) {
  return GradCase{"adaptive_avg_pool2d",
                  shape_str(shape) + " to (" + std::to_string(p) + "," + std::to_string(q) + ")",
                  [shape](Generator& g) { return std::vector<Tensor>{randn64(shape, g)}; },
                  [p, q](const std::vector<Tensor>& x) { return adaptive_avg_pool2d(x[0], p, q); }};
}

GradCase upsample_case(const Shape& shape, int64_t p, int64_t q, bool align_corners) {
  return GradCase{"upsample_bilinear2d",
                  shape_str(shape) + " to (" + std::to_string(p) + "," + std::to_string(q) +
                      ") align_corners=" + (align_corners ? "true" : "false"),
                  [shape](Generator& g) { return std::vector<Tensor>{randn64(shape, g)}; },
                  [p, q, align_corners](const std::vector<Tensor>& x) {
                    return upsample_bilinear2d(x[0], p, q, align_corners);
                  }};
}

GradCase parity(GradCase c) {
  c.name = "parity " + c.name;
  c.parity_only = true;
  return c;
}

// The same op on x transposed in its last two dims (a strided view): shape is the stored layout.
GradCase transposed_case(GradCase c) {
  c.name += " of a transposed input";
  auto fn = c.fn;
  c.fn = [fn](const std::vector<Tensor>& x) {
    std::vector<Tensor> t = x;
    t[0] = x[0].transpose(2, 3);
    return fn(t);
  };
  return c;
}

void add_norm_pool_parity_cases(std::vector<GradCase>& cases) {
  for (const BnSetup& b : std::vector<BnSetup>{
           {{3, 37, 61, 53}, true, true, true, true},
           {{2, 7, 45, 31}, true, false, false, false},
           {{37, 129}, true, true, true, true},
           {{5, 19, 33, 17}, false, true, true, true},
           {{301, 67}, false, true, false, true},
       }) {
    cases.push_back(parity(batch_norm_case(b)));
  }

  cases.push_back(parity(max_pool_case({3, 37, 61, 53}, MaxPool2dOptions::make(2, 2))));
  cases.push_back(parity(max_pool_case({2, 19, 65, 67}, MaxPool2dOptions::make(3, 2, 1))));  // stem
  cases.push_back(parity(max_pool_case({2, 5, 63, 61}, MaxPool2dOptions::make(3, 2, 1, true))));
  cases.push_back(parity(max_pool_case({1, 7, 45, 51}, MaxPool2dOptions::make(3, 1, 1))));  // overlap
  cases.push_back(parity(max_pool_case({2, 3, 50, 77}, MaxPool2dOptions{3, 2, 2, 3, 1, 1, true})));
  cases.push_back(parity(transposed_case(max_pool_case({2, 9, 41, 29}, MaxPool2dOptions::make(2, 2)))));

  cases.push_back(parity(adaptive_case({2, 67, 33, 47}, 1, 1)));    // global: a warp per output
  cases.push_back(parity(adaptive_case({3, 37, 61, 53}, 5, 7)));    // large bins: a warp per output
  cases.push_back(parity(adaptive_case({4, 33, 29, 65}, 6, 6)));    // small bins: a thread per output
  cases.push_back(parity(adaptive_case({2, 19, 17, 23}, 31, 45)));  // output larger: bins overlap
  cases.push_back(parity(transposed_case(adaptive_case({2, 5, 37, 41}, 3, 4))));

  for (bool align : {false, true}) {
    cases.push_back(parity(upsample_case({2, 19, 65, 129}, 513, 1025, align)));  // full-HD-like logits
    cases.push_back(parity(upsample_case({2, 16, 64, 96}, 128, 192, align)));    // UNet's factor 2
    cases.push_back(parity(upsample_case({3, 7, 97, 131}, 41, 53, align)));      // downsampling
    cases.push_back(parity(upsample_case({2, 5, 37, 300}, 71, 150, align)));     // up in h, down in w
    cases.push_back(parity(upsample_case({3, 5, 1, 1}, 37, 41, align)));         // from one pixel
    cases.push_back(parity(upsample_case({1, 2, 3, 3001}, 4, 6007, align)));     // too wide: 2 passes
    // Wide input rows: shared memory holds only 5 accumulator rows, so bands of 5 and 4.
    cases.push_back(parity(upsample_case({1, 2, 9, 2000}, 17, 1000, align)));
    cases.push_back(parity(transposed_case(upsample_case({2, 3, 29, 17}, 61, 45, align))));
  }
}

}  // namespace

void add_norm_pool_grad_cases(std::vector<GradCase>& cases) {
  for (const BnSetup& b : std::vector<BnSetup>{
           {{3, 4, 3, 5}, true, true, true, true},
           {{4, 3, 2, 3}, true, false, false, false},
           {{3, 2, 3, 3}, true, true, false, false},
           {{6, 4}, true, true, true, true},
           {{5, 3}, true, false, false, true},
           {{1, 3, 3, 4}, true, true, true, true},  // batch of one: statistics over space only
           {{2, 3, 4, 5}, false, true, true, true},
           {{2, 3, 4, 5}, false, false, false, true},
           {{5, 4}, false, true, true, true},
           {{1, 2, 3, 3}, false, false, true, true},
       }) {
    cases.push_back(batch_norm_case(b));
  }

  cases.push_back(max_pool_case({2, 3, 6, 8}, MaxPool2dOptions::make(2, 2)));
  cases.push_back(max_pool_case({2, 2, 7, 9}, MaxPool2dOptions::make(3, 2, 1)));  // ResNet stem
  cases.push_back(max_pool_case({1, 2, 7, 9}, MaxPool2dOptions::make(2, 2, 0, true)));
  cases.push_back(max_pool_case({1, 2, 8, 7}, MaxPool2dOptions::make(3, 2, 1, true)));
  cases.push_back(max_pool_case({1, 2, 5, 5}, MaxPool2dOptions::make(3, 1, 1)));  // heavy overlap
  cases.push_back(max_pool_case({1, 2, 7, 6}, MaxPool2dOptions{3, 2, 2, 1, 1, 0, false}));
  cases.push_back(max_pool_case({2, 1, 5, 9}, MaxPool2dOptions{2, 3, 1, 2, 1, 1, true}));

  cases.push_back(adaptive_case({2, 3, 7, 9}, 1, 1));
  cases.push_back(adaptive_case({2, 3, 7, 9}, 3, 2));
  cases.push_back(adaptive_case({2, 3, 7, 9}, 5, 7));
  cases.push_back(adaptive_case({1, 2, 3, 5}, 5, 7));  // output larger than input: bins overlap
  cases.push_back(adaptive_case({1, 2, 9, 11}, 4, 4));

  for (bool align : {false, true}) {
    cases.push_back(upsample_case({2, 3, 5, 7}, 11, 13, align));
    cases.push_back(upsample_case({1, 2, 4, 4}, 8, 8, align));
    cases.push_back(upsample_case({2, 3, 5, 7}, 3, 4, align));   // downsampling
    cases.push_back(upsample_case({1, 2, 9, 7}, 4, 11, align));  // down in h, up in w
    cases.push_back(upsample_case({2, 3, 5, 7}, 1, 1, align));
    cases.push_back(upsample_case({1, 2, 5, 7}, 5, 7, align));  // same size
    cases.push_back(upsample_case({1, 2, 1, 1}, 3, 2, align));  // from a single pixel
  }

  add_norm_pool_parity_cases(cases);
}

}  // namespace seg::test
