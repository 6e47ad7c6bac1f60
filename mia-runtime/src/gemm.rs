//! The CPU matrix-product engine behind `matmul` passes: BLIS-style packing of B into panels
//! (A is read in place when row-major, packed otherwise), a register-blocked microkernel
//! (12×32 with AVX-512, 6×16 with AVX2+FMA, chosen at run time; 4×8 portable otherwise),
//! rayon over output tiles (and over slices of the depth when there are too few tiles for
//! the threads), and the kernel's epilogue applied to each tile
//! row while the tile is still in cache. When many row tiles would each pack the same B
//! blocks (M = 4096 tokens against a weight), B is packed once per call and shared. `M = 1`
//! (decoding) takes a GEMV path without packing.
//!
//! Operands are strided views, so transposed and batch-broadcast operands cost no copy; the
//! generated code checks all shapes before calling in, so indices here are in range by
//! construction (still bounds-checked: a bug panics instead of reading out of bounds).

use std::cell::RefCell;

/// A strided operand: element `(batch.., row, col)` is at
/// `Σ batch_i · batch_strides[i] + row · rs + col · cs`, unless it has a prologue.
#[derive(Clone, Copy)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub batch_strides: &'a [usize],
    pub rs: usize,
    pub cs: usize,
    /// The operand computed elementwise as it is packed (`matmul(relu(x), w)`): the kernel's
    /// own code fills `out` with the elements of batch `bi` at index `at` along the operand's
    /// first axis, from `from` along its second (A: row `at` along the depth; B: depth `at`
    /// along the columns). `data` and the strides are then unused.
    pub pro: Option<Prologue<'a>>,
}

/// See [`Operand::pro`]: `(bi, at, from, out)`.
pub type Prologue<'a> = &'a (dyn Fn(usize, usize, usize, &mut [f32]) + Sync);

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
/// Rows of a packed A block: a multiple of every microkernel's `MR` (as are the smaller row
/// blocks [`split`] tries).
const MC: usize = 144;
/// Columns of a packed B block (at `KC` deep, half an L2 of 1 MiB).
const NC: usize = 512;
/// A split depth is never sliced thinner than this: each slice's partial tile is written and
/// summed once, which deeper slices amortize.
const MIN_SLICE: usize = 128;
/// Partial-tile elements a depth split may write (8 MiB).
const MAX_PARTS: usize = 1 << 21;
/// Products below this many multiply-adds run on the calling thread.
const SERIAL_FLOPS: usize = 1 << 18;
/// Most elements of B packed up front for one call (32 MiB).
const MAX_SHARED_B: usize = 1 << 23;

/// Forces B to be packed per tile (`Some(false)`) or once per call (`Some(true)`), or lets
/// [`split`] choose (`None`): for benchmarks comparing the two in one run.
#[doc(hidden)]
pub fn force_shared_b(force: Option<bool>) {
    FORCE_SHARED_B.store(
        match force {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        },
        std::sync::atomic::Ordering::Relaxed,
    );
}

/// `MIA_CPU_SHARED_B=0` or `1` forces the choice for a whole process (to compare builds of a
/// model, whose products cannot be forced one by one).
fn shared_b_env() -> Option<bool> {
    static ENV: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    *ENV.get_or_init(|| crate::rt::env_switch("MIA_CPU_SHARED_B"))
}

static FORCE_SHARED_B: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Computes `NB` products sharing the left operand and hands each finished output row
/// segment to `epi(batch_index, row, col0, [acc_j])` (row-major over the batch dims).
pub fn matmul<const NB: usize, F>(d: Dims, a: Operand, b: [Operand; NB], epi: F)
where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    matmul_packed(d, a, b, [None; NB], epi)
}

/// [`matmul`], with each B's data the whole of a tensor whose [`PackCache`] is `packs[j]`
/// (`None`: an intermediate, packed on each call).
pub fn matmul_packed<const NB: usize, F>(
    d: Dims,
    a: Operand,
    b: [Operand; NB],
    packs: [Option<&PackCache>; NB],
    epi: F,
) where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    let batches: usize = d.batch.iter().product();
    if batches == 0 || d.m == 0 || d.n == 0 {
        return;
    }
    // GEMV streams B as it is stored, so a B with a prologue takes the packing path.
    if d.m == 1 && b.iter().all(|x| x.pro.is_none()) {
        return gemv(d, batches, a, b, &epi);
    }
    let force = match FORCE_SHARED_B.load(std::sync::atomic::Ordering::Relaxed) {
        1 => Some(false),
        2 => Some(true),
        _ => shared_b_env(),
    };
    #[cfg(target_arch = "x86_64")]
    if crate::rt::has_avx2_fma() {
        if has_avx512() {
            return tiled::<Avx512, NB, _>(d, batches, a, b, packs, &epi, force);
        }
        return tiled::<Avx2, NB, _>(d, batches, a, b, packs, &epi, force);
    }
    tiled::<Portable, NB, _>(d, batches, a, b, packs, &epi, force)
}

