// JAX glue on the GPU: the fused CUDA kernel (csrc/cuda/ssd_cuda.cu) as an XLA FFI
// handler, launched on the stream XLA gives the call (no synchronisation here).
//
// Same operands, results and attribute as the CPU handler (ssd_jax_ffi.cpp). The kernel
// reads float64 timesteps and writes float64 stats: the uint8 branch codes become the
// timesteps 0/1 (with M = 0.5, ssd_ffi_layout.h), and float32 stats (JAX with x64 off) go
// through float64 scratch, both converted on the device in XLA's scratch memory. Samples
// coded kInvalid get NaN results and stats (poison_invalid). Built by
// ssd_toolkit/engine/jax_build.py where nvcc and JAX's CUDA plugin are both present;
// exported symbol SsdEstimateCuda.
//
// Errors: bad operands are InvalidArgument (as on the CPU); a failed CUDA call (a launch,
// an out-of-memory scratch request) is Internal, with CUDA's own name and message.
#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>

#include "../cuda/ssd_cuda_api.h"
#include "../ssd_core.h"
#include "ssd_ffi_layout.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

__global__ void codes_to_timesteps(const uint8_t* codes, double* t, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) t[i] = ssd_ffi::timestep_of(codes[i]);
}

// One block per sample: NaN in the result row and stats of the samples coded kInvalid
// (the others return at once). `nan` is the dtype's quiet NaN, `item` its size in bytes.
__global__ void poison_invalid(const uint8_t* codes, char* out, double* stats, int64_t B, int64_t N, int item,
                               uint64_t nan) {
  const int64_t sample = blockIdx.x;
  if (codes[sample] != ssd_ffi::kInvalid) return;
  char* row = out + sample * N * item;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    if (item == 2) reinterpret_cast<uint16_t*>(row)[i] = static_cast<uint16_t>(nan);
    else if (item == 4) reinterpret_cast<uint32_t*>(row)[i] = static_cast<uint32_t>(nan);
    else reinterpret_cast<uint64_t*>(row)[i] = nan;
  }
  if (stats != nullptr && threadIdx.x < ssd::kNumStats) {
    const int64_t block = sample / B, b = sample % B;
    stats[(block * ssd::kNumStats + threadIdx.x) * B + b] = __longlong_as_double(0x7FF8000000000000LL);
  }
}

uint64_t nan_bits(ssd::DType dtype) {
  switch (dtype) {
    case ssd::DType::kFloat16: return 0x7E00;
    case ssd::DType::kBFloat16: return 0x7FC0;
    case ssd::DType::kFloat32: return 0x7FC00000;
    default: return 0x7FF8000000000000ull;
  }
}

__global__ void to_float(const double* in, float* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = static_cast<float>(in[i]);
}

constexpr int kThreads = 256;
constexpr size_t kScratchAlign = 16;  // float64 scratch (8) read by the kernel's vector loads (16)
unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// Internal error for a failed CUDA call, Success otherwise.
ffi::Error cuda_status(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return ffi::Error::Success();
  return ffi::Error::Internal(std::string("ssd_toolkit: ") + what + " failed: " + cudaGetErrorName(err) + ": " +
                             cudaGetErrorString(err));
}

ffi::Error Estimate(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer eps_cond,
                    ffi::AnyBuffer eps_uncond, ffi::AnyBuffer noise, ffi::AnyBuffer branch,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> stats, int64_t sample_ndim) {
  ssd_ffi::Layout layout;
  ffi::Error error = ssd_ffi::read_layout(eps_cond, branch, *stats, sample_ndim, &layout);
  if (error.failure()) return error;
  const int64_t B = layout.B, N = layout.N, outer = layout.outer, bytes = layout.block_bytes;
  const int64_t samples = outer * B;
  if (samples == 0) return ffi::Error::Success();
  const int64_t stat_count = layout.with_stats ? ssd::kNumStats * samples : 0;
  const bool stats_scratch = layout.with_stats && !layout.stats64;
  auto t_buffer = scratch.Allocate(samples * sizeof(double), kScratchAlign);
  auto s_buffer = stats_scratch ? scratch.Allocate(stat_count * sizeof(double), kScratchAlign)
                                : std::optional<void*>(layout.with_stats ? stats->untyped_data() : nullptr);
  if (!t_buffer.has_value() || !s_buffer.has_value())
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "ssd_toolkit: no scratch memory for the timesteps/stats");
  double* t64 = static_cast<double*>(*t_buffer);
  double* stats_out = static_cast<double*>(*s_buffer);
  const uint8_t* codes = static_cast<const uint8_t*>(branch.untyped_data());
  codes_to_timesteps<<<blocks(samples), kThreads, 0, stream>>>(codes, t64, samples);
  error = cuda_status(cudaGetLastError(), "the timestep conversion launch");
  if (error.failure()) return error;
  try {
    for (int64_t o = 0; o < outer; ++o) {
      ssd::EstimateParams p{};
      p.eps_cond = static_cast<const char*>(eps_cond.untyped_data()) + o * bytes;
      p.eps_uncond = static_cast<const char*>(eps_uncond.untyped_data()) + o * bytes;
      p.noise = static_cast<const char*>(noise.untyped_data()) + o * bytes;
      p.out = static_cast<char*>(out->untyped_data()) + o * bytes;
      p.t = t64 + o * B;
      p.stats = layout.with_stats ? stats_out + o * ssd::kNumStats * B : nullptr;
      p.B = B;
      p.N = N;
      p.dtype = layout.dtype;
      p.M = ssd_ffi::kMaskM;
      ssd::estimate_cuda(p, stream);
    }
  } catch (const ssd::CudaError& e) {
    return ffi::Error::Internal(std::string("ssd_toolkit: ") + e.what());
  } catch (const std::invalid_argument& e) {
    return ffi::Error::InvalidArgument(std::string("ssd_toolkit: ") + e.what());
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("ssd_toolkit: ") + e.what());
  }
  if (N > 0) {
    poison_invalid<<<static_cast<unsigned>(samples), kThreads, 0, stream>>>(
        codes, static_cast<char*>(out->untyped_data()), layout.with_stats ? stats_out : nullptr, B, N,
        static_cast<int>(ssd::item_size(layout.dtype)), nan_bits(layout.dtype));
    error = cuda_status(cudaGetLastError(), "the NaN launch for non-finite timesteps");
    if (error.failure()) return error;
  }
  if (stats_scratch) {
    to_float<<<blocks(stat_count), kThreads, 0, stream>>>(stats_out, static_cast<float*>(stats->untyped_data()),
                                                           stat_count);
    return cuda_status(cudaGetLastError(), "the stats conversion launch");
  }
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(SsdEstimateCuda, Estimate,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Ctx<ffi::ScratchAllocator>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<int64_t>("sample_ndim"));

// The operand/attribute version this library was built with (ssd_ffi::kAbiVersion).
extern "C" __attribute__((visibility("default"))) int ssd_jax_ffi_abi_version() { return ssd_ffi::kAbiVersion; }
