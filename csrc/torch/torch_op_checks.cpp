// Argument checks of ssd_toolkit::estimate (torch_op_checks.h).
#include "torch_op_checks.h"

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace ssd_torch {
namespace {

using torch::headeronly::ScalarType;

constexpr const char* kFloatDtypes = "('float16', 'bfloat16', 'float32', 'float64')";

std::string shape_text(const Tensor& x) {
  std::ostringstream s;
  s << '[';
  const auto sizes = x.sizes();
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << ']';
  return s.str();
}

bool same_device(const torch::stable::Device& a, const torch::stable::Device& b) {
  return a.type() == b.type() && a.index() == b.index();
}

void check_strided(const char* name, const Tensor& x) {
  if (x.layout() != torch::headeronly::Layout::Strided)
    throw std::invalid_argument(std::string(name) + ": expected a dense (strided) tensor, got layout " +
                                std::to_string(static_cast<int>(x.layout())) + " (sparse or another non-strided layout)");
}

std::optional<ssd::DType> core_dtype(ScalarType dtype) {
  switch (dtype) {
    case ScalarType::Half: return ssd::DType::kFloat16;
    case ScalarType::BFloat16: return ssd::DType::kBFloat16;
    case ScalarType::Float: return ssd::DType::kFloat32;
    case ScalarType::Double: return ssd::DType::kFloat64;
    default: return std::nullopt;
  }
}

bool is_real(ScalarType dtype) {
  switch (dtype) {
    case ScalarType::Byte:
    case ScalarType::Char:
    case ScalarType::Short:
    case ScalarType::Int:
    case ScalarType::Long:
    case ScalarType::UInt16:
    case ScalarType::UInt32:
    case ScalarType::UInt64:
    case ScalarType::Half:
    case ScalarType::BFloat16:
    case ScalarType::Float:
    case ScalarType::Double: return true;
    default: return false;
  }
}

void check_finite(const char* name, double value) {
  if (!std::isfinite(value)) {
    std::ostringstream s;
    s << name << ": expected a finite number, got " << value;
    throw std::invalid_argument(s.str());
  }
}

}  // namespace

std::string dtype_name(ScalarType dtype) {
  switch (dtype) {
    case ScalarType::Bool: return "bool";
    case ScalarType::Byte: return "uint8";
    case ScalarType::Char: return "int8";
    case ScalarType::Short: return "int16";
    case ScalarType::Int: return "int32";
    case ScalarType::Long: return "int64";
    case ScalarType::UInt16: return "uint16";
    case ScalarType::UInt32: return "uint32";
    case ScalarType::UInt64: return "uint64";
    case ScalarType::Half: return "float16";
    case ScalarType::BFloat16: return "bfloat16";
    case ScalarType::Float: return "float32";
    case ScalarType::Double: return "float64";
    case ScalarType::ComplexHalf: return "complex32";
    case ScalarType::ComplexFloat: return "complex64";
    case ScalarType::ComplexDouble: return "complex128";
    default: return torch::headeronly::toString(dtype);
  }
}

std::string device_name(const torch::stable::Device& device) {
  using torch::headeronly::DeviceType;
  std::string name;
  switch (device.type()) {
    case DeviceType::CPU: name = "cpu"; break;
    case DeviceType::CUDA: name = "cuda"; break;
    case DeviceType::Meta: name = "meta"; break;
    default: name = "device type " + std::to_string(static_cast<int>(device.type())); break;
  }
  return device.has_index() ? name + ":" + std::to_string(device.index()) : name;
}

Checked check_arguments(const Tensor& eps_cond, const Tensor& eps_uncond, const Tensor& noise,
                        const std::optional<Tensor>& t, double t_scalar, double M) {
  const char* names[3] = {"eps_cond", "eps_uncond", "noise"};
  const Tensor* arrays[3] = {&eps_cond, &eps_uncond, &noise};
  for (int i = 0; i < 3; ++i) {
    check_strided(names[i], *arrays[i]);
    if (!core_dtype(arrays[i]->scalar_type()))
      throw std::invalid_argument(std::string(names[i]) + ": expected a floating dtype in " + kFloatDtypes +
                                  ", got " + dtype_name(arrays[i]->scalar_type()));
    if (arrays[i]->dim() == 0)
      throw std::invalid_argument(std::string(names[i]) +
                                  ": expected shape [B, ...] with at least one dimension, got a 0-d tensor");
  }
  const auto dtype = eps_cond.scalar_type();
  const auto device = eps_cond.device();
  const auto sizes = eps_cond.sizes();
  for (int i = 1; i < 3; ++i) {
    const Tensor& x = *arrays[i];
    if (!(x.sizes() == sizes))
      throw std::invalid_argument(std::string(names[i]) + ": expected shape " + shape_text(eps_cond) +
                                  " (eps_cond's), got " + shape_text(x));
    if (x.scalar_type() != dtype)
      throw std::invalid_argument(std::string(names[i]) + ": expected dtype " + dtype_name(dtype) +
                                  " (eps_cond's), got " + dtype_name(x.scalar_type()));
    if (!same_device(x.device(), device))
      throw std::invalid_argument(std::string(names[i]) + ": expected device " + device_name(device) +
                                  " (eps_cond's), got " + device_name(x.device()));
  }
  const int64_t B = sizes[0];
  int64_t N = 1;
  for (size_t d = 1; d < sizes.size(); ++d) N *= sizes[d];
  if (t.has_value()) {
    const Tensor& tv = *t;
    check_strided("t", tv);
    if (!is_real(tv.scalar_type()))
      throw std::invalid_argument("t: expected a real (integer or floating) dtype, got " + dtype_name(tv.scalar_type()));
    if (tv.dim() != 1 || tv.sizes()[0] != B)
      throw std::invalid_argument("t: expected shape [" + std::to_string(B) + "] (eps_cond's batch size), got " +
                                  shape_text(tv));
    if (!same_device(tv.device(), device))
      throw std::invalid_argument("t: expected device " + device_name(device) + " (eps_cond's), got " +
                                  device_name(tv.device()));
  } else {
    check_finite("t_scalar", t_scalar);
  }
  check_finite("M", M);
  return Checked{B, N, *core_dtype(dtype)};
}

}  // namespace ssd_torch