/// Whether tiles read `a` in place (row-major, no prologue) instead of packing it: see
/// [`product`]. `MIA_CPU_PACK_A=1` packs every A, to compare the two on a machine.
fn reads_a_in_place(a: &Operand) -> bool {
    static PACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let pack = *PACK.get_or_init(|| crate::rt::env_switch("MIA_CPU_PACK_A") == Some(true));
    a.pro.is_none() && a.cs == 1 && !pack
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

/// A register-blocked microkernel: `c[i·ldc + j] (+)= Σ_p A(i, p) · b[p·ldb + j]` for
/// `i < MR`, `j < NR`, `p < k`. `A` is a packed panel (`PACKED`: `A(i, p) = a[p·MR + i]`) or
/// row-major (`A(i, p) = a[i·lda + p]`): the matrix product packs, attention reads its query
/// rows and probabilities in place. `PACKED` is a const so that both layouts compile to
/// constant offsets. Shared by [`matmul`] and `attention`.
pub(crate) trait Micro {
    const MR: usize;
    const NR: usize;
    #[allow(clippy::too_many_arguments)]
    fn run<const PACKED: bool>(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    );
}

/// Every access of a microkernel call is in range (its `unsafe` kernels rely on this).
#[allow(clippy::too_many_arguments)]
fn check_micro<const PACKED: bool>(
    (mr, nr): (usize, usize),
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    c: &[f32],
    ldc: usize,
) {
    let a_need = if PACKED { k * mr } else { (mr - 1) * lda + k };
    assert!(
        (k == 0 || (a.len() >= a_need && b.len() >= (k - 1) * ldb + nr))
            && c.len() >= (mr - 1) * ldc + nr,
        "microkernel operands out of range"
    );
}

/// The portable 4×8 kernel: fixed-size arrays that LLVM keeps in SSE registers.
pub(crate) struct Portable;

impl Micro for Portable {
    const MR: usize = 4;
    const NR: usize = 8;
    fn run<const PACKED: bool>(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    ) {
        let mut t = [[0.0f32; 8]; 4];
        for p in 0..k {
            let bp = &b[p * ldb..p * ldb + 8];
            for (i, row) in t.iter_mut().enumerate() {
                let ai = if PACKED { a[p * 4 + i] } else { a[i * lda + p] };
                for j in 0..8 {
                    row[j] += ai * bp[j];
                }
            }
        }
        for (i, row) in t.iter().enumerate() {
            let dst = &mut c[i * ldc..i * ldc + 8];
            for j in 0..8 {
                dst[j] = if acc { dst[j] + row[j] } else { row[j] };
            }
        }
    }
}

/// The AVX2+FMA 6×16 kernel: 12 accumulator registers, 2 loads and 6 broadcasts per step.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx2;

#[cfg(target_arch = "x86_64")]
impl Micro for Avx2 {
    const MR: usize = 6;
    const NR: usize = 16;
    fn run<const PACKED: bool>(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    ) {
        check_micro::<PACKED>((6, 16), k, a, lda, b, ldb, c, ldc);
        // SAFETY: `Avx2` is only chosen when the CPU has AVX2 and FMA; every access is in
        // range (checked above).
        unsafe {
            avx2_6x16::<PACKED>(
                k,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                c.as_mut_ptr(),
                ldc,
                acc,
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx2_6x16<const PACKED: bool>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    let mut r = [[_mm256_setzero_ps(); 2]; 6];
    for p in 0..k {
        let b0 = _mm256_loadu_ps(b.add(p * ldb));
        let b1 = _mm256_loadu_ps(b.add(p * ldb + 8));
        for (i, row) in r.iter_mut().enumerate() {
            let at = if PACKED { p * 6 + i } else { i * lda + p };
            let ai = _mm256_broadcast_ss(&*a.add(at));
            row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
        }
    }
    for (i, row) in r.iter().enumerate() {
        let dst = c.add(i * ldc);
        let (mut lo, mut hi) = (row[0], row[1]);
        if acc {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(dst));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(dst.add(8)));
        }
        _mm256_storeu_ps(dst, lo);
        _mm256_storeu_ps(dst.add(8), hi);
    }
}

/// AVX-512F (cached; off with `MIA_CPU_BASELINE`, like AVX2, or alone with
/// `MIA_CPU_AVX512=0`, to measure what the wider kernels buy on a machine).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *YES.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && crate::rt::env_switch("MIA_CPU_AVX512") != Some(false)
    })
}

/// The AVX-512 12×32 kernel: 24 of the 32 zmm registers accumulate.
#[cfg(target_arch = "x86_64")]
pub(crate) struct Avx512;

