// JAX glue: the CPU kernel of csrc/ssd_core.h as an XLA FFI handler (jax.ffi.ffi_call).
//
// Built as its own shared library (ssd_toolkit/_ssd_jax_ffi.so, by
// ssd_toolkit/frameworks/jax_build.py) only where jaxlib and its FFI headers are
// installed; the pybind11 module ssd_toolkit._C stays framework-free. Python registers
// the exported symbol SsdEstimateCpu as the target "ssd_toolkit_estimate".
//
// Operands: eps_cond, eps_uncond, noise of shape [..., B, <sample dims>] (one float
// dtype), t of shape [..., B] (int32/int64/float32/float64). Results: E like eps_cond,
// stats [..., 6, B] (float32 or float64). Attributes: M (f64) and sample_ndim (i64, the
// number of trailing sample dims). Every leading dim before B comes from jax.vmap
// ("broadcast_all"): each index is one call of the kernel on its own [B, N] block, so
// samples never mix.
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

#include "ssd_core.h"
#include "ssd_ffi_layout.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Timesteps of one block as doubles (the kernel reads float64).
bool read_timesteps(const ffi::AnyBuffer& t, int64_t offset, int64_t B, std::vector<double>* out) {
  out->resize(B);
  const void* base = t.untyped_data();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t i = offset + b;
    switch (t.element_type()) {
      case ffi::DataType::F64: (*out)[b] = static_cast<const double*>(base)[i]; break;
      case ffi::DataType::F32: (*out)[b] = static_cast<const float*>(base)[i]; break;
      case ffi::DataType::S32: (*out)[b] = static_cast<const int32_t*>(base)[i]; break;
      case ffi::DataType::S64: (*out)[b] = static_cast<double>(static_cast<const int64_t*>(base)[i]); break;
      default: return false;
    }
  }
  return true;
}

ffi::Error Estimate(ffi::AnyBuffer eps_cond, ffi::AnyBuffer eps_uncond, ffi::AnyBuffer noise, ffi::AnyBuffer t,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> stats, double M,
                    int64_t sample_ndim) {
  ssd_ffi::Layout layout;
  ffi::Error error = ssd_ffi::read_layout(eps_cond, t, stats->element_type(), sample_ndim, &layout);
  if (error.failure()) return error;
  const int64_t B = layout.B, N = layout.N, outer = layout.outer, bytes = layout.block_bytes;
  const bool stats64 = layout.stats64;
  const ssd::DType dtype = layout.dtype;
  std::vector<double> t_block, stats_block(ssd::kNumStats * B);
  try {
    for (int64_t o = 0; o < outer; ++o) {
      if (!read_timesteps(t, o * B, B, &t_block))
        return ffi::Error::InvalidArgument("t: expected int32, int64, float32 or float64 timesteps");
      ssd::EstimateParams p{};
      p.eps_cond = static_cast<const char*>(eps_cond.untyped_data()) + o * bytes;
      p.eps_uncond = static_cast<const char*>(eps_uncond.untyped_data()) + o * bytes;
      p.noise = static_cast<const char*>(noise.untyped_data()) + o * bytes;
      p.out = static_cast<char*>(out->untyped_data()) + o * bytes;
      p.t = t_block.data();
      p.stats = stats64 ? static_cast<double*>(stats->untyped_data()) + o * ssd::kNumStats * B : stats_block.data();
      p.B = B;
      p.N = N;
      p.dtype = dtype;
      p.M = M;
      ssd::validate_params(p);
      ssd::estimate_cpu(p, 0);
      if (!stats64) {
        float* dst = static_cast<float*>(stats->untyped_data()) + o * ssd::kNumStats * B;
        for (int64_t i = 0; i < ssd::kNumStats * B; ++i) dst[i] = static_cast<float>(stats_block[i]);
      }
    }
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("ssd_toolkit: ") + e.what());
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SsdEstimateCpu, Estimate,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<double>("M")
                                  .Attr<int64_t>("sample_ndim"));
