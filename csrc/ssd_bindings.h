// Hooks between the pybind11 module (csrc/bindings.cpp) and optional parts of it.
#pragma once

#include <pybind11/pybind11.h>

#ifdef SSD_TOOLKIT_WITH_CUDA
// Adds the CUDA entry points to module `m`; defined in csrc/cuda/bindings_cuda.cpp.
void register_cuda_bindings(pybind11::module_& m);
#endif
