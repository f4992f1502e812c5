// CPU kernel of the SSD estimator: one reading sweep forms the four per-sample sums, one
// sweep writes the output.
//
// Work is split into fixed units (sample b, chunk of kChunk elements). Pass 1 gives each
// unit its partial sums; pass 2 reduces a sample's partials in chunk order and writes the
// unit's output. Threads take whole samples (pass 2 right after pass 1, from cache) or,
// with fewer samples than threads, units, pass 2 waiting for every partial sum; work is
// handed out dynamically. The units never depend on the thread count or on which thread
// runs them, so the result is bitwise the same for any num_threads. Sums accumulate in
// float64 over kLanes independent lanes (vectorisable without reassociation), reduced by a
// fixed tree.
// On x86-64 the loops are compiled three times, baseline, AVX2 (+F16C for float16) and
// AVX-512F, chosen at run time; with -ffp-contract=off all perform the same IEEE operations
// on the same lanes, so all give the same bits (NaN payloads aside).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "half_convert.h"
#include "ssd_coefficients.h"
#include "ssd_core.h"
#include "thread_pool.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SSD_HAVE_AVX2_PATH 1
#define SSD_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#define SSD_TARGET_AVX512 __attribute__((target("avx512f,avx2,f16c")))
#endif

namespace ssd {
namespace {

// Instruction sets of the loop variants (template argument kIsa).
constexpr int kIsaBaseline = 0, kIsaAvx2 = 1, kIsaAvx512 = 2;

constexpr int64_t kChunk = 8192;               // elements per unit; fixes the summation order
constexpr int kLanes = 8;                      // independent accumulators per sum
// Measured on a 2-core VM: waking a sleeping worker costs ~20-40 us. Below kMinElemsToWake
// elements a call runs on the caller alone; above it helpers are asked for, at most one
// per kMinElemsPerThread elements (sleeping workers) or kMinElemsPerHotThread (polling ones).
constexpr int64_t kMinElemsToWake = 32768;
constexpr int64_t kMinElemsPerThread = 65536;
constexpr int64_t kMinElemsPerHotThread = 8192;

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

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

#ifdef SSD_HAVE_AVX2_PATH
// float16 blocks with the F16C instructions (IEEE round-to-nearest-even, as half_convert.h;
// only NaN payloads may differ from the portable code).
SSD_TARGET_AVX2 void widen_f16c(const Half* p, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))));
  for (; i < n; ++i) out[i] = half_to_float(p[i].bits);
}

SSD_TARGET_AVX2 void narrow_f16c(const float* in, Half* p, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) p[i].bits = float_to_half(in[i]);
}
#endif

