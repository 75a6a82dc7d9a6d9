// selection.h: internal helpers of the selector, shared by the CUDA bindings and the C++ tests.
#pragma once

#include <string>

#include "registry.h"

namespace rk {

void record_last_variant(Direction d, const std::string& name);
const KernelVariant* cached_choice(const std::string& key);
void cache_choice(const std::string& key, const KernelVariant* v);

// The forced variant if one is set (null with `why` filled if it cannot run `p`), else the
// heuristic choice. Autotuning, which needs the GPU, lives in ops_cuda.cpp.
const KernelVariant* choose_without_timing(const ConvParams& p, std::string* why);

}  // namespace rk
