//! Fused attention (flash attention): `softmax(scale · Q·Kᵀ + mask, causal) · V` per batch
//! element, with an online softmax, so the `T × S` score matrix never exists in memory.
//!
//! Why fused: the unfused form writes and re-reads `T·S` scores three times (product,
//! softmax, product), which at `T = S = 4096` is 64 MiB per head, far outside any cache.
//! Here each block of query rows keeps a running row maximum `m`, a running sum `l` and an
//! output accumulator `o`; every block of keys updates them as
//! `m' = max(m, max_j s_j)`, `o' = o·e^(m−m') + Σ_j e^(s_j−m')·v_j`, `l' = l·e^(m−m') + Σ_j e^(s_j−m')`,
//! and the row is `o / l` at the end. All arithmetic is f32.
//!
//! Conventions shared by the CPU and GPU paths:
//! - a score is `scale · (q·k) + mask`; with `causal`, score `(t, s)` is `-inf` where
//!   `s > t + (S − T)` (bottom-right aligned, as with a KV cache of `S − T` earlier keys);
//! - a row whose scores are all `-inf` (fully masked, or `S = 0`) is written as zeros, where
//!   the unfused formula would give NaN (`0/0`): zeros are what padding rows want, and a NaN
//!   would poison everything downstream;
//! - empty sizes never fail: nothing is written when the output is empty.

use crate::error::{Error, Result};
#[cfg(target_arch = "x86_64")]
use crate::gemm::{has_avx512, Avx2, Avx512};
use crate::gemm::{Micro, Operand, Portable};
use crate::rt::{Device, GpuBuffer, OutPtr};

/// Sizes: output `[batch.., T, Ev] = softmax_S(scale · Q·Kᵀ + mask, causal) · V`.
#[derive(Clone, Copy, Debug)]
pub struct AttnDims<'a> {
    pub batch: &'a [usize],
    pub t: usize,
    pub s: usize,
    pub e: usize,
    pub ev: usize,
}

/// The CPU operands, strided views (any stride may be 0: broadcast).
#[derive(Clone, Copy)]
pub struct AttnArgs<'a> {
    /// Rows `T`, cols `E`.
    pub q: Operand<'a>,
    /// Rows `S`, cols `E` (K itself, not Kᵀ).
    pub k: Operand<'a>,
    /// Rows `S`, cols `Ev`.
    pub v: Operand<'a>,
    /// Rows `T`, cols `S`, added to the scaled scores (e.g. a `[B, 1, 1, S]` padding mask
    /// through zero strides).
    pub mask: Option<Operand<'a>>,
    pub scale: f32,
    /// Score `(t, s)` is `-inf` where `s > t + (S − T)`.
    pub causal: bool,
}

/// The CPU output: element `(batch.., t, c)` at `Σ b_i · batch_strides[i] + t · rs + c · cs`.
pub struct AttnOut<'a> {
    pub data: &'a mut [f32],
    pub batch_strides: &'a [usize],
    pub rs: usize,
    pub cs: usize,
}

/// A GPU operand: element offsets into `buf`, which is bound whole.
#[derive(Clone, Copy)]
pub struct GpuOperand<'a> {
    pub buf: &'a GpuBuffer,
    pub batch_strides: &'a [usize],
    pub rs: usize,
    pub cs: usize,
}

// ---------------------------------------------------------------------------------------
// CPU
// ---------------------------------------------------------------------------------------

/// Keys per block: the packed `Kᵀ` (`E × BC`) and `V` (`BC × Ev`) blocks stay in L1/L2 while
/// every row group of the query block passes over them. A multiple of every kernel's `NR`.
/// Each row pays a fixed cost per block (two lane reductions, the rescale of its output
/// row), so 128 rather than 64: MiniLM's heads (`T = S = 128`, `E = 32`) then take one block,
/// and with the vectorized reductions of [`fold16`] a head ran 1.36x faster on one thread.
const BC: usize = 128;
/// Query rows per task, largest first: a multiple of every microkernel's `MR` (4, 6, 12);
/// smaller when there are too few tasks for the threads. A task packs every key block of its
/// batch element once, so the largest blocks (a whole 128-token sequence per task, MiniLM at
/// batch 32) pack least.
const ROW_BLOCKS: [usize; 5] = [192, 96, 48, 24, 12];
/// Below this many multiply-adds the whole call runs on the calling thread.
const SERIAL_FLOPS: usize = 1 << 18;

/// Element offset of batch `bi` (row-major over `dims`) for `strides`.
fn batch_offset(bi: usize, dims: &[usize], strides: &[usize]) -> usize {
    let mut rem = bi;
    let mut off = 0;
    for (&dim, &st) in dims.iter().zip(strides).rev() {
        off += (rem % dim) * st;
        rem /= dim;
    }
    off
}

