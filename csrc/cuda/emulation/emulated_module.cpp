// pybind11 test module _ssd_cuda_emulation: the CUDA kernels (../ssd_kernels.cuh) and their
// launch logic (../ssd_launch.h), compiled by the host compiler against cuda_emulation.h
// and run on host arrays for a pretend device. The kernel source is compiled twice: as
// code for sm_90 (with the cluster code) and for sm_80 (__trap() in its place); a pretend
// device runs the body its ptx_version selects, as a GPU runs the PTX it JIT-compiled.
// Built by tests/cuda_emulation_build.py; rules and limits: docs/kernels.md.
#include "cuda_emulation.h"  // first: the kernels and the launch logic build on it

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <set>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "../../ssd_core.h"
#include "../ssd_launch_plan.h"

#define SSD_KERNEL_NAMESPACE sm90
#define SSD_EMULATED_ARCH 900
#include "../ssd_kernels.cuh"
#include "../ssd_launch.h"
#undef SSD_KERNEL_NAMESPACE
#undef SSD_EMULATED_ARCH

#define SSD_KERNEL_NAMESPACE sm80
#define SSD_EMULATED_ARCH 800
#include "../ssd_kernels.cuh"
#include "../ssd_launch.h"
#undef SSD_KERNEL_NAMESPACE
#undef SSD_EMULATED_ARCH

namespace py = pybind11;

namespace {

constexpr int kCudaErrorInvalidDeviceFunction = 98;

// What the launch logic asks of a device, answered for a pretend one.
struct PretendDevice {
  int major = 9;
  int sms = 132;
  int binary_version = 90;  // cudaFuncAttributes::binaryVersion of every kernel
  int ptx_version = 90;     // cudaFuncAttributes::ptxVersion: the arch the body was compiled for
  int max_cluster = 16;     // largest cluster size the device schedules (16: non-portable)
  int64_t max_grid_x = ssd::kMaxGridX;
  bool fail_queries = false;  // kernel attribute queries fail (cudaErrorInvalidDeviceFunction)
  int fail_launch = 0;        // > 0: every launch returns this error (and records it, as CUDA does)
  int last_error = 0;         // the thread's CUDA last-error state before the call
};

struct Facts {
  int major;
  int sms;
  int64_t max_grid_x;
};

struct Launched {
  int64_t grid;
  int threads;
  int csize;
};

class EmulatedRuntime {
 public:
  EmulatedRuntime(const PretendDevice& dev, ssd::CudaPath path, int cluster, ssd::Variant variant = {})
      : dev_(dev), path_(path), cluster_(cluster), variant_(variant) {}

  Facts facts() const { return Facts{dev_.major, dev_.sms, dev_.max_grid_x}; }
  ssd::CudaPath path() const { return path_; }
  int forced_cluster() const { return cluster_; }
  ssd::Variant variant() const { return variant_; }
  int peek_last_error() const { return dev_.last_error; }
  void clear_last_error() { dev_.last_error = 0; }

  bool kernel_versions(const void*, int* binary, int* ptx) {
    if (dev_.fail_queries) {
      dev_.last_error = kCudaErrorInvalidDeviceFunction;
      return false;
    }
    *binary = dev_.binary_version;
    *ptx = dev_.ptx_version;
    return true;
  }

  int max_active_clusters(const void* kernel, int csize, int) {
    if (csize > 8) non_portable_.insert(kernel);
    return csize <= dev_.max_cluster ? (dev_.sms / csize > 0 ? dev_.sms / csize : 1) : 0;
  }

  template <class F>
  bool cached(const void* kernel, int csize, int threads, F compute) {
    const auto key = std::make_tuple(kernel, csize, threads);
    auto it = cache_.find(key);
    if (it == cache_.end()) it = cache_.emplace(key, compute()).first;
    return it->second;
  }

