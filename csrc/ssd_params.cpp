// Checks of the one parameter struct (ssd_core.h), shared by the CPU and CUDA entry points.
#include <cstdio>
#include <stdexcept>
#include <string>

#include "ssd_core.h"

namespace ssd {
namespace {

std::string hex(uintptr_t v) {
  char text[2 + 16 + 1];
  std::snprintf(text, sizeof text, "0x%llx", static_cast<unsigned long long>(v));
  return text;
}

struct Range {
  const char* name;
  uintptr_t begin;
  uintptr_t end;  // one past the last byte; begin == end: empty (overlaps nothing)
};

Range range(const char* name, const void* ptr, int64_t bytes) {
  const auto begin = reinterpret_cast<uintptr_t>(ptr);
  return Range{name, begin, ptr ? begin + static_cast<uintptr_t>(bytes) : begin};
}

void check_disjoint(const Range& written, const Range& other) {
  if (written.begin < written.end && other.begin < other.end && written.begin < other.end &&
      other.begin < written.end)
    throw std::invalid_argument(std::string(written.name) + ": expected memory that does not overlap " + other.name +
                                " [" + hex(other.begin) + ", " + hex(other.end) + "), got [" + hex(written.begin) +
                                ", " + hex(written.end) + ")");
}

}  // namespace

int64_t item_size(DType d) {
  switch (d) {
    case DType::kFloat16:
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat64: return 8;
  }
  return 0;
}

DType dtype_from_name(const char* name) {
  const std::string s = name ? name : "";
  if (s == "float16") return DType::kFloat16;
  if (s == "bfloat16") return DType::kBFloat16;
  if (s == "float32") return DType::kFloat32;
  if (s == "float64") return DType::kFloat64;
  throw std::invalid_argument("dtype: expected one of 'float16', 'bfloat16', 'float32', 'float64', got '" + s + "'");
}

EstimateParams params_from_addresses(uintptr_t eps_cond, uintptr_t eps_uncond, uintptr_t noise, uintptr_t out,
                                     uintptr_t t, double t_scalar, uintptr_t stats, int64_t B, int64_t N,
                                     const char* dtype, double M) {
  EstimateParams p{};
  p.eps_cond = reinterpret_cast<const void*>(eps_cond);
  p.eps_uncond = reinterpret_cast<const void*>(eps_uncond);
  p.noise = reinterpret_cast<const void*>(noise);
  p.out = reinterpret_cast<void*>(out);
  p.t = reinterpret_cast<const double*>(t);
  p.t_scalar = t_scalar;
  p.stats = reinterpret_cast<double*>(stats);
  p.B = B;
  p.N = N;
  p.dtype = dtype_from_name(dtype);
  p.M = M;
  return p;
}

void validate_params(const EstimateParams& p) {
  if (p.B < 0) throw std::invalid_argument("B: expected >= 0, got " + std::to_string(p.B));
  if (p.N < 0) throw std::invalid_argument("N: expected >= 0, got " + std::to_string(p.N));
  const int d = static_cast<int>(p.dtype);
  if (d < 0 || d > 3) throw std::invalid_argument("dtype: expected a DType value 0..3, got " + std::to_string(d));
  if (p.B == 0 || p.N == 0) return;
  const char* names[] = {"eps_cond", "eps_uncond", "noise", "out"};
  const void* ptrs[] = {p.eps_cond, p.eps_uncond, p.noise, p.out};
  for (int i = 0; i < 4; ++i)
    if (ptrs[i] == nullptr) throw std::invalid_argument(std::string(names[i]) + ": expected a data pointer, got null");
  // Outputs written while inputs are still read (the split CUDA path even uses out as
  // scratch before re-reading the inputs): any shared byte would corrupt the result.
  const int64_t bytes = p.B * p.N * item_size(p.dtype);
  const Range c = range("eps_cond", p.eps_cond, bytes), u = range("eps_uncond", p.eps_uncond, bytes),
              n = range("noise", p.noise, bytes), t = range("t", p.t, p.B * 8), out = range("out", p.out, bytes),
              stats = range("stats", p.stats, kNumStats * p.B * 8);
  for (const Range& other : {c, u, n, t}) check_disjoint(out, other);
  for (const Range& other : {c, u, n, t, out}) check_disjoint(stats, other);
}

void validate_alignment(const EstimateParams& p) {
  if (p.B == 0 || p.N == 0) return;
  const int64_t esize = item_size(p.dtype);
  const char* dtype_names[] = {"float16", "bfloat16", "float32", "float64"};
  const char* dtype = dtype_names[static_cast<int>(p.dtype)];
  struct Arg {
    const char* name;
    const void* ptr;
    int64_t align;
    const char* of;
  };
  const Arg args[] = {{"eps_cond", p.eps_cond, esize, dtype}, {"eps_uncond", p.eps_uncond, esize, dtype},
                      {"noise", p.noise, esize, dtype},       {"out", p.out, esize, dtype},
                      {"t", p.t, 8, "float64"},                {"stats", p.stats, 8, "float64"}};
  for (const Arg& a : args) {
    const auto addr = reinterpret_cast<uintptr_t>(a.ptr);
    if (addr % static_cast<uintptr_t>(a.align) != 0)
      throw std::invalid_argument(std::string(a.name) + ": expected an address aligned to its " + a.of + " elements (" +
                                  std::to_string(a.align) + " bytes), got " + hex(addr) + " (" +
                                  std::to_string(addr % static_cast<uintptr_t>(a.align)) + " bytes past a boundary)");
  }
}

}  // namespace ssd
