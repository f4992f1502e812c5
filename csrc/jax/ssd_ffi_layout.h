// The operands of the "ssd_toolkit_estimate" FFI call, read once for both handlers
// (ssd_jax_ffi.cpp on the CPU, ssd_jax_ffi_cuda.cu on the GPU): the kernel dtype and the
// [outer, B, N] blocks that jax.vmap's leading dims make of eps_cond (see those files).
//
// The branch of each sample comes in decided: `branch` is a uint8 [..., B] of codes that
// the Python side computed from t and M exactly (ssd_toolkit/frameworks/jax_branch.py), so
// the result and the reported mode_seeking are one decision: kH (t > M), kSeeking (t <= M),
// kInvalid (a non-finite t seen inside jit: the sample's result and stats become NaN).
// The kernel takes the decision as the timesteps 0 (mode-seeking) / 1 (h) with M = 0.5.
#pragma once

#include <cstdint>

#include "../ssd_core.h"
#include "xla/ffi/api/ffi.h"

namespace ssd_ffi {

// Bumped whenever the operands, results or attributes change: Python refuses a library
// built from other sources (ssd_jax_ffi_abi_version) instead of calling it wrongly.
constexpr int kAbiVersion = 2;

constexpr uint8_t kH = 0, kSeeking = 1, kInvalid = 2;
constexpr double kSeekingT = 0.0, kHT = 1.0, kMaskM = 0.5;

#if defined(__CUDACC__)
__host__ __device__
#endif
inline double timestep_of(uint8_t code) { return code == kSeeking ? kSeekingT : kHT; }

struct Layout {
  ssd::DType dtype;
  int64_t outer;  // product of the vmapped leading dims: one kernel call each
  int64_t B;
  int64_t N;
  int64_t block_bytes;  // bytes of one [B, N] block of eps_cond
  bool with_stats;      // false: the stats result is empty and the kernel writes none
  bool stats64;         // stats are float64 (else float32)
};

// The layout, or an InvalidArgument error naming the operand.
inline xla::ffi::Error read_layout(const xla::ffi::AnyBuffer& eps_cond, const xla::ffi::AnyBuffer& branch,
                                   const xla::ffi::AnyBuffer& stats, int64_t sample_ndim, Layout* out) {
  namespace ffi = xla::ffi;
  switch (eps_cond.element_type()) {
    case ffi::DataType::F16: out->dtype = ssd::DType::kFloat16; break;
    case ffi::DataType::BF16: out->dtype = ssd::DType::kBFloat16; break;
    case ffi::DataType::F32: out->dtype = ssd::DType::kFloat32; break;
    case ffi::DataType::F64: out->dtype = ssd::DType::kFloat64; break;
    default: return ffi::Error::InvalidArgument("eps_cond: expected float16, bfloat16, float32 or float64");
  }
  const auto dims = eps_cond.dimensions();
  const int64_t rank = static_cast<int64_t>(dims.size());
  if (sample_ndim < 0 || sample_ndim + 1 > rank)
    return ffi::Error::InvalidArgument("sample_ndim: expected 0 <= sample_ndim < rank of eps_cond");
  out->N = 1;
  out->outer = 1;
  for (int64_t i = rank - sample_ndim; i < rank; ++i) out->N *= dims[i];
  for (int64_t i = 0; i < rank - sample_ndim - 1; ++i) out->outer *= dims[i];
  out->B = dims[rank - sample_ndim - 1];
  if (branch.element_type() != ffi::DataType::U8)
    return ffi::Error::InvalidArgument("branch: expected uint8 codes");
  if (static_cast<int64_t>(branch.element_count()) != out->outer * out->B)
    return ffi::Error::InvalidArgument("branch: expected one code per sample");
  out->stats64 = stats.element_type() == ffi::DataType::F64;
  if (!out->stats64 && stats.element_type() != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("stats: expected float32 or float64");
  const int64_t count = static_cast<int64_t>(stats.element_count());
  out->with_stats = count != 0;
  if (out->with_stats && count != ssd::kNumStats * out->outer * out->B)
    return ffi::Error::InvalidArgument("stats: expected 6 entries per sample, or none");
  out->block_bytes = out->B * out->N * ssd::item_size(out->dtype);
  return ffi::Error::Success();
}

}  // namespace ssd_ffi