  template <typename... P, typename... A>
  int launch(void (*kernel)(P...), int64_t grid, int threads, int csize, A... args) {
    const void* k = reinterpret_cast<const void*>(kernel);
    if (dev_.fail_launch > 0) {
      dev_.last_error = dev_.fail_launch;
      return dev_.fail_launch;
    }
    if (grid > dev_.max_grid_x)
      throw std::runtime_error("emulated launch: grid " + std::to_string(grid) + " beyond the device's " +
                               std::to_string(dev_.max_grid_x));
    if (csize > 1 && (dev_.major < 9 || csize > dev_.max_cluster || (csize > 8 && !non_portable_.count(k))))
      throw std::runtime_error("emulated launch: the device cannot run clusters of " + std::to_string(csize));
    launches_.push_back(Launched{grid, threads, csize});
    ssd_emu::launch(kernel, grid, threads, csize, args...);
    return 0;
  }

  [[noreturn]] void launch_failed(int err) const {
    throw std::runtime_error("cudaLaunchKernelEx failed: emulated error (cudaError_t " + std::to_string(err) + ")");
  }

  const PretendDevice& device() const { return dev_; }
  const std::vector<Launched>& launches() const { return launches_; }

 private:
  PretendDevice dev_;
  ssd::CudaPath path_;
  int cluster_;
  ssd::Variant variant_;
  std::map<std::tuple<const void*, int, int>, bool> cache_;
  std::set<const void*> non_portable_;
  std::vector<Launched> launches_;
};

PretendDevice pretend_device(const py::dict& d) {
  PretendDevice dev;
  for (auto item : d) {
    const std::string key = py::str(item.first);
    if (key == "major") dev.major = item.second.cast<int>();
    else if (key == "sms") dev.sms = item.second.cast<int>();
    else if (key == "binary_version") dev.binary_version = item.second.cast<int>();
    else if (key == "ptx_version") dev.ptx_version = item.second.cast<int>();
    else if (key == "max_cluster") dev.max_cluster = item.second.cast<int>();
    else if (key == "max_grid_x") dev.max_grid_x = item.second.cast<int64_t>();
    else if (key == "fail_queries") dev.fail_queries = item.second.cast<bool>();
    else if (key == "fail_launch") dev.fail_launch = item.second.cast<int>();
    else if (key == "last_error") dev.last_error = item.second.cast<int>();
    else
      throw py::value_error("device: expected keys major, sms, binary_version, ptx_version, max_cluster, max_grid_x, "
                            "fail_queries, fail_launch, last_error, got '" + key + "'");
  }
  return dev;
}

ssd::CudaPath path_from_name(const std::string& path) {
  if (path == "auto") return ssd::CudaPath::kAuto;
  if (path == "no_cluster") return ssd::CudaPath::kNoCluster;
  if (path == "split") return ssd::CudaPath::kSplit;
  throw py::value_error("path: expected 'auto', 'no_cluster' or 'split', got '" + path + "'");
}

// "forward", "reverse", "shuffle" or "shuffle:<seed>".
std::pair<ssd_emu::Schedule, unsigned long long> schedule_from_name(const std::string& name) {
  if (name == "forward") return {ssd_emu::Schedule::kForward, 0};
  if (name == "reverse") return {ssd_emu::Schedule::kReverse, 0};
  if (name == "shuffle") return {ssd_emu::Schedule::kShuffle, 0};
  if (name.rfind("shuffle:", 0) == 0 && name.size() > 8 && name.find_first_not_of("0123456789", 8) == std::string::npos)
    return {ssd_emu::Schedule::kShuffle, std::stoull(name.substr(8))};
  throw py::value_error("schedule: expected 'forward', 'reverse', 'shuffle' or 'shuffle:<seed>', got '" + name + "'");
}

py::dict estimate_py(uintptr_t c, uintptr_t u, uintptr_t n, uintptr_t out, uintptr_t t, double t_scalar,
                     uintptr_t stats, int64_t B, int64_t N, const std::string& dtype, double M, const std::string& path,
                     int cluster, const py::dict& device, const std::string& schedule_name, const std::string& variant) {
  const ssd::EstimateParams p = ssd::params_from_addresses(c, u, n, out, t, t_scalar, stats, B, N, dtype.c_str(), M);
  EmulatedRuntime rt(pretend_device(device), path_from_name(path), cluster, ssd::parse_variant(variant));
  const auto sched = schedule_from_name(schedule_name);
  std::string plan;
  try {
    py::gil_scoped_release release;
    struct Schedule {
      explicit Schedule(std::pair<ssd_emu::Schedule, unsigned long long> s) { ssd_emu::set_schedule(s.first, s.second); }
      ~Schedule() { ssd_emu::set_schedule(ssd_emu::Schedule::kForward); }
    } schedule(sched);
    if (rt.device().ptx_version >= 90) {
      plan = p.B > 0 ? ssd::sm90::plan_text(rt, N, p.dtype, ssd::sm90::vector_access(p, ssd::item_size(p.dtype))) : "";
      ssd::sm90::estimate_with(rt, p);
    } else {
      plan = p.B > 0 ? ssd::sm80::plan_text(rt, N, p.dtype, ssd::sm80::vector_access(p, ssd::item_size(p.dtype))) : "";
      ssd::sm80::estimate_with(rt, p);
    }
  } catch (const std::runtime_error& e) {  // what a GPU would report, and the error state it leaves
    throw std::runtime_error(std::string(e.what()) + " [last-error state after the call: " +
                             std::to_string(rt.device().last_error) + "]");
  }
  py::list launches;
  for (const Launched& l : rt.launches()) launches.append(py::make_tuple(l.grid, l.threads, l.csize));
  py::dict result;
  result["plan"] = plan;
  result["launches"] = launches;
  result["last_error"] = rt.device().last_error;
  return result;
}

std::string plan_py(int64_t N, const std::string& dtype, bool aligned, const std::string& path, int cluster,
                    const py::dict& device, const std::string& variant) {
  EmulatedRuntime rt(pretend_device(device), path_from_name(path), cluster, ssd::parse_variant(variant));
  const ssd::DType dt = ssd::dtype_from_name(dtype.c_str());
  return rt.device().ptx_version >= 90 ? ssd::sm90::plan_text(rt, N, dt, aligned) : ssd::sm80::plan_text(rt, N, dt, aligned);
}

// ---- kernels that check the emulation itself (each breaks one rule, but "warp_sum")
void warp_sum_kernel(double* out) {  // out[warp] = sum of the lane numbers, by the real warp_reduce
  const ssd::Sums s = ssd::sm90::warp_reduce(ssd::Sums{double(threadIdx.x % 32), 0.0, 0.0, 0.0});
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = s.hh;
}

void divergent_barrier_kernel(double*) {
  if (threadIdx.x < 16) __syncthreads();
}

void partial_warp_shuffle_kernel(double* out) { out[0] = __shfl_down_sync(0xffffffffu, 1.0, 1); }

void read_departed_block_kernel(double* out) {  // block 0 reads block 1's shared memory after block 1 exited
  SSD_SHARED(double, value, );
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  value = blockIdx.x;
  cluster.sync();
  if (blockIdx.x == 0) {
    __syncthreads();  // block 1 runs to its end meanwhile
    out[0] = *cluster.map_shared_rank(&value, 1);
  }
}

void misaligned_load_kernel(double* out) {
  const uint4 v = __ldcs(reinterpret_cast<const uint4*>(reinterpret_cast<char*>(out) + 8));
  out[0] = v.x;
}

std::vector<double> selftest_py(const std::string& name) {
  std::vector<double> out(64, -1.0);
  py::gil_scoped_release release;
  if (name == "warp_sum") ssd_emu::launch(&warp_sum_kernel, 1, 64, 1, out.data());
  else if (name == "divergent_barrier") ssd_emu::launch(&divergent_barrier_kernel, 1, 32, 1, out.data());
  else if (name == "partial_warp_shuffle") ssd_emu::launch(&partial_warp_shuffle_kernel, 1, 48, 1, out.data());
  else if (name == "read_departed_block") ssd_emu::launch(&read_departed_block_kernel, 2, 32, 2, out.data());
  else if (name == "misaligned_load") ssd_emu::launch(&misaligned_load_kernel, 1, 32, 1, out.data());
  else throw std::invalid_argument("name: expected a self-test kernel, got '" + name + "'");
  return out;
}

}  // namespace

