// CPU kernel of the SSD estimator: one reading sweep forms the four per-sample sums, one
// sweep writes the output.
//
// Work is split into fixed units (sample b, chunk of kChunk elements; cpu_schedule.h). Pass 1
// gives each unit its partial sums; pass 2 reduces a sample's partials in chunk order and
// writes the unit's output. Pass 1 runs only where its sums are used: samples with t_b <= M,
// and every sample when stats are asked for. The units never depend on the thread count or
// on which thread runs them, so the result is bitwise the same for any num_threads. Sums
// accumulate in float64 over kLanes independent lanes (element i in lane i % kLanes; each
// step a rounded multiply, then a rounded add: no contraction), reduced by a fixed tree.
// On x86-64 the loops are compiled three times, baseline, AVX2 + F16C (half types widened
// in registers) and AVX-512F, chosen at run time (cpu_dispatch.h); all perform the same
// IEEE operations on the same lanes, so all give the same bits (NaN payloads aside).
// Batches larger than the last-level cache are written with non-temporal stores (AVX2 and
// AVX-512 paths), which changes where the bytes go, not which.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_dispatch.h"
#include "cpu_schedule.h"
#include "cpu_vector_io.h"
#include "half_convert.h"
#include "ssd_coefficients.h"
#include "ssd_core.h"

