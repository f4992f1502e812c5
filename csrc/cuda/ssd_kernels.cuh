// Device code of the fused SSD estimator: the resident kernel and the three split-path
// kernels. Design, paths and precision: docs/kernels.md ("Design of the CUDA kernel").
//
// One source, two compilers: nvcc compiles it into the real module (ssd_cuda.cu), and the
// host C++ compiler compiles it against emulation/cuda_emulation.h into the CPU emulation
// (emulation/emulated_module.cpp). The emulation includes this file once per emulated
// architecture, in namespace SSD_KERNEL_NAMESPACE with SSD_EMULATED_ARCH set; hence no
// include guard. Shared memory is declared with SSD_SHARED(type, name, dims) so the
// emulation can give every block its own copy.
#ifndef SSD_CUDA_EMULATION
#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define SSD_SHARED(type, name, dims) __shared__ type name dims
#endif

#include <cstdint>

#include "../ssd_coefficients.h"
#include "../ssd_core.h"
#include "ssd_launch_plan.h"

#ifndef SSD_KERNEL_NAMESPACE
#define SSD_KERNEL_NAMESPACE kernels
#endif

namespace ssd {
namespace SSD_KERNEL_NAMESPACE {

namespace cg = cooperative_groups;

template <typename T>
struct alignas(16) Pack {
  static constexpr int kVec = 16 / sizeof(T);
  T v[kVec];
};

__device__ __forceinline__ double to_f64(float x) { return static_cast<double>(x); }
__device__ __forceinline__ double to_f64(double x) { return x; }
__device__ __forceinline__ double to_f64(__half x) { return static_cast<double>(__half2float(x)); }
__device__ __forceinline__ double to_f64(__nv_bfloat16 x) { return static_cast<double>(__bfloat162float(x)); }

template <typename T>
__device__ __forceinline__ T from_f64(double x);
template <>
__device__ __forceinline__ float from_f64<float>(double x) { return __double2float_rn(x); }
template <>
__device__ __forceinline__ double from_f64<double>(double x) { return x; }
template <>
__device__ __forceinline__ __half from_f64<__half>(double x) { return __double2half(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f64<__nv_bfloat16>(double x) { return __double2bfloat16(x); }

__device__ __forceinline__ void accumulate(Sums& s, double c, double u, double n) {
  const double h = c - u;
  s.hh = fma(h, h, s.hh);
  s.cc = fma(c, c, s.cc);
  s.cn = fma(c, n, s.cn);
  s.nn = fma(n, n, s.nn);
}

__device__ __forceinline__ Sums warp_reduce(Sums s) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    s.hh += __shfl_down_sync(0xffffffffu, s.hh, off);
    s.cc += __shfl_down_sync(0xffffffffu, s.cc, off);
    s.cn += __shfl_down_sync(0xffffffffu, s.cn, off);
    s.nn += __shfl_down_sync(0xffffffffu, s.nn, off);
  }
  return s;
}

// Fixed-shape block reduction; the result is valid in thread 0. Ends with no pending
// shared-memory hazards for the caller (scratch is only reused after a barrier).
__device__ __forceinline__ Sums block_reduce(Sums s, Sums* scratch /* [32] shared */) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  s = warp_reduce(s);
  if (lane == 0) scratch[warp] = s;
  __syncthreads();
  if (warp == 0) {
    const int nwarps = (blockDim.x + 31) >> 5;
    s = lane < nwarps ? scratch[lane] : Sums{0.0, 0.0, 0.0, 0.0};
    s = warp_reduce(s);
  }
  return s;
}

// What a block needs to write its part of sample b.
struct Coef {
  double r;          // projection ratio
  double out_scale;  // scale, or NaN when a sum is non-finite
  double branch;     // 1.0: t_b <= M (rescaled), 0.0: t_b > M (h)
  double pad;
};

// Whether sample b takes the rescaled branch (t_b <= M; a NaN t gives h, as in the reference).
__device__ __forceinline__ bool rescaled(const EstimateParams& p, int64_t b) {
  return (p.t ? p.t[b] : p.t_scalar) <= p.M;
}

// The sample's coefficients (ssd_coefficients.h).
__device__ __forceinline__ Coef finish(const Sums& s, const EstimateParams& p, int64_t b) {
  const Coefficients k = coefficients(s);
  return Coef{k.r, k.out_scale, rescaled(p, b) ? 1.0 : 0.0, 0.0};
}

__device__ __forceinline__ void store_stats(const Sums& s, const EstimateParams& p, int64_t b) {
  if (!p.stats) return;
  const Coefficients k = coefficients(s);
  for (int i = 0; i < kNumStats; ++i) p.stats[i * p.B + b] = stat(s, k, i);
}

template <typename T>
__device__ __forceinline__ T out_elem(T c, T u, T n, const Coef& k) {
  const double cd = to_f64(c);
  return from_f64<T>(k.branch != 0.0 ? k.out_scale * (cd - k.r * to_f64(n)) : cd - to_f64(u));
}

// 16-byte pack at element `elem` of a row, streaming vector access or scalar access.
template <typename T, bool kVector>
__device__ __forceinline__ Pack<T> load_pack(const T* row, int64_t elem, int64_t N) {
  Pack<T> pk;
  if (kVector) {
    if (elem < N) {
      const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(row + elem));
      pk = *reinterpret_cast<const Pack<T>*>(&raw);
    } else {
#pragma unroll
      for (int e = 0; e < Pack<T>::kVec; ++e) pk.v[e] = from_f64<T>(0.0);
    }
  } else {
#pragma unroll
    for (int e = 0; e < Pack<T>::kVec; ++e) pk.v[e] = elem + e < N ? row[elem + e] : from_f64<T>(0.0);
  }
  return pk;
}

