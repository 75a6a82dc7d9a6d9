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

// Rung 2 of fprop, "smem": the input halo of a pixel tile in shared memory, reused by the 9 taps.
std::string fprop_smem_can_implement(const ConvParams& p);
int fprop_smem_launch(const ConvParams& p, void* stream);

// The tensor-core gather rungs, "mma" (gather_mma.cu; tiling in mma_fragments.h): implicit GEMM
// on mma.sync m16n8k16, fp16/bf16, channels_last source, reduction width per group up to 64
// (narrower groups packed several to a block).
std::string fprop_mma_can_implement(const ConvParams& p);
int fprop_mma_launch(const ConvParams& p, void* stream);
std::string dgrad_mma_can_implement(const ConvParams& p);
int dgrad_mma_launch(const ConvParams& p, void* stream);
// wgrad on tensor cores (wgrad_mma.cu): per pack of groups and tap, positions split across
// blocks and staged transposed in shared memory; Cg, Kg <= 64; reduced by wgrad_reduce.cuh.
std::string wgrad_mma_can_implement(const ConvParams& p);
int64_t wgrad_mma_workspace_elems(const ConvParams& p);
int64_t wgrad_mma_splits(const ConvParams& p);
int wgrad_mma_launch(const ConvParams& p, void* stream);

constexpr int kSmemThreads = 256;            // threads per block
constexpr int kTileP = 8, kTileQ = 8;        // output pixels per block: 64 (one 8x8 tile)
constexpr int64_t kSmemPackChannels = 32;    // input channels a block packs (8 groups at Cg = 4)
constexpr int64_t kSmemMaxBytes = 96 * 1024; // dynamic shared memory limit (sm_80 allows 163 KB)

// Geometry of one fprop_smem block: the groups it packs, the halo it loads, its shared memory.
struct SmemTile {
  int groups_per_block = 1;
  int channels = 1;       // input channels of a full pack: groups_per_block * Cg
  int halo_h = 0, halo_w = 0;
  int64_t smem_bytes = 0; // fp32 halo [halo_h][halo_w][channels] + fp32 weights of the pack
};
SmemTile fprop_smem_tile(const ConvParams& p);

// The layout the halo rungs' 16-byte copies need (fprop_halo.cu): channels_last source and
// destination (p.x, p.y; `tensors` names them in the reason, e.g. "input or output") with every
// pixel 16-byte aligned; "" or why not.
std::string halo_layout_reason(const ConvParams& p, const char* tensors);
// Why the halo rungs' 32-bit in-image copy offsets cannot address x's or y's images ("" if they can).
std::string halo_offsets_reason(const ConvParams& p);
// Why 32-bit offsets cannot address the weight (the halo rungs' packing, wgrad_halo's cluster
// stores; "" if they can).
std::string halo_weight_offsets_reason(const ConvParams& p);
// Rung 4 of fprop, "halo" (fprop_halo.cu; index maps in halo_fragments.h): the halo of an 8x16
// pixel tile staged once in shared memory by 16-byte asynchronous copies, K = (tap, channel)
// inside a group on mma.sync with ldmatrix A fragments, persistent CTAs with two halo buffers,
// each packing its slab's weights into shared memory.
struct LaunchShape;
std::string fprop_halo_can_implement(const ConvParams& p);
LaunchShape fprop_halo_shape(const ConvParams& p);
int fprop_halo_launch(const ConvParams& p, void* stream);
// Whether an fprop call without a packed weight packs it itself before the launch (into the
// workspace: fprop_halo_workspace_elems, 0 otherwise) rather than in each CTA.
bool halo_packs_in_call(const ConvParams& p);
int64_t fprop_halo_workspace_elems(const ConvParams& p);
// Rung 4 of dgrad, "halo": fprop_halo on dy with the weight transposed per group as it is packed
// (halo_weight_source): at stride 1 rotated by 180 degrees, at stride 2 (padding 1) by phase
// class, the four classes run on one staged dy halo; `halo_dgrad_as_fprop` is the problem as the
// kernel sees it (the classes' grid at stride 2).
ConvParams halo_dgrad_as_fprop(const ConvParams& p);
std::string dgrad_halo_can_implement(const ConvParams& p);
LaunchShape dgrad_halo_shape(const ConvParams& p);
int dgrad_halo_launch(const ConvParams& p, void* stream);
// The weight of fprop problem `p` packed for fprop_halo and, with dgrad_mode kHaloDgrad or
// kHaloDgradPhases (-1: none), for dgrad_halo after it: into `out`, halo_packed_words of each
// layout (halo_fragments.h), one launch on `stream`; for ConvParams::packed. Cg must be one the
// halo rungs serve, the weight within their 32-bit offsets (fprop_halo_can_implement).
int halo_pack_launch(const ConvParams& p, int dgrad_mode, void* out, void* stream);
// Rung 4 of wgrad, "halo" (wgrad_halo.cu; index maps in wgrad_halo_fragments.h): a block of
// channels and a split of the dy tiles per CTA (bands of rows or whole images, shaped per problem
// by wh_geometry), x halo and dy staged once per tile in a ring of cp.async stages,
// ldmatrix.trans fragments, the nine taps' sums in registers, splits added in split order: in
// a thread-block cluster of the block's splits where the device has clusters
// (wgrad_halo_clusters: one launch), else by wgrad_reduce.cuh (two).
struct WhGeom;
std::string wgrad_halo_can_implement(const ConvParams& p);
WhGeom wgrad_halo_geometry(const ConvParams& p);   // its tiles' shape (wgrad_halo_fragments.h)
bool wgrad_halo_clusters(const ConvParams& p);     // splits added in a cluster (sm_90 on, where the cap of 16 costs nothing)
int64_t wgrad_halo_splits(const ConvParams& p);
// A test hook: with false, launches that would reduce in a cluster take the two-launch path
// with the same split count (the same bits); returns the previous setting. Default true.
bool wgrad_halo_set_cluster_reduction(bool enabled);
int64_t wgrad_halo_cluster_launches();   // launches made in a cluster so far (for tests)
int64_t wgrad_halo_workspace_elems(const ConvParams& p);
LaunchShape wgrad_halo_shape(const ConvParams& p);
int wgrad_halo_launch(const ConvParams& p, void* stream);
// Rung 2 of dgrad and wgrad on CUDA cores, "smem" (dgrad_smem.cu, wgrad_smem.cu): the same
// 8x8 tiles and packs of groups, with the halo of the other tensor in shared memory. They serve
// what the tensor-core rungs do not: fp32, NCHW sources, odd channel counts.
std::string dgrad_smem_can_implement(const ConvParams& p);
int dgrad_smem_launch(const ConvParams& p, void* stream);
std::string wgrad_smem_can_implement(const ConvParams& p);
int64_t wgrad_smem_workspace_elems(const ConvParams& p);
int wgrad_smem_launch(const ConvParams& p, void* stream);

