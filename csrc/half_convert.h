// float16 / bfloat16 <-> float conversions, round-to-nearest-even. Cases are merged with
// bit masks rather than ?: (GCC turns ?: chains into branches that stop vectorisation).
// Bit patterns are uint16_t; no compiler half type is needed.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__GNUC__)
#define SSD_INLINE inline __attribute__((always_inline))
#else
#define SSD_INLINE inline
#endif

namespace ssd {

// Element types of the half-precision arrays (bit patterns only).
struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

SSD_INLINE uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// All ones where `cond` holds, else 0.
SSD_INLINE uint32_t mask_if(bool cond) { return 0u - static_cast<uint32_t>(cond); }

// a where mask is all ones, b where it is 0.
SSD_INLINE uint32_t blend(uint32_t mask, uint32_t a, uint32_t b) { return (a & mask) | (b & ~mask); }

SSD_INLINE float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// Exact: every float16 value is a float.
SSD_INLINE float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  const uint32_t normal = (em << 13) + ((127u - 15u) << 23);
  const uint32_t inf_nan = (em << 13) | 0x7f800000u;
  const uint32_t subnormal = float_bits(static_cast<float>(static_cast<int32_t>(em)) * 0x1p-24f);
  const uint32_t mag = blend(mask_if(em >= 0x7c00u), inf_nan, blend(mask_if(em < 0x0400u), subnormal, normal));
  return bits_float(mag | sign);
}

// Round to nearest even; overflow gives +-inf, NaN gives a quiet NaN.
SSD_INLINE uint16_t float_to_half(float f) {
  uint32_t u = float_bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  // |f| < 2^-14: let float addition round the subnormal (the magic constant aligns the
  // half's last mantissa bit with the float's).
  const uint32_t denorm_magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  const uint32_t sub = float_bits(bits_float(u) + bits_float(denorm_magic)) - denorm_magic;
  // Normal range: rebias, add the rounding bias (ties to even), shift.
  const uint32_t odd = (u >> 13) & 1u;
  const uint32_t nrm = (u + ((15u - 127u) << 23) + 0xfffu + odd) >> 13;
  const uint32_t big = blend(mask_if(u > 0x7f800000u), 0x7e00u, 0x7c00u);  // NaN : inf or overflow
  const uint32_t mag = blend(mask_if(u >= ((127u + 16u) << 23)), big, blend(mask_if(u < (113u << 23)), sub, nrm));
  return static_cast<uint16_t>(mag | (sign >> 16));
}

SSD_INLINE float bfloat16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

// Round to nearest even; NaN stays a (quiet) NaN.
SSD_INLINE uint16_t float_to_bfloat16(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (u >> 16) | 0x40u;
  return static_cast<uint16_t>(blend(mask_if((u & 0x7fffffffu) > 0x7f800000u), quiet_nan, rounded));
}

}  // namespace ssd
