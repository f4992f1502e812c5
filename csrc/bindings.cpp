// pybind11 module ssd_toolkit._C: raw pointers in, no array framework linked.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "ssd_bindings.h"
#include "ssd_core.h"
#include "ssd_cpu_limit.h"
#include "ssd_core_table.h"

namespace py = pybind11;

namespace {

// An argument given as an address (int) or as a C-contiguous object exporting the Python
// buffer protocol (a NumPy array, a memoryview...). A buffer must hold at least `bytes`
// bytes and stays exported (its memory pinned) until the call returns.
class HostArg {
 public:
  HostArg(py::handle obj, const char* name, int64_t bytes, bool writable) {
    PyObject* o = obj.ptr();
    if (PyLong_Check(o) || (PyIndex_Check(o) && !PySequence_Check(o))) {  // ints, NumPy integer scalars
      const auto address = obj.cast<uintptr_t>();
      ptr_ = reinterpret_cast<void*>(address);
      return;
    }
    if (obj.is_none()) return;  // null: only stats may be None
    if (PyObject_GetBuffer(o, &view_, writable ? PyBUF_WRITABLE : PyBUF_SIMPLE) != 0) {
      PyErr_Clear();
      throw py::value_error(std::string(name) + ": expected an address or a C-contiguous" +
                            (writable ? " writable" : "") + " buffer, got " +
                            std::string(py::str(py::type::handle_of(obj).attr("__name__"))));
    }
    held_ = true;
    if (view_.len < bytes) {
      throw py::value_error(std::string(name) + ": expected a buffer of at least " + std::to_string(bytes) +
                            " bytes, got " + std::to_string(view_.len));
    }
    ptr_ = view_.buf;
  }
  ~HostArg() {
    if (held_) PyBuffer_Release(&view_);
  }
  HostArg(const HostArg&) = delete;
  HostArg& operator=(const HostArg&) = delete;
  void* ptr() const { return ptr_; }

