// Argument checks of ssd_toolkit::estimate, shared by its CPU, CUDA and Meta kernels: every
// mismatch is a std::invalid_argument (Python ValueError) naming the argument, the expected
// and the received value. Reads only metadata, so it runs on meta and fake tensors too.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <string>

#include "../ssd_core.h"

namespace ssd_torch {

using torch::stable::Tensor;

// The checked call: rows [B, N] of one float dtype on one device.
struct Checked {
  int64_t B;
  int64_t N;
  ssd::DType dtype;
};

Checked check_arguments(const Tensor& eps_cond, const Tensor& eps_uncond, const Tensor& noise,
                        const std::optional<Tensor>& t, double t_scalar, double M);

// "float32", "int64", ... as torch prints them (without "torch.").
std::string dtype_name(torch::headeronly::ScalarType dtype);

// "cpu", "cuda:0", "meta", ...
std::string device_name(const torch::stable::Device& device);

}  // namespace ssd_torch
