//! The CPU matrix-product engine behind `matmul` passes: BLIS-style packing into panels, a
//! register-blocked microkernel (12×32 with AVX-512, 6×16 with AVX2+FMA, chosen at run
//! time; 4×8 portable otherwise), rayon over output tiles, and the kernel's epilogue applied to each tile row
//! while the tile is still in cache. `M = 1` (decoding) takes a GEMV path without packing.
//!
//! Operands are strided views, so transposed and batch-broadcast operands cost no copy; the
//! generated code checks all shapes before calling in, so indices here are in range by
//! construction (still bounds-checked: a bug panics instead of reading out of bounds).

use std::cell::RefCell;

/// A strided operand: element `(batch.., row, col)` is at
/// `Σ batch_i · batch_strides[i] + row · rs + col · cs`.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub batch_strides: &'a [usize],
    pub rs: usize,
    pub cs: usize,
}

/// `[batch.., M, N] = [batch.., M, K] x [batch.., K, N]`.
#[derive(Clone, Copy)]
pub struct Dims<'a> {
    pub batch: &'a [usize],
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

/// Depth of a packed block (the B micro-panel, `KC × NR`, stays in L1).
const KC: usize = 256;
/// Rows of a packed A block: a multiple of every microkernel's `MR`.
const MC: usize = 144;
/// Smaller row blocks for short, wide-K products (all multiples of every kernel's `MR`).
const ROW_STEPS: [usize; 3] = [96, 48, 24];
/// Products below this many multiply-adds run on the calling thread.
const SERIAL_FLOPS: usize = 1 << 18;

/// Computes `NB` products sharing the left operand and hands each finished output row
/// segment to `epi(batch_index, row, col0, [acc_j])` (row-major over the batch dims).
pub fn matmul<const NB: usize, F>(d: Dims, a: Operand, b: [Operand; NB], epi: F)
where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    let batches: usize = d.batch.iter().product();
    if batches == 0 || d.m == 0 || d.n == 0 {
        return;
    }
    if d.m == 1 {
        return gemv(d, batches, a, b, &epi);
    }
    #[cfg(target_arch = "x86_64")]
    if crate::rt::has_avx2_fma() {
        if has_avx512() {
            return tiled::<Avx512, NB, F>(d, batches, a, b, &epi);
        }
        return tiled::<Avx2, NB, F>(d, batches, a, b, &epi);
    }
    tiled::<Portable, NB, F>(d, batches, a, b, &epi)
}

/// Element offset of batch `bi` (row-major over `dims`) for `strides`.
fn batch_offset(bi: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut rem = bi;
    let mut off = 0;
    for (t, &dim) in dims.iter().enumerate().rev() {
        off += (rem % dim) * strides[t];
        rem /= dim;
    }
    off
}

/// A register-blocked microkernel: `c[MR×NR] (+)= a_panel · b_panel` over `kc` steps.
trait Micro {
    const MR: usize;
    const NR: usize;
    /// `a`: `kc × MR` (MR contiguous), `b`: `kc × NR`, `c`: MR rows of stride `ldc`.
    fn run(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, accumulate: bool);
}

/// The portable 4×8 kernel: fixed-size arrays that LLVM keeps in SSE registers.
struct Portable;

impl Micro for Portable {
    const MR: usize = 4;
    const NR: usize = 8;
    fn run(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, accumulate: bool) {
        let mut acc = [[0.0f32; 8]; 4];
        for (ap, bp) in a.chunks_exact(4).zip(b.chunks_exact(8)).take(kc) {
            for i in 0..4 {
                for j in 0..8 {
                    acc[i][j] += ap[i] * bp[j];
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let dst = &mut c[i * ldc..i * ldc + 8];
            for j in 0..8 {
                dst[j] = if accumulate { dst[j] + row[j] } else { row[j] };
            }
        }
    }
}

/// The AVX2+FMA 6×16 kernel: 12 accumulator registers, 2 loads and 6 broadcasts per step.
#[cfg(target_arch = "x86_64")]
struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Micro for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    fn run(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, accumulate: bool) {
        assert!(a.len() >= kc * 6 && b.len() >= kc * 16 && c.len() >= 5 * ldc + 16);
        // SAFETY: `tiled::<Avx2>` is only chosen when the CPU has AVX2 and FMA; the slices
        // are long enough for every access (asserted above).
        unsafe { avx2_6x16(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, accumulate) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_6x16(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm256_setzero_ps(); 2]; 6];
    for p in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(p * 16));
        let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm256_broadcast_ss(&*a.add(p * 6 + i));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let dst = c.add(i * ldc);
        let (mut lo, mut hi) = (row[0], row[1]);
        if accumulate {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(dst));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(dst.add(8)));
        }
        _mm256_storeu_ps(dst, lo);
        _mm256_storeu_ps(dst.add(8), hi);
    }
}

/// AVX-512F (cached; off with `MIA_CPU_BASELINE`, like AVX2).
#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| std::arch::is_x86_feature_detected!("avx512f"))
}

