//! The code mia is compared with, all run in the same process as mia:
//! - the memory roofline: a parallel memcpy on the CPU, a vec4 copy kernel on the GPU, each
//!   over the bytes the case must move (half read, half written);
//! - hand-written Rust loops, the kind a careful Rust programmer writes: rayon over rows,
//!   8-lane accumulators so LLVM vectorizes the reductions, a reused output buffer, `libm`
//!   (scalar) for `erf` and std's `exp`, since stable Rust has no vector math;
//! - an unfused `ndarray` pipeline, written as a NumPy user writes it: one operator per pass
//!   over memory with temporaries, single-threaded (as NumPy's elementwise ops are);
//! - the `gemm` crate (candle's CPU matmul) for matrix products, and for attention the
//!   unfused form around it (scores, softmax, product).

use std::f32::consts::FRAC_1_SQRT_2;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::cases::{arg, HostTensor, Res};

// ---------------------------------------------------------------------------------------------
// Roofline: copies.

/// Multi-threaded memcpy of `src` into `dst` in a few chunks per thread: the CPU roofline.
pub fn par_copy(dst: &mut [f32], src: &[f32]) {
    let chunk = (src.len() / (4 * rayon::current_num_threads())).max(1 << 14);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| d.copy_from_slice(s));
}

/// One `vec4<f32>` per invocation, `P = [groups, vec4 count]`; a 2-D grid past 65,535
/// workgroups, laid out as mia's own passes are (`rt` module docs).
pub const COPY_WGSL: &str = "@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= P[0]) { return; }
    let i = wid * 256u + lid;
    if (i < P[1]) { dst[i] = src[i]; }
}
";

/// A GPU copy of `len` f32s (a multiple of 4) through [`COPY_WGSL`], dispatched through mia's
/// own pass machinery so it pays the same per-dispatch costs as a mia kernel.
pub struct GpuCopy {
    dev: mia_runtime::Device,
    src: mia_runtime::Tensor<f32>,
    dst: mia_runtime::rt::GpuBuffer,
    params: [u32; 2],
}

impl GpuCopy {
    /// Uploads `data` (its length must be a multiple of 4) and allocates the destination.
    pub fn new(dev: &mia_runtime::Device, data: Vec<f32>) -> Res<GpuCopy> {
        use mia_runtime::rt;
        let len = data.len();
        if !len.is_multiple_of(4) {
            return Err(format!("GPU copy of {len} f32s: not a multiple of 4").into());
        }
        let bytes = len as u64 * 4;
        let max = dev.limits().max_storage_binding_bytes;
        if bytes > max {
            return Err(format!(
                "the GPU roofline copies one binding at a time: {bytes} bytes is past this \
                 adapter's {max}-byte binding limit"
            )
            .into());
        }
        let vec4s = rt::gpu_u32("roofline-copy", len / 4)?;
        let groups = rt::gpu_u32("roofline-copy", (len / 4).div_ceil(256))?;
        let src = mia_runtime::Tensor::from_vec(dev, [len], data)?;
        let dst = rt::GpuBuffer::alloc::<f32>(dev, len)?;
        Ok(GpuCopy {
            dev: dev.clone(),
            src,
            dst,
            params: [groups, vec4s],
        })
    }

    /// Queues one copy.
    pub fn run(&self) -> Res<()> {
        use mia_runtime::rt;
        let src = rt::gpu_buffer(&self.src)?;
        self.dev.dispatch(&rt::GpuPass {
            wgsl: COPY_WGSL,
            label: "roofline-copy",
            buffers: &[src, &self.dst],
            ranges: &[],
            reads: 1,
            params: &self.params,
            groups: u64::from(self.params[0]),
            in_bounds: false,
        })?;
        Ok(())
    }

    /// True when the destination holds the source (call after [`GpuCopy::run`]).
    pub fn verify(&self) -> Res<bool> {
        let out = mia_runtime::rt::gpu_tensor::<f32>(vec![self.dst.len()], self.dst.clone());
        Ok(out.to_vec()? == self.src.to_vec()?)
    }
}

