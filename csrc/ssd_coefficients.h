// Per-sample coefficients of the SSD estimator from the four sums of one reading sweep.
// Written once for the CPU kernel (ssd_cpu.cpp) and the CUDA kernels (cuda/ssd_kernels.cuh):
// the same float64 operations in the same order, so equal sums give equal bits. That holds
// because no compiler fuses a*b+c here: the CPU and emulation builds use -ffp-contract=off
// and nvcc --fmad=false (csrc/build_config.json); a test reads the SASS (test_sass.py).
//
// Rules (the same as ssd_toolkit/_ssd_math.py):
//   r      = <c,n> / ||n||^2, or 0 when ||n|| = 0;
//   et2    = ||c||^2 - r <c,n>   (never <c,n>^2: float64 data from 1e-150 to 1e150 neither
//            overflows nor underflows), clamped at 0, NaN kept;
//   scale  = ||h|| / sqrt(et2), or 0 when et2 <= kCollinearRtol2 ||c||^2 (degenerate);
//   a non-finite sum makes the output factor NaN (the whole rescaled sample is NaN).
#pragma once

#include <cmath>

#include "ssd_core.h"

#if defined(__CUDACC__)
#define SSD_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SSD_HOST_DEVICE inline
#endif

namespace ssd {

// ||h||^2, ||c||^2, <c,n>, ||n||^2 of one sample (h = eps_cond - eps_uncond, c = eps_cond,
// n = noise).
struct Sums {
  double hh, cc, cn, nn;
};

struct Coefficients {
  double r;          // projection ratio
  double et2;        // ||eps_tilde||^2
  double scale;      // ||h|| / ||eps_tilde||, 0 when degenerate
  double out_scale;  // scale, or NaN when a sum is not finite
};

SSD_HOST_DEVICE Coefficients coefficients(const Sums& s) {
  using std::isfinite;
  using std::isnan;
  using std::sqrt;
  const double r = s.nn > 0.0 ? s.cn / s.nn : 0.0;
  double et2 = s.cc - r * s.cn;
  if (et2 < 0.0) et2 = 0.0;  // rounding below 0 (NaN compares false and stays)
  const bool degenerate = et2 <= kCollinearRtol2 * s.cc;
  const double scale = degenerate ? 0.0 : sqrt(s.hh) / sqrt(et2);
  const bool finite = isfinite(s.hh) && isfinite(s.cc) && isfinite(s.cn) && isfinite(s.nn);
  const double nan = __builtin_nan("");
  return Coefficients{r, et2, scale, finite ? scale : nan};
}

// Stat i of kNumStats (r, h_norm, eps_tilde_norm, eps_cond_norm, noise_norm, scale).
SSD_HOST_DEVICE double stat(const Sums& s, const Coefficients& k, int i) {
  using std::sqrt;
  switch (i) {
    case 0: return k.r;
    case 1: return sqrt(s.hh);
    case 2: return sqrt(k.et2);
    case 3: return sqrt(s.cc);
    case 4: return sqrt(s.nn);
    default: return k.scale;
  }
}

}  // namespace ssd
