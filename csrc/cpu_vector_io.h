// Eight elements of any input type in AVX2 registers, and back: float16 through F16C,
// bfloat16 interleaved with zero bits (its float's upper half), no buffer in memory. The conversions are exact on the way in
// and round to nearest even on the way out, bit for bit as half_convert.h (NaN payloads
// aside). Stores come cached or non-temporal (kStream: the address must be aligned to the
// store's width, 32 bytes for float and double, 16 for the half types).
#pragma once

#include "cpu_dispatch.h"
#include "half_convert.h"

#ifdef SSD_HAVE_X86_PATHS
namespace ssd {

SSD_AVX2_INLINE __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
SSD_AVX2_INLINE __m256 load8(const Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
SSD_AVX2_INLINE __m256 load8(const BFloat16* p) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), zero = _mm_setzero_si128();
  return _mm256_castsi256_ps(_mm256_set_m128i(_mm_unpackhi_epi16(zero, v), _mm_unpacklo_epi16(zero, v)));
}

// Elements 0..3 and 4..7 as doubles (exact), each half in a 128-bit register (no extract).
SSD_AVX2_INLINE void load8d(const Half* p, __m256d& lo, __m256d& hi) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  lo = _mm256_cvtps_pd(_mm_cvtph_ps(v));
  hi = _mm256_cvtps_pd(_mm_cvtph_ps(_mm_unpackhi_epi64(v, v)));
}
SSD_AVX2_INLINE void load8d(const BFloat16* p, __m256d& lo, __m256d& hi) {
  const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), zero = _mm_setzero_si128();
  lo = _mm256_cvtps_pd(_mm_castsi128_ps(_mm_unpacklo_epi16(zero, v)));  // bits << 16
  hi = _mm256_cvtps_pd(_mm_castsi128_ps(_mm_unpackhi_epi16(zero, v)));
}
SSD_AVX2_INLINE void load8d(const float* p, __m256d& lo, __m256d& hi) {
  lo = _mm256_cvtps_pd(_mm_loadu_ps(p));
  hi = _mm256_cvtps_pd(_mm_loadu_ps(p + 4));
}
SSD_AVX2_INLINE void load8d(const double* p, __m256d& lo, __m256d& hi) {
  lo = _mm256_loadu_pd(p);
  hi = _mm256_loadu_pd(p + 4);
}

// Two 4-double halves rounded to 8 floats (as static_cast<float>).
SSD_AVX2_INLINE __m256 narrow8(__m256d lo, __m256d hi) {
  return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}

template <bool kStream>
SSD_AVX2_INLINE void store8(float* p, __m256 v) {
  if constexpr (kStream) {
    _mm256_stream_ps(p, v);
  } else {
    _mm256_storeu_ps(p, v);
  }
}
template <bool kStream>
SSD_AVX2_INLINE void store_bits8(uint16_t* p, __m128i v) {
  if constexpr (kStream) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(p), v);
  } else {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
  }
}
template <bool kStream>
SSD_AVX2_INLINE void store8(Half* p, __m256 v) {
  store_bits8<kStream>(&p->bits, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
// float_to_bfloat16 (half_convert.h) on 8 lanes: round to nearest even, NaN kept quiet.
template <bool kStream>
SSD_AVX2_INLINE void store8(BFloat16* p, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i upper = _mm256_srli_epi32(u, 16);
  const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(upper, _mm256_set1_epi32(1)));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i quiet_nan = _mm256_or_si256(upper, _mm256_set1_epi32(0x40));
  const __m256i is_nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), _mm256_set1_epi32(0x7f800000));
  const __m256i bits = _mm256_blendv_epi8(rounded, quiet_nan, is_nan);  // every lane <= 0xffff
  store_bits8<kStream>(&p->bits, _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1)));
}
template <bool kStream>
SSD_AVX2_INLINE void store4d(double* p, __m256d v) {
  if constexpr (kStream) {
    _mm256_stream_pd(p, v);
  } else {
    _mm256_storeu_pd(p, v);
  }
}

}  // namespace ssd
#endif
