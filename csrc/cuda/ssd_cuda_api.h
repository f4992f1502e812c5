// Host-side entry points of the CUDA kernel (csrc/cuda/ssd_cuda.cu) for the pybind11 glue.
// Plain C++: no CUDA header is needed to include this file. One error convention, as the
// CPU kernel: std::invalid_argument for bad parameters, ssd::CudaError when CUDA fails.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace ssd {

// A failed CUDA runtime call: "<call> failed: <cudaGetErrorName>: <cudaGetErrorString>
// (cudaError_t <code>)".
class CudaError : public std::runtime_error {
 public:
  CudaError(const std::string& message, int code) : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

// Device ordinal owning `ptr` (cudaPointerGetAttributes), or -1 for host / unregistered
// memory.
int cuda_pointer_device(uintptr_t ptr);

// The calling thread's current device (cudaGetDevice).
int cuda_current_device();

// Which launch path estimate_cuda takes (tests use this to cover every path on one GPU).
enum class CudaPath : int {
  kAuto = 0,       // resident (clusters where available), else split
  kNoCluster = 1,  // resident with one block per sample where it fits, else split
  kSplit = 2,      // always the split (three-kernel) path where the sample allows it
};
void set_cuda_path(CudaPath path);
CudaPath get_cuda_path();

// The launch-plan variant (ssd_launch_plan.h: "default", "threads256", "relaxed_arrive", or
// both comma-separated); std::invalid_argument for another name. Default: the environment
// variable SSD_TOOLKIT_CUDA_VARIANT, read at the first use.
void set_cuda_variant(const std::string& variant);
std::string get_cuda_variant();

// Describes the launch estimate_cuda would use for samples of N elements of `dtype`
// (a DType value) on the current device, e.g. "resident cluster=8 vpt=1 threads=512
// vec=16B"; for tests and benchmarks.
std::string cuda_launch_plan(int64_t N, int dtype, bool aligned);

}  // namespace ssd
