"""The performance model (resnext_kernels/perf_model.py) and its CLI (benchmarks/perf_model.py),
on the CPU: hand-computed bytes, FLOPs, occupancy and bank conflicts; the CUDA registry's launch
shapes; a brute-force count of the addresses a kernel's staging loop reads; the profile step's
parser; the CLI's calibration on the committed measurements."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from resnext_kernels import perf_model as pm
from resnext_kernels._native import _C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
needs_cuda_build = pytest.mark.skipif(_C is None or not _C.built_with_cuda(),
                                      reason="the extension was built without CUDA kernels")

STAGE1 = pm.Conv(n=64, c=128, h=56, w=56, k=128, groups=32)   # ResNeXt-50 32x4d, batch 64


def test_compulsory_bytes_and_flops_of_stage1():
    # x and y: 64*128*56*56 bf16 each (51.38 MB), w: 128*4*9 (9.2 KB): the issue's 102.8 MB.
    assert STAGE1.min_bytes() / 1e6 == pytest.approx(102.77, abs=0.01)
    assert STAGE1.flops() / 1e9 == pytest.approx(1.850, abs=0.001)
    # 102.77 MB at the H200's measured 4.3 TB/s: 23.9 us (shared/PERF.md's table).
    assert STAGE1.roofline_us(pm.GPUS["H200"]) == pytest.approx(23.9, abs=0.05)


@pytest.mark.parametrize("gpu", ["H200", "H100"])
def test_a_device_copy_runs_at_the_measured_copy_bandwidth(gpu):
    # The copy that measured hbm_measured_gbs (read + write) moves every byte through L2 both
    # ways: the model must not put it under its own measurement. With loads and stores in one
    # L2 budget of ~3 TB/s it did (3.0 against 4.3 TB/s on the H200).
    g = pm.GPUS[gpu]
    half = 4e9                                       # 4 GB read, 4 GB written
    pred = pm.simulate(g, "copy", "fprop", [pm.small_kernel("copy", half, half)])
    busy = pred.time_us - g.launch_us
    assert pred.binding == "dram"
    assert 2 * half / busy / 1e3 == pytest.approx(g.hbm_measured_gbs, rel=0.01)


def test_output_size_and_valid_taps():
    entry = pm.Conv(64, 256, 56, 56, 256, 32, stride=2)
    assert (entry.p, entry.q) == (28, 28)
    # fprop, 4 rows, stride 1, pad 1: the taps that fall off are the top row's r=0 and the
    # bottom row's r=2, 2 of 12.
    assert pm.valid_tap_fraction(4, 4, 1, 1, False) == pytest.approx(10 / 12)
    # dgrad at stride 2: a dx row of 8 from a dy row of 4: even rows (h + 1 odd) are reached by
    # the middle tap only, odd rows by two, except row 7 whose r=0 tap would need dy row 4:
    # 1+2+1+2+1+2+1+1 = 11 of 24.
    assert pm.valid_tap_fraction(8, 4, 2, 1, True) == pytest.approx(11 / 24)


@pytest.mark.parametrize("threads, regs, smem, expect", [
    (128, 130, 0, (3, "registers")),    # 130 -> 4352 registers a warp, 17408 a CTA: 3.76
    (256, 255, 0, (1, "registers")),    # 8192 a warp, 65536 a CTA
    (128, 32, 100 * 1024, (2, "shared memory")),  # (100 + 1 reserved) KB of 228
    (1024, 16, 0, (2, "threads")),      # registers would allow 4
    (32, 16, 0, (32, "ctas")),
])
def test_ctas_per_sm(threads, regs, smem, expect):
    assert pm.ctas_per_sm(pm.GPUS["H200"], threads, regs, smem) == expect


def test_bank_wavefronts():
    assert pm.bank_wavefronts(range(32)) == 1                    # consecutive words
    assert pm.bank_wavefronts([0] * 32) == 1                     # broadcast
    assert pm.bank_wavefronts([2 * i for i in range(32)]) == 2
    assert pm.bank_wavefronts([32 * i for i in range(32)]) == 32
    # fprop_smem's weight reads, lane stride Cg*9 words: 4-way at Cg = 4 and 32-way at Cg = 32
    # (shared/PERF.md's review).
    assert pm.bank_wavefronts([36 * i for i in range(32)]) == 4
    assert pm.bank_wavefronts([288 * i for i in range(32)]) == 32


def test_l1_and_sector_counts():
    assert pm.l1_wavefronts([4 * i for i in range(32)]) == 1     # 128 contiguous bytes
    assert pm.l1_wavefronts([72 * i for i in range(32)]) == 18   # 2304 bytes
    assert pm.sectors([0, 16], 16) == 1 and pm.sectors([0, 32], 16) == 2


def test_model_tables_match_the_triton_modules():
    from resnext_kernels.triton import common, fprop, wgrad

    def labels(configs):
        return [(c.kwargs["BLOCK_M"], c.num_warps, c.num_stages) for c in configs]

    assert labels(fprop.AUTOTUNE_CONFIGS) == [(c.block_m, c.warps, c.stages) for c in pm.TRITON_GATHER_CONFIGS]
    assert labels(wgrad.AUTOTUNE_CONFIGS) == [(c.block_m, c.warps, c.stages) for c in pm.TRITON_WGRAD_CONFIGS]
    assert labels(wgrad.ALL_TAPS_CONFIGS) == [(c.block_m, c.warps, c.stages)
                                              for c in pm.TRITON_WGRAD_ALL_TAPS_CONFIGS]
    assert wgrad.MAX_BLOCK == pm.TRITON_WGRAD_MAX_BLOCK
    assert fprop.LOOP_REGISTER_BUDGET == pm.TRITON_LOOP_REGISTER_BUDGET
    for c in fprop.AUTOTUNE_CONFIGS:
        mine = pm.TritonConfig.of(c)
        for block_red, block_out, e in ((32, 32, 2), (16, 128, 2), (64, 64, 4)):
            assert pm.triton_loop_registers(mine, block_red, block_out, e) == fprop.loop_registers(
                c.kwargs["BLOCK_M"], c.num_warps, block_red, block_out, c.kwargs["L1_TAPS"], e)
    assert wgrad.MIN_CHUNK == pm.TRITON_WGRAD_MIN_CHUNK
    for all_taps in (False, True):
        for c in wgrad.configs_for(all_taps):
            for even in (False, True):
                assert pm.triton_wgrad_config_serves(pm.TritonConfig.of(c), all_taps, even) == \
                    wgrad.config_serves(c, all_taps, even, 90)
    for red, out, groups in ((4, 4, 32), (8, 8, 32), (14, 14, 8), (28, 28, 8), (56, 56, 8),
                             (24, 24, 4), (48, 48, 4), (40, 40, 2), (80, 80, 2), (160, 160, 2),
                             (40, 40, 1), (64, 64, 1), (1, 1, 64), (3, 5, 6)):
        for fill in (True, False):
            t = common.choose_group_tile(red, out, groups, fill)
            assert pm.triton_group_tile(red, out, groups, fill) == (t.groups_per_prog, t.block_red,
                                                                    t.block_out)
        t = wgrad.group_tile(red, out, groups)
        assert pm.triton_wgrad_tile(red, out, groups) == (t.groups_per_prog, t.block_red,
                                                          t.block_out)
        conv = pm.Conv(1, red * groups, 8, 8, out * groups, groups)
        for transposed in (False, True):
            assert pm.triton_pack_elems(conv, transposed) == fprop.pack_layout(
                (out * groups, red), groups, transposed).numel


@pytest.mark.parametrize("red, groups, expect", [
    (4, 32, (8, 32, 32)), (8, 32, (4, 32, 32)), (32, 32, (1, 32, 32)),   # 32x4d: as before
    (40, 2, (2, 16, 128)),    # (2, 40): two groups, 80 channels, five blocks of 16
    (80, 2, (1, 16, 128)),    # 80 channels: 64 would leave a half-masked second block
    (160, 2, (1, 32, 128)),
    (14, 8, (2, 32, 32)),     # (8, 14): 8 groups would make 112 channels: over MAX_FILLED_PACK
    (112, 8, (1, 16, 128)),   # a whole multiple of 16: blocks of 16 (64 would leave 48 masked)
    (24, 4, (2, 16, 64)),     # (4, 24): 48 channels
    (40, 1, (1, 64, 64)),     # no larger pack exists: the masked tile, as before
])
def test_gather_packs_fill_whole_reduction_blocks(red, groups, expect):
    gp, block_red, block_out = pm.triton_group_tile(red, red, groups)
    assert (gp, block_red, block_out) == expect
    even = (gp * red) % block_red == 0 and groups % gp == 0
    assert even == ((red, groups) not in ((40, 1), (14, 8)))
    # wgrad keeps the unfilled tiles (its channel blocks are its output), at most 32 wide
    assert pm.triton_group_tile(40, 40, 2, fill_blocks=False) == (1, 64, 64)
    assert pm.triton_wgrad_tile(40, 40, 2) == (1, 32, 32)
    assert pm.triton_wgrad_tile(4, 4, 32) == (8, 32, 32)


def test_triton_gather_l2_bytes_by_hand():
    # Stage 1 fprop, M128, one tile per program, today's code: 1568 pixel tiles x 4 packs; each
    # program 9 steps of 128 rows x 32 channels (bf16, x the in-bounds fraction) plus the packed
    # 32x32 weight tile, and writes 128 x 32 outputs.
    pred = pm.triton_gather(STAGE1, "fprop", pm.GPUS["H200"], pm.TritonConfig(128, 4, 3))
    vf = (1 - 2 / (3 * 56)) ** 2
    per_cta = 9 * (128 * 32 * 2 * vf + 32 * 32 * 2)
    # The packing kernel reads the weight once and writes fprop's 4 packs x 9 taps of 32 x 32
    # and, for the backward pass, dgrad's (the same geometry at Kg = Cg).
    pack_read, pack_write = STAGE1.w_elems() * 2, 2 * 4 * 9 * 32 * 32 * 2
    assert pred.grid == 1568 * 4
    assert pred.l2_bytes == pytest.approx(6272 * per_cta + pack_read, rel=1e-6)
    assert pred.l2_store_bytes == pytest.approx(6272 * 128 * 32 * 2 + pack_write, rel=1e-6)
    assert pred.dram_bytes == pytest.approx(STAGE1.min_bytes() + pack_read + pack_write)
    assert pred.launches == 2 and pred.binding in pm.RESOURCES


def test_dgrad_reads_the_weight_the_forward_pass_packed():
    """dgrad launches no packer of its own since the forward pass packs both layouts; the code
    before (BEFORE_FORWARD_PACK) packed in each direction, one launch more."""
    gpu, cfg = pm.GPUS["H200"], pm.TritonConfig(128, 4, 2)
    new = pm.triton_gather(STAGE1, "dgrad", gpu, cfg)
    old = pm.triton_gather(STAGE1, "dgrad", gpu, cfg, revision=pm.BEFORE_FORWARD_PACK)
    assert (new.launches, old.launches) == (1, 2)
    assert old.time_us - new.time_us >= gpu.launch_us
    assert old.l2_bytes - new.l2_bytes == pytest.approx(STAGE1.w_elems() * 2)
    fwd_old = pm.triton_gather(STAGE1, "fprop", gpu, cfg, revision=pm.BEFORE_FORWARD_PACK)
    fwd_new = pm.triton_gather(STAGE1, "fprop", gpu, cfg)
    assert fwd_new.launches == fwd_old.launches == 2
    assert fwd_new.l2_store_bytes - fwd_old.l2_store_bytes == pytest.approx(4 * 9 * 32 * 32 * 2)


def test_strip_footprint_by_hand():
    # One 4x4 image, one strip of 16 pixels, stride 1, padding 1: the nine taps read all 16
    # pixels; by tap order (0,0) reads the top-left 3x3, (0,1) adds column 3, (0,2) nothing,
    # (1,0) row 3, (1,1) pixel (3,3), and the other four nothing new: 4 steps wait for L2.
    assert pm.strip_footprint(1, 4, 4, 4, 4, 1, 1, 1, False, False, 16) == (16.0, 4.0)
    # Two strips of 8 (rows 0-1, rows 2-3), each reading 3 rows of 4 pixels (12): the first finds
    # new pixels at taps (0,0) (0,1) (1,0) (1,1) (2,0) (2,1), the second at the first four only
    # (its row-2 taps read row 4, padding): 5 steps on average.
    assert pm.strip_footprint(1, 4, 4, 4, 4, 1, 1, 1, False, False, 8) == (12.0, 5.0)


def test_tap_order_and_new_iterations_by_hand():
    """The gather kernel walks a 3 x 3 class corners first (TRITON_TAP_ORDER; its tap tables pack
    it two bits a tap), smaller classes row by row. One 4 x 4 image in strips of two rows: row
    by row, the first strip's three iterations (tap rows 0, 1, 2) each find a new source row (-1
    is padding: rows 0, 1, 2), the second's two (rows 1-2, then 3; its third reads rows 3-4);
    corners first, each strip finds new pixels in its first two iterations ((0,0) (0,2) (2,0),
    then (2,2)'s corner) and none in the third. With two channel blocks a step is a (tap,
    block) pair: the four corners' eight steps fill three iterations."""
    assert pm.triton_class_taps(3, 3)[:4] == [(0, 0), (0, 2), (2, 0), (2, 2)]
    assert sorted(pm.triton_class_taps(3, 3)) == [(q, u) for q in range(3) for u in range(3)]
    assert pm.triton_class_taps(2, 3) == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert pm.triton_class_taps(3, 3, corner_taps=False)[:3] == [(0, 0), (0, 1), (0, 2)]
    rows, cols = pm.triton_tap_tables(3, 3)
    assert [(rows >> 2 * t & 3, cols >> 2 * t & 3) for t in range(9)] == pm.triton_class_taps(3, 3)
    walk = (1, 4, 4, 4, 4, 1, 1, 1, False, False, 8, 1)
    assert pm.strip_new_iterations(*walk, False, 1) == 2.5
    assert pm.strip_new_iterations(*walk, True, 1) == 2.0
    assert pm.strip_new_iterations(*walk, True, 2) == 3.0
    # Stage 1, 8 x 16 patches: two iterations of three wait for L2 instead of nearly three.
    stage1 = (64, 56, 56, 56, 56, 1, 1, 1, False, False, 128, 8)
    assert pm.strip_new_iterations(*stage1, True, 1) == 2.0
    assert 2.8 < pm.strip_new_iterations(*stage1, False, 1) < 3.0


