// CPU kernels of the triplet margin loss: forward and backward, one pass over the inputs each.
//
// Design notes
// - Samples are independent: threads split the samples, each sample's norms accumulate in f64 in
//   a fixed order (kLanes interleaved partial sums), so results do not depend on the thread count.
// - p is a template parameter so that the inner loops are branch-free and vectorise.
// - The backward recomputes a - p + eps and a - n + eps instead of reading saved (n, d) buffers,
//   and writes all three gradients in the same sweep. The per-sample math (norm terms, hinge,
//   norm gradient) lives in kernels/common/loss.h, shared with the CUDA kernels.
#include <cmath>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

// Lanes of the per-sample norm sums: a fixed summation order (deterministic) that the compiler
// maps onto vector registers without reassociating.
constexpr int kLanes = 8;

// d(a, p) and d(a, n) of one sample, accumulated in f64.
template <class T, int P>
void triplet_distances(const T* a, const T* p, const T* n, int64_t d, double eps, double& dist_ap,
                       double& dist_an) {
  double sap[kLanes] = {}, san[kLanes] = {};
  int64_t k = 0;
  for (; k + kLanes <= d; k += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double ak = static_cast<double>(a[k + l]);
      sap[l] += triplet_norm_term(ak - static_cast<double>(p[k + l]) + eps, P);
      san[l] += triplet_norm_term(ak - static_cast<double>(n[k + l]) + eps, P);
    }
  }
  for (; k < d; ++k) {
    const double ak = static_cast<double>(a[k]);
    sap[0] += triplet_norm_term(ak - static_cast<double>(p[k]) + eps, P);
    san[0] += triplet_norm_term(ak - static_cast<double>(n[k]) + eps, P);
  }
  double acc_ap = 0.0, acc_an = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    acc_ap += sap[l];
    acc_an += san[l];
  }
  dist_ap = triplet_norm_finish(acc_ap, P);
  dist_an = triplet_norm_finish(acc_an, P);
}

template <class T, int P>
void triplet_forward_typed(const TripletShape& s, const T* a, const T* p, const T* n, T* loss,
                           T* dist_ap, T* dist_an) {
  const int64_t d = s.d;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(3 * d, 1));
  parallel_for(s.n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double dap_acc, dan_acc;
      triplet_distances<T, P>(a + i * d, p + i * d, n + i * d, d, s.eps, dap_acc, dan_acc);
      const T dap = static_cast<T>(dap_acc);
      const T dan = static_cast<T>(dan_acc);
      dist_ap[i] = dap;
      dist_an[i] = dan;
      const double h = triplet_hinge(static_cast<double>(dap), static_cast<double>(dan), s.margin);
      loss[i] = static_cast<T>(h < 0.0 ? 0.0 : h);  // clamp_min: NaN stays NaN
    }
  });
}

void triplet_forward(const ExecContext&, const TripletShape& shape, const View& anchor,
                     const View& positive, const View& negative, const View& loss,
                     const View& dist_ap, const View& dist_an) {
  SEG_CPU_DISPATCH_FLOAT(anchor.dtype, "triplet_margin_loss", T, {
    auto* fn = shape.p == 1 ? &triplet_forward_typed<T, 1> : &triplet_forward_typed<T, 2>;
    fn(shape, anchor.ptr<const T>(), positive.ptr<const T>(), negative.ptr<const T>(),
       loss.ptr<T>(), dist_ap.ptr<T>(), dist_an.ptr<T>());
  });
}

// d ||t||_p / dt as factor * t (p = 2, factor = 1 / dist or 0 at dist 0) or sign(t) (p = 1).
// The same values as triplet_norm_grad, in a form whose loop vectorises.
template <int P>
inline double norm_grad(double t, double inv_dist) {
  if constexpr (P == 1) {
    return static_cast<double>(t > 0.0) - static_cast<double>(t < 0.0);
  } else {
    return t * inv_dist;
  }
}

template <class T, int P>
void triplet_backward_typed(const TripletShape& s, const T* a, const T* p, const T* n,
                            const T* dist_ap, const T* dist_an, const T* scale,
                            bool scale_per_sample, T* ga, T* gp, T* gn) {
  const int64_t d = s.d;
  const double eps = s.eps;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(6 * d, 1));
  parallel_for(s.n, grain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const double dap = static_cast<double>(dist_ap[i]);
      const double dan = static_cast<double>(dist_an[i]);
      const int64_t off = i * d;
      // Inactive samples (hinge < 0) get g = 0: the same sweep then writes their zeros.
      const double g = triplet_active(triplet_hinge(dap, dan, s.margin))
                           ? static_cast<double>(scale_per_sample ? scale[i] : scale[0])
                           : 0.0;
      // Zero distance: zero norm gradient (PyTorch's masked_fill for p = 2).
      const double inv_ap = dap == 0.0 ? 0.0 : 1.0 / dap;
      const double inv_an = dan == 0.0 ? 0.0 : 1.0 / dan;
      const T* pa = a + off;
      const T* pp = p + off;
      const T* pq = n + off;
      // loss = d(a, p) - d(a, n) + margin: d/da = u_ap - u_an, d/dp = -u_ap, d/dn = u_an.
      if (ga && gp && gn) {
        T* oa = ga + off;
        T* op = gp + off;
        T* on = gn + off;
        for (int64_t k = 0; k < d; ++k) {
          const double ak = static_cast<double>(pa[k]);
          const double u_ap = g * norm_grad<P>(ak - static_cast<double>(pp[k]) + eps, inv_ap);
          const double u_an = g * norm_grad<P>(ak - static_cast<double>(pq[k]) + eps, inv_an);
          oa[k] = static_cast<T>(u_ap - u_an);
          op[k] = static_cast<T>(-u_ap);
          on[k] = static_cast<T>(u_an);
        }
        continue;
      }
      for (int64_t k = 0; k < d; ++k) {  // some gradients not needed
        const double ak = static_cast<double>(pa[k]);
        const double u_ap = g * norm_grad<P>(ak - static_cast<double>(pp[k]) + eps, inv_ap);
        const double u_an = g * norm_grad<P>(ak - static_cast<double>(pq[k]) + eps, inv_an);
        if (ga) ga[off + k] = static_cast<T>(u_ap - u_an);
        if (gp) gp[off + k] = static_cast<T>(-u_ap);
        if (gn) gn[off + k] = static_cast<T>(u_an);
      }
    }
  });
}

void triplet_backward(const ExecContext&, const TripletShape& shape, const View& anchor,
                      const View& positive, const View& negative, const View& dist_ap,
                      const View& dist_an, const View& scale, const View& ga, const View& gp,
                      const View& gn) {
  SEG_CPU_DISPATCH_FLOAT(anchor.dtype, "triplet_margin_loss backward", T, {
    auto* fn = shape.p == 1 ? &triplet_backward_typed<T, 1> : &triplet_backward_typed<T, 2>;
    fn(shape, anchor.ptr<const T>(), positive.ptr<const T>(), negative.ptr<const T>(),
       dist_ap.ptr<const T>(), dist_an.ptr<const T>(), scale.ptr<const T>(), scale.numel() != 1,
       ga.defined() ? ga.ptr<T>() : nullptr, gp.defined() ? gp.ptr<T>() : nullptr,
       gn.defined() ? gn.ptr<T>() : nullptr);
  });
}

const TripletKernels kTriplet{&triplet_forward, &triplet_backward};

}  // namespace

void register_loss_kernels(KernelRegistry& r) {
  r.set<OpId::triplet_margin_loss>(DeviceType::cpu, &kTriplet);
}

}  // namespace seg::cpu
