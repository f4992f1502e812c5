// The CUDA entry points of the fused SSD estimator: the CUDA runtime behind the launch
// logic (ssd_launch.h) and the kernels (ssd_kernels.cuh). The design (paths, precision,
// determinism, memory access, launch) is written once, in docs/kernels.md.
#include <cuda_runtime.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "../ssd_core.h"
#include "ssd_cuda_api.h"
#include "ssd_kernels.cuh"
#include "ssd_launch.h"

namespace ssd {
namespace {

std::atomic<int> g_path{static_cast<int>(CudaPath::kAuto)};

// The launch-plan variant: SSD_TOOLKIT_CUDA_VARIANT at the first use, or set_cuda_variant.
std::mutex g_variant_mutex;
bool g_variant_set = false;
Variant g_variant;

Variant current_variant() {
  std::lock_guard<std::mutex> lock(g_variant_mutex);
  if (!g_variant_set) {
    const char* env = std::getenv("SSD_TOOLKIT_CUDA_VARIANT");
    g_variant = parse_variant(env ? env : "");  // a bad value raises at every call until fixed
    g_variant_set = true;
  }
  return g_variant;
}

[[noreturn]] void throw_cuda(const char* call, cudaError_t err) {
  throw CudaError(std::string(call) + " failed: " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err) +
                      " (cudaError_t " + std::to_string(static_cast<int>(err)) + ")",
                  static_cast<int>(err));
}

void check(cudaError_t err, const char* call) {
  if (err != cudaSuccess) throw_cuda(call, err);
}

// A launch of grid x threads on `stream`, as clusters of csize blocks when csize > 1.
// `attr` is the storage of the cluster attribute; it must outlive the returned config.
cudaLaunchConfig_t launch_config(int64_t grid, int threads, int csize, cudaStream_t stream,
                                 cudaLaunchAttribute* attr) {
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = csize;
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(grid));
  cfg.blockDim = dim3(threads);
  cfg.stream = stream;
  cfg.attrs = attr;
  cfg.numAttrs = csize > 1 ? 1 : 0;
  return cfg;
}

struct DeviceFacts {
  int major = 0;
  int sms = 0;
  int64_t max_grid_x = kMaxGridX;
};

std::mutex g_mutex;
std::map<int, DeviceFacts> g_devices;
// (device, kernel, cluster size, threads) -> can the cluster launch be scheduled
std::map<std::tuple<int, const void*, int, int>, bool> g_cluster_ok;

// The current device and stream; per-device facts and cluster answers are cached, so a
// warmed call makes no query (and is capturable in a CUDA graph).
class CudaRuntime {
 public:
  explicit CudaRuntime(cudaStream_t stream) : stream_(stream) {
    check(cudaGetDevice(&dev_), "cudaGetDevice");
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_devices.find(dev_);
    if (it == g_devices.end()) {
      DeviceFacts f;
      int grid_x = 0;
      check(cudaDeviceGetAttribute(&f.major, cudaDevAttrComputeCapabilityMajor, dev_), "cudaDeviceGetAttribute");
      check(cudaDeviceGetAttribute(&f.sms, cudaDevAttrMultiProcessorCount, dev_), "cudaDeviceGetAttribute");
      check(cudaDeviceGetAttribute(&grid_x, cudaDevAttrMaxGridDimX, dev_), "cudaDeviceGetAttribute");
      f.max_grid_x = grid_x;
      it = g_devices.emplace(dev_, f).first;
    }
    facts_ = it->second;
  }

  const DeviceFacts& facts() const { return facts_; }
  CudaPath path() const { return static_cast<CudaPath>(g_path.load()); }
  int forced_cluster() const { return 0; }
  Variant variant() const { return current_variant(); }
  int peek_last_error() const { return static_cast<int>(cudaPeekAtLastError()); }
  void clear_last_error() const { (void)cudaGetLastError(); }

  bool kernel_versions(const void* kernel, int* binary, int* ptx) const {
    cudaFuncAttributes attr{};
    if (cudaFuncGetAttributes(&attr, kernel) != cudaSuccess) return false;
    *binary = attr.binaryVersion;
    *ptx = attr.ptxVersion;
    return true;
  }

  int max_active_clusters(const void* kernel, int csize, int threads) const {
    if (csize > 8 && cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess)
      return -1;
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = launch_config(csize, threads, csize, nullptr, &attr);
    int clusters = 0;
    return cudaOccupancyMaxActiveClusters(&clusters, kernel, &cfg) == cudaSuccess ? clusters : -1;
  }

  template <class F>
  bool cached(const void* kernel, int csize, int threads, F compute) const {
    const auto key = std::make_tuple(dev_, kernel, csize, threads);
    std::lock_guard<std::mutex> lock(g_mutex);
    auto it = g_cluster_ok.find(key);
    if (it == g_cluster_ok.end()) it = g_cluster_ok.emplace(key, compute()).first;
    return it->second;
  }

  // The launch error comes from cudaLaunchKernelEx's return value, never from the
  // thread's last-error state (which may hold, or must keep, an unrelated earlier error);
  // launch_checked (ssd_launch.h) throws and clears it.
  template <typename... P, typename... A>
  int launch(void (*kernel)(P...), int64_t grid, int threads, int csize, A... args) const {
    cudaLaunchAttribute attr;
    const cudaLaunchConfig_t cfg = launch_config(grid, threads, csize, stream_, &attr);
    return static_cast<int>(cudaLaunchKernelEx(&cfg, kernel, args...));
  }

  [[noreturn]] void launch_failed(int err) const { throw_cuda("cudaLaunchKernelEx", static_cast<cudaError_t>(err)); }

 private:
  cudaStream_t stream_;
  int dev_ = 0;
  DeviceFacts facts_;
};

}  // namespace

void estimate_cuda(const EstimateParams& p, void* stream) {
  validate_params(p);
  validate_alignment(p);  // before any CUDA call: a misaligned access would end the context
  if (p.B == 0) return;
  CudaRuntime rt(static_cast<cudaStream_t>(stream));
  kernels::estimate_with(rt, p);
}

int cuda_pointer_device(uintptr_t ptr) {
  cudaPointerAttributes attr{};
  const bool clean = cudaPeekAtLastError() == cudaSuccess;
  const cudaError_t err = cudaPointerGetAttributes(&attr, reinterpret_cast<const void*>(ptr));
  if (err != cudaSuccess) {
    if (clean) (void)cudaGetLastError();  // only this query's error
    throw_cuda("cudaPointerGetAttributes", err);
  }
  return attr.type == cudaMemoryTypeDevice || attr.type == cudaMemoryTypeManaged ? attr.device : -1;
}

int cuda_current_device() {
  int dev = -1;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  return dev;
}

void set_cuda_path(CudaPath path) { g_path.store(static_cast<int>(path)); }

void set_cuda_variant(const std::string& variant) {
  const Variant v = parse_variant(variant);
  std::lock_guard<std::mutex> lock(g_variant_mutex);
  g_variant = v;
  g_variant_set = true;
}

std::string get_cuda_variant() { return current_variant().describe(); }

CudaPath get_cuda_path() { return static_cast<CudaPath>(g_path.load()); }

std::string cuda_launch_plan(int64_t N, int dtype, bool aligned) {
  CudaRuntime rt(nullptr);
  return kernels::plan_text(rt, N, static_cast<DType>(dtype), aligned);
}

}  // namespace ssd