def test_pixel_bands_by_hand():
    """The gather kernel's pixel order (triton/fprop.py PIXEL_BAND): an image of 5 rows x 3
    columns in bands of 2 walks (0,0) (1,0) (0,1) (1,1) (0,2) (1,2), then rows 2-3 likewise,
    then the last band of one row: (4,0) (4,1) (4,2); band 1 is row-major. Every order is a
    permutation of the pixels."""
    order = [pm.band_pixel(m, 5, 3, 2) for m in range(15)]
    assert order[:6] == [(0, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (0, 0, 2), (0, 1, 2)]
    assert order[12:] == [(0, 4, 0), (0, 4, 1), (0, 4, 2)]
    assert pm.band_pixel(15, 5, 3, 2) == (1, 0, 0)
    assert [pm.band_pixel(m, 5, 3, 1) for m in range(4)] == [(0, 0, 0), (0, 0, 1), (0, 0, 2),
                                                              (0, 1, 0)]
    for rows, cols, band in ((5, 3, 2), (7, 7, 8), (56, 56, 8), (13, 4, 3), (28, 28, 16)):
        seen = {pm.band_pixel(m, rows, cols, band) for m in range(2 * rows * cols)}
        assert seen == {(n, i, j) for n in range(2) for i in range(rows) for j in range(cols)}
    assert [pm.triton_pixel_band(m, True) for m in (64, 128, 256)] == [8, 8, 16]
    assert pm.triton_pixel_band(256, False) == 1
    # Stage 1, 128-pixel strips: 8 x 16 patches read 172 source pixels where 2.3 rows read 239.
    rows = pm.strip_footprint(64, 56, 56, 56, 56, 1, 1, 1, False, False, 128, 1)[0]
    bands = pm.strip_footprint(64, 56, 56, 56, 56, 1, 1, 1, False, False, 128, 8)[0]
    assert rows == pytest.approx(239.4, abs=0.1) and bands == pytest.approx(172.1, abs=0.1)


def test_l1_path_moves_the_strip_footprint_from_l2():
    """The L1 path (num_stages=1) brings each strip's source pixels from L2 once per channel
    block, and a channel tile's weights about once per SM and CTA slot; the cp.async path every
    tap's rows and every program's weights."""
    gpu = pm.GPUS["H200"]
    l1 = pm.triton_gather(STAGE1, "fprop", gpu, pm.TritonConfig(128, 4, 1))
    cp = pm.triton_gather(STAGE1, "fprop", gpu, pm.TritonConfig(128, 4, 2))
    px, _ = pm.strip_footprint(64, 56, 56, 56, 56, 1, 1, 1, False, False, 128, 8)   # 8 x 16
    # The estimated 128 registers x 128 threads: 4 CTAs an SM; 1568 pixel tiles a channel
    # tile, so 4 x 132 of a channel tile's programs fetch its 9 weight tiles from L2.
    assert l1.ctas_per_sm == 4
    per_cta = px * 32 * 2 + 9 * 32 * 32 * 2 * (4 * 132 / 1568)
    assert l1.l2_bytes == pytest.approx(6272 * per_cta + STAGE1.w_elems() * 2, rel=1e-6)
    assert l1.l2_bytes < cp.l2_bytes / 2 and l1.terms["l1"] > 0 and cp.terms["l1"] == 0


def test_l1_path_pixel_tiles_by_hand():
    """A program walking several pixel tiles (triton/fprop.py: the kernel reads how many off the
    grid) fetches its channel tile's weights from L2 once for them all. Stage 2 (28 x 28, Cg =
    8: packs of four groups, eight channel tiles), M128w4s1: 392 pixel tiles a channel tile
    against 4 x 132 CTA slots, so every program fetches its nine weight tiles (18 KB against
    the 8 x 16 patch's 11 KB of source). Two tiles a program: half the programs, each with
    twice the source; the same waves of twice the chain (5.94 waves of one, 2.97 of two)."""
    gpu, cfg = pm.GPUS["H200"], pm.TritonConfig(128, 4, 1)
    stage2 = pm.Conv(n=64, c=256, h=28, w=28, k=256, groups=32)
    one = pm.triton_gather(stage2, "fprop", gpu, cfg, frozen=True)
    two = pm.triton_gather(stage2, "fprop", gpu, cfg, frozen=True, pixel_tiles=2)
    px, _ = pm.strip_footprint(64, 28, 28, 28, 28, 1, 1, 1, False, False, 128, 8)
    weights = 9 * 32 * 32 * 2
    assert (one.grid, two.grid) == (8 * 392, 8 * 196)
    assert one.l2_bytes == pytest.approx(8 * 392 * (px * 32 * 2 + weights), rel=1e-6)
    assert two.l2_bytes == pytest.approx(8 * 196 * (2 * px * 32 * 2 + weights), rel=1e-6)
    assert two.terms["latency"] == pytest.approx(one.terms["latency"], rel=1e-6)
    assert two.time_us < one.time_us
    # The choice: the fewest tiles with the least time; at stage 1 (latency-bound, a channel
    # tile's weights shared by 1568 programs) more tiles a program gain nothing.
    assert pm.triton_pixel_tiles(stage2, "fprop", gpu, 128) > 1
    assert pm.triton_pixel_tiles(STAGE1, "fprop", gpu, 128) == 1
    # The cp.async path walks one tile a program whatever it is asked.
    cp = pm.TritonConfig(128, 4, 2)
    assert (pm.triton_gather(stage2, "fprop", gpu, cp, pixel_tiles=2).grid
            == pm.triton_gather(stage2, "fprop", gpu, cp).grid)


def test_gather_pixel_tiles_off_the_model():
    """The launch asks the model only on a GPU it describes and for concrete sizes."""
    from resnext_kernels.triton import fprop

    stage2 = pm.Conv(n=64, c=256, h=28, w=28, k=256, groups=32)
    assert fprop.pixel_tiles_for(stage2, False, "", 128) == 1
    assert fprop.pixel_tiles_for(stage2, False, "NVIDIA A100-SXM4-80GB", 128) == 1
    assert fprop.pixel_tiles_for(stage2, True, "NVIDIA H200", 128) == pm.triton_pixel_tiles(
        stage2, "dgrad", pm.GPUS["H200"], 128)


def test_l1_path_iterations_by_hand():
    """An L1-path iteration loads three steps' tiles, then runs their dots (triton/fprop.py):
    nine taps are three iterations a channel block; dgrad's stride-2 phase classes at padding 1
    take 1, 2, 2 and 4 taps, so 1, 1, 1 and 2 iterations (1.25), and with two channel blocks
    2, 4, 4 and 8 steps, 1, 2, 2 and 3 iterations (2.0)."""
    assert pm.triton_l1_iterations(1, 1, 1) == 3
    assert pm.triton_l1_iterations(1, 1, 2) == 6
    assert pm.triton_l1_iterations(2, 1, 1) == 1.25
    assert pm.triton_l1_iterations(2, 1, 2) == 2.0
    # Stride 3 at padding 1: every class takes one tap row ((ph + 1) % 3) and one column: a step.
    assert pm.triton_l1_iterations(3, 1, 1) == 1


def test_l1_path_waits_its_round_trips_and_its_own_instructions():
    """Tiles loaded together and used in the same iteration: a CTA waits one round trip an
    iteration (L2's where a step of it touches a new pixel: at stage 1, corners first, the
    first two of three; row by row nearly all three) and then issues its instructions, which
    no load of its own overlaps. Tiles carried `l1_prefetch` steps ahead (the code until
    2026-12-04) waited 1/depth of each step's trip and overlapped the rest."""
    gpu = pm.GPUS["H200"]
    cfg = pm.TritonConfig(128, 4, 1)
    grouped = pm.triton_gather(STAGE1, "fprop", gpu, cfg)
    carried = pm.triton_gather(STAGE1, "fprop", gpu, cfg,
                               revision=dataclasses.replace(pm.CURRENT_TRITON, l1_prefetch=3,
                                                           corner_taps=False))
    _, new_steps = pm.strip_footprint(64, 56, 56, 56, 56, 1, 1, 1, False, False, 128, 8)
    assert 8 < new_steps < 9     # nearly every tap of an 8 x 16 patch finds new pixels
    # 128 and 130 registers estimated (the code before held 176-216): 4 and 3 CTAs an SM.
    assert (grouped.ctas_per_sm, carried.ctas_per_sm) == (4, 3)
    waves = 6272 / (132 * grouped.ctas_per_sm)
    own_issue = grouped.terms["issue"] / (waves * grouped.ctas_per_sm)   # one CTA alone
    trips = 2 * gpu.mem_latency_us + gpu.l1_hit_latency_us
    assert grouped.terms["latency"] == pytest.approx(waves * (trips + own_issue), rel=0.02)
    by_rows = pm.triton_gather(STAGE1, "fprop", gpu, cfg,
                               revision=dataclasses.replace(pm.CURRENT_TRITON, corner_taps=False))
    rows_iters = pm.strip_new_iterations(64, 56, 56, 56, 56, 1, 1, 1, False, False, 128, 8,
                                         False, 1)
    assert by_rows.terms["latency"] - grouped.terms["latency"] == pytest.approx(
        waves * (rows_iters - 2) * (gpu.mem_latency_us - gpu.l1_hit_latency_us), rel=0.02)
    trips = new_steps * gpu.mem_latency_us + (9 - new_steps) * gpu.l1_hit_latency_us
    assert carried.terms["latency"] == pytest.approx(6272 / (132 * 3) * trips / 3, rel=0.02)


def test_old_dgrad_walks_all_taps_and_new_one_its_class():
    entry = pm.Conv(64, 256, 56, 56, 256, 32, stride=2)
    cfg = pm.TritonConfig(128, 4, 2)
    old = pm.triton_gather(entry, "dgrad", pm.GPUS["H200"], cfg, revision=pm.BEFORE_07A4ED9)
    new = pm.triton_gather(entry, "dgrad", pm.GPUS["H200"], cfg)
    assert new.time_us < old.time_us / 2


@needs_cuda_build
def test_registry_shapes_by_hand():
    gpu = pm.GPUS["H200"]
    s = pm.cuda_shape("fprop_smem", STAGE1, gpu)
    # 64 images x 7 x 7 tiles of 8x8; 8 groups of Cg = 4 per block (32 channels); a 10x10 halo;
    # fp32 halo [10][10][32] plus the pack's weights [32][4][9].
    assert (s["grid_x"], s["grid_y"], s["halo_pixels"], s["groups_per_block"]) == (3136, 4, 100, 8)
    assert s["smem_bytes"] == 4 * (100 * 32 + 32 * 4 * 9) and s["can_implement"] == ""
    m = pm.cuda_shape("fprop_mma", STAGE1, gpu)
    # 128 pixels x 64 channels per block, 16 groups packed; weights 9 x 64 x 64 bf16.
    assert (m["grid_x"], m["grid_y"], m["groups_per_block"]) == (200704 // 128, 2, 16)
    assert m["smem_bytes"] == 9 * 64 * 64 * 2
    w = pm.cuda_shape("wgrad_direct", STAGE1, gpu)
    assert w["grid_x"] == STAGE1.w_elems() and w["launches"] == 2
    assert w["workspace_elems"] == w["splits"] * STAGE1.w_elems()
    refused = pm.cuda_shape("fprop_mma", STAGE1, gpu, dtype="fp32")
    assert refused["can_implement"] == "fp32 runs on CUDA cores"


@needs_cuda_build
@pytest.mark.parametrize("conv", [pm.Conv(2, 32, 13, 11, 32, 8), pm.Conv(1, 48, 9, 10, 48, 4, stride=2)])
def test_fprop_smem_halo_bytes_against_every_address_it_reads(conv):
    """Every CTA of fprop_smem stages its halo: enumerate each staged element with the kernel's
    loop (c = i % channels, col = (i / channels) % halo_w, row = i / (channels * halo_w); read
    only inside the image) and count the bytes; the model must agree exactly."""
    shape = pm.cuda_shape("fprop_smem", conv, pm.GPUS["H200"], dtype="fp16")
    gpb = shape["groups_per_block"]
    halo_h = 7 * conv.stride + 3
    halo_w = shape["halo_pixels"] // halo_h
    tiles_q, tiles_p = -(-conv.q // 8), -(-conv.p // 8)
    read = 0
    for bx in range(shape["grid_x"]):
        tq, tp = bx % tiles_q, (bx // tiles_q) % tiles_p   # the image index does not change the count
        h0, w0 = tp * 8 * conv.stride - 1, tq * 8 * conv.stride - 1
        for by in range(shape["grid_y"]):
            channels = min(gpb, conv.groups - by * gpb) * conv.cg
            for i in range(halo_h * halo_w * channels):
                col, row = (i // channels) % halo_w, i // (channels * halo_w)
                h, w = h0 + row, w0 + col
                read += 0 <= h < conv.h and 0 <= w < conv.w
    assert pm.smem_halo_bytes(conv, shape) == read * conv.elem_size


@needs_cuda_build
def test_every_cuda_variant_is_predicted():
    preds = {p.variant: p for d in pm.DIRECTIONS for p in pm.cuda_variants(STAGE1, d, pm.GPUS["H200"])}
    assert {v["name"] for v in _C.variants()} == {name.split(":")[1] for name in preds}
    for p in preds.values():
        assert p.time_us > STAGE1.roofline_us(pm.GPUS["H200"]) and p.binding in pm.RESOURCES


SAMPLE_NCU_CSV = '''==PROF== Connected to process 1234
"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","gpu__time_duration.sum","dram__bytes_read.sum","dram__bytes_write.sum","l1tex__m_xbar2l1tex_read_bytes.sum","sm__warps_active.avg.pct_of_peak_sustained_active","smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio","smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio"
"","","","","","","","nsecond","byte","byte","byte","%","",""
"0","1234","python","host","spin_kernel","1","7","1,000","0","0","0","1.0","0.1","0.0"
"1","1234","python","host","_gather_conv_kernel","1","7","190,000","51,380,000","51,390,000","620,000,000","37.5","3.2","0.4"
"2","1234","python","host","spin_kernel","1","7","1,000","0","0","0","1.0","0.1","0.0"
"3","1234","python","host","_pack_weight_kernel","1","7","2,000","9,216","36,864","50,000","10.0","0.5","0.1"
"4","1234","python","host","_gather_conv_kernel","1","7","290,000","51,000,000","51,000,000","700,000,000","30.0","5.0","1.5"
'''


def test_profile_parser_tags_kernels_by_marker():
    import profile_kernels

    order = [("stage1", "fprop", "cudnn"), ("stage1", "fprop", "triton")]
    kernels = profile_kernels.parse_ncu_csv(SAMPLE_NCU_CSV, order)
    assert [(k["variant"], k["kernel"]) for k in kernels] == [
        ("cudnn", "_gather_conv_kernel"), ("triton", "_pack_weight_kernel"),
        ("triton", "_gather_conv_kernel")]
    first = kernels[0]
    assert first["duration_us"] == 190.0 and first["dram_bytes"] == 102_770_000
    assert first["l2_bytes"] == 620_000_000 and first["occupancy_pct"] == 37.5
    assert first["stalls"][0] == ["long_scoreboard", 3.2]


def test_cli_prints_the_table_and_the_calibration_holds(tmp_path):
    out = tmp_path / "model.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "perf_model.py"),
                           "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "calibration:" in proc.stdout and "stage4 wgrad" in proc.stdout
    data = json.loads(out.read_text())
    assert data["schema"] == "resnext_kernels.perf_model/1" and data["model"] == "32x4d"
    row = data["rows"][0]
    for key in ("model", "layer", "direction", "variant", "min_bytes", "roofline_us",
                "predicted_us", "binding"):
        assert key in row
    calib = data["calibration"]
    # Every committed Triton measurement (H200 run 3: 420 rows) and CUDA one is predicted.
    assert calib["total"] >= 420
    assert calib["fraction"] >= 0.8, f"only {calib['within']}/{calib['total']} within 0.67x-1.5x"
    # The totals over the model: the 16 grouped layers of 32x4d at batch 64 move 196 us of
    # compulsory bytes at 4.3 TB/s in each direction (the issue's 0.20 ms); cuDNN's measured sum.
    assert "Over the model" in proc.stdout
    for direction in ("fprop", "dgrad", "wgrad"):
        tot = data["totals"][direction]
        assert tot["roofline_us"] == pytest.approx(196.3, abs=0.5)
        assert tot["triton (fastest per layer)"] > tot["roofline_us"]
    assert data["totals"]["fprop"]["cudnn_us"] == pytest.approx(794.3, abs=1)


def test_cli_l2_rate_and_launch_overrides_only_speed_up_predictions(tmp_path):
    """--l2-gbs and --launch-us replace the fitted L2->SM rate and the assumed launch cost in the
    predictions (a faster L2 or launch never makes one slower; a launch 2 us cheaper takes 2 us
    off each launch of every variant that runs) and leave the calibration, which keeps the
    model's own constants, as it was."""
    files = [tmp_path / "fitted.json", tmp_path / "fast.json", tmp_path / "launch.json"]
    for path, extra in zip(files, ([], ["--l2-gbs", "6000"], ["--launch-us", "1"])):
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "perf_model.py"),
                               "--json", str(path)] + extra, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    fitted, fast, launch = (json.loads(p.read_text()) for p in files)
    assert fitted["calibration"]["within"] == fast["calibration"]["within"] == launch["calibration"]["within"]
    for other in (fast, launch):
        pairs = list(zip(fitted["rows"], other["rows"]))
        assert all(a["variant"] == b["variant"] and b["predicted_us"] <= a["predicted_us"] + 1e-9
                   for a, b in pairs if a["predicted_us"] is not None)
        assert any(b["predicted_us"] < a["predicted_us"] for a, b in pairs if a["predicted_us"] is not None)
    halo = [(a, b) for a, b in zip(fitted["rows"], launch["rows"]) if a["variant"] == "cuda:wgrad_halo"]
    assert halo and all(a["predicted_us"] - b["predicted_us"] == pytest.approx(2) for a, b in halo)   # one launch


@needs_cuda_build
def test_fprop_halo_packs_in_the_call_at_stage4():
    """fprop given no packed weight at 32x4d stage 4: packing in each CTA would hold the grid to
    132 CTAs against the pre-packed kernel's 396 (csrc/tests/test_halo.cpp derives both), so the
    call packs the weight first into its workspace: two launches, the pre-packed grid. The model
    prices it as the frozen module's kernel (the same kernel on a kept buffer) plus the packing
    launch; stage 3 (half the grid, not a third) keeps packing in its CTAs. (The frozen module's
    layer adds its folded bias in the epilogue, which the call here has not.)"""
    gpu = pm.GPUS["H200"]
    conv = pm.Conv(64, 1024, 7, 7, 1024, 32)
    s = pm.cuda_shape("fprop_halo", conv, gpu)
    assert (s["launches"], s["grid_x"]) == (2, 396) and s["workspace_elems"] > 0
    call = pm.cuda_variant("fprop_halo", conv, "fprop", gpu)
    kept = pm.cuda_shape("fprop_halo", conv, gpu, packed=True)
    on_kept = pm.cuda_halo(conv, "fprop", gpu, kept, pm.NO_RESOURCES, prepacked=True)
    frozen = pm.cuda_variant("fprop_halo", conv, "fprop", gpu, frozen=True)
    pack = pm.simulate(gpu, "pack", "fprop", [pm.small_kernel("halo_pack", conv.w_elems() * 2,
                                                              s["workspace_elems"] * 4)])
    assert (call.launches, frozen.launches, on_kept.launches) == (2, 1, 1)
    assert call.time_us == pytest.approx(on_kept.time_us + pack.time_us)
    assert frozen.terms["issue"] > on_kept.terms["issue"]       # the bias's adds
    stage3 = pm.cuda_shape("fprop_halo", pm.Conv(64, 512, 14, 14, 512, 32), gpu)
    assert (stage3["launches"], stage3["grid_x"], stage3["workspace_elems"]) == (1, 264, 0)


@needs_cuda_build
def test_halo_pack_rounds_by_hand():
    """A thread's load round trips packing a slab in its CTA (fprop_halo.cu, halo_pack_slab):
    each class's words (half its (k-step, n8 tile) pairs) of all GEMM groups a round, about 12
    at once (4 for dgrad's phase classes), the whole slab in one round where it has at most 18."""
    # Cg = 4 and 8: four GEMM groups of 8 channels, 5 k-steps x 1 n8 tile: 3 words each, 12.
    assert pm.halo_pack_rounds([5], 1, 4) == 1
    # Cg = 16: two GEMM groups of 9 k-steps x 2 n8 tiles: 9 words each, 18 in one round.
    assert pm.halo_pack_rounds([9], 2, 2) == 1
    # Cg = 32: one GEMM group of 18 k-steps x 4 n8 tiles: 36 words, rounds of 12.
    assert pm.halo_pack_rounds([18], 4, 1) == 3
    # Cg = 14: 32 k-steps x 7 n8 tiles, 112 words: no divisor of 112 from 12 down to 7 but 8.
    assert pm.halo_pack_rounds([32], 7, 1) == 14
    # Cg = 24: 14 k-steps x 3 n8 tiles, 21 words (over 18): rounds of 7, its divisor.
    assert pm.halo_pack_rounds([14], 3, 1) == 3
    # dgrad's phase classes at Cg = 4 (taps 4, 2, 2, 1: 2, 1, 1, 1 k-steps): a word of each of
    # four GEMM groups a class, one round each.
    assert pm.halo_pack_rounds([2, 1, 1, 1], 1, 4) == 4


def test_halo_paired_tiles_by_hand():
    """The halo rungs put two images in a tile where the grid is at most 8 columns wide (32x4d's
    stage 4, 7x7): 32 slabs x 32 pairs = 1024 tiles at batch 64 (2048 of 128 pixels for 49
    each otherwise), each staging both images' 7x7 x 32 channels in bounds, so x crosses L2 once;
    an odd batch pads its last pair; 14x14 (stage 3) keeps one image a tile."""
    gpu = pm.GPUS["H200"]
    stage4 = pm.Conv(64, 1024, 7, 7, 1024, 32)
    s = pm.cuda_shape("fprop_halo", stage4, gpu, packed=True)
    assert s["can_implement"] == "" and s["tile_images"] == 2
    pred = pm.cuda_variant("fprop_halo", stage4, "fprop", gpu, shape=s, frozen=True)
    tiles, ksteps, ntiles = 1024, 9 * 4 // 2, 4
    # A: a warp's two tile rows read halo rows 0-3 at stride 1; at Cg = 32 a k-step is one tap's
    # chunk pair, loaded whole (a quad) once for both tiles: an .x4 for each of 4 rows, 3 column
    # shifts and 2 chunk pairs, where each of 2 x 18 (k-step, m16 tile) loaded its own.
    assert (s["a_loads"], s["a_loads_x2"]) == (4 * 3 * 2, 0)
    entry = pm.cuda_shape("fprop_halo", pm.Conv(64, 256, 56, 56, 256, 32, stride=2), gpu)
    # At stride 2, Cg = 8 (a tap one chunk, a k-step two taps), no operand repeats: an .x4 for
    # each of 2 x 5, but the .x2 of tap 8 beside K padding in each tile.
    assert (entry["a_loads"], entry["a_loads_x2"]) == (2 * 5, 2)
    # Stage 1, Cg = 4: a k-step is two taps, so pairs are loaded two halo rows at a time (rows
    # 0-1 and 2-3, "couples"): 2 for each of 3 column shifts, where 2 x 5 operands loaded theirs.
    stage1 = pm.cuda_shape("fprop_halo", pm.Conv(64, 128, 56, 56, 128, 32), gpu)
    assert (stage1["a_loads"], stage1["a_loads_x2"]) == (2 * 3, 0)
    assert pred.mma_flops_issued == pytest.approx(tiles * 4 * 2 * ksteps * ntiles * 4096)
    x_bytes = 64 * 7 * 7 * 1024 * 2
    weights = pred.grid * 2 * 32 * ksteps * ntiles * 64 * 4   # each CTA: at most two slabs' packs
    assert x_bytes <= pred.l2_bytes <= x_bytes + weights
    odd = pm.Conv(63, 1024, 7, 7, 1024, 32)
    pred_odd = pm.cuda_variant("fprop_halo", odd, "fprop", gpu, frozen=True)
    assert pred_odd.mma_flops_issued == pytest.approx(pred.mma_flops_issued)
    # dgrad at the stage-4 entry: dx 14x14 by phase class, a 7x7 class grid on 7x7 dy: paired.
    entry = pm.Conv(64, 1024, 14, 14, 1024, 32, stride=2)
    assert pm.cuda_shape("dgrad_halo", entry, gpu)["tile_images"] == 2
    stage3 = pm.Conv(64, 512, 14, 14, 512, 32)
    assert pm.cuda_shape("fprop_halo", stage3, gpu)["tile_images"] == 1


@needs_cuda_build
def test_dgrad_halo_phases_by_hand():
    """dgrad_halo at stride 2 (32x4d stage2.entry: dx 56x56, dy 28x28, Cg = 8): the four phase
    classes run on one dy halo per tile of the 28x28 class grid; their taps 1, 2, 2, 4 give
    K = 8, 16, 16, 32, so 1 + 1 + 1 + 2 = 5 k-steps a group, as fprop's 72 of 80."""
    gpu = pm.GPUS["H200"]
    entry = pm.Conv(64, 256, 56, 56, 256, 32, stride=2)
    s = pm.cuda_shape("dgrad_halo", entry, gpu)
    assert s["can_implement"] == ""
    # 8 slabs of 4 groups x 64 images x 4 x 2 tiles of 8x16 class pixels; dx 4 x 128 pixels a tile.
    tiles = 8 * 64 * 4 * 2
    assert s["grid_x"] == min(tiles, gpu.sms * 4) and s["tile_pixels"] == 4 * 128
    # No workspace and one launch: each CTA packs its slabs' weights into shared memory.
    assert s["workspace_elems"] == 0 and s["launches"] == 1
    pred = pm.cuda_variant("dgrad_halo", entry, "dgrad", gpu, shape=s)
    # Issued: per tile and group, 4 warps x 2 m16 tiles x 5 k-steps of m16n8k16 (4096 FLOPs).
    assert pred.mma_flops_issued == pytest.approx(tiles * 4 * 8 * 5 * 4096)
    assert pred.mma_flops_useful == entry.flops() and pred.launches == 1
    # A (halo_a_schedule): the classes' taps' rows ({1} or {1, 2}) put no operand of tile 1 on
    # tile 0's rows, so each (k-step, m16 tile) loads its own, 10 a GEMM group, but class 0's
    # one tap beside K padding is an .x2 in each tile.
    assert (s["a_loads"], s["a_loads_x2"]) == (10, 2)
    # dx written once, dy and w read once: the compulsory bytes.
    assert pred.dram_bytes == pytest.approx(entry.min_bytes())
    padded = pm.Conv(64, 256, 56, 56, 256, 32, stride=2, pad=0)
    assert "padding other than 1" in pm.cuda_shape("dgrad_halo", padded, gpu)["can_implement"]


@needs_cuda_build
def test_wgrad_halo_shape_by_hand():
    """wgrad_halo at 32x4d stage 1: blocks of 8 channels (two groups of Cg = 4): 16 blocks, 256
    tiles; 16 splits, so the busiest SM walks 2 x 16 tiles (8 splits: one CTA alone on 32; 33
    splits: 4 x 8, more partials). On the H200 (sm_90) each block's 16 splits are a thread-block
    cluster (a non-portable size): one launch, no partials through L2. Without clusters (sm_80)
    wgrad_reduce adds the partials after it. csrc/tests/test_wgrad_halo.cpp derives both. A tile is 14 rows of 56 (the bands staging the fewest units,
    csrc/tests/test_wgrad_halo.cpp derives it): a stage is the 16 x 58 x halo and 49 K-blocks of
    16 dy pixels, 16 bytes each: 1712 units, 2 of them in the 56 KB ring, then the table of 98 K
    halves (25 units)."""
    gpu = pm.GPUS["H200"]
    s = pm.cuda_shape("wgrad_halo", STAGE1, gpu)
    assert s["can_implement"] == "" and (s["splits"], s["grid_x"], s["cluster"]) == (16, 16 * 16, 16)
    assert (s["tile_images"], s["tile_rows"], s["tile_cols"], s["stages"]) == (1, 14, 56, 2)
    assert s["smem_bytes"] == (2 * 1712 + 25) * 16 and s["halo_pixels"] == 16 * 58
    assert (s["halo_rows"], s["halo_cols"], s["halo_slots"], s["tile_ksteps"]) == (16, 58, 58, 49)
    assert s["workspace_elems"] == 16 * STAGE1.w_elems() and s["launches"] == 1
    pred = pm.cuda_variant("wgrad_halo", STAGE1, "wgrad", gpu, shape=s)
    # Issued: per tile (64 images x 4 bands of them) and block, 49 K-blocks x 5 M tiles x 1 n8
    # tile of m16n8k16.
    assert pred.mma_flops_issued == pytest.approx(256 * 16 * 49 * 5 * 4096)
    assert pred.launches == 1 and pred.mma_flops_useful == STAGE1.flops()
    # x crosses L2 as the bands' in-bounds halos (4 bands of 16 rows less the two padding rows,
    # 56 columns), dy once; DRAM: the compulsory bytes (the weights stored by the cluster).
    x_rows = 4 * 16 - 2
    assert pred.l2_bytes == pytest.approx(64 * (x_rows * 56 + 56 * 56) * 128 * 2)
    assert pred.dram_bytes == pytest.approx(STAGE1.min_bytes())
    old = dataclasses.replace(gpu, sm_version=80)
    s80 = pm.cuda_shape("wgrad_halo", STAGE1, old)
    assert (s80["splits"], s80["grid_x"], s80["cluster"], s80["launches"]) == (16, 16 * 16, 1, 2)
    assert s80["workspace_elems"] == 16 * STAGE1.w_elems()
    pred = pm.cuda_variant("wgrad_halo", STAGE1, "wgrad", old, shape=s80)
    assert pred.launches == 2
    # Then the reduction reads the 16 splits' fp32 partials.
    assert pred.l2_bytes == pytest.approx(64 * (x_rows * 56 + 56 * 56) * 128 * 2 + 16 * STAGE1.w_elems() * 4)


@needs_cuda_build
def test_wgrad_halo_stage4_two_images_by_hand():
    """32x4d stage 4 (7 x 7, Cg = 32): two images a tile (csrc/tests/test_wgrad_halo.cpp derives
    it), 7 K halves an image: 7 K-blocks a tile, 32 tiles a block at batch 64 and 32 at 63 (its
    last holds one image); warps split M (18 M tiles x 4 n8 tiles a K-block). An image's halo
    is 9 x 9, staged in rows of 8 + 2 slots. Its entry (stride 2, 14 x 14 to 7 x 7) takes one
    image a tile: a 15 x 15 halo in rows of two runs of 8 + 1 slots (even columns, then odd),
    7 K halves in 4 K-blocks."""
    gpu = pm.GPUS["H200"]
    for n, tiles in ((64, 32), (63, 32)):
        conv = pm.Conv(n, 1024, 7, 7, 1024, 32)
        s = pm.cuda_shape("wgrad_halo", conv, gpu)
        assert (s["tile_images"], s["tile_rows"], s["tile_cols"]) == (2, 7, 7)
        assert (s["halo_rows"], s["halo_cols"], s["halo_slots"], s["tile_ksteps"]) == (9, 9, 10, 7)
        pred = pm.cuda_variant("wgrad_halo", conv, "wgrad", gpu, shape=s)
        assert pred.mma_flops_issued == pytest.approx(tiles * 32 * 7 * 18 * 4 * 4096)
    entry = pm.cuda_shape("wgrad_halo", pm.Conv(64, 1024, 14, 14, 1024, 32, stride=2), gpu)
    assert (entry["tile_images"], entry["tile_rows"], entry["tile_cols"]) == (1, 7, 7)
    assert (entry["halo_rows"], entry["halo_cols"], entry["halo_slots"], entry["tile_ksteps"]) == (15, 15, 18, 4)


def test_wgrad_halo_staging_walk_by_hand():
    """wgrad_halo's staging walks (wgrad_halo_fragments.h, wh_walk_rows), as the model counts
    their loops. 32x4d stage 1 (a 14 x 56 tile, Cg = 4): the x halo's 16 rows of 58 slots, two
    rows a pass (threads 0-57 rows 0, 2, ..., 14; 58-115 rows 1, ..., 15; 116-127 idle): every
    warp makes 8 passes in its one image; dy's 14 K rows of 56 pixels, two a pass: 7 each, the
    last warp's lanes from 112 on idle. Stage 4 (two 7 x 7 images, Cg = 32): 9-row images of 40
    copies a row, three rows a pass from rows 0, 1 and 2 (threads 120-127 idle): in image 0 rows
    0-8 take 3 passes; image 1's rows continue 9 on from where image 0's stopped (rows 9, 10, 11
    are its 0, 1, 2): 3 passes again."""
    assert pm.wgrad_halo_walk(58, 16, 1, 1, lambda pos: 16, 2) == (4, 32)
    assert pm.wgrad_halo_walk(56, 14, 1, 1, lambda pos: 14, 2) == (4, 28)
    assert pm.wgrad_halo_walk(40, 9, 2, 2, lambda pos: 9, 3) == (8, 24)
    # A padding row after a single 7 x 7 image at Cg = 8 (8 pixels a K row, 16 rows a pass, row r
    # threads 8r-8r+7): the image's rows 0-6 are warps 0 and 1's (threads 0-55), one pass each;
    # warps 2 and 3 hold rows 8-15, past every row; the padding row 7 (threads 56-63) is warp 1's
    # second pass. Every warp runs the image loop twice.
    assert pm.wgrad_halo_walk(8, 7, 2, 1, lambda pos: 1, 16) == (8, 3)
    shape = {"tile_channels": 8, "tile_images": 1, "tile_rows": 14, "tile_cols": 56, "halo_rows": 16,
             "halo_slots": 58, "tile_ksteps": 49}
    assert pm.wgrad_halo_staging_sass(4, shape) == pytest.approx(
        4 * pm.WGRAD_HALO_X_IMAGE_SASS + 4 * pm.WGRAD_HALO_DY_IMAGE_SASS + (32 + 28) * pm.WGRAD_HALO_WALK_PASS_SASS)


def test_wgrad_halo_columns_by_hand():
    """Cg = 14's columns: a block of four groups (56 channels, chunks of 8) pairs x chunk a with
    the n8 tiles of the groups it touches: chunks 0..6 meet tiles 0-1, 0-3, 1-3, 1-5, 3-5, 3-6,
    5-6: 2 + 4 + 3 + 5 + 3 + 4 + 2 = 23 columns; the warps take 5, 6, 6, 6 of them (padded to 6),
    spanning chunks {0, 1}, {1, 2, 3}, {3, 4}, {5, 6}: (2 + 3 + 2 + 2) x 5 tap pairs = 45 A
    loads a K-block."""
    assert pm.wgrad_halo_columns(14) == (23, 6, 45)


@needs_cuda_build
def test_wgrad_halo_cg14_shape_and_work_by_hand():
    """8x14d stage 1 (112 channels, 8 groups): two blocks of four groups (seven 16-byte chunks a
    pixel); 8 x 8 tiles (7 runs of columns x 7 bands, 1148 units: by hand in
    csrc/tests/test_wgrad_halo.cpp's notes, the wider runs stage more); per tile and block 4
    K-blocks x 24 padded columns x 5 tap pairs of m16n8k16."""
    gpu = pm.GPUS["H200"]
    conv = pm.Conv(64, 112, 56, 56, 112, 8)
    s = pm.cuda_shape("wgrad_halo", conv, gpu)
    assert s["can_implement"] == "" and s["tile_channels"] == 56 and s["groups_per_block"] == 4
    assert s["grid_x"] == 2 * s["splits"] and (s["tile_rows"], s["tile_cols"]) == (8, 8)
    pred = pm.cuda_variant("wgrad_halo", conv, "wgrad", gpu, shape=s)
    assert pred.mma_flops_issued == pytest.approx(64 * 7 * 7 * 2 * 4 * 24 * 5 * 4096)
    odd = pm.Conv(2, 84, 14, 14, 84, 6)              # six groups: not whole blocks of four
    assert "multiple of 4" in pm.cuda_shape("wgrad_halo", odd, gpu)["can_implement"]


@needs_cuda_build
@pytest.mark.parametrize("name", ["fprop_halo", "dgrad_halo", "wgrad_halo"])
def test_halo_rungs_fit_where_they_claim(name):
    """Every width and stride a halo rung claims fits an H200 CTA (227 KB of shared memory,
    128 threads) and launches at least one CTA; all three claim all the paper's widths (which
    have Cg = 64 at stride 1 only: 1x64d's stage 1)."""
    gpu = pm.GPUS["H200"]
    direction = name.split("_")[0]
    for cg in (4, 8, 14, 16, 24, 32, 40, 64):
        for stride in (1, 2):
            conv = pm.Conv(2, cg * 8, 14, 14, cg * 8, 8, stride=stride)   # 8 groups: whole slabs
            s = pm.cuda_shape(name, conv, gpu)
            if s["can_implement"]:
                # Cg = 64 at stride 2 is the one known refusal: fprop_halo's for shared memory,
                # wgrad_halo's for its staging walk (a halo row of 144 copies, 128 threads).
                assert (cg, stride) == (64, 2) and name != "dgrad_halo", (name, cg, stride, s["can_implement"])
                continue
            assert 0 < s["smem_bytes"] <= 227 * 1024 and s["threads"] == 128 and s["grid_x"] >= 1
