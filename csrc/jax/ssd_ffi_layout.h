// The operands of the "ssd_toolkit_estimate" FFI call, read once for both handlers
// (ssd_jax_ffi.cpp on the CPU, ssd_jax_ffi_cuda.cu on the GPU): the kernel dtype and the
// [outer, B, N] blocks that jax.vmap's leading dims make of eps_cond (see those files).
#pragma once

#include <cstdint>

#include "../ssd_core.h"
#include "xla/ffi/api/ffi.h"

namespace ssd_ffi {

struct Layout {
  ssd::DType dtype;
  int64_t outer;  // product of the vmapped leading dims: one kernel call each
  int64_t B;
  int64_t N;
  int64_t block_bytes;  // bytes of one [B, N] block of eps_cond
  bool stats64;         // stats are float64 (else float32)
};

// The layout, or an InvalidArgument error naming the operand.
inline xla::ffi::Error read_layout(const xla::ffi::AnyBuffer& eps_cond, const xla::ffi::AnyBuffer& t,
                                   xla::ffi::DataType stats_type, int64_t sample_ndim, Layout* out) {
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
  if (static_cast<int64_t>(t.element_count()) != out->outer * out->B)
    return ffi::Error::InvalidArgument("t: expected one timestep per sample");
  out->stats64 = stats_type == ffi::DataType::F64;
  if (!out->stats64 && stats_type != ffi::DataType::F32)
    return ffi::Error::InvalidArgument("stats: expected float32 or float64");
  out->block_bytes = out->B * out->N * ssd::item_size(out->dtype);
  return ffi::Error::Success();
}

}  // namespace ssd_ffi