/// The AVX-512 12×32 kernel: 24 of the 32 zmm registers accumulate.
#[cfg(target_arch = "x86_64")]
struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Micro for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    fn run(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, accumulate: bool) {
        assert!(a.len() >= kc * 12 && b.len() >= kc * 32 && c.len() >= 11 * ldc + 32);
        // SAFETY: `tiled::<Avx512>` is only chosen when the CPU has AVX-512F; the slices are
        // long enough for every access (asserted above).
        unsafe { avx512_12x32(kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, accumulate) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn avx512_12x32(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; 12];
    for p in 0..kc {
        let b0 = _mm512_loadu_ps(b.add(p * 32));
        let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*a.add(p * 12 + i));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        let dst = c.add(i * ldc);
        let (mut lo, mut hi) = (row[0], row[1]);
        if accumulate {
            lo = _mm512_add_ps(lo, _mm512_loadu_ps(dst));
            hi = _mm512_add_ps(hi, _mm512_loadu_ps(dst.add(16)));
        }
        _mm512_storeu_ps(dst, lo);
        _mm512_storeu_ps(dst.add(16), hi);
    }
}

thread_local! {
    /// Per-thread packing and tile buffers, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Packs `A[i0.., p0..]` (`mc × kc`) into MR-row panels, zero-padded to whole panels.
fn pack_a(
    dst: &mut [f32],
    mr: usize,
    a: &Operand,
    off: usize,
    (i0, mc): (usize, usize),
    (p0, kc): (usize, usize),
) {
    let (src, rs, cs) = (a.data, a.rs, a.cs);
    for (pi, panel) in dst
        .chunks_exact_mut(mr * kc)
        .enumerate()
        .take(mc.div_ceil(mr))
    {
        let rows = (mc - pi * mr).min(mr);
        if rows < mr {
            panel.fill(0.0);
        }
        for r in 0..rows {
            let base = off + (i0 + pi * mr + r) * rs + p0 * cs;
            if cs == 1 {
                for (p, &v) in src[base..base + kc].iter().enumerate() {
                    panel[p * mr + r] = v;
                }
            } else {
                for p in 0..kc {
                    panel[p * mr + r] = src[base + p * cs];
                }
            }
        }
    }
}

/// Packs `B[p0.., j0..]` (`kc × nc`) into NR-column panels, zero-padded to whole panels.
fn pack_b(
    dst: &mut [f32],
    nr: usize,
    b: &Operand,
    off: usize,
    (p0, kc): (usize, usize),
    (j0, nc): (usize, usize),
) {
    let (src, rs, cs) = (b.data, b.rs, b.cs);
    for (pj, panel) in dst
        .chunks_exact_mut(nr * kc)
        .enumerate()
        .take(nc.div_ceil(nr))
    {
        let cols = (nc - pj * nr).min(nr);
        if cols < nr {
            panel.fill(0.0);
        }
        let col0 = j0 + pj * nr;
        if cs == 1 {
            for p in 0..kc {
                let base = off + (p0 + p) * rs + col0;
                panel[p * nr..p * nr + cols].copy_from_slice(&src[base..base + cols]);
            }
        } else {
            for c in 0..cols {
                let base = off + p0 * rs + (col0 + c) * cs;
                for p in 0..kc {
                    panel[p * nr + c] = src[base + p * rs];
                }
            }
        }
    }
}

/// Output tile size `(rows, cols)`: as large as keeps every thread busy (two tiles per
/// thread): columns shrink first (to 128), then rows (down to 24), then columns again.
fn tile_size(d: &Dims, batches: usize, nr: usize) -> (usize, usize) {
    let want = 2 * rayon::current_num_threads().max(1);
    let tasks = |mc: usize, nc: usize| batches * d.m.div_ceil(mc) * d.n.div_ceil(nc);
    let (mut mc, mut nc) = (MC, 512);
    while nc > 128 && tasks(mc, nc) < want {
        nc /= 2;
    }
    for rows in ROW_STEPS {
        if tasks(mc, nc) >= want {
            break;
        }
        mc = rows;
    }
    while nc > nr * 4 && tasks(mc, nc) < want {
        nc /= 2;
    }
    (mc, nc.min(d.n.div_ceil(nr) * nr))
}

fn tiled<K: Micro, const NB: usize, F>(
    d: Dims,
    batches: usize,
    a: Operand,
    b: [Operand; NB],
    epi: &F,
) where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    use rayon::prelude::*;
    let (mcb, nc) = tile_size(&d, batches, K::NR);
    let (mt, nt) = (d.m.div_ceil(mcb), d.n.div_ceil(nc));
    let tasks = batches * mt * nt;
    let task = |t: usize| {
        let (bi, rest) = (t / (mt * nt), t % (mt * nt));
        let (i0, j0) = ((rest / nt) * mcb, (rest % nt) * nc);
        let (mc, ncols) = ((d.m - i0).min(mcb), (d.n - j0).min(nc));
        let mcp = mc.div_ceil(K::MR) * K::MR;
        let ncp = ncols.div_ceil(K::NR) * K::NR;
        let kcmax = d.k.clamp(1, KC);
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let need = mcp * kcmax + ncp * kcmax + NB * mcp * ncp;
            if s.len() < need {
                s.resize(need, 0.0);
            }
            let (pa, rest) = s.split_at_mut(mcp * kcmax);
            let (pb, tiles) = rest.split_at_mut(ncp * kcmax);
            let tiles = &mut tiles[..NB * mcp * ncp];
            if d.k == 0 {
                tiles.fill(0.0);
            }
            let aoff = batch_offset(bi, d.batch, a.batch_strides);
            for p0 in (0..d.k).step_by(KC) {
                let kc = (d.k - p0).min(KC);
                pack_a(pa, K::MR, &a, aoff, (i0, mc), (p0, kc));
                for (j, bj) in b.iter().enumerate() {
                    let boff = batch_offset(bi, d.batch, bj.batch_strides);
                    pack_b(pb, K::NR, bj, boff, (p0, kc), (j0, ncols));
                    let tile = &mut tiles[j * mcp * ncp..(j + 1) * mcp * ncp];
                    for (pj, bpanel) in pb.chunks_exact(K::NR * kc).take(ncp / K::NR).enumerate() {
                        for (pi, apanel) in
                            pa.chunks_exact(K::MR * kc).take(mcp / K::MR).enumerate()
                        {
                            let c = &mut tile[pi * K::MR * ncp + pj * K::NR..];
                            K::run(kc, apanel, bpanel, c, ncp, p0 > 0);
                        }
                    }
                }
            }
            for i in 0..mc {
                let accs: [&[f32]; NB] =
                    std::array::from_fn(|j| &tiles[j * mcp * ncp + i * ncp..][..ncols]);
                epi(bi, i0 + i, j0, &accs);
            }
        });
    };
    if tasks == 1 || d.m * d.n * d.k.max(1) * batches < SERIAL_FLOPS {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

/// `M = 1`: each task streams its columns of B once (no packing), which is what a
/// memory-bound product wants.
fn gemv<const NB: usize, F>(d: Dims, batches: usize, a: Operand, b: [Operand; NB], epi: &F)
where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    use rayon::prelude::*;
    const COLS: usize = 256;
    let nt = d.n.div_ceil(COLS);
    let tasks = batches * nt;
    let task = |t: usize| {
        let (bi, j0) = (t / nt, (t % nt) * COLS);
        let ncols = (d.n - j0).min(COLS);
        let mut acc = [[0.0f32; COLS]; NB];
        let aoff = batch_offset(bi, d.batch, a.batch_strides);
        for (j, bj) in b.iter().enumerate() {
            let boff = batch_offset(bi, d.batch, bj.batch_strides) + j0 * bj.cs;
            let out = &mut acc[j][..ncols];
            #[cfg(target_arch = "x86_64")]
            if crate::rt::has_avx2_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                unsafe { gemv_avx2(d.k, &a, aoff, bj, boff, out) };
                continue;
            }
            gemv_cols(d.k, &a, aoff, bj, boff, out);
        }
        let accs: [&[f32]; NB] = std::array::from_fn(|j| &acc[j][..ncols]);
        epi(bi, 0, j0, &accs);
    };
    if tasks == 1 || d.n * d.k * batches < SERIAL_FLOPS {
        (0..tasks).for_each(task);
    } else {
        (0..tasks).into_par_iter().for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_avx2(k: usize, a: &Operand, aoff: usize, b: &Operand, boff: usize, out: &mut [f32]) {
    gemv_cols(k, a, aoff, b, boff, out)
}

/// `out[j] = Σ_p a[p] · b[p, j]`, as axpy over rows when B's columns are contiguous and as
/// dot products when its rows are.
#[inline(always)]
fn gemv_cols(k: usize, a: &Operand, aoff: usize, b: &Operand, boff: usize, out: &mut [f32]) {
    let n = out.len();
    if b.cs == 1 {
        for p in 0..k {
            let av = a.data[aoff + p * a.cs];
            let row = &b.data[boff + p * b.rs..][..n];
            for (o, &v) in out.iter_mut().zip(row) {
                *o += av * v;
            }
        }
    } else if b.rs == 1 && a.cs == 1 {
        let av = &a.data[aoff..aoff + k];
        for (j, o) in out.iter_mut().enumerate() {
            let col = &b.data[boff + j * b.cs..][..k];
            let mut lanes = [0.0f32; 16];
            let mut ca = av.chunks_exact(16);
            let mut cb = col.chunks_exact(16);
            for (x, y) in (&mut ca).zip(&mut cb) {
                for l in 0..16 {
                    lanes[l] += x[l] * y[l];
                }
            }
            let mut s: f32 = lanes.iter().sum();
            for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
                s += x * y;
            }
            *o = s;
        }
    } else {
        for (j, o) in out.iter_mut().enumerate() {
            let mut s = 0.0f32;
            for p in 0..k {
                s += a.data[aoff + p * a.cs] * b.data[boff + p * b.rs + j * b.cs];
            }
            *o = s;
        }
    }
}
