// backend.h: the glue between the torch bindings and the CUDA backend. Torch-free.
#pragma once

#include <string>
#include <vector>

namespace rk {

// True when this build contains the CUDA kernels.
bool built_with_cuda();

// Selection controls of the CUDA backend (process-wide):
//  - a forced variant per direction ("" = choose automatically),
//  - runtime autotuning among the eligible variants, cached per shape key (off by default,
//    like torch.backends.cudnn.benchmark).
void set_forced_variant(const std::string& direction, const std::string& name);
std::string forced_variant(const std::string& direction);
void set_autotune(bool on);
bool autotune_enabled();
// Name of the variant the last CUDA call of that direction ran.
std::string last_variant(const std::string& direction);
void clear_autotune_cache();

}  // namespace rk
