// The kernels of ssd_toolkit::estimate_kernel (torch_op_kernels.h).
#include "torch_op_kernels.h"

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <cmath>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "torch_op_checks.h"
#include "torch_op_core.h"

namespace ssd_torch {
namespace {

using torch::headeronly::ScalarType;

// A contiguous tensor of `sizes` and `dtype` on `like`'s device, through the C shim's
// aoti_torch_empty_strided (about 1 us less per tensor than aten::empty by name through the
// dispatcher).
Tensor empty_contiguous(const Tensor& like, torch::headeronly::IntHeaderOnlyArrayRef sizes, int32_t dtype) {
  std::vector<int64_t> strides(sizes.size());
  int64_t stride = 1;
  for (size_t d = sizes.size(); d-- > 0;) {
    strides[d] = stride;
    stride *= sizes[d] > 1 ? sizes[d] : 1;
  }
  int32_t device_type = 0, device_index = 0;
  STD_TORCH_CHECK(aoti_torch_get_device_type(like.get(), &device_type) == AOTI_TORCH_SUCCESS &&
                      aoti_torch_get_device_index(like.get(), &device_index) == AOTI_TORCH_SUCCESS,
                  "ssd_toolkit::estimate: reading the device of eps_cond failed");
  AtenTensorHandle handle = nullptr;
  STD_TORCH_CHECK(aoti_torch_empty_strided(static_cast<int64_t>(sizes.size()), sizes.data(), strides.data(), dtype,
                                           device_type, device_index, &handle) == AOTI_TORCH_SUCCESS,
                  "ssd_toolkit::estimate: allocating an output failed");
  return Tensor(handle);
}

// E with eps_cond's shape and dtype (contiguous) and stats float64 [6, B] (or [6, 0]).
Outputs empty_outputs(const Tensor& eps_cond, int64_t B, bool return_stats) {
  int32_t dtype = 0;
  STD_TORCH_CHECK(aoti_torch_get_dtype(eps_cond.get(), &dtype) == AOTI_TORCH_SUCCESS,
                  "ssd_toolkit::estimate: reading the dtype of eps_cond failed");
  const std::array<int64_t, 2> stats_shape{ssd::kNumStats, return_stats ? B : 0};
  return {empty_contiguous(eps_cond, eps_cond.sizes(), dtype),
          empty_contiguous(eps_cond, torch::headeronly::IntHeaderOnlyArrayRef(stats_shape.data(), 2),
                           aoti_torch_dtype_float64())};
}

Tensor contiguous_rows(const Tensor& x) { return x.is_contiguous() ? x : torch::stable::contiguous(x); }

// The core's parameters for the checked call; `t64` keeps a converted t alive.
ssd::EstimateParams make_params(const Checked& c, const Tensor& cond, const Tensor& uncond, const Tensor& noise,
                                const Tensor& E, const Tensor& stats, const std::optional<Tensor>& t64,
                                double t_scalar, double M, bool return_stats) {
  ssd::EstimateParams p{};
  p.eps_cond = cond.data_ptr();
  p.eps_uncond = uncond.data_ptr();
  p.noise = noise.data_ptr();
  p.out = E.data_ptr();
  p.t = t64 ? static_cast<const double*>(t64->data_ptr()) : nullptr;
  p.t_scalar = t_scalar;
  p.stats = return_stats ? static_cast<double*>(stats.data_ptr()) : nullptr;
  p.B = c.B;
  p.N = c.N;
  p.dtype = c.dtype;
  p.M = M;
  return p;
}

std::optional<Tensor> float64_t(const std::optional<Tensor>& t) {
  if (!t) return std::nullopt;
  Tensor v = t->scalar_type() == ScalarType::Double ? *t : torch::stable::to(*t, ScalarType::Double);
  return contiguous_rows(v);
}

// A contiguous host t of int64, int32 or float32 (a sampler's, a NumPy vector's) read into `out` as
// float64; false for anything else (float64 is read in place, other dtypes are converted by torch).
bool host_float64(const Tensor& t, int64_t B, std::vector<double>& out) {
  const auto dtype = t.scalar_type();
  if (!t.is_contiguous() || t.numel() != B ||
      (dtype != ScalarType::Long && dtype != ScalarType::Int && dtype != ScalarType::Float))
    return false;
  out.resize(static_cast<size_t>(B));
  const void* data = t.data_ptr();
  for (int64_t b = 0; b < B; ++b) {
    out[b] = dtype == ScalarType::Long  ? static_cast<double>(static_cast<const int64_t*>(data)[b])
             : dtype == ScalarType::Int ? static_cast<double>(static_cast<const int32_t*>(data)[b])
                                        : static_cast<double>(static_cast<const float*>(data)[b]);
  }
  return true;
}

// A host t with a NaN or infinite entry is refused as estimate's Python checks refuse it (inside
// torch.func and torch.compile those checks cannot read the values; a device t is not read).
void check_finite_timesteps(const double* t, int64_t B) {
  for (int64_t b = 0; b < B; ++b) {
    if (!std::isfinite(t[b])) {
      std::ostringstream s;
      s << "t: expected finite timesteps, got t[" << b << "]=" << t[b];
      throw std::invalid_argument(s.str());
    }
  }
}

// Runs `body`, recording its error for the op (torch_op_core.h) before rethrowing it.
template <class Body>
Outputs recorded(Body&& body) {
  try {
    return body();
  } catch (const std::invalid_argument& e) {
    record_error(ErrorKind::kInvalidArgument, e.what());
    throw;
  } catch (const std::exception& e) {
    record_error(ErrorKind::kRuntime, e.what());
    throw;
  }
}

// The CPU or CUDA kernel of the core on the checked, contiguous rows.
Outputs run_core(bool cuda, const Tensor& eps_cond, const Tensor& eps_uncond, const Tensor& noise,
                 const std::optional<Tensor>& t, double t_scalar, double M, bool return_stats) {
  const Checked c = check_arguments(eps_cond, eps_uncond, noise, t, t_scalar, M);
  const SsdCoreTable& core = require_core();
  if (cuda && !core.estimate_cuda)
    throw std::runtime_error(
        "ssd_toolkit::estimate: CUDA tensors, but ssd_toolkit._C was built without the CUDA kernel (no nvcc at "
        "build time, or SSD_TOOLKIT_CUDA=0); rebuild with nvcc on PATH: pip install -e . (docs/kernels.md)");
  const int32_t device = cuda ? eps_cond.get_device_index() : -1;
  std::optional<torch::stable::accelerator::DeviceGuard> guard;  // the kernel runs on the current device
  if (cuda) guard.emplace(device);
  const Tensor cond = contiguous_rows(eps_cond), uncond = contiguous_rows(eps_uncond), n = contiguous_rows(noise);
  std::vector<double> host_t;  // a host t of another dtype, converted by a loop (no dispatcher call)
  const std::optional<Tensor> t64 = !cuda && t && host_float64(*t, c.B, host_t) ? std::nullopt : float64_t(t);
  const double* t_values = t64 ? static_cast<const double*>(t64->data_ptr()) : host_t.empty() ? nullptr : host_t.data();
  if (!cuda && t_values) check_finite_timesteps(t_values, c.B);  // free on the host
  auto [E, stats] = empty_outputs(eps_cond, c.B, return_stats);
  ssd::EstimateParams p = make_params(c, cond, uncond, n, E, stats, t64, t_scalar, M, return_stats);
  p.t = t_values;
  const char* message = nullptr;
  const int32_t status = cuda ? core.estimate_cuda(&p, current_cuda_stream(device), &message)
                              : core.estimate_cpu(&p, 0, &message);
  if (status != kSsdCoreOk) raise_core_status(status, message);
  return Outputs{E, stats};
}

}  // namespace

Outputs estimate_cpu(Tensor eps_cond, Tensor eps_uncond, Tensor noise, std::optional<Tensor> t, double t_scalar,
                     double M, bool return_stats) {
  return recorded([&] { return run_core(false, eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats); });
}

Outputs estimate_cuda(Tensor eps_cond, Tensor eps_uncond, Tensor noise, std::optional<Tensor> t, double t_scalar,
                      double M, bool return_stats) {
  return recorded([&] { return run_core(true, eps_cond, eps_uncond, noise, t, t_scalar, M, return_stats); });
}

Outputs estimate_meta(Tensor eps_cond, Tensor eps_uncond, Tensor noise, std::optional<Tensor> t, double t_scalar,
                      double M, bool return_stats) {
  return recorded([&] {
    const Checked c = check_arguments(eps_cond, eps_uncond, noise, t, t_scalar, M);
    return empty_outputs(eps_cond, c.B, return_stats);
  });
}

}  // namespace ssd_torch
