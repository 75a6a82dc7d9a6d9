// kernels.h: entry points of the device code, one launcher and one capability check per
// variant. Implemented in the .cu files beside this header; no torch types anywhere.
#pragma once

#include <cstdint>
#include <string>

#include "../conv_params.h"

namespace rk {

// Rung 1, "direct": one thread per output element, CUDA cores, reads through the caches.
std::string fprop_direct_can_implement(const ConvParams& p);
int fprop_direct_launch(const ConvParams& p, void* stream);
std::string dgrad_direct_can_implement(const ConvParams& p);
int dgrad_direct_launch(const ConvParams& p, void* stream);
std::string wgrad_direct_can_implement(const ConvParams& p);
int64_t wgrad_direct_workspace_elems(const ConvParams& p);
int wgrad_direct_launch(const ConvParams& p, void* stream);

// Launch geometry of the direct kernels, shared by the launchers and the C++ unit tests.
constexpr int kDirectThreads = 256;           // threads per block, elementwise kernels
constexpr int kWgradThreads = 256;            // threads per block of the wgrad reduction
constexpr int64_t kWgradMinChunk = 4096;      // fewest N*P*Q positions one wgrad block reduces
constexpr int64_t kWgradMaxSplits = 64;       // most partial sums per weight element

// Splits of the N*P*Q reduction of the direct wgrad kernel: enough blocks to fill the GPU
// about twice over, each reducing at least kWgradMinChunk positions.
int64_t wgrad_direct_splits(const ConvParams& p);

}  // namespace rk