// ---------------------------------------------------------------------------------------------
// Hand-written loops.

/// Sum with 8 independent accumulators (vectorizable; a plain `iter().sum()` is a serial chain).
#[inline]
fn sum8(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ (x - m)²` with 8 accumulators.
#[inline]
fn sum_sq8(x: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().map(|&v| (v - m) * (v - m)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += (v - m) * (v - m);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Max with 8 accumulators.
#[inline]
fn max8(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.max(v);
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// Runs `row(x_row, out_row)` over rows of length `d` in parallel, `out` resized once.
fn par_rows(x: &HostTensor, out: &mut Vec<f32>, row: impl Fn(&[f32], &mut [f32]) + Sync) {
    out.resize(x.data.len(), 0.0);
    let d = x.shape.last().copied().unwrap_or(1).max(1);
    out.par_chunks_mut(d)
        .zip(x.data.par_chunks(d))
        .for_each(|(o, x)| row(x, o));
}

pub mod hand {
    use super::*;

    pub fn bias_gelu(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
        let (x, b) = (arg(t, 0)?, arg(t, 1)?);
        par_rows(x, out, |x, o| {
            for ((o, &x), &b) in o.iter_mut().zip(x).zip(&b.data) {
                let v = x + b;
                *o = 0.5 * v * (1.0 + libm::erff(v * FRAC_1_SQRT_2));
            }
        });
        Ok(())
    }

    pub fn chain4(t: &[HostTensor], c: f32, out: &mut Vec<f32>) -> Res<()> {
        let (x, a, b) = (arg(t, 0)?, arg(t, 1)?, arg(t, 2)?);
        par_rows(x, out, |x, o| {
            for (((o, &x), &a), &b) in o.iter_mut().zip(x).zip(&a.data).zip(&b.data) {
                *o = (x * a + b).max(0.0) * c;
            }
        });
        Ok(())
    }

    pub fn softmax(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
        let x = arg(t, 0)?;
        par_rows(x, out, |x, o| {
            let m = max8(x);
            for (o, &v) in o.iter_mut().zip(x) {
                *o = (v - m).exp();
            }
            let r = 1.0 / sum8(o);
            o.iter_mut().for_each(|o| *o *= r);
        });
        Ok(())
    }

    pub fn layer_norm(t: &[HostTensor], eps: f32, out: &mut Vec<f32>) -> Res<()> {
        let (x, g, b) = (arg(t, 0)?, arg(t, 1)?, arg(t, 2)?);
        par_rows(x, out, |x, o| {
            let n = x.len() as f32;
            let mean = sum8(x) / n;
            let rstd = 1.0 / (sum_sq8(x, mean) / n + eps).sqrt();
            for (((o, &v), &g), &b) in o.iter_mut().zip(x).zip(&g.data).zip(&b.data) {
                *o = (v - mean) * rstd * g + b;
            }
        });
        Ok(())
    }

    pub fn rms_norm(t: &[HostTensor], eps: f32, out: &mut Vec<f32>) -> Res<()> {
        let (x, g) = (arg(t, 0)?, arg(t, 1)?);
        par_rows(x, out, |x, o| {
            let r = 1.0 / (sum_sq8(x, 0.0) / x.len() as f32 + eps).sqrt();
            for ((o, &v), &g) in o.iter_mut().zip(x).zip(&g.data) {
                *o = v * r * g;
            }
        });
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// ndarray, NumPy style.

pub mod nd {
    use super::*;

    fn view2(t: &HostTensor) -> Res<ArrayView2<'_, f32>> {
        let [n, d] = t.dims2()?;
        Ok(ArrayView2::from_shape((n, d), &t.data)?)
    }

    fn view1(t: &HostTensor) -> Res<ArrayView1<'_, f32>> {
        Ok(ArrayView1::from_shape(t.data.len(), &t.data)?)
    }

    /// The result's elements in row-major order (ndarray keeps the inputs' standard layout).
    fn into_vec(y: Array2<f32>, out: &mut Vec<f32>) {
        *out = if y.is_standard_layout() {
            y.into_raw_vec_and_offset().0
        } else {
            y.iter().copied().collect()
        };
    }

    fn rowwise(v: Array1<f32>) -> Array2<f32> {
        v.insert_axis(Axis(1))
    }

    pub fn bias_gelu(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
        let (x, b) = (view2(arg(t, 0)?)?, view1(arg(t, 1)?)?);
        let xb = &x + &b;
        let e = (&xb * FRAC_1_SQRT_2).mapv(libm::erff);
        into_vec((e + 1.0) * &xb * 0.5, out);
        Ok(())
    }

    pub fn chain4(t: &[HostTensor], c: f32, out: &mut Vec<f32>) -> Res<()> {
        let (x, a, b) = (view2(arg(t, 0)?)?, view1(arg(t, 1)?)?, view1(arg(t, 2)?)?);
        into_vec((&x * &a + b).mapv(|v| v.max(0.0)) * c, out);
        Ok(())
    }

    pub fn softmax(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
        let x = view2(arg(t, 0)?)?;
        let m = x.fold_axis(Axis(1), f32::NEG_INFINITY, |&m, &v| m.max(v));
        let e = (&x - &rowwise(m)).mapv(f32::exp);
        let s = e.sum_axis(Axis(1));
        into_vec(e / &rowwise(s), out);
        Ok(())
    }

    pub fn layer_norm(t: &[HostTensor], eps: f32, out: &mut Vec<f32>) -> Res<()> {
        let (x, g, b) = (view2(arg(t, 0)?)?, view1(arg(t, 1)?)?, view1(arg(t, 2)?)?);
        let mean = x.mean_axis(Axis(1)).ok_or("layer norm of empty rows")?;
        let c = &x - &rowwise(mean);
        let var = (&c * &c)
            .mean_axis(Axis(1))
            .ok_or("layer norm of empty rows")?;
        let std = (var + eps).mapv(f32::sqrt);
        into_vec(c / &rowwise(std) * g + b, out);
        Ok(())
    }

    pub fn rms_norm(t: &[HostTensor], eps: f32, out: &mut Vec<f32>) -> Res<()> {
        let (x, g) = (view2(arg(t, 0)?)?, view1(arg(t, 1)?)?);
        let ms = (&x * &x)
            .mean_axis(Axis(1))
            .ok_or("RMS norm of empty rows")?;
        let rms = (ms + eps).mapv(f32::sqrt);
        into_vec(&x / &rowwise(rms) * g, out);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// gemm: candle's CPU matrix product.

/// `c[M, N] = a[M, K] · b[K, N]`, row-major, through the `gemm` crate on rayon's threads.
pub fn gemm_f32(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize) -> Res<()> {
    let (Some(mk), Some(kn), Some(mn)) = (m.checked_mul(k), k.checked_mul(n), m.checked_mul(n))
    else {
        return Err(format!("gemm {m}×{k}×{n}: sizes overflow").into());
    };
    if a.len() != mk || b.len() != kn || c.len() != mn {
        return Err(format!(
            "gemm {m}×{k}×{n}: operands hold {}, {} and {} elements, expected {mk}, {kn} and {mn}",
            a.len(),
            b.len(),
            c.len()
        )
        .into());
    }
    let stride = |x: usize| isize::try_from(x).map_err(|_| format!("gemm: stride {x} too large"));
    let (k_s, n_s) = (stride(k)?, stride(n)?);
    let threads = rayon::current_num_threads();
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // gemm computes `dst = alpha·dst + beta·lhs·rhs`; with `read_dst` false, `dst = lhs·rhs`.
    // SAFETY: the three slices have exactly the lengths the row-major strides below address
    // (checked above), `c` is borrowed mutably so it aliases neither input, and `T = f32` is
    // one of the types gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n_s,
            false,
            a.as_ptr(),
            1,
            k_s,
            b.as_ptr(),
            1,
            n_s,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
    Ok(())
}

/// The matmul case's `gemm` implementation: inputs `a[M, K]`, `b[K, N]`.
pub fn gemm_matmul(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
    let (a, b) = (arg(t, 0)?, arg(t, 1)?);
    let [m, k] = a.dims2()?;
    let [_, n] = b.dims2()?;
    out.resize(m * n, 0.0);
    gemm_f32(&a.data, &b.data, out, m, k, n)
}

/// `gemm` then a separate rayon pass for bias + exact GELU: the unfused CPU alternative to a
/// fused epilogue.
pub fn gemm_bias_gelu(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
    gemm_matmul(t, out)?;
    let b = arg(t, 2)?;
    if b.data.is_empty() {
        return Ok(());
    }
    out.par_chunks_mut(b.data.len()).for_each(|row| {
        for (v, &bv) in row.iter_mut().zip(&b.data) {
            *v = mia_runtime::math::gelu(*v + bv);
        }
    });
    Ok(())
}

/// Attention the unfused way, per head `[S, D]`: `gemm` for the scaled scores `q·kᵀ`, a row
/// softmax, `gemm` for `P·v`. Rayon over heads (gemm single-threaded inside), each head's
/// `S × S` scores in a per-thread buffer: the strongest unfused form, since the scores of one
/// head stay in cache when they fit.
pub fn gemm_attention(t: &[HostTensor], out: &mut Vec<f32>) -> Res<()> {
    let (q, k, v) = (arg(t, 0)?, arg(t, 1)?, arg(t, 2)?);
    let [h, s, d] = match q.shape[..] {
        [h, s, d] => [h, s, d],
        _ => return Err(format!("attention wants [H, S, D], got {:?}", q.shape).into()),
    };
    if k.shape != q.shape || v.shape != q.shape {
        return Err(format!(
            "attention: shapes {:?}, {:?}, {:?}",
            q.shape, k.shape, v.shape
        )
        .into());
    }
    let scale = 1.0 / (d as f32).sqrt();
    out.resize(h * s * d, 0.0);
    if out.is_empty() {
        return Ok(());
    }
    let (si, di) = (s as isize, d as isize);
    let head = s * d;
    out.par_chunks_mut(head)
        .enumerate()
        .for_each_init(Vec::new, |p: &mut Vec<f32>, (i, o)| {
            p.resize(s * s, 0.0);
            let (q, k, v) = (
                &q.data[i * head..],
                &k.data[i * head..],
                &v.data[i * head..],
            );
            // SAFETY: every operand is one head's row-major `[S, D]` block (or the `[S, S]`
            // scores), which the strides below address exactly (shapes checked above); `p`
            // and `o` are mutable borrows aliasing no input.
            unsafe {
                // p = scale · q · kᵀ (kᵀ through strides: row stride 1, column stride D).
                gemm::gemm(
                    s,
                    s,
                    d,
                    p.as_mut_ptr(),
                    1,
                    si,
                    false,
                    q.as_ptr(),
                    1,
                    di,
                    k.as_ptr(),
                    di,
                    1,
                    0.0f32,
                    scale,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for row in p.chunks_exact_mut(s) {
                let mx = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
                let mut sum = 0.0f32;
                for x in row.iter_mut() {
                    *x = mia_runtime::math::exp(*x - mx);
                    sum += *x;
                }
                let inv = 1.0 / sum;
                row.iter_mut().for_each(|x| *x *= inv);
            }
            // SAFETY: as above.
            unsafe {
                gemm::gemm(
                    s,
                    d,
                    s,
                    o.as_mut_ptr(),
                    1,
                    di,
                    false,
                    p.as_ptr(),
                    1,
                    si,
                    v.as_ptr(),
                    1,
                    di,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        });
    Ok(())
}