template <typename T, bool kVector>
__device__ __forceinline__ void store_pack(T* row, int64_t elem, int64_t N, const Pack<T>& pk) {
  if (kVector) {
    if (elem < N) __stcs(reinterpret_cast<uint4*>(row + elem), *reinterpret_cast<const uint4*>(&pk));
  } else {
#pragma unroll
    for (int e = 0; e < Pack<T>::kVec; ++e)
      if (elem + e < N) row[elem + e] = pk.v[e];
  }
}

// The resident kernel's output: pack j of this thread, from registers.
template <typename T, int VPT, bool kVector>
__device__ __forceinline__ void write_resident(T* out, int rank, const Pack<T> (&rc)[VPT], const Pack<T> (&ro)[VPT],
                                               const Coef k, int64_t N) {
  constexpr int V = Pack<T>::kVec;
#pragma unroll
  for (int j = 0; j < VPT; ++j) {
    const int64_t e = resident_elem(rank, VPT, j, blockDim.x, threadIdx.x, V);
    Pack<T> o;
#pragma unroll
    for (int q = 0; q < V; ++q) o.v[q] = out_elem(rc[j].v[q], ro[j].v[q], ro[j].v[q], k);
    store_pack<T, kVector>(out, e, N, o);
  }
}

// ---------------------------------------------------------------------------------------
// Resident path: grid.x = rows * csize, one (cluster of) block(s) per sample, from b0.
// After the sums only eps_cond and the input the sample's branch writes with (noise when
// rescaled, eps_uncond for h) stay in registers. Block rank 0 writes the stats after its
// output, from shared memory. With clusters, a block signals when it has read the others'
// sums (barrier_arrive) and waits for the others' signal only before it exits, so that wait
// overlaps its output stores.
// relaxed != 0 (the launch-plan variant relaxed_arrive, ssd_launch_plan.h): the "done
// reading" arrive is barrier.cluster.arrive.relaxed, which does not order this block's
// earlier memory accesses (the default, release, compiles to MEMBAR.ALL.GPU). The sums it
// read were already consumed by the stores to total/coef before the arrive.
template <typename T, int VPT, bool kVector>
__global__ void __launch_bounds__(kMaxThreads) resident_kernel(EstimateParams p, int64_t b0, int csize, int relaxed) {
  constexpr int V = Pack<T>::kVec;
  SSD_SHARED(Sums, scratch, [32]);
  SSD_SHARED(Sums, total, );
  SSD_SHARED(Coef, coef, );
  const int64_t b = sample_of_block(b0, blockIdx.x, csize);
  const int rank = static_cast<int>(blockIdx.x % csize);
  const int64_t row = b * p.N;
  const T* c = static_cast<const T*>(p.eps_cond) + row;
  const T* u = static_cast<const T*>(p.eps_uncond) + row;
  const T* n = static_cast<const T*>(p.noise) + row;
  T* out = static_cast<T*>(p.out) + row;
  const bool use_noise = rescaled(p, b);

  Pack<T> rc[VPT], ro[VPT];  // eps_cond, and noise or eps_uncond
  Sums s{0.0, 0.0, 0.0, 0.0};
  {
    Pack<T> ru[VPT], rn[VPT];
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
      const int64_t e = resident_elem(rank, VPT, j, blockDim.x, threadIdx.x, V);
      rc[j] = load_pack<T, kVector>(c, e, p.N);
      ru[j] = load_pack<T, kVector>(u, e, p.N);
      rn[j] = load_pack<T, kVector>(n, e, p.N);
    }
#pragma unroll
    for (int j = 0; j < VPT; ++j) {
#pragma unroll
      for (int e = 0; e < V; ++e) accumulate(s, to_f64(rc[j].v[e]), to_f64(ru[j].v[e]), to_f64(rn[j].v[e]));
      ro[j] = use_noise ? rn[j] : ru[j];
    }
  }
  s = block_reduce(s, scratch);

  if (csize > 1) {
#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900) || SSD_EMULATED_ARCH >= 900
    SSD_SHARED(double, part, [4]);  // this block's sums, read by the whole cluster
    cg::cluster_group cluster = cg::this_cluster();
    if (threadIdx.x == 0) {
      part[0] = s.hh;
      part[1] = s.cc;
      part[2] = s.cn;
      part[3] = s.nn;
    }
    cluster.sync();  // every block's partial is published
    if (threadIdx.x == 0) {
      Sums tot{0.0, 0.0, 0.0, 0.0};
      for (int r = 0; r < csize; ++r) {  // rank order: identical in every block
        const double* remote = cluster.map_shared_rank(part, r);
        tot.hh += remote[0];
        tot.cc += remote[1];
        tot.cn += remote[2];
        tot.nn += remote[3];
      }
      total = tot;
      coef = finish(tot, p, b);
    }
    if (relaxed) {  // this block no longer reads the others' sums
      __cluster_barrier_arrive_relaxed();
    } else {
      __cluster_barrier_arrive();
    }
    __syncthreads();  // coef and total visible block-wide
    write_resident<T, VPT, kVector>(out, rank, rc, ro, coef, p.N);
    if (threadIdx.x == 0 && rank == 0) store_stats(total, p, b);  // one stats writer per sample
    __cluster_barrier_wait();  // nobody reads my sums any more
#else
    __trap();  // the host launches clusters only for code compiled for sm_90+
#endif
  } else {
    if (threadIdx.x == 0) {
      total = s;
      coef = finish(s, p, b);
    }
    __syncthreads();
    write_resident<T, VPT, kVector>(out, rank, rc, ro, coef, p.N);
    if (threadIdx.x == 0) store_stats(total, p, b);
  }
}

