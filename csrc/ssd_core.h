// Framework-free core of the Stable Score Distillation estimator (Algorithm 1).
//
// One plain parameter struct, one CPU entry point and (in CUDA builds) one CUDA entry
// point. Nothing here knows about Python, NumPy or PyTorch; the pybind11 glue passes raw
// pointers. Semantics match ssd_toolkit/reference.py exactly (see its docstring).
#pragma once

#include <cstdint>

namespace ssd {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2, kFloat64 = 3 };

struct EstimateParams {
  // [B, N] C-contiguous arrays of `dtype`.
  const void* eps_cond;
  const void* eps_uncond;
  const void* noise;
  void* out;
  // [B] timesteps, or nullptr: every sample has t_scalar (host memory for CPU, device
  // memory for CUDA).
  const double* t;
  double t_scalar;
  // nullptr or [6][B] row-major float64: r, h_norm, eps_tilde_norm, eps_cond_norm,
  // noise_norm, scale.
  double* stats;
  int64_t B;
  int64_t N;
  DType dtype;
  double M;
};

// ||eps_tilde||^2 <= kCollinearRtol2 * ||eps_cond||^2 marks a degenerate direction
// (same as ssd_toolkit._ssd_math.COLLINEAR_RTOL2; the rules: ssd_coefficients.h).
constexpr double kCollinearRtol2 = 1e-12;
constexpr int kNumStats = 6;

// Runs the estimator on host memory. num_threads <= 0: hardware concurrency. Results do
// not depend on num_threads (fixed partitioning, partial sums reduced in fixed order).
// Throws std::invalid_argument for negative sizes, an unknown dtype or null arrays.
void estimate_cpu(const EstimateParams& p, int num_threads);

// Checks sizes, dtype, pointers, and that out and stats share no byte with each other or
// with an input; throws std::invalid_argument naming the field (csrc/ssd_params.cpp).
void validate_params(const EstimateParams& p);

// Checks that every array starts on its element boundary (eps_cond, eps_uncond, noise, out:
// the dtype's size; t, stats: 8 bytes); throws std::invalid_argument naming the first one that
// does not. The CUDA path calls it before any launch: a GPU faults on a misaligned element
// access (cudaErrorMisalignedAddress, which ends the CUDA context).
void validate_alignment(const EstimateParams& p);

// The parameters from addresses (as the pybind11 entry points receive them) and a dtype
// name; not yet validated.
EstimateParams params_from_addresses(uintptr_t eps_cond, uintptr_t eps_uncond, uintptr_t noise, uintptr_t out,
                                     uintptr_t t, double t_scalar, uintptr_t stats, int64_t B, int64_t N,
                                     const char* dtype, double M);

// Bytes per element of `d` (2, 4 or 8).
int64_t item_size(DType d);

// "float16" -> DType::kFloat16, ...; throws std::invalid_argument for other names.
DType dtype_from_name(const char* name);

#ifdef SSD_TOOLKIT_WITH_CUDA
// The estimator on device memory, launched on `stream` (a cudaStream_t) without waiting.
// Throws std::invalid_argument (as validate_params) and ssd::CudaError (cuda/ssd_cuda_api.h)
// when CUDA fails. Implemented in csrc/cuda/ssd_cuda.cu.
void estimate_cuda(const EstimateParams& p, void* stream);
#endif

}  // namespace ssd
