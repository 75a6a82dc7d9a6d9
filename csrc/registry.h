// registry.h: the ladder of kernel variants, one list for all three directions.
//
// Each variant says what it can do (`can_implement`), how much scratch it needs and how to
// launch it. The selector, the torch bindings, the tests, the benchmarks and the README's
// version table all read this one list (Python sees it through `resnext_kernels.cuda_variants()`).
// Plain C++: the stream is passed as an opaque pointer (a cudaStream_t) so this header and the
// selection logic compile and are unit-tested without CUDA or torch.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "conv_params.h"

namespace rk {

// The launch geometry of one call of a variant, from the same helpers its launcher uses, so that
// the performance model (resnext_kernels/perf_model.py, through `_C.variant_shape`) reads the
// numbers the GPU runs with. Per CTA of the main kernel unless a field says otherwise.
struct LaunchShape {
  int64_t grid_x = 0, grid_y = 1;   // grid of the main kernel
  int threads = 0;                  // threads per CTA
  int64_t smem_bytes = 0;           // shared memory per CTA (dynamic + static)
  int64_t tile_pixels = 0;          // destination pixels per CTA (0: one element per thread)
  int64_t tile_channels = 0;        // destination channels per CTA (the pack's, padded)
  int64_t red_channels = 0;         // reduction channels a CTA reads per tap (padded)
  int64_t halo_pixels = 0;          // source pixels a CTA stages in shared memory (0: none)
  int64_t groups_per_block = 1;     // groups packed into one CTA
  int64_t tile_images = 1;          // images a tile spans (the halo rungs' paired tiles: 2)
  int64_t tile_rows = 0;            // destination rows, columns of a tile (0: not row tiles)
  int64_t tile_cols = 0;
  int64_t halo_rows = 0;            // source rows, columns of a tile image's halo (0: untold)
  int64_t halo_cols = 0;
  int64_t halo_slots = 0;           // pixel slots a staged halo row takes (padding included)
  int64_t tile_ksteps = 0;          // MMA K steps a tile (0: untold)
  int64_t a_loads = 0;              // fprop_halo: A ldmatrix a warp and GEMM group a tile, and
  int64_t a_loads_x2 = 0;           //   of them the .x2 (halo_a_schedule; 0: untold)
  int stages = 0;                   // shared-memory stages of its ring (0: no ring)
  int64_t splits = 1;               // wgrad: partial sums per weight element
  int launches = 1;                 // kernels per call (wgrad: + the reduction)
  int cluster = 1;                  // CTAs of a thread-block cluster (wgrad_halo: the splits)
};

struct KernelVariant {
  const char* name;       // e.g. "fprop_direct": the name users pass to force it
  Direction direction;
  int rung;               // position on the ladder: 1 = simplest
  const char* summary;    // what this rung changes relative to the one below
  // True once the variant passed the GPU tests (tests/test_gpu.py via scripts/gpu_check.sh).
  // Only verified variants are chosen by the heuristic and the autotuner; the others run only
  // when forced (`set_forced_variant`), which is how the GPU tests reach them.
  bool gpu_verified;
  // Returns "" when the variant can run `p`, else why not.
  std::string (*can_implement)(const ConvParams& p);
  // fp32 elements of scratch the launch needs in p.workspace (0 for none).
  int64_t (*workspace_elems)(const ConvParams& p);
  // Launches on `stream` (a cudaStream_t); returns the cudaError_t of the launch as an int.
  int (*launch)(const ConvParams& p, void* stream);
  // Launch geometry of `p` (what the launcher will run).
  LaunchShape (*shape)(const ConvParams& p);
};

// All variants, in ladder order per direction.
const std::vector<KernelVariant>& registry();

const KernelVariant* find_variant(const std::string& name);

// Heuristic choice: the highest GPU-verified rung whose can_implement accepts `p`. Returns null
// and fills `why` (one line per variant) when none can.
const KernelVariant* select_heuristic(const ConvParams& p, std::string* why);

// The GPU-verified variants that accept `p`, in ladder order (the autotuner's candidates).
std::vector<const KernelVariant*> eligible_variants(const ConvParams& p);

// A key that identifies a problem for the autotune cache: sizes, strides, dtype, layout.
std::string shape_key(const ConvParams& p);

// Checks common to every variant: 3x3 kernel, a supported dtype, no empty problem.
std::string check_common(const ConvParams& p);

}  // namespace rk
