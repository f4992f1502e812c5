// Host-side helpers of the CUDA kernel (csrc/cuda/ssd_cuda.cu) for the pybind11 glue.
// Plain C++: no CUDA header is needed to include this file.
#pragma once

#include <cstdint>

namespace ssd {

// cudaGetErrorName + ": " + cudaGetErrorString of a cudaError_t value.
const char* cuda_error_message(int code);

// Device ordinal owning `ptr` (cudaPointerGetAttributes), or -1 for host / unregistered
// memory. Returns a cudaError_t through *error (0 on success).
int cuda_pointer_device(uintptr_t ptr, int* error);

// The calling thread's current device (cudaGetDevice); cudaError_t through *error.
int cuda_current_device(int* error);

// Which launch path estimate_cuda takes (tests use this to cover every path on one GPU).
enum class CudaPath : int {
  kAuto = 0,       // resident (clusters where available), else split
  kNoCluster = 1,  // resident with one block per sample where it fits, else split
  kSplit = 2,      // always the split (three-kernel) path where the sample allows it
};
void set_cuda_path(CudaPath path);
CudaPath get_cuda_path();

// Describes the launch estimate_cuda would use for (N, dtype, aligned) on the current
// device, e.g. "resident cluster=8 vpt=1 threads=512 vec=16B"; for tests and benchmarks.
// Returns a cudaError_t through *error.
const char* cuda_launch_plan(int64_t N, int dtype, bool aligned, int* error);

}  // namespace ssd