// Groups the smem rungs of dgrad and wgrad pack into one block: about kSmemPackChannels channels
// on the wider side, at least one group.
inline int64_t smem_groups_per_block(int64_t cg, int64_t kg, int64_t groups) {
  return groups_per_pack(cg, kg, groups, kSmemPackChannels);
}

// "" when a block's `bytes` of shared memory fit kSmemMaxBytes, else the refusal naming `what`.
inline std::string smem_budget_refusal(int64_t bytes, const std::string& what) {
  if (bytes <= kSmemMaxBytes) return "";
  return what + " need " + std::to_string(bytes) + " bytes of shared memory, more than " +
         std::to_string(kSmemMaxBytes);
}

// dgrad_smem block: a tile of kTileP x kTileQ dx pixels and a pack of groups. The dy rows that
// reach dx rows h0 .. h0 + kTileP - 1 start at dgrad_halo_first(h0, ...) and span at most
// dgrad_halo_extent(kTileP, ...) rows (the same for columns).
RK_HOST_DEVICE int64_t floor_div(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
RK_HOST_DEVICE int64_t dgrad_halo_first(int64_t h0, int64_t stride, int64_t pad, int64_t dil) {
  return -floor_div(-(h0 + pad - 2 * dil), stride);  // ceil((h0 + pad - 2*dil) / stride)
}
RK_HOST_DEVICE int64_t dgrad_halo_extent(int64_t tile, int64_t stride, int64_t dil) {
  return (tile - 1 + 2 * dil) / stride + 1;
}
SmemTile dgrad_smem_tile(const ConvParams& p);  // channels: the pack's dy channels (gp * Kg)

// wgrad_smem: each block walks a split of the N x tiles_p x tiles_q output tiles of one pack.
struct WgradSmemGeometry {
  SmemTile tile;          // channels: the pack's x channels (gp * Cg); smem_bytes: all of it
  int64_t out_channels = 0;  // gp * Kg
  int64_t tiles = 0;      // N * ceil(P / kTileP) * ceil(Q / kTileQ)
  int64_t splits = 1;     // blocks per pack along the tiles
};
WgradSmemGeometry wgrad_smem_geometry(const ConvParams& p);

// Launch geometry of the direct kernels, shared by the launchers and the C++ unit tests.
constexpr int kDirectThreads = 256;           // threads per block, elementwise kernels
constexpr int kWgradThreads = 256;            // threads per block of the wgrad reduction
constexpr int64_t kWgradMinChunk = 4096;      // fewest N*P*Q positions one wgrad block reduces
constexpr int64_t kWgradMaxSplits = 64;       // most partial sums per weight element

// Blocks of an elementwise grid-stride kernel over `numel` elements: enough to cover them, at
// most 32 per SM (the loop inside the kernel takes the rest).
inline int64_t elementwise_blocks(int64_t numel, int threads, int num_sms) {
  const int64_t want = ceil_div(numel, threads);
  const int64_t most = int64_t(num_sms) * 32;
  return want < most ? want : most;
}

// Splits of the N*P*Q reduction of the direct wgrad kernel: enough blocks to fill the GPU
// about twice over, each reducing at least kWgradMinChunk positions.
int64_t wgrad_direct_splits(const ConvParams& p);

}  // namespace rk