PYBIND11_MODULE(_ssd_cuda_emulation, m) {
  m.doc() = "The CUDA kernels of ssd_toolkit run on the CPU for a pretend device (tests only).";
  m.def("estimate", &estimate_py, py::arg("eps_cond_ptr"), py::arg("eps_uncond_ptr"), py::arg("noise_ptr"),
        py::arg("out_ptr"), py::arg("t_ptr"), py::arg("t_scalar"), py::arg("stats_ptr"), py::arg("B"), py::arg("N"),
        py::arg("dtype"), py::arg("M"), py::arg("path") = "auto", py::arg("cluster") = 0,
        py::arg("device") = py::dict(), py::arg("schedule") = "forward", py::arg("variant") = "",
        R"doc(estimate_cuda's parameters on host addresses, run by the emulated kernels.

path: 'auto', 'no_cluster' or 'split' (as cuda_set_path); cluster > 0 allows only that
cluster size; device: a pretend device (keys major, sms, binary_version, ptx_version,
max_cluster, max_grid_x, fail_queries, fail_launch (an error code every launch returns),
last_error; default an H100 with sm_90 code); schedule: 'forward', 'reverse', 'shuffle' or
'shuffle:<seed>', the order the emulated threads run in (same bits when correct);
variant: the launch-plan variant ('', 'threads256', 'relaxed_arrive', comma-separated).
Returns {'plan': text, 'launches': [(grid, threads, cluster)], 'last_error': the CUDA
last-error state after the call}. Raises ValueError for bad parameters and RuntimeError
for what fails on a GPU (a trap, a misaligned access, a deadlock, a refused launch).)doc");
  m.def("plan", &plan_py, py::arg("N"), py::arg("dtype"), py::arg("aligned") = true, py::arg("path") = "auto",
        py::arg("cluster") = 0, py::arg("device") = py::dict(), py::arg("variant") = "",
        "cuda_launch_plan for a pretend device.");
  m.def("rows_per_launch", &ssd::rows_per_launch, py::arg("per_row"), py::arg("max_grid"));
  m.def("sample_of_block", &ssd::sample_of_block, py::arg("b0"), py::arg("block"), py::arg("per_row"));
  m.def("resident_elem", &ssd::resident_elem, py::arg("rank"), py::arg("vpt"), py::arg("j"), py::arg("threads"),
        py::arg("tid"), py::arg("V"));
  m.def("chunk_begin", &ssd::chunk_begin, py::arg("k"), py::arg("chunk"));
  m.def("chunk_end", &ssd::chunk_end, py::arg("k"), py::arg("chunk"), py::arg("nchunks"), py::arg("N"));
  m.def("chunk_slot_address", &ssd::chunk_slot_address, py::arg("out"), py::arg("b"), py::arg("k"), py::arg("N"),
        py::arg("chunk"), py::arg("esize"));
  m.def("selftest", &selftest_py, py::arg("name"), "Runs one of the emulation's self-test kernels.");
  m.def("double_to_half_bits", [](double x) { return ssd_emu::round_double<10, 15>(x); }, py::arg("x"));
  m.def("double_to_bfloat16_bits", [](double x) { return ssd_emu::round_double<7, 127>(x); }, py::arg("x"));
}