 private:
  Py_buffer view_{};
  bool held_ = false;
  void* ptr_ = nullptr;
};

void estimate_cpu_py(py::handle eps_cond, py::handle eps_uncond, py::handle noise, py::handle out, py::handle t,
                     py::handle stats, int64_t B, int64_t N, const std::string& dtype, double M, int num_threads) {
  ssd::EstimateParams p{};
  p.B = B;
  p.N = N;
  p.dtype = ssd::dtype_from_name(dtype.c_str());
  p.M = M;
  if (B < 0 || N < 0) ssd::validate_params(p);  // the size errors first
  const int64_t bytes = B * N * ssd::item_size(p.dtype);
  const HostArg c(eps_cond, "eps_cond", bytes, false), u(eps_uncond, "eps_uncond", bytes, false),
      n(noise, "noise", bytes, false), o(out, "out", bytes, true), tt(t, "t", B * 8, false),
      st(stats, "stats", ssd::kNumStats * B * 8, true);
  p.eps_cond = c.ptr();
  p.eps_uncond = u.ptr();
  p.noise = n.ptr();
  p.out = o.ptr();
  p.t = static_cast<const double*>(tt.ptr());
  p.t_scalar = 0.0;
  p.stats = static_cast<double*>(st.ptr());
  if (p.t == nullptr && B > 0) throw std::invalid_argument("t_ptr: expected the address of a float64 [B] array, got 0");
  ssd::validate_params(p);
  py::gil_scoped_release release;
  ssd::estimate_cpu(p, num_threads);
}

// The C table of the core's entry points (ssd_core_table.h) for other compiled libraries.
thread_local std::string g_table_message;

template <class Call>
int32_t table_call(Call&& call, const char** message) noexcept {
  try {
    call();
    return kSsdCoreOk;
  } catch (const std::invalid_argument& e) {
    g_table_message = e.what();
    *message = g_table_message.c_str();
    return kSsdCoreInvalidArgument;
  } catch (const std::exception& e) {
    g_table_message = e.what();
    *message = g_table_message.c_str();
    return kSsdCoreRuntimeError;
  } catch (...) {
    g_table_message = "unknown C++ exception";
    *message = g_table_message.c_str();
    return kSsdCoreRuntimeError;
  }
}

int32_t table_estimate_cpu(const ssd::EstimateParams* p, int32_t num_threads, const char** message) {
  return table_call([&] { ssd::estimate_cpu(*p, num_threads); }, message);
}

#ifdef SSD_TOOLKIT_WITH_CUDA
int32_t table_estimate_cuda(const ssd::EstimateParams* p, void* stream, const char** message) {
  return table_call([&] { ssd::estimate_cuda(*p, stream); }, message);
}
#endif

const SsdCoreTable kCoreTable = {
    kSsdCoreTableVersion,
    static_cast<uint32_t>(sizeof(ssd::EstimateParams)),
    &table_estimate_cpu,
#ifdef SSD_TOOLKIT_WITH_CUDA
    &table_estimate_cuda,
#else
    nullptr,
#endif
};

uintptr_t core_table() { return reinterpret_cast<uintptr_t>(&kCoreTable); }

// bench/bench_cpu.py's limit: ssd::limit_pass_cpu on the kernel's arrays (buffers or addresses).
void cpu_limit_pass_py(py::handle eps_cond, py::handle eps_uncond, py::handle noise, py::handle out, int64_t B,
                       int64_t N, const std::string& dtype, int num_threads) {
  ssd::EstimateParams p{};
  p.B = B;
  p.N = N;
  p.dtype = ssd::dtype_from_name(dtype.c_str());
  if (B < 0 || N < 0) ssd::validate_params(p);
  const int64_t bytes = B * N * ssd::item_size(p.dtype);
  const HostArg c(eps_cond, "eps_cond", bytes, false), u(eps_uncond, "eps_uncond", bytes, false),
      n(noise, "noise", bytes, false), o(out, "out", bytes, true);
  p.eps_cond = c.ptr(), p.eps_uncond = u.ptr(), p.noise = n.ptr(), p.out = o.ptr();
  py::gil_scoped_release release;
  ssd::limit_pass_cpu(p, num_threads);
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
    stats_ptr: 0 (or None), or the address of a float64 [6, B] array that receives r,
        h_norm, eps_tilde_norm, eps_cond_norm, noise_norm, scale.
    Each array may instead be given as a C-contiguous object with the Python buffer
    protocol (a NumPy array: no address look-up in Python); it must hold at least the
    bytes named above (out and stats writable).
    B, N: sizes (>= 0).
    M: threshold; t_b > M gives eps_cond - eps_uncond.
    num_threads: <= 0 uses every hardware thread; the result does not depend on it.

The GIL is released while the kernel runs. Raises ValueError for bad sizes/dtype/pointers.)doc");
  m.def("cpu_limit_pass", &cpu_limit_pass_py, py::arg("eps_cond"), py::arg("eps_uncond"), py::arg("noise"),
        py::arg("out"), py::arg("B"), py::arg("N"), py::arg("dtype"), py::arg("num_threads") = 0,
        "Benchmark only: out = eps_cond ^ eps_uncond ^ noise (bytes), the kernel's 3 reads + 1 write on its threads.");
  m.def("compiled_with_cuda", &compiled_with_cuda, "True when the CUDA kernel is compiled into this module.");
  m.def("core_table", &core_table,
        "Address of the C table of the core's entry points (csrc/ssd_core_table.h), for compiled libraries "
        "that call this module's kernels (the torch op, csrc/torch/).");
  m.attr("CORE_TABLE_VERSION") = kSsdCoreTableVersion;
  m.attr("COLLINEAR_RTOL2") = ssd::kCollinearRtol2;
#ifdef SSD_TOOLKIT_WITH_CUDA
  register_cuda_bindings(m);
#endif
}
