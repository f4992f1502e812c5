// JAX glue: the CPU kernel of csrc/ssd_core.h as an XLA FFI handler (jax.ffi.ffi_call).
//
// Built as its own shared library (ssd_toolkit/_ssd_jax_ffi.so, by
// ssd_toolkit/engine/jax_build.py) only where jaxlib and its FFI headers are installed;
// the pybind11 module ssd_toolkit._C stays framework-free. Python registers the exported
// symbol SsdEstimateCpu as the target "ssd_toolkit_estimate".
//
// Operands: eps_cond, eps_uncond, noise of shape [..., B, <sample dims>] (one float
// dtype), branch of shape [..., B] (uint8 codes: the branch decided from t and M on the
// Python side, see ssd_ffi_layout.h). Results: E like eps_cond, stats [..., 6, B]
// (float32 or float64) or an empty array (no stats asked: the kernel writes none).
// Attribute: sample_ndim (i64, the number of trailing sample dims). Every leading dim
// before B comes from jax.vmap ("broadcast_all"): each index is one call of the kernel on
// its own [B, N] block, so samples never mix.
//
// XLA runs its CPU threads with subnormals flushed to zero (FTZ/DAZ); the kernel's
// contract is IEEE arithmetic (the float64 reference), so the handler clears both modes
// for its own work and restores the caller's state after (IeeeSubnormals). Worker threads
// of the kernel's pool start inside that scope and inherit the cleared state.
#include <cstdint>
#include <cstring>
#include <exception>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "ssd_core.h"
#include "ssd_ffi_layout.h"
#include "xla/ffi/api/ffi.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

namespace ffi = xla::ffi;

namespace {

// Subnormals kept (not flushed, not read as zero) for the object's lifetime; the previous
// floating-point control state is restored on destruction.
class IeeeSubnormals {
 public:
#if defined(__x86_64__) || defined(__i386__)
  IeeeSubnormals() : saved_(_mm_getcsr()) { _mm_setcsr(saved_ & ~(kFlushToZero | kDenormalsAreZero)); }
  ~IeeeSubnormals() { _mm_setcsr(saved_); }

 private:
  static constexpr unsigned kFlushToZero = 1u << 15, kDenormalsAreZero = 1u << 6;  // MXCSR bits
  unsigned saved_;
#elif defined(__aarch64__)
  IeeeSubnormals() {
    asm volatile("mrs %0, fpcr" : "=r"(saved_));
    const uint64_t cleared = saved_ & ~(kFlushToZero | kFlushToZero16);
    asm volatile("msr fpcr, %0" : : "r"(cleared));
  }
  ~IeeeSubnormals() { asm volatile("msr fpcr, %0" : : "r"(saved_)); }

 private:
  static constexpr uint64_t kFlushToZero = 1ull << 24, kFlushToZero16 = 1ull << 19;  // FPCR.FZ, FPCR.FZ16
  uint64_t saved_;
#else
  IeeeSubnormals() = default;  // another architecture: its flush modes are left as XLA set them
#endif
  IeeeSubnormals(const IeeeSubnormals&) = delete;
  IeeeSubnormals& operator=(const IeeeSubnormals&) = delete;
};

// A quiet NaN in each element of dst[0, count) of `dtype`.
void fill_nan(void* dst, int64_t count, ssd::DType dtype) {
  switch (dtype) {
    case ssd::DType::kFloat16:
    case ssd::DType::kBFloat16: {
      const uint16_t nan = dtype == ssd::DType::kFloat16 ? 0x7E00 : 0x7FC0;
      for (int64_t i = 0; i < count; ++i) std::memcpy(static_cast<uint16_t*>(dst) + i, &nan, 2);
      break;
    }
    case ssd::DType::kFloat32:
      for (int64_t i = 0; i < count; ++i) static_cast<float*>(dst)[i] = std::numeric_limits<float>::quiet_NaN();
      break;
    case ssd::DType::kFloat64:
      for (int64_t i = 0; i < count; ++i) static_cast<double*>(dst)[i] = std::numeric_limits<double>::quiet_NaN();
      break;
  }
}

ffi::Error Estimate(ffi::AnyBuffer eps_cond, ffi::AnyBuffer eps_uncond, ffi::AnyBuffer noise, ffi::AnyBuffer branch,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> stats, int64_t sample_ndim) {
  ssd_ffi::Layout layout;
  ffi::Error error = ssd_ffi::read_layout(eps_cond, branch, *stats, sample_ndim, &layout);
  if (error.failure()) return error;
  const int64_t B = layout.B, N = layout.N, outer = layout.outer, bytes = layout.block_bytes;
  const int64_t sample_bytes = N * ssd::item_size(layout.dtype);
  const uint8_t* codes = static_cast<const uint8_t*>(branch.untyped_data());
  std::vector<double> t_block(B), stats_block(layout.with_stats ? ssd::kNumStats * B : 0);
  IeeeSubnormals ieee;
  try {
    for (int64_t o = 0; o < outer; ++o) {
      const uint8_t* code = codes + o * B;
      for (int64_t b = 0; b < B; ++b) t_block[b] = ssd_ffi::timestep_of(code[b]);
      char* out_block = static_cast<char*>(out->untyped_data()) + o * bytes;
      ssd::EstimateParams p{};
      p.eps_cond = static_cast<const char*>(eps_cond.untyped_data()) + o * bytes;
      p.eps_uncond = static_cast<const char*>(eps_uncond.untyped_data()) + o * bytes;
      p.noise = static_cast<const char*>(noise.untyped_data()) + o * bytes;
      p.out = out_block;
      p.t = t_block.data();
      p.stats = layout.with_stats ? stats_block.data() : nullptr;
      p.B = B;
      p.N = N;
      p.dtype = layout.dtype;
      p.M = ssd_ffi::kMaskM;
      ssd::validate_params(p);
      ssd::estimate_cpu(p, 0);
      for (int64_t b = 0; b < B; ++b) {
        if (code[b] != ssd_ffi::kInvalid) continue;
        fill_nan(out_block + b * sample_bytes, N, layout.dtype);
        if (layout.with_stats)
          for (int i = 0; i < ssd::kNumStats; ++i) stats_block[i * B + b] = std::numeric_limits<double>::quiet_NaN();
      }
      if (!layout.with_stats) continue;
      const int64_t count = ssd::kNumStats * B, offset = o * count;
      if (layout.stats64) {
        std::memcpy(static_cast<double*>(stats->untyped_data()) + offset, stats_block.data(), count * sizeof(double));
      } else {
        float* dst = static_cast<float*>(stats->untyped_data()) + offset;
        for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<float>(stats_block[i]);
      }
    }
  } catch (const std::invalid_argument& e) {
    return ffi::Error::InvalidArgument(std::string("ssd_toolkit: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("ssd_toolkit: ") + e.what());
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
                                  .Attr<int64_t>("sample_ndim"));

// The operand/attribute version this library was built with (ssd_ffi::kAbiVersion).
extern "C" __attribute__((visibility("default"))) int ssd_jax_ffi_abi_version() { return ssd_ffi::kAbiVersion; }
