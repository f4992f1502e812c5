// pybind11 entry points of the CUDA kernel (added to ssd_toolkit._C by csrc/bindings.cpp).
// Raw device pointers and a cudaStream_t travel as Python ints; no CUDA header is needed.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../ssd_bindings.h"
#include "../ssd_core.h"
#include "ssd_cuda_api.h"

namespace py = pybind11;

namespace {

void estimate_cuda_py(uintptr_t eps_cond, uintptr_t eps_uncond, uintptr_t noise, uintptr_t out, uintptr_t t,
                      double t_scalar, uintptr_t stats, int64_t B, int64_t N, const std::string& dtype, double M,
                      uintptr_t stream) {
  const ssd::EstimateParams p = ssd::params_from_addresses(eps_cond, eps_uncond, noise, out, t, t_scalar, stats, B, N,
                                                           dtype.c_str(), M);
  if (B < 0 || N < 0)
    throw std::invalid_argument("B, N: expected sizes >= 0, got B=" + std::to_string(B) + ", N=" + std::to_string(N));
  if (B > 0 && N > 0 && (!eps_cond || !eps_uncond || !noise || !out))
    throw std::invalid_argument("eps_cond_ptr, eps_uncond_ptr, noise_ptr, out_ptr: expected device addresses, got 0");
  ssd::validate_params(p);  // overlapping outputs
  try {
    py::gil_scoped_release release;
    ssd::estimate_cuda(p, reinterpret_cast<void*>(stream));
  } catch (const ssd::CudaError& e) {
    throw std::runtime_error(std::string("ssd_toolkit estimate_cuda: ") + e.what());
  }
}

void set_path_py(const std::string& path) {
  if (path == "auto") {
    ssd::set_cuda_path(ssd::CudaPath::kAuto);
  } else if (path == "no_cluster") {
    ssd::set_cuda_path(ssd::CudaPath::kNoCluster);
  } else if (path == "split") {
    ssd::set_cuda_path(ssd::CudaPath::kSplit);
  } else {
    throw std::invalid_argument("path: expected 'auto', 'no_cluster' or 'split', got '" + path + "'");
  }
}

std::string get_path_py() {
  switch (ssd::get_cuda_path()) {
    case ssd::CudaPath::kNoCluster: return "no_cluster";
    case ssd::CudaPath::kSplit: return "split";
    default: return "auto";
  }
}

std::string plan_py(int64_t N, const std::string& dtype, bool aligned) {
  return ssd::cuda_launch_plan(N, static_cast<int>(ssd::dtype_from_name(dtype.c_str())), aligned);
}

}  // namespace

void register_cuda_bindings(pybind11::module_& m) {
  m.def("estimate_cuda", &estimate_cuda_py, py::arg("eps_cond_ptr"), py::arg("eps_uncond_ptr"),
        py::arg("noise_ptr"), py::arg("out_ptr"), py::arg("t_ptr"), py::arg("t_scalar"), py::arg("stats_ptr"),
        py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("M"), py::arg("stream_ptr"),
        R"doc(SSD estimator on device memory: one fused launch on `stream_ptr` (asynchronous).

Args:
    eps_cond_ptr, eps_uncond_ptr, noise_ptr, out_ptr: device addresses of C-contiguous
        [B, N] arrays of `dtype` ('float16', 'bfloat16', 'float32', 'float64') on the
        current device; out must not overlap the inputs.
    t_ptr: device address of a float64 [B] array, or 0: every sample has `t_scalar`.
    t_scalar: the timestep used when t_ptr is 0.
    stats_ptr: 0, or the device address of a float64 [6, B] array that receives r,
        h_norm, eps_tilde_norm, eps_cond_norm, noise_norm, scale.
    B, N: sizes (>= 0).
    M: threshold; t_b > M gives eps_cond - eps_uncond.
    stream_ptr: the cudaStream_t to launch on (0: the legacy default stream).

Raises ValueError for bad sizes/dtype/pointers and RuntimeError naming the CUDA error
when the launch fails (no driver, wrong device, ...).)doc");
  m.def("cuda_pointer_device", &ssd::cuda_pointer_device, py::arg("ptr"),
        "Device ordinal owning a device address (-1 for host memory); RuntimeError without a driver.");
  m.def("cuda_current_device", &ssd::cuda_current_device, "The calling thread's current CUDA device.");
  m.def("cuda_set_path", &set_path_py, py::arg("path"),
        "Forces the launch path: 'auto' (default), 'no_cluster' or 'split' (for tests and benchmarks).");
  m.def("cuda_get_path", &get_path_py, "The launch path set by cuda_set_path.");
  m.def("cuda_set_variant", &ssd::set_cuda_variant, py::arg("variant"),
        "Selects the launch-plan variant: 'default', 'threads256', 'relaxed_arrive' or both comma-separated "
        "(benchmarks; default from SSD_TOOLKIT_CUDA_VARIANT).");
  m.def("cuda_get_variant", &ssd::get_cuda_variant, "The launch-plan variant in use.");
  m.def("cuda_launch_plan", &plan_py, py::arg("N"), py::arg("dtype"), py::arg("aligned") = true,
        "The launch estimate_cuda would use for one [B, N] call on the current device, as text.");
}