// ---------------------------------------------------------------------------------------
// Split path: grid.x = rows * nchunks from sample b0; the output region of every chunk
// holds its slot (chunk_slot_address): partial sums, then the sample's coefficients.
__device__ __forceinline__ double* chunk_slot(void* out, int64_t b, int64_t k, int64_t N, int64_t chunk,
                                              int esize) {
  return reinterpret_cast<double*>(chunk_slot_address(reinterpret_cast<uintptr_t>(out), b, k, N, chunk, esize));
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kSplitThreads) partial_kernel(EstimateParams p, int64_t b0, int64_t chunk,
                                                                 int64_t nchunks) {
  constexpr int V = Pack<T>::kVec;
  SSD_SHARED(Sums, scratch, [32]);
  const int64_t b = sample_of_block(b0, blockIdx.x, nchunks);
  const int64_t k = blockIdx.x % nchunks;
  const int64_t begin = chunk_begin(k, chunk);
  const int64_t end = chunk_end(k, chunk, nchunks, p.N);
  const int64_t row = b * p.N;
  const T* c = static_cast<const T*>(p.eps_cond) + row;
  const T* u = static_cast<const T*>(p.eps_uncond) + row;
  const T* n = static_cast<const T*>(p.noise) + row;
  Sums s{0.0, 0.0, 0.0, 0.0};
  // Packs of kVec elements (a scalar-mode pack may straddle `end`: masked below).
  for (int64_t e0 = begin + static_cast<int64_t>(threadIdx.x) * V; e0 < end;
       e0 += static_cast<int64_t>(kSplitUnroll) * blockDim.x * V) {
    Pack<T> rc[kSplitUnroll], ru[kSplitUnroll], rn[kSplitUnroll];
#pragma unroll
    for (int j = 0; j < kSplitUnroll; ++j) {
      const int64_t e = e0 + static_cast<int64_t>(j) * blockDim.x * V;
      const int64_t lim = e < end ? end : e;  // lim == e masks the whole pack
      if (kVector && e < end) {  // cached loads: write_kernel re-reads these from L2
        const uint4 c4 = *reinterpret_cast<const uint4*>(c + e);
        const uint4 u4 = *reinterpret_cast<const uint4*>(u + e);
        const uint4 n4 = *reinterpret_cast<const uint4*>(n + e);
        rc[j] = *reinterpret_cast<const Pack<T>*>(&c4);
        ru[j] = *reinterpret_cast<const Pack<T>*>(&u4);
        rn[j] = *reinterpret_cast<const Pack<T>*>(&n4);
      } else {
#pragma unroll
        for (int q = 0; q < V; ++q) {
          const bool ok = e + q < lim;
          rc[j].v[q] = ok ? c[e + q] : from_f64<T>(0.0);
          ru[j].v[q] = ok ? u[e + q] : from_f64<T>(0.0);
          rn[j].v[q] = ok ? n[e + q] : from_f64<T>(0.0);
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kSplitUnroll; ++j)
#pragma unroll
      for (int q = 0; q < V; ++q) accumulate(s, to_f64(rc[j].v[q]), to_f64(ru[j].v[q]), to_f64(rn[j].v[q]));
  }
  s = block_reduce(s, scratch);
  if (threadIdx.x == 0) {
    double* slot = chunk_slot(p.out, b, k, p.N, chunk, sizeof(T));
    slot[0] = s.hh;
    slot[1] = s.cc;
    slot[2] = s.cn;
    slot[3] = s.nn;
  }
}

__global__ void __launch_bounds__(kSplitThreads) finalize_kernel(EstimateParams p, int64_t b0, int64_t chunk,
                                                                  int64_t nchunks, int esize) {
  SSD_SHARED(Sums, scratch, [32]);
  SSD_SHARED(Coef, coef, );
  const int64_t b = b0 + blockIdx.x;
  Sums s{0.0, 0.0, 0.0, 0.0};
  for (int64_t k = threadIdx.x; k < nchunks; k += blockDim.x) {  // fixed order per thread
    const double* slot = chunk_slot(p.out, b, k, p.N, chunk, esize);
    s.hh += slot[0];
    s.cc += slot[1];
    s.cn += slot[2];
    s.nn += slot[3];
  }
  s = block_reduce(s, scratch);  // its barrier also ends every read of the slots
  if (threadIdx.x == 0) {
    coef = finish(s, p, b);
    store_stats(s, p, b);
  }
  __syncthreads();
  const Coef k = coef;
  for (int64_t i = threadIdx.x; i < nchunks; i += blockDim.x) {
    double* slot = chunk_slot(p.out, b, i, p.N, chunk, esize);
    slot[0] = k.r;
    slot[1] = k.out_scale;
    slot[2] = k.branch;
  }
}

template <typename T, bool kVector>
__global__ void __launch_bounds__(kSplitThreads) write_kernel(EstimateParams p, int64_t b0, int64_t chunk,
                                                               int64_t nchunks) {
  constexpr int V = Pack<T>::kVec;
  SSD_SHARED(Coef, coef, );
  const int64_t b = sample_of_block(b0, blockIdx.x, nchunks);
  const int64_t k = blockIdx.x % nchunks;
  if (threadIdx.x == 0) {
    const double* slot = chunk_slot(p.out, b, k, p.N, chunk, sizeof(T));
    coef = Coef{slot[0], slot[1], slot[2], 0.0};
  }
  __syncthreads();  // the slot is read before this block overwrites its region
  const Coef kc = coef;
  const int64_t begin = chunk_begin(k, chunk);
  const int64_t end = chunk_end(k, chunk, nchunks, p.N);
  const int64_t row = b * p.N;
  const T* c = static_cast<const T*>(p.eps_cond) + row;
  // The branch decides the second input: noise (rescaled) or eps_uncond (h); the other
  // one is never read.
  const T* other = static_cast<const T*>(kc.branch != 0.0 ? p.noise : p.eps_uncond) + row;
  T* out = static_cast<T*>(p.out) + row;
  for (int64_t e = begin + static_cast<int64_t>(threadIdx.x) * V; e < end;
       e += static_cast<int64_t>(blockDim.x) * V) {
    Pack<T> pc, po, res;
    if (kVector) {
      const uint4 c4 = __ldcs(reinterpret_cast<const uint4*>(c + e));
      const uint4 o4 = __ldcs(reinterpret_cast<const uint4*>(other + e));
      pc = *reinterpret_cast<const Pack<T>*>(&c4);
      po = *reinterpret_cast<const Pack<T>*>(&o4);
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const bool ok = e + q < end;
        pc.v[q] = ok ? c[e + q] : from_f64<T>(0.0);
        po.v[q] = ok ? other[e + q] : from_f64<T>(0.0);
      }
    }
#pragma unroll
    for (int q = 0; q < V; ++q) res.v[q] = out_elem(pc.v[q], po.v[q], po.v[q], kc);
    if (kVector) {
      __stcs(reinterpret_cast<uint4*>(out + e), *reinterpret_cast<const uint4*>(&res));
    } else {
#pragma unroll
      for (int q = 0; q < V; ++q)
        if (e + q < end) out[e + q] = res.v[q];
    }
  }
}

}  // namespace SSD_KERNEL_NAMESPACE
}  // namespace ssd
