// JAX glue on the GPU: the fused CUDA kernel (csrc/cuda/ssd_cuda.cu) as an XLA FFI
// handler, launched on the stream XLA gives the call (no synchronisation here).
//
// Same operands, results and attributes as the CPU handler (ssd_jax_ffi.cpp). The kernel
// reads float64 timesteps and writes float64 stats; JAX with x64 off has int32/float32
// timesteps and float32 stats, so both are converted on the device through XLA's scratch
// memory. Built by ssd_toolkit/frameworks/jax_build.py where nvcc and JAX's CUDA plugin are
// both present; exported symbol SsdEstimateCuda.
#include <cuda_runtime.h>

#include <cstdint>
#include <exception>
#include <string>

#include "../cuda/ssd_cuda_api.h"
#include "../ssd_core.h"
#include "ssd_ffi_layout.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
__global__ void to_double(const T* in, double* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = static_cast<double>(in[i]);
}

__global__ void to_float(const double* in, float* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = static_cast<float>(in[i]);
}

constexpr int kThreads = 256;
unsigned blocks(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// All timesteps as float64 in `dst` (device), converted on `stream`.
bool timesteps_to_double(const ffi::AnyBuffer& t, double* dst, int64_t n, cudaStream_t stream) {
  if (n == 0) return true;
  const void* src = t.untyped_data();
  switch (t.element_type()) {
    case ffi::DataType::F64: cudaMemcpyAsync(dst, src, n * 8, cudaMemcpyDeviceToDevice, stream); return true;
    case ffi::DataType::F32: to_double<<<blocks(n), kThreads, 0, stream>>>(static_cast<const float*>(src), dst, n); return true;
    case ffi::DataType::S32: to_double<<<blocks(n), kThreads, 0, stream>>>(static_cast<const int32_t*>(src), dst, n); return true;
    case ffi::DataType::S64: to_double<<<blocks(n), kThreads, 0, stream>>>(static_cast<const int64_t*>(src), dst, n); return true;
    default: return false;
  }
}

ffi::Error Estimate(cudaStream_t stream, ffi::ScratchAllocator scratch, ffi::AnyBuffer eps_cond,
                    ffi::AnyBuffer eps_uncond, ffi::AnyBuffer noise, ffi::AnyBuffer t, ffi::Result<ffi::AnyBuffer> out,
                    ffi::Result<ffi::AnyBuffer> stats, double M, int64_t sample_ndim) {
  ssd_ffi::Layout layout;
  ffi::Error error = ssd_ffi::read_layout(eps_cond, t, stats->element_type(), sample_ndim, &layout);
  if (error.failure()) return error;
  const int64_t B = layout.B, N = layout.N, outer = layout.outer, bytes = layout.block_bytes;
  const bool stats64 = layout.stats64;
  const ssd::DType dtype = layout.dtype;
  const int64_t samples = outer * B;
  const int64_t stat_count = ssd::kNumStats * samples;
  auto t_buffer = scratch.Allocate(samples * sizeof(double) + 8);
  auto s_buffer = stats64 ? std::optional<void*>(stats->untyped_data()) : scratch.Allocate(stat_count * sizeof(double) + 8);
  if (!t_buffer.has_value() || !s_buffer.has_value()) return ffi::Error::Internal("ssd_toolkit: no scratch memory");
  double* t64 = static_cast<double*>(*t_buffer);
  double* stats_out = static_cast<double*>(*s_buffer);
  if (!timesteps_to_double(t, t64, samples, stream))
    return ffi::Error::InvalidArgument("t: expected int32, int64, float32 or float64 timesteps");
  try {
    for (int64_t o = 0; o < outer; ++o) {
      ssd::EstimateParams p{};
      p.eps_cond = static_cast<const char*>(eps_cond.untyped_data()) + o * bytes;
      p.eps_uncond = static_cast<const char*>(eps_uncond.untyped_data()) + o * bytes;
      p.noise = static_cast<const char*>(noise.untyped_data()) + o * bytes;
      p.out = static_cast<char*>(out->untyped_data()) + o * bytes;
      p.t = t64 + o * B;
      p.stats = stats_out + o * ssd::kNumStats * B;
      p.B = B;
      p.N = N;
      p.dtype = dtype;
      p.M = M;
      ssd::estimate_cuda(p, stream);
    }
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(std::string("ssd_toolkit: ") + e.what());
  }
  if (!stats64 && stat_count > 0)
    to_float<<<blocks(stat_count), kThreads, 0, stream>>>(stats_out, static_cast<float*>(stats->untyped_data()),
                                                           stat_count);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return ffi::Error::Internal(std::string("ssd_toolkit: ") + cudaGetErrorString(err));
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
                                  .Attr<double>("M")
                                  .Attr<int64_t>("sample_ndim"));
