// pybind11 module ssd_toolkit._C: raw pointers in, no array framework linked.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ssd_bindings.h"
#include "ssd_core.h"

namespace py = pybind11;

namespace {

template <typename P>
P* as_pointer(uintptr_t address) {
  return reinterpret_cast<P*>(address);
}

void estimate_cpu_py(uintptr_t eps_cond, uintptr_t eps_uncond, uintptr_t noise, uintptr_t out, uintptr_t t,
                     uintptr_t stats, int64_t B, int64_t N, const std::string& dtype, double M, int num_threads) {
  ssd::EstimateParams p{};
  p.eps_cond = as_pointer<const void>(eps_cond);
  p.eps_uncond = as_pointer<const void>(eps_uncond);
  p.noise = as_pointer<const void>(noise);
  p.out = as_pointer<void>(out);
  p.t = as_pointer<const double>(t);
  p.t_scalar = 0.0;
  p.stats = as_pointer<double>(stats);
  p.B = B;
  p.N = N;
  p.dtype = ssd::dtype_from_name(dtype.c_str());
  p.M = M;
  if (t == 0 && B > 0) throw std::invalid_argument("t_ptr: expected the address of a float64 [B] array, got 0");
  ssd::validate_params(p);
  py::gil_scoped_release release;
  ssd::estimate_cpu(p, num_threads);
}

bool compiled_with_cuda() {
#ifdef SSD_TOOLKIT_WITH_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "Compiled kernels of ssd_toolkit (Stable Score Distillation estimator).";
  m.def("estimate_cpu", &estimate_cpu_py, py::arg("eps_cond_ptr"), py::arg("eps_uncond_ptr"), py::arg("noise_ptr"),
        py::arg("out_ptr"), py::arg("t_ptr"), py::arg("stats_ptr"), py::arg("B"), py::arg("N"), py::arg("dtype"),
        py::arg("M"), py::arg("num_threads") = 0,
        R"doc(SSD estimator on host memory.

Args:
    eps_cond_ptr, eps_uncond_ptr, noise_ptr, out_ptr: addresses of C-contiguous [B, N]
        arrays of `dtype` ('float16', 'bfloat16', 'float32', 'float64').
    t_ptr: address of a float64 [B] array of timesteps.
    stats_ptr: 0, or the address of a float64 [6, B] array that receives r, h_norm,
        eps_tilde_norm, eps_cond_norm, noise_norm, scale.
    B, N: sizes (>= 0).
    M: threshold; t_b > M gives eps_cond - eps_uncond.
    num_threads: <= 0 uses every hardware thread; the result does not depend on it.

The GIL is released while the kernel runs. Raises ValueError for bad sizes/dtype/pointers.)doc");
  m.def("compiled_with_cuda", &compiled_with_cuda, "True when the CUDA kernel is compiled into this module.");
  m.attr("COLLINEAR_RTOL2") = ssd::kCollinearRtol2;
#ifdef SSD_TOOLKIT_WITH_CUDA
  register_cuda_bindings(m);
#endif
}