namespace ssd {
namespace {

constexpr int kLanes = 8;  // independent accumulators per sum

// Element access for the half types (bit patterns in, float out, and back).
template <typename T>
struct Io;

template <>
struct Io<Half> {
  static SSD_INLINE float load(const Half* p, int64_t i) { return half_to_float(p[i].bits); }
  static SSD_INLINE void store(Half* p, int64_t i, float v) { p[i].bits = float_to_half(v); }
};

template <>
struct Io<BFloat16> {
  static SSD_INLINE float load(const BFloat16* p, int64_t i) { return bfloat16_to_float(p[i].bits); }
  static SSD_INLINE void store(BFloat16* p, int64_t i, float v) { p[i].bits = float_to_bfloat16(v); }
};

// Element i as double, for any input type (the scalar tails).
template <typename T>
SSD_INLINE double load_double(const T* p, int64_t i) {
  if constexpr (std::is_same<T, float>::value || std::is_same<T, double>::value) {
    return p[i];
  } else {
    return Io<T>::load(p, i);
  }
}

// n elements of a half type to float and back (the baseline loops; the AVX2 and AVX-512
// loops convert in registers, cpu_vector_io.h).
template <typename T>
SSD_INLINE void widen(const T* p, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Io<T>::load(p, i);
}

template <typename T>
SSD_INLINE void narrow(const float* in, T* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) Io<T>::store(p, i, in[i]);
}

template <typename T>
constexpr bool kIsHalfType = std::is_same<T, Half>::value || std::is_same<T, BFloat16>::value;

SSD_INLINE double lane_tree(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Explicit 4-wide vectors (GCC/Clang vector extensions): SSE2 pairs in the baseline loops;
// the AVX2 loop keeps the same lanes in __m256d registers (add_avx2).
typedef double d4 __attribute__((vector_size(32)));

// Element by element (not __builtin_convertvector, which GCC lowers to SSE2 pieces before
// inlining into the AVX2 loop): the vectoriser then emits one 4-wide conversion per target.
SSD_INLINE d4 load_d4(const float* p) {
  return d4{static_cast<double>(p[0]), static_cast<double>(p[1]), static_cast<double>(p[2]),
            static_cast<double>(p[3])};
}
SSD_INLINE d4 load_d4(const double* p) {
  d4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Running sums over kLanes lanes; element i always goes to lane i % kLanes.
struct LaneSums {
  d4 hh[2] = {}, cc[2] = {}, cn[2] = {}, nn[2] = {};

  template <typename F>
  SSD_INLINE void add(const F* c, const F* u, const F* n, int64_t len) {  // len % kLanes == 0
    for (int64_t i = 0; i < len; i += kLanes) {
      for (int half = 0; half < 2; ++half) {
        const d4 cv = load_d4(c + i + 4 * half), uv = load_d4(u + i + 4 * half), nv = load_d4(n + i + 4 * half);
        const d4 hv = cv - uv;
        hh[half] += hv * hv;
        cc[half] += cv * cv;
        cn[half] += cv * nv;
        nn[half] += nv * nv;
      }
    }
  }

  SSD_INLINE void add_one(int lane, double cv, double uv, double nv) {
    const double hv = cv - uv;
    hh[lane / 4][lane % 4] += hv * hv;
    cc[lane / 4][lane % 4] += cv * cv;
    cn[lane / 4][lane % 4] += cv * nv;
    nn[lane / 4][lane % 4] += nv * nv;
  }

  static SSD_INLINE double total(const d4* v) {
    double a[kLanes];
    std::memcpy(a, v, sizeof a);
    return lane_tree(a);
  }
  SSD_INLINE Sums totals() const { return {total(hh), total(cc), total(cn), total(nn)}; }
};

// One output element, as every loop variant computes it. t_b > M: E = c - u, in float for
// the half types (rounded once) and in the input dtype otherwise.
template <typename T>
SSD_INLINE void h_one(const T* c, const T* u, T* out, int64_t i) {
  if constexpr (kIsHalfType<T>) {
    Io<T>::store(out, i, Io<T>::load(c, i) - Io<T>::load(u, i));
  } else {
    out[i] = c[i] - u[i];
  }
}

// t_b <= M: E = scale * (c - r * n), in float64, rounded once (half types: via float).
template <typename T>
SSD_INLINE void rescaled_one(const T* c, const T* n, T* out, int64_t i, double r, double scale) {
  const double v = scale * (load_double(c, i) - r * load_double(n, i));
  if constexpr (kIsHalfType<T>) {
    Io<T>::store(out, i, static_cast<float>(v));
  } else {
    out[i] = static_cast<T>(v);
  }
}

#ifdef SSD_HAVE_X86_PATHS
// LaneSums::add with AVX2: lanes 0..3 and 4..7 in two registers per sum, the elements
// converted to double in registers (F16C for float16), the same operations per lane.
template <typename T>
SSD_TARGET_AVX2 void add_avx2(LaneSums& acc, const T* c, const T* u, const T* n, int64_t len) {
  __m256d hh0 = acc.hh[0], hh1 = acc.hh[1], cc0 = acc.cc[0], cc1 = acc.cc[1];
  __m256d cn0 = acc.cn[0], cn1 = acc.cn[1], nn0 = acc.nn[0], nn1 = acc.nn[1];
  for (int64_t i = 0; i < len; i += kLanes) {  // len % kLanes == 0
    __m256d c0, c1, u0, u1, n0, n1;
    load8d(c + i, c0, c1);
    load8d(u + i, u0, u1);
    load8d(n + i, n0, n1);
    const __m256d h0 = _mm256_sub_pd(c0, u0), h1 = _mm256_sub_pd(c1, u1);
    hh0 = _mm256_add_pd(hh0, _mm256_mul_pd(h0, h0));
    hh1 = _mm256_add_pd(hh1, _mm256_mul_pd(h1, h1));
    cc0 = _mm256_add_pd(cc0, _mm256_mul_pd(c0, c0));
    cc1 = _mm256_add_pd(cc1, _mm256_mul_pd(c1, c1));
    cn0 = _mm256_add_pd(cn0, _mm256_mul_pd(c0, n0));
    cn1 = _mm256_add_pd(cn1, _mm256_mul_pd(c1, n1));
    nn0 = _mm256_add_pd(nn0, _mm256_mul_pd(n0, n0));
    nn1 = _mm256_add_pd(nn1, _mm256_mul_pd(n1, n1));
  }
  acc.hh[0] = hh0, acc.hh[1] = hh1, acc.cc[0] = cc0, acc.cc[1] = cc1;
  acc.cn[0] = cn0, acc.cn[1] = cn1, acc.nn[0] = nn0, acc.nn[1] = nn1;
}

// The same with AVX-512: one 8-double register per sum holds lanes 0..7, exactly the lanes
// of the two AVX2 halves, with the same operations per lane (the same bits), and the
// conversions to double 8 at a time.
template <typename T>
SSD_TARGET_AVX512 inline __m512d load_d8(const T* p) {
  if constexpr (std::is_same<T, double>::value) {
    return _mm512_loadu_pd(p);
  } else {
    return _mm512_cvtps_pd(load8(p));
  }
}

template <typename T>
SSD_TARGET_AVX512 void add_avx512(LaneSums& acc, const T* c, const T* u, const T* n, int64_t len) {
  static_assert(kLanes == 8 && sizeof(acc.hh) == 8 * sizeof(double), "one register per sum");
  double* sums[4] = {reinterpret_cast<double*>(&acc.hh[0]), reinterpret_cast<double*>(&acc.cc[0]),
                     reinterpret_cast<double*>(&acc.cn[0]), reinterpret_cast<double*>(&acc.nn[0])};
  __m512d hh = _mm512_loadu_pd(sums[0]), cc = _mm512_loadu_pd(sums[1]);
  __m512d cn = _mm512_loadu_pd(sums[2]), nn = _mm512_loadu_pd(sums[3]);
  for (int64_t i = 0; i < len; i += kLanes) {  // len % kLanes == 0
    const __m512d cv = load_d8(c + i), uv = load_d8(u + i), nv = load_d8(n + i);
    const __m512d hv = _mm512_sub_pd(cv, uv);
    hh = _mm512_add_pd(hh, _mm512_mul_pd(hv, hv));
    cc = _mm512_add_pd(cc, _mm512_mul_pd(cv, cv));
    cn = _mm512_add_pd(cn, _mm512_mul_pd(cv, nv));
    nn = _mm512_add_pd(nn, _mm512_mul_pd(nv, nv));
  }
  _mm512_storeu_pd(sums[0], hh), _mm512_storeu_pd(sums[1], cc);
  _mm512_storeu_pd(sums[2], cn), _mm512_storeu_pd(sums[3], nn);
}

// Elements before the first aligned vector store when streaming (the store width: 32 bytes
// for 8 floats or 4 doubles, 16 for 8 halves); 0 when not streaming.
template <typename T, bool kStream>
SSD_INLINE int64_t stream_head(const T* out, int64_t len) {
  if constexpr (!kStream) {
    return 0;
  } else {
    constexpr uintptr_t width = kIsHalfType<T> ? 16 : 32;
    const uintptr_t misaligned = reinterpret_cast<uintptr_t>(out) % width;
    return std::min<int64_t>(len, static_cast<int64_t>((width - misaligned) % width / sizeof(T)));
  }
}

// The two write loops with AVX2, 8 elements a step (scalar head and tail as h_one /
// rescaled_one, the same operations in the body).
template <typename T, bool kStream>
SSD_TARGET_AVX2 void write_h_avx2(const T* c, const T* u, T* out, int64_t len) {
  int64_t i = 0;
  for (const int64_t head = stream_head<T, kStream>(out, len); i < head; ++i) h_one(c, u, out, i);
  for (; i + 8 <= len; i += 8) {
    if constexpr (std::is_same<T, double>::value) {
      store4d<kStream>(out + i, _mm256_sub_pd(_mm256_loadu_pd(c + i), _mm256_loadu_pd(u + i)));
      store4d<kStream>(out + i + 4, _mm256_sub_pd(_mm256_loadu_pd(c + i + 4), _mm256_loadu_pd(u + i + 4)));
    } else {
      store8<kStream>(out + i, _mm256_sub_ps(load8(c + i), load8(u + i)));
    }
  }
  for (; i < len; ++i) h_one(c, u, out, i);
}

template <typename T, bool kStream>
SSD_TARGET_AVX2 void write_rescaled_avx2(const T* c, const T* n, T* out, int64_t len, double r, double scale) {
  const __m256d rv = _mm256_set1_pd(r), sv = _mm256_set1_pd(scale);
  int64_t i = 0;
  for (const int64_t head = stream_head<T, kStream>(out, len); i < head; ++i) rescaled_one(c, n, out, i, r, scale);
  for (; i + 8 <= len; i += 8) {
    __m256d c0, c1, n0, n1;
    load8d(c + i, c0, c1);
    load8d(n + i, n0, n1);
    const __m256d v0 = _mm256_mul_pd(sv, _mm256_sub_pd(c0, _mm256_mul_pd(rv, n0)));
    const __m256d v1 = _mm256_mul_pd(sv, _mm256_sub_pd(c1, _mm256_mul_pd(rv, n1)));
    if constexpr (std::is_same<T, double>::value) {
      store4d<kStream>(out + i, v0);
      store4d<kStream>(out + i + 4, v1);
    } else {
      store8<kStream>(out + i, narrow8(v0, v1));
    }
  }
  for (; i < len; ++i) rescaled_one(c, n, out, i, r, scale);
}
#endif

template <int kIsa, typename F>
SSD_INLINE void lane_add(LaneSums& acc, const F* c, const F* u, const F* n, int64_t len) {
#ifdef SSD_HAVE_X86_PATHS
  if constexpr (kIsa == kIsaAvx512) {
    add_avx512(acc, c, u, n, len);
  } else if constexpr (kIsa == kIsaAvx2) {
    add_avx2(acc, c, u, n, len);
  } else {
    acc.add(c, u, n, len);
  }
#else
  acc.add(c, u, n, len);
#endif
}

constexpr int64_t kBlock = 512;  // baseline loops: half types are widened to float in blocks of this size

// The four sums over `len` elements of one chunk.
template <typename T, int kIsa>
SSD_INLINE Sums chunk_sums(const T* __restrict c, const T* __restrict u, const T* __restrict n, int64_t len) {
  LaneSums acc;
  const int64_t body = len - len % kLanes;
  if constexpr (!kIsHalfType<T> || kIsa != kIsaBaseline) {
    lane_add<kIsa>(acc, c, u, n, body);
  } else {
    float cb[kBlock], ub[kBlock], nb[kBlock];
    for (int64_t i0 = 0; i0 < body; i0 += kBlock) {
      const int64_t m = std::min(kBlock, body - i0);
      widen(c + i0, cb, m);
      widen(u + i0, ub, m);
      widen(n + i0, nb, m);
      lane_add<kIsa>(acc, cb, ub, nb, m);
    }
  }
  for (int64_t i = body; i < len; ++i)
    acc.add_one(static_cast<int>(i - body), load_double(c, i), load_double(u, i), load_double(n, i));
  return acc.totals();
}

// t_b > M: E = c - u over one chunk.
template <typename T, int kIsa>
SSD_INLINE void chunk_write_h(const T* __restrict c, const T* __restrict u, T* __restrict out, int64_t len,
                              bool stream) {
#ifdef SSD_HAVE_X86_PATHS
  if constexpr (kIsa != kIsaBaseline) {
    stream ? write_h_avx2<T, true>(c, u, out, len) : write_h_avx2<T, false>(c, u, out, len);
    return;
  }
#endif
  (void)stream;
  if constexpr (!kIsHalfType<T>) {
    for (int64_t i = 0; i < len; ++i) out[i] = c[i] - u[i];
  } else {
    float cb[kBlock], ub[kBlock];
    for (int64_t i0 = 0; i0 < len; i0 += kBlock) {
      const int64_t m = std::min(kBlock, len - i0);
      widen(c + i0, cb, m);
      widen(u + i0, ub, m);
      for (int64_t i = 0; i < m; ++i) cb[i] -= ub[i];
      narrow(cb, out + i0, m);
    }
  }
}

// t_b <= M: E = scale * (c - r * n) over one chunk.
template <typename T, int kIsa>
SSD_INLINE void chunk_write_rescaled(const T* __restrict c, const T* __restrict n, T* __restrict out, int64_t len,
                                     double r, double scale, bool stream) {
#ifdef SSD_HAVE_X86_PATHS
  if constexpr (kIsa != kIsaBaseline) {
    stream ? write_rescaled_avx2<T, true>(c, n, out, len, r, scale)
           : write_rescaled_avx2<T, false>(c, n, out, len, r, scale);
    return;
  }
#endif
  (void)stream;
  if constexpr (!kIsHalfType<T>) {
    for (int64_t i = 0; i < len; ++i) out[i] = static_cast<T>(scale * (static_cast<double>(c[i]) - r * n[i]));
  } else {
    float cb[kBlock], nb[kBlock];
    for (int64_t i0 = 0; i0 < len; i0 += kBlock) {
      const int64_t m = std::min(kBlock, len - i0);
      widen(c + i0, cb, m);
      widen(n + i0, nb, m);
      for (int64_t i = 0; i < m; ++i)
        cb[i] = static_cast<float>(scale * (static_cast<double>(cb[i]) - r * static_cast<double>(nb[i])));
      narrow(cb, out + i0, m);
    }
  }
}

// One call's work: the parameters, the chunk partial sums [B * chunks_per_sample], the
// chunks per sample and whether the output is streamed.
struct Job {
  const EstimateParams& p;
  Sums* partials;
  int64_t cps;
  bool stream;
};

SSD_INLINE bool mode_seeking(const EstimateParams& p, int64_t b) {
  return (p.t ? p.t[b] : p.t_scalar) <= p.M;  // a NaN t gives h, as in the reference
}

// Units [unit0, unit1) of pass 1.
using PassFn = void (*)(const Job& job, int64_t unit0, int64_t unit1);

template <typename T, int kIsa>
SSD_INLINE void pass1_body(const Job& job, int64_t unit0, int64_t unit1) {
  const EstimateParams& p = job.p;
  const T* c = static_cast<const T*>(p.eps_cond);
  const T* u = static_cast<const T*>(p.eps_uncond);
  const T* n = static_cast<const T*>(p.noise);
  for (int64_t unit = unit0; unit < unit1; ++unit) {
    const int64_t b = unit / job.cps, begin = (unit % job.cps) * kChunk;
    if (p.stats == nullptr && !mode_seeking(p, b)) continue;  // the sums would not be used
    const int64_t len = std::min(kChunk, p.N - begin);
    const int64_t off = b * p.N + begin;
    job.partials[unit] = chunk_sums<T, kIsa>(c + off, u + off, n + off, len);
  }
}

template <typename T, int kIsa>
SSD_INLINE void pass2_body(const Job& job, int64_t unit0, int64_t unit1) {
  const EstimateParams& p = job.p;
  const T* c = static_cast<const T*>(p.eps_cond);
  const T* u = static_cast<const T*>(p.eps_uncond);
  const T* n = static_cast<const T*>(p.noise);
  T* out = static_cast<T*>(p.out);
  const int64_t N = p.N, cps = job.cps;
  for (int64_t unit = unit0; unit < unit1; ++unit) {
    const int64_t b = unit / cps, chunk = unit % cps, begin = chunk * kChunk;
    const int64_t len = std::min(kChunk, N - begin);
    const int64_t off = b * N + begin;
    const bool seeking = mode_seeking(p, b);
    if (!seeking) chunk_write_h<T, kIsa>(c + off, u + off, out + off, len, job.stream);
    if (seeking || (chunk == 0 && p.stats != nullptr)) {  // the sample's sums are needed
      Sums s{0, 0, 0, 0};
      for (int64_t j = 0; j < cps; ++j) {  // fixed order: the same bits for any thread count
        const Sums& q = job.partials[b * cps + j];
        s.hh += q.hh;
        s.cc += q.cc;
        s.cn += q.cn;
        s.nn += q.nn;
      }
      const Coefficients k = coefficients(s);
      if (chunk == 0 && p.stats != nullptr)
        for (int i = 0; i < kNumStats; ++i) p.stats[i * p.B + b] = stat(s, k, i);
      if (seeking) chunk_write_rescaled<T, kIsa>(c + off, n + off, out + off, len, k.r, k.out_scale, job.stream);
    }
  }
#ifdef SSD_HAVE_X86_PATHS
  if (job.stream) _mm_sfence();  // the streamed lines are visible before this thread reports done
#endif
}

template <typename T>
void pass1_generic(const Job& job, int64_t u0, int64_t u1) {
  pass1_body<T, kIsaBaseline>(job, u0, u1);
}
template <typename T>
void pass2_generic(const Job& job, int64_t u0, int64_t u1) {
  pass2_body<T, kIsaBaseline>(job, u0, u1);
}
#ifdef SSD_HAVE_X86_PATHS
template <typename T>
SSD_TARGET_AVX2 void pass1_avx2(const Job& job, int64_t u0, int64_t u1) {
  pass1_body<T, kIsaAvx2>(job, u0, u1);
}
template <typename T>
SSD_TARGET_AVX2 void pass2_avx2(const Job& job, int64_t u0, int64_t u1) {
  pass2_body<T, kIsaAvx2>(job, u0, u1);
}
template <typename T>
SSD_TARGET_AVX512 void pass1_avx512(const Job& job, int64_t u0, int64_t u1) {
  pass1_body<T, kIsaAvx512>(job, u0, u1);
}
#endif

template <typename T>
void run(const EstimateParams& p, int num_threads) {
  const int64_t cps = std::max<int64_t>(1, (p.N + kChunk - 1) / kChunk);  // chunks per sample
  const int64_t units = p.B * cps;
  std::vector<Sums> partial_sums(static_cast<size_t>(units));

  PassFn pass1 = pass1_generic<T>;
  PassFn pass2 = pass2_generic<T>;
  bool stream = false;
#ifdef SSD_HAVE_X86_PATHS
  const int isa = simd_level();
  if (isa >= kIsaAvx2) {  // AVX-512: its own sums loop, the AVX2 write loops
    pass1 = isa == kIsaAvx512 ? pass1_avx512<T> : pass1_avx2<T>;
    pass2 = pass2_avx2<T>;
    stream = reinterpret_cast<uintptr_t>(p.out) % sizeof(T) == 0 &&
             stream_output(4 * p.B * p.N * static_cast<int64_t>(sizeof(T)));
  }
#endif
  const Job job{p, partial_sums.data(), cps, stream};
  const int nt = choose_threads(num_threads, units, p.B * p.N);
  run_passes(p.B, cps, nt, [&](int64_t u0, int64_t u1) { pass1(job, u0, u1); },
             [&](int64_t u0, int64_t u1) { pass2(job, u0, u1); });
}

}  // namespace

void estimate_cpu(const EstimateParams& p, int num_threads) {
  validate_params(p);
  if (p.B == 0) return;
  switch (p.dtype) {
    case DType::kFloat16: run<Half>(p, num_threads); break;
    case DType::kBFloat16: run<BFloat16>(p, num_threads); break;
    case DType::kFloat32: run<float>(p, num_threads); break;
    case DType::kFloat64: run<double>(p, num_threads); break;
  }
}

}  // namespace ssd