/// Largest element offset of a `[batch.., rows, cols]` view (all sizes non-zero), or `None`
/// on overflow.
fn max_offset(
    batch: &[usize],
    strides: &[usize],
    rows: usize,
    rs: usize,
    cols: usize,
    cs: usize,
) -> Option<usize> {
    let mut off = (rows - 1)
        .checked_mul(rs)?
        .checked_add((cols - 1).checked_mul(cs)?)?;
    for (&d, &st) in batch.iter().zip(strides) {
        off = off.checked_add((d - 1).checked_mul(st)?)?;
    }
    Some(off)
}

/// A matrix-product microkernel ([`crate::gemm::Micro`], used with row-major `A` for both
/// products: scores `Q·Kᵀ` with `Kᵀ` packed, and `P·V`) and the task compiled with its target
/// features, so the softmax loops vectorize to the same width.
trait Kernel: Micro {
    fn task(job: &Job, bi: usize, r0: usize, rows: usize, s: &mut Scratch);
}

impl Kernel for Portable {
    fn task(job: &Job, bi: usize, r0: usize, rows: usize, s: &mut Scratch) {
        task_body::<Portable>(job, bi, r0, rows, s)
    }
}

#[cfg(target_arch = "x86_64")]
impl Kernel for Avx2 {
    fn task(job: &Job, bi: usize, r0: usize, rows: usize, s: &mut Scratch) {
        // SAFETY: `Avx2` is only chosen when the CPU has AVX2 and FMA.
        unsafe { task_avx2(job, bi, r0, rows, s) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn task_avx2(job: &Job, bi: usize, r0: usize, rows: usize, s: &mut Scratch) {
    task_body::<Avx2>(job, bi, r0, rows, s)
}

#[cfg(target_arch = "x86_64")]
impl Kernel for Avx512 {
    fn task(job: &Job, bi: usize, r0: usize, rows: usize, s: &mut Scratch) {
        // SAFETY: `Avx512` is only chosen when the CPU has AVX-512F, AVX2 and FMA.
        unsafe { task_avx512(job, bi, r0, rows, s) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn task_avx512(job: &Job, bi: usize, r0: usize, rows: usize, s: &mut Scratch) {
    task_body::<Avx512>(job, bi, r0, rows, s)
}

/// Everything a task needs, shared by all tasks of one call.
struct Job<'a> {
    d: AttnDims<'a>,
    a: AttnArgs<'a>,
    out: OutPtr<f32>,
    out_batch_strides: &'a [usize],
    out_rs: usize,
    out_cs: usize,
}

/// Per-thread buffers, reused across tasks and calls.
#[derive(Default)]
struct Scratch {
    /// Query rows of the block, `rows_padded × E` (pad rows zero).
    q: Vec<f32>,
    /// `Kᵀ` block, `E × BC` (pad keys zero).
    kt: Vec<f32>,
    /// `V` block, `BC × ev_padded` (pad keys and columns zero).
    v: Vec<f32>,
    /// Scores, then probabilities, of one row group: `MR × BC`.
    p: Vec<f32>,
    /// Output accumulators, `rows_padded × ev_padded`.
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

fn resize(v: &mut Vec<f32>, n: usize) {
    if v.len() < n {
        v.resize(n, 0.0);
    }
}

/// Computes attention on the CPU (see the module docs for the exact semantics).
///
/// Parallel over (batch element, block of query rows); each task streams the keys in blocks
/// of [`BC`], packing `Kᵀ` and `V` once per block for all its rows. Shapes are checked by the
/// generated code before it calls in; inputs are read through bounds-checked slices (a bug
/// panics instead of reading out of bounds), and the output's largest offset is checked
/// before any write through the raw pointer.
pub fn attention(d: AttnDims, a: AttnArgs, out: AttnOut) {
    let batches: usize = d.batch.iter().product();
    if batches == 0 || d.t == 0 || d.ev == 0 {
        return;
    }
    assert!(
        out.batch_strides.len() == d.batch.len()
            && a.q.batch_strides.len() == d.batch.len()
            && a.k.batch_strides.len() == d.batch.len()
            && a.v.batch_strides.len() == d.batch.len()
            && a.mask
                .is_none_or(|m| m.batch_strides.len() == d.batch.len()),
        "attention: every operand needs one batch stride per batch dimension"
    );
    let last = max_offset(d.batch, out.batch_strides, d.t, out.rs, d.ev, out.cs);
    assert!(
        last.is_some_and(|l| l < out.data.len()),
        "attention: the output view reaches past its buffer of {} elements",
        out.data.len()
    );
    let job = Job {
        d,
        a,
        out: OutPtr(out.data.as_mut_ptr()),
        out_batch_strides: out.batch_strides,
        out_rs: out.rs,
        out_cs: out.cs,
    };
    #[cfg(target_arch = "x86_64")]
    if crate::rt::has_avx2_fma() {
        if has_avx512() {
            return run::<Avx512>(&job, batches);
        }
        return run::<Avx2>(&job, batches);
    }
    run::<Portable>(&job, batches)
}

fn run<K: Kernel>(job: &Job, batches: usize) {
    let d = &job.d;
    let want = 2 * rayon::current_num_threads().max(1);
    let mut rows = ROW_BLOCKS[0];
    for r in ROW_BLOCKS {
        rows = r;
        if batches * d.t.div_ceil(r) >= want {
            break;
        }
    }
    let nrb = d.t.div_ceil(rows);
    let tasks = batches * nrb;
    let task = |i: usize| {
        let (bi, r0) = (i / nrb, (i % nrb) * rows);
        let n = rows.min(d.t - r0);
        SCRATCH.with(|s| K::task(job, bi, r0, n, &mut s.borrow_mut()));
    };
    let flops = batches * d.t * d.s.max(1) * (d.e + d.ev).max(1);
    if tasks == 1 || flops < SERIAL_FLOPS {
        (0..tasks).for_each(task);
    } else {
        crate::team::fork(tasks, task);
    }
}

/// One task: rows `r0..r0 + rows` of batch element `bi`.
#[inline(always)]
fn task_body<K: Kernel>(job: &Job, bi: usize, r0: usize, rows: usize, sc: &mut Scratch) {
    let AttnDims { batch, t, s, e, ev } = job.d;
    let a = &job.a;
    let (mr, nr) = (K::MR, K::NR);
    let rp = rows.div_ceil(mr) * mr;
    let evp = ev.div_ceil(nr) * nr;
    resize(&mut sc.q, rp * e);
    resize(&mut sc.kt, e * BC);
    resize(&mut sc.v, BC * evp);
    resize(&mut sc.p, mr * BC);
    resize(&mut sc.o, rp * evp);
    resize(&mut sc.m, rp);
    resize(&mut sc.l, rp);
    let Scratch {
        q: qb,
        kt,
        v: vb,
        p: pb,
        o: ob,
        m,
        l,
    } = sc;
    let (qb, kt, vb, pb) = (
        &mut qb[..rp * e],
        &mut kt[..e * BC],
        &mut vb[..BC * evp],
        &mut pb[..mr * BC],
    );
    let (ob, m, l) = (&mut ob[..rp * evp], &mut m[..rp], &mut l[..rp]);
    ob.fill(0.0);
    m.fill(f32::NEG_INFINITY);
    l.fill(0.0);

    // The query rows, packed row-major (pad rows zero).
    let qoff = batch_offset(bi, batch, a.q.batch_strides);
    for i in 0..rp {
        let dst = &mut qb[i * e..(i + 1) * e];
        if i >= rows {
            dst.fill(0.0);
            continue;
        }
        let base = qoff + (r0 + i) * a.q.rs;
        if a.q.cs == 1 {
            dst.copy_from_slice(&a.q.data[base..base + e]);
        } else {
            for (c, x) in dst.iter_mut().enumerate() {
                *x = a.q.data[base + c * a.q.cs];
            }
        }
    }

    // Keys visible to the block's last row (causal): `s <= t + S - T`.
    let kend = if a.causal {
        (r0 + rows + s).saturating_sub(t).min(s)
    } else {
        s
    };
    let koff = batch_offset(bi, batch, a.k.batch_strides);
    let voff = batch_offset(bi, batch, a.v.batch_strides);
    let moff = a.mask.map(|mk| batch_offset(bi, batch, mk.batch_strides));

    for k0 in (0..kend).step_by(BC) {
        let bc = (kend - k0).min(BC);
        pack_kt(kt, &a.k, koff, k0, bc, e);
        pack_v(vb, &a.v, voff, k0, bc, ev, evp);
        for g in (0..rp).step_by(mr) {
            // Scores of rows g..g+MR against the block's keys (all 0 when E = 0).
            if e == 0 {
                pb.fill(0.0);
            }
            for j0 in (0..BC).step_by(nr).filter(|_| e > 0) {
                K::run::<false>(e, &qb[g * e..], e, &kt[j0..], BC, &mut pb[j0..], BC, false);
            }
            for i in 0..mr {
                let row = &mut pb[i * BC..(i + 1) * BC];
                // Keys of this block that row `r0 + g + i` may see.
                let tr = r0 + g + i;
                let vis = if a.causal {
                    (tr + 1 + s).saturating_sub(t + k0).min(bc)
                } else {
                    bc
                };
                // Scaled scores plus the mask, and their maximum.
                let mask_row = match (&a.mask, moff) {
                    (Some(mk), Some(mo)) if g + i < rows => {
                        Some((mk, mo + tr * mk.rs + k0 * mk.cs))
                    }
                    _ => None,
                };
                let (seen, hidden) = row.split_at_mut(vis);
                match mask_row {
                    Some((mk, base)) if mk.cs == 1 => {
                        for (x, &mv) in seen.iter_mut().zip(&mk.data[base..base + vis]) {
                            *x = *x * a.scale + mv;
                        }
                    }
                    Some((mk, base)) => {
                        for (j, x) in seen.iter_mut().enumerate() {
                            *x = *x * a.scale + mk.data[base + j * mk.cs];
                        }
                    }
                    None => seen.iter_mut().for_each(|x| *x *= a.scale),
                }
                let mx = fold16(seen, f32::NEG_INFINITY, max, |x| x);
                let mi = &mut m[g + i];
                let mnew = max(mx, *mi);
                // Nothing visible yet: subtract 0 so that `-inf - -inf` never makes a NaN.
                let ms = if mnew == f32::NEG_INFINITY { 0.0 } else { mnew };
                let alpha = crate::math::exp(*mi - ms);
                // Probabilities (0 for the hidden keys) and their sum, in one pass.
                let sum = fold16(seen, 0.0, |a, x| a + x, |x| crate::math::exp(x - ms));
                hidden.fill(0.0);
                *mi = mnew;
                l[g + i] = l[g + i] * alpha + sum;
                if alpha != 1.0 {
                    for o in ob[(g + i) * evp..(g + i + 1) * evp].iter_mut() {
                        *o *= alpha;
                    }
                }
            }
            // o[g..g+MR] += P · V.
            for c0 in (0..evp).step_by(nr) {
                K::run::<false>(
                    bc,
                    pb,
                    BC,
                    &vb[c0..],
                    evp,
                    &mut ob[g * evp + c0..],
                    evp,
                    true,
                );
            }
        }
    }

    // o / l; a row that saw no finite score (l = 0) is zeros.
    let ooff = batch_offset(bi, batch, job.out_batch_strides);
    for i in 0..rows {
        let inv = if l[i] > 0.0 { 1.0 / l[i] } else { 0.0 };
        let src = &ob[i * evp..i * evp + ev];
        let base = ooff + (r0 + i) * job.out_rs;
        for (c, &x) in src.iter().enumerate() {
            // SAFETY: the largest output offset was checked against the buffer in
            // `attention`; tasks write disjoint (batch, row) elements.
            unsafe { *job.out.0.add(base + c * job.out_cs) = x * inv };
        }
    }
}

/// `row[j] = map(row[j])` for every element, and the results folded with `f` in 16
/// independent lanes, then over the lanes as a tree: one serial chain of f32 `max` or `+`
/// does not vectorize (LLVM may not reassociate it), and it then costs as much as the
/// exponentials. Mapping and folding in one pass reads the row once.
#[inline(always)]
fn fold16(
    row: &mut [f32],
    init: f32,
    f: impl Fn(f32, f32) -> f32,
    map: impl Fn(f32) -> f32,
) -> f32 {
    let mut lanes = [init; 16];
    let mut chunks = row.chunks_exact_mut(16);
    for chunk in &mut chunks {
        for (l, x) in lanes.iter_mut().zip(chunk) {
            *x = map(*x);
            *l = f(*l, *x);
        }
    }
    for (l, x) in lanes.iter_mut().zip(chunks.into_remainder()) {
        *x = map(*x);
        *l = f(*l, *x);
    }
    // Constant trip counts, so each level unrolls into a few vector operations.
    let l8: [f32; 8] = std::array::from_fn(|u| f(lanes[u], lanes[u + 8]));
    let l4: [f32; 4] = std::array::from_fn(|u| f(l8[u], l8[u + 4]));
    f(f(l4[0], l4[2]), f(l4[1], l4[3]))
}

/// The larger of `m` and `x` (a NaN `x` is skipped), in a form that vectorizes.
#[inline(always)]
fn max(m: f32, x: f32) -> f32 {
    if x > m {
        x
    } else {
        m
    }
}

/// `kt[p · BC + j] = K[k0 + j, p]` for `j < bc`; zero for the pad keys.
fn pack_kt(kt: &mut [f32], k: &Operand, off: usize, k0: usize, bc: usize, e: usize) {
    if bc < BC {
        kt.fill(0.0);
    }
    // 8 × 8 blocks through AVX registers where K's rows are contiguous: scattered scalar
    // stores made this packing ~7% of MiniLM's attention.
    let mut j8 = 0;
    #[cfg(target_arch = "x86_64")]
    if k.cs == 1 && crate::rt::has_avx2_fma() {
        j8 = bc / 8 * 8;
        let p8 = e / 8 * 8;
        for j in (0..j8).step_by(8) {
            let base = off + (k0 + j) * k.rs;
            for p in (0..p8).step_by(8) {
                crate::gemm::transpose8(&k.data[base + p..], k.rs, &mut kt[p * BC + j..], BC);
            }
            for jj in j..j + 8 {
                let row = off + (k0 + jj) * k.rs;
                for p in p8..e {
                    kt[p * BC + jj] = k.data[row + p];
                }
            }
        }
    }
    for j in j8..bc {
        let base = off + (k0 + j) * k.rs;
        if k.cs == 1 {
            for (p, &x) in k.data[base..base + e].iter().enumerate() {
                kt[p * BC + j] = x;
            }
        } else {
            for p in 0..e {
                kt[p * BC + j] = k.data[base + p * k.cs];
            }
        }
    }
}

/// `vb[j · evp + c] = V[k0 + j, c]`; zero for pad keys and pad columns.
fn pack_v(vb: &mut [f32], v: &Operand, off: usize, k0: usize, bc: usize, ev: usize, evp: usize) {
    for (j, dst) in vb.chunks_exact_mut(evp).enumerate() {
        if j >= bc {
            dst.fill(0.0);
            continue;
        }
        let base = off + (k0 + j) * v.rs;
        if v.cs == 1 {
            dst[..ev].copy_from_slice(&v.data[base..base + ev]);
        } else {
            for (c, x) in dst[..ev].iter_mut().enumerate() {
                *x = v.data[base + c * v.cs];
            }
        }
        dst[ev..].fill(0.0);
    }
}

// ---------------------------------------------------------------------------------------
// GPU
// ---------------------------------------------------------------------------------------

/// The attention shader, one text per variant: `$nc`/`$nv` = vec4s of the E chunk / Ev chunk
/// each thread keeps in registers, `$bk` = keys per tile, and the mask's binding (or none).
///
/// Design: one thread per query row, `BQ = 128` rows per workgroup, so the online softmax
/// (running max `m`, sum `l`, accumulator `o`) is all in one thread's registers and needs no
/// cross-thread reduction. With `G` key groups (calls with few rows) a workgroup holds
/// `128 / G` rows and each row's keys of a tile are split over `G` threads, whose states are
/// merged at the end. Per tile of `BK` keys the workgroup stages `K` (`BK × 4·NC`) and
/// `V` (`BK × 4·NV`) in workgroup memory as vec4s; every thread then reads the same vec4
/// (a broadcast, free of bank conflicts) for 4 FMAs into its scores `s[BK]` (`Q·Kᵀ`) or its
/// output row (`P·V`). Register and workgroup arrays are indexed only by constant-bound loops,
/// and every global index is guarded (`key < S`, `e < E`, `col < Ev`, `t < T`), so the pass
/// runs with `in_bounds: true`; the host checks that each view's largest offset lies in its
/// buffer. E beyond one chunk is summed chunk by chunk (Q's chunk reloaded per tile); Ev
/// beyond one chunk is split over workgroups (each recomputes the scores).
///
/// Params: `[groups, T, S, E, Ev, scale bits, causal, row blocks, batch rank, batches,
/// q rs, q cs, k rs, k cs, v rs, v cs, mask rs, mask cs, out rs, out cs,
/// then per batch dim: size, q, k, v, mask, out strides]`.
macro_rules! attention_wgsl {
    ($g:literal, $r:literal, $kg:literal, $nc:literal, $nv:literal, $bk:literal, $mask_decl:literal, $out_binding:literal, $mask_add:literal) => {
        concat!(
            "@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
", $mask_decl, "
@group(0) @binding(", $out_binding, ") var<storage, read_write> O: array<f32>;
const WG: u32 = 128u;
const G: u32 = ", $g, "u;
const BQ: u32 = WG / G;
const BK: u32 = ", $bk, "u;
const BKG: u32 = BK / G;
const NC: u32 = ", $nc, "u;
const NV: u32 = ", $nv, "u;
var<workgroup> Ks: array<vec4<f32>, ", $bk, " * ", $nc, ">;
var<workgroup> Vs: array<vec4<f32>, ", $bk, " * ", $nv, ">;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= P[0]) { return; }
    let T = P[1];
    let S = P[2];
    let E = P[3];
    let EV = P[4];
    let scale = bitcast<f32>(P[5]);
    let causal = P[6] != 0u;
    let nrb = P[7];
    let nb = P[8];
    let batches = P[9];
    // Last row blocks first: under `causal` they see the most keys, so the long workgroups
    // start early instead of forming the tail.
    let rb = nrb - 1u - wid % nrb;
    let rest = wid / nrb;
    let bi = rest % batches;
    let vc = rest / batches;
    var qo = 0u;
    var ko = 0u;
    var vo = 0u;
    var mo = 0u;
    var oo = 0u;
    var rem = bi;
    for (var d = nb; d > 0u; d = d - 1u) {
        let p = 20u + 6u * (d - 1u);
        let ix = rem % P[p];
        rem = rem / P[p];
        qo += ix * P[p + 1u];
        ko += ix * P[p + 2u];
        vo += ix * P[p + 3u];
        mo += ix * P[p + 4u];
        oo += ix * P[p + 5u];
    }
    let qrs = P[10];
    let qcs = P[11];
    let krs = P[12];
    let kcs = P[13];
    let vrs = P[14];
    let vcs = P[15];
    let mrs = P[16];
    let mcs = P[17];
    let row0 = rb * BQ;
    // Thread `lid` is row `r` of the block, and takes the `g`-th `BKG` keys of every tile
    // (literals `lid` and `0u` without key groups: a `g` the compiler cannot see is 0 costs
    // the one-row-per-thread shader ~15% at T = S = 4096).
    let r = ", $r, ";
    let g = ", $kg, ";
    let t = row0 + r;
    let live = t < T;
    // Keys the block's last row may see (causal: s <= t + S - T), and this row's limit
    // `s + T < klim`.
    let tl = min(row0 + BQ, T);
    var kend = S;
    if (causal) {
        kend = select(0u, min(S, tl + S - T), tl + S > T);
    }
    let klim = t + 1u + S;
    let c0 = vc * NV * 4u;
    // At least one chunk: V is staged in the first (E = 0 still averages V).
    let ne = max(1u, (E + NC * 4u - 1u) / (NC * 4u));
    let neg_inf = bitcast<f32>(0xff800000u);
    var q: array<vec4<f32>, NC>;
    var o: array<vec4<f32>, NV>;
    var s: array<f32, BKG>;
    var m = neg_inf;
    var l = 0.0;
    let qb = qo + t * qrs;
    if (ne == 1u && live) {
        for (var c = 0u; c < NC; c++) {
            var x = vec4<f32>(0.0);
            for (var u = 0u; u < 4u; u++) {
                let e = c * 4u + u;
                if (e < E) { x[u] = Q[qb + e * qcs]; }
            }
            q[c] = x;
        }
    }
    for (var k0 = 0u; k0 < kend; k0 += BK) {
        for (var j = 0u; j < BKG; j++) { s[j] = 0.0; }
        for (var ec = 0u; ec < ne; ec++) {
            let e0 = ec * NC * 4u;
            if (ne > 1u && live) {
                for (var c = 0u; c < NC; c++) {
                    var x = vec4<f32>(0.0);
                    for (var u = 0u; u < 4u; u++) {
                        let e = e0 + c * 4u + u;
                        if (e < E) { x[u] = Q[qb + e * qcs]; }
                    }
                    q[c] = x;
                }
            }
            workgroupBarrier();
            for (var i = lid; i < BK * NC; i += WG) {
                let key = k0 + i / NC;
                let eb = e0 + (i % NC) * 4u;
                var x = vec4<f32>(0.0);
                if (key < S) {
                    let kb = ko + key * krs;
                    for (var u = 0u; u < 4u; u++) {
                        if (eb + u < E) { x[u] = K[kb + (eb + u) * kcs]; }
                    }
                }
                Ks[i] = x;
            }
            if (ec == 0u) {
                for (var i = lid; i < BK * NV; i += WG) {
                    let key = k0 + i / NV;
                    let cb = c0 + (i % NV) * 4u;
                    var x = vec4<f32>(0.0);
                    if (key < S) {
                        let vb = vo + key * vrs;
                        for (var u = 0u; u < 4u; u++) {
                            if (cb + u < EV) { x[u] = V[vb + (cb + u) * vcs]; }
                        }
                    }
                    Vs[i] = x;
                }
            }
            workgroupBarrier();
            for (var c = 0u; c < NC; c++) {
                let qc = q[c];
                for (var j = 0u; j < BKG; j++) {
                    s[j] += dot(qc, Ks[(g * BKG + j) * NC + c]);
                }
            }
        }
        var mt = m;
        for (var j = 0u; j < BKG; j++) {
            let key = k0 + g * BKG + j;
            var x = s[j] * scale;
            ", $mask_add, "
            let ok = key < S && (!causal || key + T < klim);
            x = select(neg_inf, x, ok);
            s[j] = x;
            mt = max(mt, x);
        }
        // Nothing visible yet: subtract 0 so that `-inf - -inf` never makes a NaN.
        let ms = select(mt, 0.0, mt == neg_inf);
        let alpha = exp(m - ms);
        var sum = 0.0;
        for (var j = 0u; j < BKG; j++) {
            let p = exp(s[j] - ms);
            s[j] = p;
            sum += p;
        }
        l = l * alpha + sum;
        m = mt;
        for (var c = 0u; c < NV; c++) { o[c] *= alpha; }
        for (var j = 0u; j < BKG; j++) {
            let p = vec4<f32>(s[j]);
            for (var c = 0u; c < NV; c++) {
                o[c] = fma(p, Vs[(g * BKG + j) * NV + c], o[c]);
            }
        }
    }
    // Key groups 1.. hand their (m, l, o) to group 0 one at a time through the (now free)
    // tiles, and group 0 merges them as one more online-softmax step.
    for (var h = 1u; h < G; h++) {
        workgroupBarrier();
        if (g == h) {
            for (var c = 0u; c < NV; c++) { Ks[r * NV + c] = o[c]; }
            Vs[r] = vec4<f32>(m, l, 0.0, 0.0);
        }
        workgroupBarrier();
        if (g == 0u) {
            let mh = Vs[r].x;
            let mn = max(m, mh);
            let ms = select(mn, 0.0, mn == neg_inf);
            let a0 = exp(m - ms);
            let ah = exp(mh - ms);
            l = l * a0 + Vs[r].y * ah;
            for (var c = 0u; c < NV; c++) { o[c] = o[c] * a0 + Ks[r * NV + c] * ah; }
            m = mn;
        }
    }
    if (live && g == 0u) {
        // A row that saw no finite score (l = 0) is zeros.
        let inv = select(0.0, 1.0 / l, l > 0.0);
        let ob = oo + t * P[18];
        let ocs = P[19];
        for (var c = 0u; c < NV; c++) {
            for (var u = 0u; u < 4u; u++) {
                let col = c0 + c * 4u + u;
                if (col < EV) { O[ob + col * ocs] = o[c][u] * inv; }
            }
        }
    }
}
"
        )
    };
}

// Mask-free variants bind the output at 4; `*_MASK` read the additive mask from binding 4
// and write the output at 5. `(small, mask, split)` indexes [`WGSL`].
macro_rules! variants {
    ($g:literal, $r:literal, $kg:literal, $nc:literal, $nv:literal, $bk:literal) => {
        [
            attention_wgsl!($g, $r, $kg, $nc, $nv, $bk, "", 4, ""),
            attention_wgsl!(
                $g,
                $r,
                $kg,
                $nc,
                $nv,
                $bk,
                "@group(0) @binding(4) var<storage, read> M: array<f32>;",
                5,
                "if (live && key < S) { x += M[mo + t * mrs + key * mcs]; }"
            ),
        ]
    };
}

/// The shaders by `[small][split][mask]`. Small: E, Ev ≤ 32 (MiniLM's heads), 8 vec4s of q
/// and of o per thread; else 16 vec4s (E, Ev chunks of 64). A thread holds the scores of its
/// share of a tile's keys (`BK / G`) in registers, so that share stays small: with 64 (small
/// tiles of 64 keys, one row per thread) the driver moved the scores out of registers, and
/// 384 × 128² × 32 took 176 µs against 72 µs with tiles of 32 or 16 keys (H100); inside
/// MiniLM at batch 32 (with its mask) 16 keys took 0.51 ms per forward and 32 keys 0.56 ms.
/// The large ones keep 32 keys: 16 was 27% slower at 16 × 4096² × 64. Split: four key groups
/// of 32 rows each, for calls with too few rows to fill the device (one thread per row would
/// leave most of it idle, and each row's keys would run in one long chain); its small tiles
/// keep 64 keys (16 per thread).
const WGSL: [[[&str; 2]; 2]; 2] = [
    [
        variants!(1, "lid", "0u", 16, 16, 32),
        variants!(4, "lid % BQ", "lid / BQ", 16, 16, 32),
    ],
    [
        variants!(1, "lid", "0u", 8, 8, 16),
        variants!(4, "lid % BQ", "lid / BQ", 8, 8, 64),
    ],
];

/// Key groups of the split shaders.
const SPLIT: usize = 4;
/// Below this many query rows (over all heads and batches) a call takes the split shaders:
/// 128 workgroups of 128 rows, about one per SM of a large GPU. Measured on an H100 (one row
/// per thread → split, twice each): 16 × 256² × 64 112 → 56 µs, 4 × 1024² × 64 364 → 162 µs;
/// but 384 × 128² × 32 (49,152 rows: MiniLM at batch 32) 94 → 111 µs and 16 × 4096² × 64
/// 3.33 → 5.47 ms, as each workgroup stages every key for 32 rows instead of 128.
const SPLIT_ROWS: usize = 16384;

/// `MIA_ATTN_SPLIT=1` or `0` forces the key-split shaders on or off (to compare them).
fn split_override() -> Option<bool> {
    static SPLIT: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    *SPLIT.get_or_init(|| crate::rt::env_switch("MIA_ATTN_SPLIT"))
}

/// Threads per workgroup (the shaders' `WG`): one query row each, or one per key group.
const GPU_ROWS: usize = 128;

/// Runs attention on the GPU (see the module docs for the semantics): one pass, queued on
/// `dev`. `out` is written (every element of the `[batch.., T, Ev]` view), never read.
///
/// Errors, before queuing anything, when a size or offset does not fit the shader's u32
/// indices, a buffer is larger than one storage binding, a view reaches past its buffer
/// (the shader skips the driver's bounds checks, so this is checked here), or there are
/// more workgroups than the device can launch.
#[cfg(feature = "gpu")]
#[allow(clippy::too_many_arguments)]
pub fn gpu_attention(
    dev: &Device,
    label: &'static str,
    d: AttnDims,
    q: GpuOperand,
    k: GpuOperand,
    v: GpuOperand,
    mask: Option<GpuOperand>,
    scale: f32,
    causal: bool,
    out: GpuOperand,
) -> Result<()> {
    use crate::rt::{gpu_u32, gpu_whole_bindings};
    let rank = d.batch.len();
    let ops = [Some(&q), Some(&k), Some(&v), mask.as_ref(), Some(&out)];
    if ops.iter().flatten().any(|o| o.batch_strides.len() != rank) {
        return Err(Error::Internal(format!(
            "attention pass `{label}`: every operand needs {rank} batch strides"
        )));
    }
    let batches = d
        .batch
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or(Error::GpuIndex {
            kernel: label,
            value: u64::MAX,
        })?;
    if batches == 0 || d.t == 0 || d.ev == 0 {
        return Ok(());
    }
    let lens: Vec<usize> = ops.iter().flatten().map(|o| o.buf.len()).collect();
    gpu_whole_bindings(label, &lens, dev.limits().max_storage_binding_bytes)?;
    // Each view's largest offset must lie in its buffer (unchecked reads) and fit a u32.
    let views = [
        ("q", Some(&q), d.t, d.e),
        ("k", Some(&k), d.s, d.e),
        ("v", Some(&v), d.s, d.ev),
        ("mask", mask.as_ref(), d.t, d.s),
        ("out", Some(&out), d.t, d.ev),
    ];
    for (name, op, rows, cols) in views {
        let Some(op) = op else { continue };
        if rows == 0 || cols == 0 {
            continue;
        }
        let last = max_offset(d.batch, op.batch_strides, rows, op.rs, cols, op.cs);
        match last {
            Some(l) if l < op.buf.len() => {
                gpu_u32(label, l)?;
            }
            _ => {
                return Err(Error::Internal(format!(
                    "attention pass `{label}`: the {name} view reaches past its buffer of {} \
                     elements",
                    op.buf.len()
                )))
            }
        }
    }
    let small = d.e <= 32 && d.ev <= 32;
    let chunk = if small { 32 } else { 64 };
    let split = match split_override() {
        Some(on) => on,
        None => batches.saturating_mul(d.t) < SPLIT_ROWS,
    };
    let nrb =
        d.t.div_ceil(if split { GPU_ROWS / SPLIT } else { GPU_ROWS });
    let nvc = d.ev.div_ceil(chunk);
    let groups = (nvc as u64)
        .checked_mul(batches as u64)
        .and_then(|g| g.checked_mul(nrb as u64))
        .unwrap_or(u64::MAX);
    // `T + S` bounds the causal limit `t + 1 + S`; the shader computes it in u32.
    gpu_u32(label, d.t.saturating_add(d.s).saturating_add(1))?;
    let mut params = vec![
        gpu_u32(label, usize::try_from(groups).unwrap_or(usize::MAX))?,
        gpu_u32(label, d.t)?,
        gpu_u32(label, d.s)?,
        gpu_u32(label, d.e)?,
        gpu_u32(label, d.ev)?,
        scale.to_bits(),
        u32::from(causal),
        gpu_u32(label, nrb)?,
        gpu_u32(label, rank)?,
        gpu_u32(label, batches)?,
    ];
    // Strides of unused axes (size 1, or empty operands) may be anything: only their
    // products with in-range indices are used, and those were checked above.
    let st = |x: usize, size: usize| if size <= 1 { Ok(0) } else { gpu_u32(label, x) };
    let m = mask.as_ref();
    for (op, rows, cols) in [
        (Some(&q), d.t, d.e),
        (Some(&k), d.s, d.e),
        (Some(&v), d.s, d.ev),
        (m, d.t, d.s),
        (Some(&out), d.t, d.ev),
    ] {
        let (rs, cs) = op.map_or((0, 0), |o| (o.rs, o.cs));
        params.push(st(rs, rows)?);
        params.push(st(cs, cols)?);
    }
    for (i, &size) in d.batch.iter().enumerate() {
        params.push(gpu_u32(label, size)?);
        for op in [Some(&q), Some(&k), Some(&v), m, Some(&out)] {
            params.push(op.map_or(Ok(0), |o| st(o.batch_strides[i], size))?);
        }
    }
    let mut buffers = vec![q.buf, k.buf, v.buf];
    buffers.extend(mask.as_ref().map(|mk| mk.buf));
    buffers.push(out.buf);
    let wgsl = WGSL[usize::from(small)][usize::from(split)][usize::from(mask.is_some())];
    dev.dispatch(&crate::rt::GpuPass {
        wgsl,
        label,
        reads: buffers.len() - 1,
        buffers: &buffers,
        ranges: &[],
        params: &params,
        groups,
        in_bounds: true,
    })
}

/// Without the `gpu` feature there is no GPU to run on.
#[cfg(not(feature = "gpu"))]
#[allow(clippy::too_many_arguments)]
pub fn gpu_attention(
    _dev: &Device,
    _label: &'static str,
    _d: AttnDims,
    _q: GpuOperand,
    _k: GpuOperand,
    _v: GpuOperand,
    _mask: Option<GpuOperand>,
    _scale: f32,
    _causal: bool,
    _out: GpuOperand,
) -> Result<()> {
    Err(Error::NoGpu {
        reason: "mia-runtime was built without its `gpu` feature".into(),
        backends: "none".into(),
    })
}

#[cfg(test)]
mod tests {
    /// Every shader variant parses and validates (the pipeline is built without loop
    /// bounding and, with `in_bounds`, without bounds checks, so naga is the backstop).
    #[test]
    fn shaders_validate() {
        for (i, src) in super::WGSL.iter().flatten().flatten().enumerate() {
            let name = format!("[small {}][split {}][mask {}]", i / 4, (i / 2) % 2, i % 2);
            let module = naga::front::wgsl::parse_str(src)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
            naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::empty(),
            )
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        }
    }
}