#[cfg(target_arch = "x86_64")]
impl Micro for Avx512 {
    const MR: usize = 12;
    const NR: usize = 32;
    fn run<const PACKED: bool>(
        k: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        ldb: usize,
        c: &mut [f32],
        ldc: usize,
        acc: bool,
    ) {
        check_micro::<PACKED>((12, 32), k, a, lda, b, ldb, c, ldc);
        // SAFETY: `Avx512` is only chosen when the CPU has AVX-512F; every access is in range
        // (checked above).
        unsafe {
            avx512_12x32::<PACKED>(
                k,
                a.as_ptr(),
                lda,
                b.as_ptr(),
                ldb,
                c.as_mut_ptr(),
                ldc,
                acc,
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn avx512_12x32<const PACKED: bool>(
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    use std::arch::x86_64::*;
    let mut r = [[_mm512_setzero_ps(); 2]; 12];
    for p in 0..k {
        let b0 = _mm512_loadu_ps(b.add(p * ldb));
        let b1 = _mm512_loadu_ps(b.add(p * ldb + 16));
        for (i, row) in r.iter_mut().enumerate() {
            let at = if PACKED { p * 12 + i } else { i * lda + p };
            let ai = _mm512_set1_ps(*a.add(at));
            row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
            row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
        }
    }
    for (i, row) in r.iter().enumerate() {
        let dst = c.add(i * ldc);
        let (mut lo, mut hi) = (row[0], row[1]);
        if acc {
            lo = _mm512_add_ps(lo, _mm512_loadu_ps(dst));
            hi = _mm512_add_ps(hi, _mm512_loadu_ps(dst.add(16)));
        }
        _mm512_storeu_ps(dst, lo);
        _mm512_storeu_ps(dst.add(16), hi);
    }
}

thread_local! {
    /// Per-thread packing buffers, reused across calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Packs `A[i0.., p0..]` (`mc × kc`) into MR-row panels, zero-padded to whole panels.
fn pack_a(
    dst: &mut [f32],
    mr: usize,
    a: &Operand,
    (bi, off): (usize, usize),
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
        if let Some(pro) = a.pro {
            let mut run = [0.0f32; KC];
            let run = &mut run[..kc];
            for r in 0..rows {
                pro(bi, i0 + pi * mr + r, p0, run);
                for (p, &v) in run.iter().enumerate() {
                    panel[p * mr + r] = v;
                }
            }
            continue;
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
    (bi, off): (usize, usize),
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
        if let Some(pro) = b.pro {
            for p in 0..kc {
                pro(bi, p0 + p, col0, &mut panel[p * nr..p * nr + cols]);
            }
        } else if cs == 1 {
            for p in 0..kc {
                let base = off + (p0 + p) * rs + col0;
                panel[p * nr..p * nr + cols].copy_from_slice(&src[base..base + cols]);
            }
        } else if rs == 1 {
            // Stored transposed (a `[out, in]` weight used as `transpose(w, 0, 1)`): each
            // column is contiguous along the depth. Copied in 8 × 8 blocks, so the writes of a
            // block stay in 8 cache lines of the panel instead of sweeping all `kc` of them per
            // column (2x slower products inside MiniLM, whose every weight is transposed);
            // whole blocks are transposed in AVX registers (element by element, packing took
            // longer than the products at M = 128: a third of a MiniLM forward at batch 1).
            for c0 in (0..cols).step_by(8) {
                for q0 in (0..kc).step_by(8) {
                    let qn = (kc - q0).min(8);
                    #[cfg(target_arch = "x86_64")]
                    if qn == 8 && c0 + 8 <= cols && crate::rt::has_avx2_fma() {
                        let base = off + p0 + q0 + (col0 + c0) * cs;
                        let dst = &mut panel[q0 * nr + c0..];
                        transpose8(&src[base..], cs, dst, nr);
                        continue;
                    }
                    for c in c0..(c0 + 8).min(cols) {
                        let base = off + p0 + q0 + (col0 + c) * cs;
                        for (q, &v) in src[base..base + qn].iter().enumerate() {
                            panel[(q0 + q) * nr + c] = v;
                        }
                    }
                }
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

/// `dst[j·ldd + i] = src[i·lds + j]` for an 8 × 8 block (`i`, `j` < 8), through AVX registers.
/// Panics if either block reaches past its slice.
#[cfg(target_arch = "x86_64")]
pub(crate) fn transpose8(src: &[f32], lds: usize, dst: &mut [f32], ldd: usize) {
    assert!(
        src.len() >= 7 * lds + 8 && dst.len() >= 7 * ldd + 8,
        "transpose8: block out of range"
    );
    assert!(crate::rt::has_avx2_fma(), "transpose8 needs AVX");
    // SAFETY: AVX is present (checked above) and every load and store is in range.
    unsafe { transpose8_avx(src.as_ptr(), lds, dst.as_mut_ptr(), ldd) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn transpose8_avx(src: *const f32, lds: usize, dst: *mut f32, ldd: usize) {
    use std::arch::x86_64::*;
    let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * lds)));
    let t0 = _mm256_unpacklo_ps(r[0], r[1]);
    let t1 = _mm256_unpackhi_ps(r[0], r[1]);
    let t2 = _mm256_unpacklo_ps(r[2], r[3]);
    let t3 = _mm256_unpackhi_ps(r[2], r[3]);
    let t4 = _mm256_unpacklo_ps(r[4], r[5]);
    let t5 = _mm256_unpackhi_ps(r[4], r[5]);
    let t6 = _mm256_unpacklo_ps(r[6], r[7]);
    let t7 = _mm256_unpackhi_ps(r[6], r[7]);
    let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
    let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
    let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
    let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
    let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
    let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
    let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
    let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
    let out = [
        _mm256_permute2f128_ps::<0x20>(u0, u4),
        _mm256_permute2f128_ps::<0x20>(u1, u5),
        _mm256_permute2f128_ps::<0x20>(u2, u6),
        _mm256_permute2f128_ps::<0x20>(u3, u7),
        _mm256_permute2f128_ps::<0x31>(u0, u4),
        _mm256_permute2f128_ps::<0x31>(u1, u5),
        _mm256_permute2f128_ps::<0x31>(u2, u6),
        _mm256_permute2f128_ps::<0x31>(u3, u7),
    ];
    for (j, v) in out.into_iter().enumerate() {
        _mm256_storeu_ps(dst.add(j * ldd), v);
    }
}

/// How the output is cut into tasks: tiles of `mc × nc` elements and `ks` slices of the depth
/// (each slice's partial tiles summed before the epilogue); `shared`: B is packed once for the
/// call and read by every tile, instead of each tile packing its own B blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Split {
    mc: usize,
    nc: usize,
    ks: usize,
    shared: bool,
}

/// The split with the least estimated time: rounds of equal tasks over the threads, times one
/// task's cost (its multiply-adds, padded to whole microtiles, plus packing its A and B blocks
/// and, when the depth is split, writing and summing its partial tile). Big tiles pack least;
/// small tiles and depth slices keep every thread busy when the output has few tiles (M = 128
/// tokens against 16 threads), and depth slices do so without packing the operands again per
/// extra tile. Packing B once for the call ([`PackedB`]) costs its whole packing up front
/// (spread over the threads) and saves each tile its B packing: it wins when several row
/// tiles share a B block (M = 4096 tokens: 29 tiles would pack the same weight).
/// `shared_b`: how many B matrices one call would pack (`None`: too big to pack up front; 0:
/// packed already, in their tensors' [`PackCache`]s).
fn split(
    d: &Dims,
    batches: usize,
    (mr, nr): (usize, usize),
    threads: usize,
    shared_b: Option<usize>,
    pack_a: bool,
) -> Split {
    /// Packing one element costs about this many multiply-adds (a vector FMA does 8 to 16 a
    /// cycle, packing moves about one element a cycle).
    const PACK: usize = 8;
    /// Writing, re-reading and summing one element of a partial tile.
    const PART: usize = 8;
    /// An extra parallel phase (packing B up front, or summing the depth slices): a fork and
    /// join of every thread, in multiply-adds. Measured on a 16-thread Xeon VM, a phase costs
    /// 30 to 40 µs, which at M = 128 is as much as a third of the product.
    const SYNC: usize = 1 << 19;
    /// Reading one element of B packed up front, from L3 where a tile's own packed block
    /// would be in L2: this keeps tiles tall, so that each B block read serves many rows.
    const READ: usize = 4;
    let mut best = (
        usize::MAX,
        Split {
            mc: MC,
            nc: NC,
            ks: 1,
            shared: false,
        },
    );
    // Packing all of B once, spread over the threads.
    let pack_all = shared_b.map(|nbb| match nbb {
        0 => 0,
        _ => (PACK * nbb * d.n.div_ceil(nr) * nr * d.k).div_ceil(threads) + SYNC,
    });
    for mc in [MC, 96, 48, 24] {
        for nc in [NC, 256, 128, 64, 32].into_iter().filter(|&nc| nc >= nr) {
            let tiles = batches * d.m.div_ceil(mc) * d.n.div_ceil(nc);
            for ks in [1, 2, 3, 4, 6, 8, 12, 16] {
                let kslice = d.k.div_ceil(ks).max(1);
                // Only split when the tiles alone cannot keep the threads busy, and while the
                // partial tiles stay cache-sized (those of a large output would not).
                let parts = batches * d.m * d.n * ks;
                if ks > 1 && (kslice < MIN_SLICE || tiles >= threads || parts > MAX_PARTS) {
                    break;
                }
                let mcp = d.m.min(mc).div_ceil(mr) * mr;
                let ncp = d.n.min(nc).div_ceil(nr) * nr;
                let tasks = tiles * ks;
                let part = if ks > 1 { PART * mcp * ncp } else { 0 };
                let sync = if ks > 1 { SYNC } else { 0 };
                let a_cost = if pack_a { PACK } else { READ };
                let per = mcp * ncp * kslice + (a_cost * mcp + PACK * ncp) * kslice + part;
                let own = tasks.div_ceil(threads).saturating_mul(per) + sync;
                // Packing B up front instead: tasks read its panels rather than pack them.
                let shared = pack_all.map(|all| {
                    let per = per - (PACK - READ) * ncp * kslice;
                    tasks.div_ceil(threads).saturating_mul(per) + sync + all
                });
                for (shared, cost) in [(false, Some(own)), (true, shared)] {
                    match cost {
                        Some(cost) if cost < best.0 => {
                            best = (cost, Split { mc, nc, ks, shared });
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    best.1
}

thread_local! {
    /// The calling thread's partial tiles of depth-split products, reused across calls.
    static PARTS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread output tile of unsplit products, reused across calls.
    static TILE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's B packed for a whole call ([`PackedB`]), reused across calls.
    static PACKED_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The depth blocks the tiles walk: each of the `ks` slices of `kslice` cut into `KC`-deep
/// blocks, as `(first depth, depth)`.
fn depth_blocks(k: usize, ks: usize, kslice: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..ks).flat_map(move |s| {
        let k0 = (s * kslice).min(k);
        let k1 = (k0 + kslice).min(k);
        (k0..k1).step_by(KC).map(move |p0| (p0, (k1 - p0).min(KC)))
    })
}

/// B packed once for a call and read by every tile. Per B batch `bb` and operand `j`, `parts[bb·NB
/// + j]` holds each depth block `(p0, kc)` (of [`depth_blocks`]) as `NR`-column panels over all
/// `np` (N padded) columns, `kc × np` elements at `p0·np`; the panels of columns from `j0`
/// start `j0·kc` into it, exactly as a tile's own packed block would be laid out.
struct PackedB<'p> {
    parts: Vec<&'p [f32]>,
    /// B batches packed: 1 when every B is broadcast over the batch, else one per batch.
    nbb: usize,
    np: usize,
}

impl PackedB<'_> {
    /// Batch `bi`'s operand `j` of `nb`: columns `j0..j0 + ncp` of depth block `(p0, kc)`.
    fn block(
        &self,
        nb: usize,
        (bi, j): (usize, usize),
        (p0, kc): (usize, usize),
        (j0, ncp): (usize, usize),
    ) -> &[f32] {
        let bb = if self.nbb == 1 { 0 } else { bi };
        let at = p0 * self.np + j0 * kc;
        &self.parts[bb * nb + j][at..at + ncp * kc]
    }
}

/// Packed copies of one tensor's data as the B of products, kept with the tensor (a CPU
/// tensor's storage owns one): a weight multiplies every call's activations, and packing it
/// each call cost a sixth of a MiniLM forward at batch 1 (its weights are stored `[out, in]`,
/// transposed as they are packed). A layout is packed into the cache the second time it is
/// asked for, so a B used once costs no memory; the copies go with the tensor. Tensors are
/// never modified in place, so a copy never goes stale.
#[derive(Default)]
pub struct PackCache(std::sync::Mutex<Vec<(PackKey, Option<Packed>)>>);

/// One packed copy (`None` in a [`PackCache`]: the view was seen once, not packed yet).
type Packed = std::sync::Arc<Vec<f32>>;

/// What a packed copy depends on: the view of the data (from its first element, `n` columns
/// at column stride `cs`, depth `k` at row stride `rs`), the microkernel's `NR`, and the depth
/// slices.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PackKey {
    view: (usize, usize, usize, usize, usize),
    nr: usize,
    slices: (usize, usize),
}

fn pack_key(d: &Dims, b: &Operand, nr: usize, slices: (usize, usize)) -> PackKey {
    PackKey {
        view: (b.data.as_ptr() as usize, d.k, d.n, b.rs, b.cs),
        nr,
        slices,
    }
}

/// Layouts one tensor keeps at most (a B used by kernels of several shapes or thread counts).
const PACKS_KEPT: usize = 4;

impl PackCache {
    /// Whether `key`'s view was asked for before (in any depth slicing); records it.
    fn seen(&self, key: PackKey) -> bool {
        let Ok(mut e) = self.0.lock() else {
            return false;
        };
        if e.iter().any(|(k, _)| k.view == key.view && k.nr == key.nr) {
            return true;
        }
        e.push((key, None));
        false
    }

    /// The copy packed for `key`, packing it with `fill` when there is none yet.
    fn get_or_pack(&self, key: PackKey, len: usize, fill: impl FnOnce(&mut [f32])) -> Packed {
        let found = self.0.lock().ok().and_then(|e| {
            e.iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, p)| p.clone())
        });
        if let Some(p) = found {
            return p;
        }
        let mut buf = vec![0.0; len];
        fill(&mut buf);
        let p = std::sync::Arc::new(buf);
        if let Ok(mut e) = self.0.lock() {
            e.retain(|(k, p)| *k != key && (p.is_some() || k.view != key.view));
            if e.len() >= PACKS_KEPT {
                e.remove(0);
            }
            e.push((key, Some(p.clone())));
        }
        p
    }
}

/// Fills `buf` (`nbb · NB · k · np` elements) as [`PackedB`] lays it out, in parallel over
/// (batch, operand, depth block, 128 columns) unless `serial`.
#[allow(clippy::too_many_arguments)]
fn pack_b_all<const NB: usize>(
    d: &Dims,
    b: &[Operand; NB],
    nr: usize,
    nbb: usize,
    (ks, kslice): (usize, usize),
    np: usize,
    buf: &mut [f32],
    serial: bool,
) {
    /// Columns per packing task (a multiple of every `NR`).
    const GROUP: usize = 128;
    let mut jobs = Vec::new();
    for (bbj, mut rest) in buf.chunks_exact_mut(d.k * np).take(nbb * NB).enumerate() {
        for (p0, kc) in depth_blocks(d.k, ks, kslice) {
            let (block, tail) = std::mem::take(&mut rest).split_at_mut(kc * np);
            rest = tail;
            for (g, dst) in block.chunks_mut(GROUP * kc).enumerate() {
                jobs.push((bbj / NB, bbj % NB, (p0, kc), g * GROUP, dst));
            }
        }
    }
    let job = |(bb, j, depth, j0, dst): (usize, usize, (usize, usize), usize, &mut [f32])| {
        let off = batch_offset(bb, d.batch, b[j].batch_strides);
        pack_b(
            dst,
            nr,
            &b[j],
            (bb, off),
            depth,
            (j0, (d.n - j0).min(GROUP)),
        );
    };
    if serial {
        jobs.into_iter().for_each(job);
    } else {
        crate::team::fork_items(jobs, job);
    }
}

fn tiled<K: Micro, const NB: usize, F>(
    d: Dims,
    batches: usize,
    a: Operand,
    b: [Operand; NB],
    packs: [Option<&PackCache>; NB],
    epi: &F,
    force_shared: Option<bool>,
) where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    let serial = d.m * d.n * d.k.max(1) * batches < SERIAL_FLOPS;
    let threads = if serial {
        1
    } else {
        rayon::current_num_threads().max(1)
    };
    // B packed up front: once when every B is the same for all batches, else per batch.
    let broadcast = b
        .iter()
        .all(|x| x.pro.is_none() && x.batch_strides.iter().all(|&s| s == 0));
    let nbb = if broadcast { 1 } else { batches };
    let np = d.n.div_ceil(K::NR) * K::NR;
    let shared_len = [NB, d.k, np]
        .into_iter()
        .try_fold(nbb, usize::checked_mul)
        .filter(|&len| len > 0 && len <= MAX_SHARED_B && force_shared != Some(false));
    // Every B a tensor's data (no prologue: it may read other inputs), asked for before with
    // this view: packed in its cache (the split then counts no packing for B).
    static PREPACK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let prepacked = shared_len.is_some()
        && nbb == 1
        && *PREPACK.get_or_init(|| crate::rt::env_switch("MIA_CPU_PREPACK") != Some(false))
        && (0..NB).all(|j| {
            b[j].pro.is_none()
                && packs[j].is_some_and(|c| c.seen(pack_key(&d, &b[j], K::NR, (1, d.k))))
        });
    let mut sp = split(
        &d,
        batches,
        (K::MR, K::NR),
        threads,
        shared_len.map(|_| if prepacked { 0 } else { nbb }),
        !reads_a_in_place(&a),
    );
    if prepacked {
        sp.shared = true;
    }
    if force_shared == Some(true) && shared_len.is_some() {
        sp.shared = true;
    }
    let Split {
        mc: mcb,
        nc,
        ks,
        shared,
    } = sp;
    let (mt, nt) = (d.m.div_ceil(mcb), d.n.div_ceil(nc));
    let tiles = batches * mt * nt;
    let kslice = d.k.div_ceil(ks);
    // Tile buffers: `NB` blocks of `mcp × ncp`, row stride `ncp` (whole microtiles).
    let mcp = d.m.min(mcb).div_ceil(K::MR) * K::MR;
    let ncp = d.n.min(nc).div_ceil(K::NR) * K::NR;
    let tile_len = NB * mcp * ncp;
    // Tile `t`: (batch, first row, rows, first column, columns).
    let locate = |t: usize| {
        let (bi, rest) = (t / (mt * nt), t % (mt * nt));
        let (i0, j0) = ((rest / nt) * mcb, (rest % nt) * nc);
        (bi, i0, (d.m - i0).min(mcb), j0, (d.n - j0).min(nc))
    };
    // The epilogue on the finished tile `t`, row by row while it is in cache.
    let finish = |t: usize, buf: &[f32]| {
        let (bi, i0, mc, j0, ncols) = locate(t);
        for i in 0..mc {
            let accs: [&[f32]; NB] =
                std::array::from_fn(|j| &buf[j * mcp * ncp + i * ncp..][..ncols]);
            epi(bi, i0 + i, j0, &accs);
        }
    };
    let body = |pb: Option<&PackedB>| {
        // Tile `t` over depth slice `s` into `buf`.
        let compute = |t: usize, s: usize, buf: &mut [f32]| {
            let k0 = (s * kslice).min(d.k);
            let k1 = (k0 + kslice).min(d.k);
            product::<K, NB>(&d, &a, &b, pb, locate(t), (k0, k1), buf, ncp);
        };
        if ks == 1 {
            let task = |t: usize| {
                TILE.with(|buf| {
                    let mut buf = buf.borrow_mut();
                    if buf.len() < tile_len {
                        buf.resize(tile_len, 0.0);
                    }
                    compute(t, 0, &mut buf[..tile_len]);
                    finish(t, &buf[..tile_len]);
                })
            };
            if tiles == 1 || serial {
                (0..tiles).for_each(task);
            } else {
                crate::team::fork(tiles, task);
            }
            return;
        }
        // Depth split: every (tile, slice) product in parallel, then per tile the sum of its
        // slices and the epilogue. The buffer is the caller's, or a fresh one when this thread
        // is already inside a split product (rayon may run another call here while it waits).
        let run = |parts: &mut Vec<f32>| {
            if parts.len() < tiles * ks * tile_len {
                parts.resize(tiles * ks * tile_len, 0.0);
            }
            let parts = &mut parts[..tiles * ks * tile_len];
            crate::team::fork_chunks_mut(parts, tile_len, |i, buf| compute(i / ks, i % ks, buf));
            crate::team::fork_chunks_mut(parts, ks * tile_len, |t, group| {
                let (sum, rest) = group.split_at_mut(tile_len);
                for part in rest.chunks_exact(tile_len) {
                    for (x, &y) in sum.iter_mut().zip(part) {
                        *x += y;
                    }
                }
                finish(t, sum);
            });
        };
        PARTS.with(|p| match p.try_borrow_mut() {
            Ok(mut parts) => run(&mut parts),
            Err(_) => run(&mut Vec::new()),
        });
    };
    let Some(len) = shared_len.filter(|_| shared) else {
        return body(None);
    };
    if prepacked {
        // Each B from its tensor's cache (packed there on this call if not yet).
        let copies: Vec<_> = (0..NB)
            .filter_map(|j| {
                let key = pack_key(&d, &b[j], K::NR, (ks, kslice));
                packs[j].map(|c| {
                    c.get_or_pack(key, d.k * np, |buf| {
                        pack_b_all(&d, &[b[j]], K::NR, 1, (ks, kslice), np, buf, serial)
                    })
                })
            })
            .collect();
        return body(Some(&PackedB {
            parts: copies.iter().map(|c| &c[..]).collect(),
            nbb,
            np,
        }));
    }
    // B packed once, then the tiles: the buffer is the caller's, or a fresh one when this
    // thread is already inside such a product (as for the partial tiles above).
    let with = |buf: &mut Vec<f32>| {
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let buf = &mut buf[..len];
        pack_b_all(&d, &b, K::NR, nbb, (ks, kslice), np, buf, serial);
        body(Some(&PackedB {
            parts: buf.chunks_exact(d.k * np).collect(),
            nbb,
            np,
        }));
    };
    PACKED_B.with(|p| match p.try_borrow_mut() {
        Ok(mut buf) => with(&mut buf),
        Err(_) => with(&mut Vec::new()),
    });
}

/// The `NB` products of one tile (`(batch, first row, rows, first column, columns)`) over the
/// depth `k0..k1`, into `out` as `NB` blocks of `rows × ldc` (rows and columns padded to whole
/// microtiles); zeros for an empty depth. B's blocks come from `pb` when packed for the call,
/// else are packed here.
#[allow(clippy::too_many_arguments)]
fn product<K: Micro, const NB: usize>(
    d: &Dims,
    a: &Operand,
    b: &[Operand; NB],
    pb: Option<&PackedB>,
    (bi, i0, mc, j0, ncols): (usize, usize, usize, usize, usize),
    (k0, k1): (usize, usize),
    out: &mut [f32],
    ldc: usize,
) {
    let mcp = mc.div_ceil(K::MR) * K::MR;
    let ncp = ncols.div_ceil(K::NR) * K::NR;
    let block = out.len() / NB;
    if k1 == k0 {
        out.fill(0.0);
        return;
    }
    let kcmax = (k1 - k0).min(KC);
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let need = mcp * kcmax + if pb.is_some() { 0 } else { ncp * kcmax };
        if s.len() < need {
            s.resize(need, 0.0);
        }
        let (pa, pbuf) = s.split_at_mut(mcp * kcmax);
        let aoff = batch_offset(bi, d.batch, a.batch_strides);
        // A stored row-major is read in place, whole `MR`-row panels of it: packing it would
        // cost as much as the products when a tile is narrow (M = 128 tokens over 16 threads:
        // tiles 32 columns wide, each packing all of A). The rows past the last whole panel,
        // and any other layout or a prologue, are packed.
        let direct = if reads_a_in_place(a) { mc / K::MR } else { 0 };
        for p0 in (k0..k1).step_by(KC) {
            let kc = (k1 - p0).min(KC);
            let i1 = i0 + direct * K::MR;
            if i1 < i0 + mc {
                pack_a(pa, K::MR, a, (bi, aoff), (i1, i0 + mc - i1), (p0, kc));
            }
            for (j, bj) in b.iter().enumerate() {
                let panels: &[f32] = match pb {
                    Some(pb) => pb.block(NB, (bi, j), (p0, kc), (j0, ncp)),
                    None => {
                        let boff = batch_offset(bi, d.batch, bj.batch_strides);
                        pack_b(pbuf, K::NR, bj, (bi, boff), (p0, kc), (j0, ncols));
                        pbuf
                    }
                };
                let tile = &mut out[j * block..(j + 1) * block];
                let npanels = ncp / K::NR;
                let (rowp, panel) = (mcp / K::MR, K::NR * kc);
                // Lines of the next B panel to prefetch per microtile, so that a panel read
                // from memory (packed for the call, or kept with a weight; one this tile
                // packed is in cache already) arrives while the row panels run over this one.
                let step = (panel / 16).div_ceil(rowp) * 16;
                for (pj, bpanel) in panels.chunks_exact(panel).take(npanels).enumerate() {
                    let next = pb.and_then(|_| panels.get((pj + 1) * panel..(pj + 2) * panel));
                    for pi in 0..rowp {
                        if let Some(next) = next {
                            prefetch(&next[(pi * step).min(panel)..((pi + 1) * step).min(panel)]);
                        }
                        let c = &mut tile[pi * K::MR * ldc + pj * K::NR..];
                        if pi < direct {
                            let at = aoff + (i0 + pi * K::MR) * a.rs + p0;
                            let rows = &a.data[at..];
                            K::run::<false>(kc, rows, a.rs, bpanel, K::NR, c, ldc, p0 > k0);
                        } else {
                            let apanel = &pa[(pi - direct) * K::MR * kc..][..K::MR * kc];
                            K::run::<true>(kc, apanel, 0, bpanel, K::NR, c, ldc, p0 > k0);
                        }
                    }
                }
            }
        }
    });
}

/// Asks for `data`'s cache lines (into L2) ahead of their use.
#[inline(always)]
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: a prefetch is a hint; the address is in bounds anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                line.as_ptr().cast(),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// `M = 1`: each task streams its columns of B once (no packing), which is what a
/// memory-bound product wants.
fn gemv<const NB: usize, F>(d: Dims, batches: usize, a: Operand, b: [Operand; NB], epi: &F)
where
    F: Fn(usize, usize, usize, &[&[f32]; NB]) + Sync,
{
    const COLS: usize = 256;
    let nt = d.n.div_ceil(COLS);
    let tasks = batches * nt;
    let serial = tasks == 1 || d.n * d.k * batches < SERIAL_FLOPS;
    // A's rows with their prologue applied, once per batch element rather than once per task.
    let mut rows = Vec::new();
    if let (Some(pro), true) = (a.pro, d.k > 0) {
        rows = vec![0.0f32; batches * d.k];
        let row = |(bi, r): (usize, &mut [f32])| pro(bi, 0, 0, r);
        if serial {
            rows.chunks_mut(d.k).enumerate().for_each(row);
        } else {
            crate::team::fork_rows_mut(&mut rows, d.k, |bi, r| row((bi, r)));
        }
    }
    let task = |t: usize| {
        let (bi, j0) = (t / nt, (t % nt) * COLS);
        let ncols = (d.n - j0).min(COLS);
        let mut acc = [[0.0f32; COLS]; NB];
        let (a, aoff) = match a.pro {
            Some(_) => (
                Operand {
                    data: &rows[bi * d.k..(bi + 1) * d.k],
                    batch_strides: &[],
                    rs: 0,
                    cs: 1,
                    pro: None,
                },
                0,
            ),
            None => (a, batch_offset(bi, d.batch, a.batch_strides)),
        };
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
    if serial {
        (0..tasks).for_each(task);
    } else {
        crate::team::fork(tasks, task);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn transpose8_transposes() {
        if !crate::rt::has_avx2_fma() {
            return;
        }
        let (lds, ldd) = (11, 13);
        let src: Vec<f32> = (0..7 * lds + 8).map(|i| i as f32).collect();
        let mut dst = vec![f32::NAN; 7 * ldd + 8];
        transpose8(&src, lds, &mut dst, ldd);
        for i in 0..8 {
            for j in 0..8 {
                assert_eq!(dst[j * ldd + i], src[i * lds + j], "({i}, {j})");
            }
        }
    }

    /// `[batch, m, k] · [k, n]` twice (`NB = 2`): B broadcast over the batch, and its negation
    /// computed by a prologue; A and the first B read transposed when `at`; through
    /// microkernel `K`, B packed per tile or once for the call (`shared`); checked against
    /// float64.
    fn check<K: Micro>(batch: usize, m: usize, k: usize, n: usize, at: bool, shared: bool) {
        let a: Vec<f32> = (0..batch * m * k)
            .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 11) % 13) as f32 / 6.0 - 1.0)
            .collect();
        // B stored `[n, k]`.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let (rs, cs) = if at { (1, m) } else { (k, 1) };
        let a_op = Operand {
            data: &a,
            batch_strides: &[m * k],
            rs,
            cs,
            pro: None,
        };
        let b_op = Operand {
            data: if at { &bt } else { &b },
            batch_strides: &[0],
            rs: if at { 1 } else { n },
            cs: if at { k } else { 1 },
            pro: None,
        };
        let neg = |_bi: usize, p: usize, j0: usize, out: &mut [f32]| {
            for (o, &v) in out.iter_mut().zip(&b[p * n + j0..]) {
                *o = -v;
            }
        };
        let nb_op = Operand {
            data: &[],
            batch_strides: &[0],
            rs: 0,
            cs: 0,
            pro: Some(&neg),
        };
        let out = Mutex::new(vec![f32::NAN; 2 * batch * m * n]);
        let d = Dims {
            batch: &[batch],
            m,
            n,
            k,
        };
        let epi = |bi: usize, i: usize, j0: usize, acc: &[&[f32]; 2]| {
            let mut o = out.lock().unwrap();
            for (j, acc) in acc.iter().enumerate() {
                let base = j * batch * m * n + (bi * m + i) * n + j0;
                o[base..base + acc.len()].copy_from_slice(acc);
            }
        };
        let batches = batch;
        if batches > 0 && m > 0 && n > 0 {
            tiled::<K, 2, _>(
                d,
                batches,
                a_op,
                [b_op, nb_op],
                [None; 2],
                &epi,
                Some(shared),
            );
        }
        let out = out.into_inner().unwrap();
        for bi in 0..batch {
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|p| {
                            let x = a[bi * m * k + i * rs + p * cs] as f64;
                            x * b[p * n + j] as f64
                        })
                        .sum();
                    for (s, sign) in [(0, 1.0), (1, -1.0)] {
                        let got = out[s * batch * m * n + (bi * m + i) * n + j] as f64;
                        assert!(
                            (got - sign * want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{batch}x{m}x{k}x{n} at={at} [{s}][{bi},{i},{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// Odd sizes, size 1 and 0, a transposed A, and shapes deep enough to split the depth.
    fn all<K: Micro>() {
        for (batch, m, k, n) in [
            (1, 1, 1, 1),
            (2, 3, 1, 5),
            (1, 5, 0, 3),
            (1, 37, 50, 23),
            (3, 13, 300, 41),
            (1, 30, 1000, 50),
            (2, 128, 700, 70),
        ] {
            for at in [false, true] {
                for shared in [false, true] {
                    check::<K>(batch, m, k, n, at, shared);
                }
            }
        }
    }

    /// 16 threads make the deep shapes split their depth (the split is checked too).
    #[test]
    fn microkernels_and_depth_split_match_float64() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(16)
            .build()
            .unwrap();
        pool.install(|| {
            let d = Dims {
                batch: &[1],
                m: 30,
                n: 50,
                k: 1000,
            };
            assert!(split(&d, 1, (12, 32), 16, None, true).ks > 1);
            all::<Portable>();
            #[cfg(target_arch = "x86_64")]
            if crate::rt::has_avx2_fma() {
                all::<Avx2>();
                if has_avx512() {
                    all::<Avx512>();
                }
            }
        });
    }

    /// Large outputs keep whole tiles and never split their depth; with many row tiles B is
    /// packed once for the call, with one row tile it is not.
    #[test]
    fn large_outputs_do_not_split() {
        let d = Dims {
            batch: &[1],
            m: 4096,
            n: 384,
            k: 1536,
        };
        assert_eq!(split(&d, 1, (12, 32), 16, None, true).ks, 1);
        for threads in [2, 16] {
            let s = split(&d, 1, (12, 32), threads, Some(1), true);
            assert!(s.ks == 1 && s.shared, "{s:?}");
        }
        let d = Dims {
            batch: &[1],
            m: 128,
            n: 384,
            k: 1536,
        };
        assert!(split(&d, 1, (12, 32), 16, None, true).ks > 1);
        for threads in [2, 16] {
            assert!(!split(&d, 1, (12, 32), threads, Some(1), true).shared);
        }
    }

    /// B from a tensor's cache: the first call records the view, the second packs it into the
    /// cache, later ones read the copy; two views of one tensor (as stored and transposed, in
    /// two shapes) keep apart, and every call matches float64.
    #[test]
    fn packed_copies_serve_later_calls() {
        let w: Vec<f32> = (0..48 * 40)
            .map(|i| ((i * 11) % 13) as f32 / 6.0 - 1.0)
            .collect();
        let cache = PackCache::default();
        // (k, n, rs, cs): w as `[48, 40]`, transposed as `[40, 48]`, and as `[40, 48]` row-major.
        for (k, n, rs, cs) in [(48, 40, 40, 1), (40, 48, 1, 40), (40, 48, 48, 1)] {
            for m in [3, 130] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
                    .collect();
                for call in 0..3 {
                    let d = Dims {
                        batch: &[],
                        m,
                        n,
                        k,
                    };
                    let a_op = Operand {
                        data: &a,
                        batch_strides: &[],
                        rs: k,
                        cs: 1,
                        pro: None,
                    };
                    let b_op = Operand {
                        data: &w,
                        batch_strides: &[],
                        rs,
                        cs,
                        pro: None,
                    };
                    let out = Mutex::new(vec![f32::NAN; m * n]);
                    matmul_packed(
                        d,
                        a_op,
                        [b_op, b_op],
                        [Some(&cache), Some(&cache)],
                        |_, i, j0, acc: &[&[f32]; 2]| {
                            assert_eq!(acc[0], acc[1]);
                            out.lock().unwrap()[i * n + j0..][..acc[0].len()]
                                .copy_from_slice(acc[0]);
                        },
                    );
                    let out = out.into_inner().unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let want: f64 = (0..k)
                                .map(|p| a[i * k + p] as f64 * w[p * rs + j * cs] as f64)
                                .sum();
                            let got = out[i * n + j] as f64;
                            assert!(
                                (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                                "{k}x{n} m {m} call {call} [{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
        let kept = cache.0.lock().unwrap();
        let on = crate::rt::env_switch("MIA_CPU_PREPACK") != Some(false);
        assert!(
            !on || kept.iter().any(|(_, p)| p.is_some()),
            "nothing was packed into the cache"
        );
        assert!(kept.len() <= PACKS_KEPT);
    }
}
