// registry.cpp: the variant table and the heuristic selector (no torch, no CUDA runtime).
#include "registry.h"

#include <sstream>

#include "kernels/kernels.h"
#include "kernels/mma_fragments.h"

namespace rk {

namespace {
[[maybe_unused]] int64_t no_workspace(const ConvParams&) { return 0; }

#ifdef RK_WITH_CUDA
// Launch shapes, one per variant, from the helpers the launchers call (kernels.h,
// mma_fragments.h); tests/test_perf_model.py checks them against hand-computed layers.
LaunchShape elementwise_shape(const ConvParams& p, int64_t numel) {
  LaunchShape s;
  s.grid_x = elementwise_blocks(numel, kDirectThreads, p.num_sms);
  s.threads = kDirectThreads;
  return s;
}
LaunchShape fprop_direct_shape(const ConvParams& p) { return elementwise_shape(p, p.problem.y_numel()); }
LaunchShape dgrad_direct_shape(const ConvParams& p) { return elementwise_shape(p, p.problem.x_numel()); }
LaunchShape wgrad_direct_shape(const ConvParams& p) {
  LaunchShape s;
  s.splits = wgrad_direct_splits(p);
  s.grid_x = p.problem.w_numel();
  s.grid_y = s.splits;
  s.threads = kWgradThreads;
  s.smem_bytes = int64_t(sizeof(float)) * kWgradThreads;
  s.launches = 2;
  return s;
}
// The 8x8-tile rungs on CUDA cores: one CTA per (tile, pack); `dst_h`, `dst_w` the tiled grid.
LaunchShape smem_tile_shape(const SmemTile& t, int64_t n, int64_t dst_h, int64_t dst_w,
                            int64_t groups, int64_t out_per_group) {
  LaunchShape s;
  s.grid_x = n * ceil_div(dst_h, kTileP) * ceil_div(dst_w, kTileQ);
  s.grid_y = ceil_div(groups, int64_t(t.groups_per_block));
  s.threads = kSmemThreads;
  s.smem_bytes = t.smem_bytes;
  s.tile_pixels = kTileP * kTileQ;
  s.tile_channels = t.groups_per_block * out_per_group;
  s.red_channels = t.channels;
  s.halo_pixels = int64_t(t.halo_h) * t.halo_w;
  s.groups_per_block = t.groups_per_block;
  return s;
}
LaunchShape fprop_smem_shape(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  return smem_tile_shape(fprop_smem_tile(p), q.N, q.P, q.Q, q.G, q.Kg());
}
LaunchShape dgrad_smem_shape(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  return smem_tile_shape(dgrad_smem_tile(p), q.N, q.H, q.W, q.G, q.Cg());
}
LaunchShape wgrad_smem_shape(const ConvParams& p) {
  const WgradSmemGeometry geo = wgrad_smem_geometry(p);
  LaunchShape s = smem_tile_shape(geo.tile, 1, kTileP, kTileQ, p.problem.G, p.problem.Kg());
  s.grid_x = geo.splits;
  s.tile_channels = geo.out_channels;
  s.splits = geo.splits;
  s.launches = 2;
  return s;
}
LaunchShape gather_mma_shape(const ConvParams& p, bool transposed) {
  const GatherGemm g = gather_gemm(p.problem, transposed);
  LaunchShape s;
  s.grid_x = gather_pixel_blocks(g);
  s.grid_y = gather_channel_blocks(g);
  s.threads = kMmaThreads;
  s.smem_bytes = gather_smem_bytes(g, 2);
  s.tile_pixels = kMmaBlockM;
  s.tile_channels = kMmaBlockN;
  s.red_channels = gather_red_pad(g);
  s.groups_per_block = g.gp;
  return s;
}
LaunchShape fprop_mma_shape(const ConvParams& p) { return gather_mma_shape(p, false); }
LaunchShape dgrad_mma_shape(const ConvParams& p) { return gather_mma_shape(p, true); }
LaunchShape wgrad_mma_shape(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  LaunchShape s;
  s.groups_per_block = mma_groups_per_block(q.Cg(), q.Kg(), q.G);
  s.splits = wgrad_mma_splits(p);
  s.grid_x = s.splits;
  s.grid_y = ceil_div(q.G, s.groups_per_block) * 9;
  s.threads = kMmaThreads;
  s.smem_bytes = 2 * kWgradMmaRows * kWgradMmaRow * 2;  // dy_s and x_s, 16-bit
  s.tile_pixels = kWgradMmaChunk;
  s.tile_channels = s.groups_per_block * q.Kg();
  s.red_channels = s.groups_per_block * q.Cg();
  s.launches = 2;
  return s;
}
#endif
}  // namespace

const std::vector<KernelVariant>& registry() {
  // A build without CUDA (RESNEXT_KERNELS_CUDA=0) has no kernels, so an empty ladder.
  static const std::vector<KernelVariant> table = {
#ifdef RK_WITH_CUDA
      // name, direction, rung, summary, GPU-verified (direct rung: H100 run of 2026-11-28 04:34;
      // fprop_smem: H200 run of 2026-11-28 06:36, GPU tests and compute-sanitizer. fprop_mma
      // passed every edge case it claims in fp16 and bf16 on the H200 (06:53, commit 0534534)
      // and was then generalised into gather_mma.cu with dgrad_mma: both wait for a GPU check.)
      {"fprop_direct", Direction::kFprop, 1,
       "one thread per output element on CUDA cores; fp32 accumulation; any layout", true,
       fprop_direct_can_implement, no_workspace, fprop_direct_launch, fprop_direct_shape},
      {"fprop_smem", Direction::kFprop, 2,
       "8x8 pixel tile x a pack of groups per block; input halo and weights in shared memory, "
       "reused by the 9 taps", true,
       fprop_smem_can_implement, no_workspace, fprop_smem_launch, fprop_smem_shape},
      {"fprop_mma", Direction::kFprop, 3,
       "tensor-core implicit GEMM (mma.sync m16n8k16, fp16/bf16, fp32 accumulation): 128 "
       "pixels x 64 output channels per block, narrow groups packed block-diagonally, weights "
       "in shared memory; channels_last, Cg <= 64", false,
       fprop_mma_can_implement, no_workspace, fprop_mma_launch, fprop_mma_shape},
      {"fprop_halo", Direction::kFprop, 4,
       "8x16 pixel tile's halo (two images side by side where the grid is at most 8 columns, e.g. 7x7) "
       "staged once in shared memory (16-byte cp.async, zero-filled), "
       "ldmatrix A fragments, K = (tap, channel) within a group on mma.sync, persistent CTAs "
       "with two halo buffers, weights packed by each CTA for its slab (or copied from the op "
       "pack_weight's buffer: a training step's forward pass, a frozen module; or packed by the call "
       "first where packing in the CTAs would starve the grid, as at 7x7), fused bias/ReLU and "
       "16-byte stores; bf16/fp16 channels_last, Kg = Cg in {4, 8, 14, 16, 24, 32, 40, 64}, stride "
       "1 or 2", false,
       fprop_halo_can_implement, fprop_halo_workspace_elems, fprop_halo_launch, fprop_halo_shape},
      {"dgrad_direct", Direction::kDgrad, 1,
       "one thread per input-gradient element, gathering the taps that reach it", true,
       dgrad_direct_can_implement, no_workspace, dgrad_direct_launch, dgrad_direct_shape},
      {"dgrad_smem", Direction::kDgrad, 2,
       "8x8 dx tile x a pack of groups per block; the dy halo and weights in shared memory, "
       "reused by the taps that reach each pixel", false,
       dgrad_smem_can_implement, no_workspace, dgrad_smem_launch, dgrad_smem_shape},
      {"dgrad_mma", Direction::kDgrad, 3,
       "tensor-core implicit GEMM (the fprop_mma kernel in gather form): dx pixels by stride "
       "phase, only the taps that reach them; channels_last dy, Kg <= 64", false,
       dgrad_mma_can_implement, no_workspace, dgrad_mma_launch, dgrad_mma_shape},
      {"dgrad_halo", Direction::kDgrad, 4,
       "fprop_halo on dy, the weight transposed per group (and, at stride 1, rotated by 180 "
       "degrees) as it is packed; stride 2 (padding 1) by phase class, the four classes on one "
       "staged dy halo, each with only its taps; bf16/fp16 channels_last, "
       "Kg = Cg in {4, 8, 14, 16, 24, 32, 40, 64}", false,
       dgrad_halo_can_implement, no_workspace, dgrad_halo_launch, dgrad_halo_shape},
      {"wgrad_direct", Direction::kWgrad, 1,
       "one block per weight element and split of N*P*Q; fixed-order two-pass reduction", true,
       wgrad_direct_can_implement, wgrad_direct_workspace_elems, wgrad_direct_launch, wgrad_direct_shape},
      {"wgrad_smem", Direction::kWgrad, 2,
       "blocks walk 8x8 output tiles of a pack of groups: x halo and dy tile in shared memory, "
       "per-thread weight sums; fixed-order reduction of the splits", false,
       wgrad_smem_can_implement, wgrad_smem_workspace_elems, wgrad_smem_launch, wgrad_smem_shape},
      {"wgrad_mma", Direction::kWgrad, 3,
       "tensor-core GEMM per pack of groups and tap, N*P*Q split across blocks and staged "
       "transposed in shared memory; fixed-order reduction of the splits; Cg, Kg <= 64", false,
       wgrad_mma_can_implement, wgrad_mma_workspace_elems, wgrad_mma_launch, wgrad_mma_shape},
      {"wgrad_halo", Direction::kWgrad, 4,
       "a channel block and a split of the dy tiles per CTA (bands of whole rows, whole images, "
       "two 7x7 images; shaped per problem): x halo and dy staged once per tile "
       "(a ring of 2-8 16-byte cp.async stages), ldmatrix.trans fragments, K = pixels on "
       "mma.sync, the nine taps' sums in registers (at Cg = 14 only the (chunk, n8 tile) "
       "pairs that share a group); fixed-order reduction of the splits (sm_90, where 16 "
       "splits or fewer serve: in a thread-block cluster of a block's splits, through their "
       "shared memory, in the same launch); bf16/fp16 "
       "channels_last, Kg = Cg in {4, 8, 14, 16, 24, 32, 40, 64}, stride 1 or 2 (Cg = 64: 1)", false,
       wgrad_halo_can_implement, wgrad_halo_workspace_elems, wgrad_halo_launch, wgrad_halo_shape},
#endif
  };
  return table;
}

const KernelVariant* find_variant(const std::string& name) {
  for (const auto& v : registry())
    if (name == v.name) return &v;
  return nullptr;
}

std::vector<const KernelVariant*> eligible_variants(const ConvParams& p) {
  std::vector<const KernelVariant*> out;
  for (const auto& v : registry())
    if (v.direction == p.direction && v.gpu_verified && v.can_implement(p).empty())
      out.push_back(&v);
  return out;
}

const KernelVariant* select_heuristic(const ConvParams& p, std::string* why) {
  const KernelVariant* best = nullptr;
  std::ostringstream reasons;
  for (const auto& v : registry()) {
    if (v.direction != p.direction) continue;
    const std::string r = v.gpu_verified ? v.can_implement(p) : "not yet verified on a GPU";
    if (r.empty()) {
      if (!best || v.rung > best->rung) best = &v;
    } else {
      reasons << v.name << ": " << r << "\n";
    }
  }
  if (!best && why) *why = reasons.str();
  return best;
}

std::string shape_key(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  std::ostringstream os;
  os << to_string(p.direction) << ':' << to_string(p.dtype) << ':' << q.N << ',' << q.C << ','
     << q.H << ',' << q.W << ':' << q.K << ',' << q.G << ':' << q.stride_h << ',' << q.stride_w
     << ':' << q.pad_h << ',' << q.pad_w << ':' << q.dil_h << ',' << q.dil_w << ':'
     << (channels_innermost(p.x_stride) ? "nhwc" : "nchw") << ':' << (p.bias ? 'b' : '-')
     << (p.relu ? 'r' : '-') << (p.allow_tf32 ? 't' : '-');
  return os.str();
}

std::string check_common(const ConvParams& p) {
  const ConvProblem& q = p.problem;
  if (q.R != 3 || q.S != 3) {
    std::ostringstream os;
    os << "kernel size " << q.R << "x" << q.S << " is not 3x3";
    return os.str();
  }
  if (q.G <= 0 || q.C % q.G != 0 || q.K % q.G != 0) return "channels are not divisible by groups";
  if (q.P <= 0 || q.Q <= 0) return "empty output";
  return "";
}

}  // namespace rk