// n elements of a half type to float (F16C instructions for float16 from the AVX2 path on).
template <typename T, int kIsa>
SSD_INLINE void widen(const T* p, float* out, int64_t n) {
#ifdef SSD_HAVE_AVX2_PATH
  if constexpr (kIsa >= kIsaAvx2 && std::is_same<T, Half>::value) {
    widen_f16c(p, out, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) out[i] = Io<T>::load(p, i);
}

template <typename T, int kIsa>
SSD_INLINE void narrow(const float* in, T* p, int64_t n) {
#ifdef SSD_HAVE_AVX2_PATH
  if constexpr (kIsa >= kIsaAvx2 && std::is_same<T, Half>::value) {
    narrow_f16c(in, p, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) Io<T>::store(p, i, in[i]);
}

template <typename T>
constexpr bool kIsHalfType = std::is_same<T, Half>::value || std::is_same<T, BFloat16>::value;

SSD_INLINE double lane_tree(const double* a) {
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

// Explicit 4-wide vectors (GCC/Clang vector extensions): lowered to SSE2 pairs in the
// baseline path, to single AVX2 registers in the AVX2 path; the same lanes either way.
typedef double d4 __attribute__((vector_size(32)));
typedef float f4 __attribute__((vector_size(16)));

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

#ifdef SSD_HAVE_AVX2_PATH
// LaneSums::add with AVX-512: one 8-double register per sum holds lanes 0..7, exactly the
// lanes of the two 4-wide halves, with the same operations per lane (the same bits). Half
// as many instructions as AVX2, and the float -> double conversions, which bound the AVX2
// loop, 8 at a time.
SSD_TARGET_AVX512 SSD_INLINE __m512d load_d8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
SSD_TARGET_AVX512 SSD_INLINE __m512d load_d8(const double* p) { return _mm512_loadu_pd(p); }

template <typename F>
SSD_TARGET_AVX512 void add_avx512(LaneSums& acc, const F* c, const F* u, const F* n, int64_t len) {
  static_assert(kLanes == 8 && sizeof(acc.hh) == 8 * sizeof(double), "one register per sum");
  __m512d hh = _mm512_loadu_pd(reinterpret_cast<const double*>(acc.hh));
  __m512d cc = _mm512_loadu_pd(reinterpret_cast<const double*>(acc.cc));
  __m512d cn = _mm512_loadu_pd(reinterpret_cast<const double*>(acc.cn));
  __m512d nn = _mm512_loadu_pd(reinterpret_cast<const double*>(acc.nn));
  for (int64_t i = 0; i < len; i += kLanes) {  // len % kLanes == 0
    const __m512d cv = load_d8(c + i), uv = load_d8(u + i), nv = load_d8(n + i);
    const __m512d hv = _mm512_sub_pd(cv, uv);
    hh = _mm512_add_pd(hh, _mm512_mul_pd(hv, hv));
    cc = _mm512_add_pd(cc, _mm512_mul_pd(cv, cv));
    cn = _mm512_add_pd(cn, _mm512_mul_pd(cv, nv));
    nn = _mm512_add_pd(nn, _mm512_mul_pd(nv, nv));
  }
  _mm512_storeu_pd(reinterpret_cast<double*>(acc.hh), hh);
  _mm512_storeu_pd(reinterpret_cast<double*>(acc.cc), cc);
  _mm512_storeu_pd(reinterpret_cast<double*>(acc.cn), cn);
  _mm512_storeu_pd(reinterpret_cast<double*>(acc.nn), nn);
}
#endif

template <int kIsa, typename F>
SSD_INLINE void lane_add(LaneSums& acc, const F* c, const F* u, const F* n, int64_t len) {
#ifdef SSD_HAVE_AVX2_PATH
  if constexpr (kIsa == kIsaAvx512) {
    add_avx512(acc, c, u, n, len);
    return;
  }
#endif
  acc.add(c, u, n, len);
}

constexpr int64_t kBlock = 512;  // half types are widened to float in blocks of this size

// The four sums over `len` elements of one chunk.
template <typename T, int kIsa>
SSD_INLINE Sums chunk_sums(const T* __restrict c, const T* __restrict u, const T* __restrict n, int64_t len) {
  LaneSums acc;
  const int64_t body = len - len % kLanes;
  if constexpr (!kIsHalfType<T>) {
    lane_add<kIsa>(acc, c, u, n, body);
  } else {
    float cb[kBlock], ub[kBlock], nb[kBlock];
    for (int64_t i0 = 0; i0 < body; i0 += kBlock) {
      const int64_t m = std::min(kBlock, body - i0);
      widen<T, kIsa>(c + i0, cb, m);
      widen<T, kIsa>(u + i0, ub, m);
      widen<T, kIsa>(n + i0, nb, m);
      lane_add<kIsa>(acc, cb, ub, nb, m);
    }
  }
  for (int64_t i = body; i < len; ++i)
    acc.add_one(static_cast<int>(i - body), load_double(c, i), load_double(u, i), load_double(n, i));
  return acc.totals();
}

// t_b > M: E = c - u, in float for half types (rounded once) and in the input dtype otherwise.
template <typename T, int kIsa>
SSD_INLINE void chunk_write_h(const T* __restrict c, const T* __restrict u, T* __restrict out, int64_t len) {
  if constexpr (!kIsHalfType<T>) {
    for (int64_t i = 0; i < len; ++i) out[i] = c[i] - u[i];
  } else {
    float cb[kBlock], ub[kBlock];
    for (int64_t i0 = 0; i0 < len; i0 += kBlock) {
      const int64_t m = std::min(kBlock, len - i0);
      widen<T, kIsa>(c + i0, cb, m);
      widen<T, kIsa>(u + i0, ub, m);
      for (int64_t i = 0; i < m; ++i) cb[i] -= ub[i];
      narrow<T, kIsa>(cb, out + i0, m);
    }
  }
}

// t_b <= M: E = scale * (c - r * n), in float64, rounded once (half types: via float).
template <typename T, int kIsa>
SSD_INLINE void chunk_write_rescaled(const T* __restrict c, const T* __restrict n, T* __restrict out, int64_t len,
                                     double r, double scale) {
  if constexpr (!kIsHalfType<T>) {
    for (int64_t i = 0; i < len; ++i) out[i] = static_cast<T>(scale * (static_cast<double>(c[i]) - r * n[i]));
  } else {
    float cb[kBlock], nb[kBlock];
    for (int64_t i0 = 0; i0 < len; i0 += kBlock) {
      const int64_t m = std::min(kBlock, len - i0);
      widen<T, kIsa>(c + i0, cb, m);
      widen<T, kIsa>(n + i0, nb, m);
      for (int64_t i = 0; i < m; ++i)
        cb[i] = static_cast<float>(scale * (static_cast<double>(cb[i]) - r * static_cast<double>(nb[i])));
      narrow<T, kIsa>(cb, out + i0, m);
    }
  }
}

// One call's work: the parameters, the chunk partial sums [B * chunks_per_sample] and
// the units [unit0, unit1) to run.
using PassFn = void (*)(const EstimateParams& p, Sums* partials, int64_t cps, int64_t unit0, int64_t unit1);

template <typename T, int kIsa>
SSD_INLINE void pass1_body(const EstimateParams& p, Sums* partials, int64_t cps, int64_t unit0, int64_t unit1) {
  const T* c = static_cast<const T*>(p.eps_cond);
  const T* u = static_cast<const T*>(p.eps_uncond);
  const T* n = static_cast<const T*>(p.noise);
  for (int64_t unit = unit0; unit < unit1; ++unit) {
    const int64_t b = unit / cps, begin = (unit % cps) * kChunk;
    const int64_t len = std::min(kChunk, p.N - begin);
    const int64_t off = b * p.N + begin;
    partials[unit] = chunk_sums<T, kIsa>(c + off, u + off, n + off, len);
  }
}

template <typename T, int kIsa>
SSD_INLINE void pass2_body(const EstimateParams& p, Sums* partials, int64_t cps, int64_t unit0, int64_t unit1) {
  const T* c = static_cast<const T*>(p.eps_cond);
  const T* u = static_cast<const T*>(p.eps_uncond);
  const T* n = static_cast<const T*>(p.noise);
  T* out = static_cast<T*>(p.out);
  const int64_t N = p.N;
  for (int64_t unit = unit0; unit < unit1; ++unit) {
    const int64_t b = unit / cps, chunk = unit % cps, begin = chunk * kChunk;
    const int64_t len = std::min(kChunk, N - begin);
    const int64_t off = b * N + begin;
    const bool mode_seeking = (p.t ? p.t[b] : p.t_scalar) <= p.M;  // a NaN t gives h, as in the reference
    if (!mode_seeking) chunk_write_h<T, kIsa>(c + off, u + off, out + off, len);
    if (mode_seeking || (chunk == 0 && p.stats != nullptr)) {  // the sample's sums are needed
      Sums s{0, 0, 0, 0};
      for (int64_t j = 0; j < cps; ++j) {  // fixed order: the same bits for any thread count
        const Sums& q = partials[b * cps + j];
        s.hh += q.hh;
        s.cc += q.cc;
        s.cn += q.cn;
        s.nn += q.nn;
      }
      const Coefficients k = coefficients(s);
      if (chunk == 0 && p.stats != nullptr)
        for (int i = 0; i < kNumStats; ++i) p.stats[i * p.B + b] = stat(s, k, i);
      if (mode_seeking) chunk_write_rescaled<T, kIsa>(c + off, n + off, out + off, len, k.r, k.out_scale);
    }
  }
}

template <typename T>
void pass1_generic(const EstimateParams& p, Sums* partials, int64_t cps, int64_t u0, int64_t u1) {
  pass1_body<T, kIsaBaseline>(p, partials, cps, u0, u1);
}
template <typename T>
void pass2_generic(const EstimateParams& p, Sums* partials, int64_t cps, int64_t u0, int64_t u1) {
  pass2_body<T, kIsaBaseline>(p, partials, cps, u0, u1);
}
#ifdef SSD_HAVE_AVX2_PATH
template <typename T>
SSD_TARGET_AVX2 void pass1_avx2(const EstimateParams& p, Sums* partials, int64_t cps, int64_t u0, int64_t u1) {
  pass1_body<T, kIsaAvx2>(p, partials, cps, u0, u1);
}
template <typename T>
SSD_TARGET_AVX2 void pass2_avx2(const EstimateParams& p, Sums* partials, int64_t cps, int64_t u0, int64_t u1) {
  pass2_body<T, kIsaAvx2>(p, partials, cps, u0, u1);
}
template <typename T>
SSD_TARGET_AVX512 void pass1_avx512(const EstimateParams& p, Sums* partials, int64_t cps, int64_t u0, int64_t u1) {
  pass1_body<T, kIsaAvx512>(p, partials, cps, u0, u1);
}
template <typename T>
SSD_TARGET_AVX512 void pass2_avx512(const EstimateParams& p, Sums* partials, int64_t cps, int64_t u0, int64_t u1) {
  pass2_body<T, kIsaAvx512>(p, partials, cps, u0, u1);
}
#endif

// The best loop variant the CPU runs: AVX-512F (with AVX2 + F16C), else AVX2 + F16C, else
// baseline. SSD_TOOLKIT_CPU_SIMD=0 forces the baseline loops, =avx2 caps at AVX2 (tests).
int simd_level() {
#ifdef SSD_HAVE_AVX2_PATH
  const char* env = std::getenv("SSD_TOOLKIT_CPU_SIMD");
  const std::string cap = env != nullptr ? env : "";
  if (cap == "0") return kIsaBaseline;
  if (!(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))) return kIsaBaseline;
  if (cap == "avx2" || !__builtin_cpu_supports("avx512f")) return kIsaAvx2;
  return kIsaAvx512;
#else
  return kIsaBaseline;
#endif
}

// Threads for a call of `elements` elements in `units` units. Parked workers that still
// poll after the previous call (hot) start at once, so a few chunks per thread are enough;
// sleeping ones are woken only for calls long enough to outlast the wake-up (the caller
// never waits for a helper that arrives after the work is gone, see thread_pool.h).
int choose_threads(int requested, int64_t units, int64_t elements) {
  static const int64_t hardware = std::max(1u, std::thread::hardware_concurrency());  // ~5 us a query
  int64_t nt = requested > 0 ? requested : hardware;
  nt = std::min<int64_t>(nt, units);
  if (nt <= 1 || elements < kMinElemsToWake) return 1;
  const int64_t per_thread = ThreadPool::hot(static_cast<int>(nt)) ? kMinElemsPerHotThread : kMinElemsPerThread;
  nt = std::max<int64_t>(2, std::min<int64_t>(nt, elements / per_thread));
  return static_cast<int>(nt);
}

template <typename T>
void run(const EstimateParams& p, int num_threads) {
  const int64_t cps = std::max<int64_t>(1, (p.N + kChunk - 1) / kChunk);  // chunks per sample
  const int64_t units = p.B * cps;
  std::vector<Sums> partial_sums(static_cast<size_t>(units));
  Sums* partials = partial_sums.data();

  PassFn pass1 = pass1_generic<T>;
  PassFn pass2 = pass2_generic<T>;
#ifdef SSD_HAVE_AVX2_PATH
  const int isa = simd_level();
  if (isa == kIsaAvx2) {
    pass1 = pass1_avx2<T>;
    pass2 = pass2_avx2<T>;
  } else if (isa == kIsaAvx512) {
    pass1 = pass1_avx512<T>;
    pass2 = pass2_avx512<T>;
  }
#endif
  const int nt = choose_threads(num_threads, units, p.B * p.N);
  // Whole samples per thread when there are enough of them: pass 2 re-reads a sample
  // right after pass 1, from cache. Otherwise units, pass 2 after all of pass 1.
  // Both give the same partial sums, reduced in the same order: the same bits.
  const bool whole_samples = p.B % nt == 0 || p.B >= 8 * nt;  // balanced enough
  // Threads take the next sample (or unit) from a shared counter, so a thread slowed by
  // other load does not hold the rest up, and any number of them (the caller alone
  // included) completes the job. Who computes a unit never changes its bits.
  std::atomic<int64_t> next_sample{0}, next_unit1{0}, next_unit2{0}, done_unit1{0};
  constexpr int64_t kGrab = 4;  // units taken at a time in the unit-split mode
  auto worker = [&](int) {
    if (whole_samples) {
      for (int64_t b; (b = next_sample.fetch_add(1, std::memory_order_relaxed)) < p.B;) {
        pass1(p, partials, cps, b * cps, (b + 1) * cps);
        pass2(p, partials, cps, b * cps, (b + 1) * cps);
      }
      return;
    }
    for (int64_t u0; (u0 = next_unit1.fetch_add(kGrab, std::memory_order_relaxed)) < units;) {
      const int64_t u1 = std::min(units, u0 + kGrab);
      pass1(p, partials, cps, u0, u1);
      done_unit1.fetch_add(u1 - u0, std::memory_order_release);
    }
    spin_until([&] { return done_unit1.load(std::memory_order_acquire) == units; });  // every partial sum
    for (int64_t u0; (u0 = next_unit2.fetch_add(kGrab, std::memory_order_relaxed)) < units;)
      pass2(p, partials, cps, u0, std::min(units, u0 + kGrab));
  };
  ThreadPool::run(nt, worker);
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
