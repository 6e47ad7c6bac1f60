//! Fused attention (`rt::attention`, `rt::gpu_attention`) against a float64 reference, on
//! the CPU and on the GPU (skipped without one unless `MIA_REQUIRE_GPU=1`).
//!
//! Metric: ‖got − ref‖₂ / ‖ref‖₂ ≤ 1e-5 over the output view (absolute ‖got‖ when the
//! reference is all zeros). Outputs are pre-filled with NaN, so an element left unwritten
//! fails, and elements of the output buffer outside the view must still be NaN afterwards.
//!
//! Cases: T = 1, S = 1, odd sizes (T = 37, S = 53), E ∈ {0, 1, 7, 32, 64, 80}, Ev ≠ E,
//! batch ranks 0/1/2, `[B, 1, 1, S]` padding masks (zero strides), a full `[T, S]` mask with
//! `-inf` entries and fully masked rows, causal with T = S, T < S and T > S, Q/K/V read
//! as `[B, H, T, E]` from `[B, T, H, E]` memory, K read through its transpose (column
//! stride ≠ 1), strided and transposed outputs, scores of ±1e3, S = 0 and empty outputs.
use mia_runtime::rt::{self, AttnArgs, AttnDims, AttnOut, GpuOperand, MatOperand};
use mia_runtime::{testing, Device, Tensor};
use rand::{Rng, SeedableRng};

const TOL: f64 = 1e-5;

/// A strided view over its own buffer.
#[derive(Clone)]
struct View {
    data: Vec<f32>,
    batch_strides: Vec<usize>,
    rs: usize,
    cs: usize,
}

impl View {
    fn at(&self, b: &[usize], r: usize, c: usize) -> f32 {
        let off: usize = b.iter().zip(&self.batch_strides).map(|(i, s)| i * s).sum();
        self.data[off + r * self.rs + c * self.cs]
    }
    fn op(&self) -> MatOperand<'_> {
        MatOperand {
            pro: None,
            data: &self.data,
            batch_strides: &self.batch_strides,
            rs: self.rs,
            cs: self.cs,
        }
    }
}

/// How a `[batch.., rows, cols]` view is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// Row-major `[batch.., rows, cols]`.
    Plain,
    /// `[b0, rows, b1, cols]` memory read as `[b0, b1, rows, cols]` (heads interleaved, as a
    /// projection's output before the head transpose). Batch rank 2 only.
    Heads,
    /// Row-major `[batch.., cols, rows]` read transposed (column stride ≠ 1).
    Transposed,
    /// Row-major with 3 padding elements after every row.
    Padded,
}

fn layout(
    batch: &[usize],
    rows: usize,
    cols: usize,
    l: Layout,
) -> (usize, Vec<usize>, usize, usize) {
    let (block, rs, cs) = match l {
        Layout::Plain => (rows * cols, cols, 1),
        Layout::Transposed => (rows * cols, 1, rows),
        Layout::Padded => (rows * (cols + 3), cols + 3, 1),
        Layout::Heads => {
            assert_eq!(batch.len(), 2);
            let h = batch[1];
            let len = batch[0] * rows * h * cols;
            return (len, vec![rows * h * cols, cols], h * cols, 1);
        }
    };
    let mut strides = vec![0; batch.len()];
    let mut acc = block;
    for i in (0..batch.len()).rev() {
        strides[i] = acc;
        acc *= batch[i];
    }
    (acc, strides, rs, cs)
}

fn random_view(
    rng: &mut rand::rngs::StdRng,
    batch: &[usize],
    rows: usize,
    cols: usize,
    l: Layout,
) -> View {
    let (len, batch_strides, rs, cs) = layout(batch, rows, cols, l);
    View {
        data: (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        batch_strides,
        rs,
        cs,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mask {
    None,
    /// `[B, 1, 1, S]`: per first batch index and key, broadcast over heads and rows; every
    /// other key of batch 0 is `-inf` past half the keys.
    Padding,
    /// `[T, S]` broadcast over the batch: random values, some `-inf`, rows 1 and 4 fully `-inf`.
    Full,
}

#[derive(Clone, Debug)]
struct Case {
    name: &'static str,
    batch: Vec<usize>,
    t: usize,
    s: usize,
    e: usize,
    ev: usize,
    qkv: Layout,
    k: Layout,
    out: Layout,
    mask: Mask,
    scale: f32,
    causal: bool,
    /// Inputs on a 1/16 grid, so that scores (even ×1e3) are exact in f32.
    grid: bool,
}

fn case(name: &'static str, batch: &[usize], t: usize, s: usize, e: usize, ev: usize) -> Case {
    Case {
        name,
        batch: batch.to_vec(),
        t,
        s,
        e,
        ev,
        qkv: Layout::Plain,
        k: Layout::Plain,
        out: Layout::Plain,
        mask: Mask::None,
        scale: 1.0 / (e.max(1) as f32).sqrt(),
        causal: false,
        grid: false,
    }
}

fn cases() -> Vec<Case> {
    let mut v = vec![
        case("1x1", &[], 1, 1, 1, 1),
        case("decode", &[3], 1, 53, 64, 64),
        case("odd", &[2, 3], 37, 53, 7, 5),
        case("e32", &[2], 37, 53, 32, 32),
        case("e80", &[2], 37, 53, 80, 80),
        case("e64_ev32", &[2], 37, 53, 64, 32),
        case("e1_ev80", &[], 37, 53, 1, 80),
        case("e0", &[2], 5, 9, 0, 6),
        case("s1", &[2], 37, 1, 32, 32),
        case("tiles", &[], 130, 130, 64, 64),
        case("s0", &[2], 7, 0, 8, 8),
    ];
    let mut c = case("minilm_padding", &[2, 3], 128, 128, 32, 32);
    c.qkv = Layout::Heads;
    c.out = Layout::Heads;
    c.mask = Mask::Padding;
    v.push(c);
    let mut c = case("full_mask", &[2, 2], 37, 53, 32, 32);
    c.mask = Mask::Full;
    v.push(c);
    let mut c = case("full_mask_e80", &[2], 37, 70, 80, 16);
    c.mask = Mask::Full;
    v.push(c);
    let mut c = case("causal_square", &[2], 70, 70, 16, 16);
    c.causal = true;
    v.push(c);
    let mut c = case("causal_kv_cache", &[2], 20, 100, 64, 64);
    c.causal = true;
    v.push(c);
    let mut c = case("causal_t_gt_s", &[], 30, 10, 8, 8);
    c.causal = true;
    c.mask = Mask::Full;
    v.push(c);
    let mut c = case("causal_tiles", &[2, 2], 150, 150, 32, 32);
    c.causal = true;
    c.qkv = Layout::Heads;
    v.push(c);
    let mut c = case("k_transposed_out_padded", &[2], 37, 53, 7, 9);
    c.k = Layout::Transposed;
    c.out = Layout::Padded;
    v.push(c);
    let mut c = case("transposed_views", &[3], 37, 53, 64, 80);
    c.qkv = Layout::Transposed;
    c.k = Layout::Transposed;
    c.out = Layout::Transposed;
    v.push(c);
    // At least 32768 rows: the GPU's one-row-per-thread shaders (fewer take the key-split ones).
    let mut c = case("many_rows_causal_masked", &[256], 129, 9, 8, 8);
    c.causal = true;
    c.mask = Mask::Padding;
    v.push(c);
    let mut c = case("many_rows_e80", &[2, 130], 128, 3, 80, 72);
    c.qkv = Layout::Heads;
    v.push(c);
    let mut c = case("scale_1e3", &[2], 37, 53, 16, 16);
    c.scale = 1e3;
    c.grid = true;
    v.push(c);
    let mut c = case("scale_1e3_masked", &[2, 2], 37, 53, 64, 64);
    c.scale = 1e3;
    c.grid = true;
    c.mask = Mask::Padding;
    v.push(c);
    v
}

struct Inputs {
    q: View,
    k: View,
    v: View,
    mask: Option<View>,
}

fn inputs(c: &Case, seed: u64) -> Inputs {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let qkv = if c.qkv == Layout::Heads && c.batch.len() != 2 {
        Layout::Plain
    } else {
        c.qkv
    };
    let q = random_view(&mut rng, &c.batch, c.t, c.e, qkv);
    let k = random_view(
        &mut rng,
        &c.batch,
        c.s,
        c.e,
        if c.k == Layout::Plain { qkv } else { c.k },
    );
    let v = random_view(&mut rng, &c.batch, c.s, c.ev, qkv);
    let neg = f32::NEG_INFINITY;
    let mask = match c.mask {
        Mask::None => None,
        Mask::Padding => {
            // [B, 1, 1, S]: batch 0 sees its first half of the keys (and every other key
            // after), the others see all keys with small random biases.
            let b0 = c.batch.first().copied().unwrap_or(1);
            let mut data = Vec::new();
            for b in 0..b0 {
                for j in 0..c.s {
                    let x = if b == 0 && j > c.s / 2 && j % 2 == 1 {
                        neg
                    } else {
                        rng.random_range(-0.5f32..0.5)
                    };
                    data.push(x);
                }
            }
            let mut batch_strides = vec![0; c.batch.len()];
            if let Some(s0) = batch_strides.first_mut() {
                *s0 = c.s;
            }
            Some(View {
                data,
                batch_strides,
                rs: 0,
                cs: 1,
            })
        }
        Mask::Full => {
            let data = (0..c.t * c.s)
                .map(|i| {
                    let (r, j) = (i / c.s, i % c.s);
                    if r == 1 || r == 4 || (r + j) % 7 == 3 {
                        neg
                    } else {
                        rng.random_range(-2.0f32..2.0)
                    }
                })
                .collect();
            Some(View {
                data,
                batch_strides: vec![0; c.batch.len()],
                rs: c.s,
                cs: 1,
            })
        }
    };
    let mut x = Inputs { q, k, v, mask };
    if c.grid {
        // Scores of ±1e3 round to 6e-5 in f32, which alone moves a probability by more than
        // the tolerance; on a 1/16 grid every score is exact, and the test measures the
        // softmax and the products.
        for d in [&mut x.q.data, &mut x.k.data]
            .into_iter()
            .chain(x.mask.as_mut().map(|m| &mut m.data))
        {
            for v in d.iter_mut() {
                *v = (*v * 16.0).round() / 16.0;
            }
        }
    }
    x
}

/// Multi-indices of the batch dims, row-major.
fn batch_indices(batch: &[usize]) -> Vec<Vec<usize>> {
    let n: usize = batch.iter().product();
    (0..n)
        .map(|mut i| {
            let mut idx = vec![0; batch.len()];
            for d in (0..batch.len()).rev() {
                idx[d] = i % batch[d];
                i /= batch[d];
            }
            idx
        })
        .collect()
}

/// Float64 reference, `[batch.., T, Ev]` row-major; a row with no finite score is zeros.
fn reference(c: &Case, x: &Inputs) -> Vec<f64> {
    let mut out = Vec::new();
    for b in batch_indices(&c.batch) {
        for t in 0..c.t {
            let scores: Vec<f64> = (0..c.s)
                .map(|j| {
                    let dot: f64 = (0..c.e)
                        .map(|e| x.q.at(&b, t, e) as f64 * x.k.at(&b, j, e) as f64)
                        .sum();
                    let mut sc = dot * c.scale as f64;
                    if let Some(m) = &x.mask {
                        sc += m.at(&b, t, j) as f64;
                    }
                    if c.causal && j + c.t > t + c.s {
                        sc = f64::NEG_INFINITY;
                    }
                    sc
                })
                .collect();
            let mx = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            for col in 0..c.ev {
                if mx == f64::NEG_INFINITY {
                    out.push(0.0);
                    continue;
                }
                let (mut num, mut den) = (0.0, 0.0);
                for (j, &sc) in scores.iter().enumerate() {
                    let p = (sc - mx).exp();
                    num += p * x.v.at(&b, j, col) as f64;
                    den += p;
                }
                out.push(num / den);
            }
        }
    }
    out
}

/// The output view's layout: (buffer length, batch strides, rs, cs).
fn out_layout(c: &Case) -> (usize, Vec<usize>, usize, usize) {
    let l = if c.out == Layout::Heads && c.batch.len() != 2 {
        Layout::Plain
    } else {
        c.out
    };
    layout(&c.batch, c.t, c.ev, l)
}

/// Reads the view out of a NaN-poisoned buffer: the view's elements in row-major order,
/// and whether every element outside the view is still NaN.
fn gather(c: &Case, buf: &[f32]) -> (Vec<f64>, bool) {
    let (_, bs, rs, cs) = out_layout(c);
    let mut inside = vec![false; buf.len()];
    let mut got = Vec::new();
    for b in batch_indices(&c.batch) {
        let off: usize = b.iter().zip(&bs).map(|(i, s)| i * s).sum();
        for t in 0..c.t {
            for col in 0..c.ev {
                let i = off + t * rs + col * cs;
                inside[i] = true;
                got.push(buf[i] as f64);
            }
        }
    }
    let untouched = buf.iter().zip(&inside).all(|(x, &ins)| ins || x.is_nan());
    (got, untouched)
}

fn rel_error(got: &[f64], want: &[f64]) -> f64 {
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = want.iter().map(|w| w * w).sum::<f64>().sqrt();
    if norm == 0.0 {
        diff
    } else {
        diff / norm
    }
}

fn dims(c: &Case) -> AttnDims<'_> {
    AttnDims {
        batch: &c.batch,
        t: c.t,
        s: c.s,
        e: c.e,
        ev: c.ev,
    }
}

fn run_cpu(c: &Case, x: &Inputs) -> Vec<f32> {
    let (len, bs, rs, cs) = out_layout(c);
    let mut out = vec![f32::NAN; len];
    rt::attention(
        dims(c),
        AttnArgs {
            q: x.q.op(),
            k: x.k.op(),
            v: x.v.op(),
            mask: x.mask.as_ref().map(View::op),
            scale: c.scale,
            causal: c.causal,
        },
        AttnOut {
            data: &mut out,
            batch_strides: &bs,
            rs,
            cs,
        },
    );
    out
}

fn run_gpu(dev: &Device, c: &Case, x: &Inputs) -> mia_runtime::Result<Vec<f32>> {
    let up = |v: &View| Tensor::from_slice(dev, [v.data.len()], &v.data);
    let (q, k, v) = (up(&x.q)?, up(&x.k)?, up(&x.v)?);
    let mask = x.mask.as_ref().map(up).transpose()?;
    let (len, bs, rs, cs) = out_layout(c);
    let out = Tensor::from_vec(dev, [len], vec![f32::NAN; len])?;
    let (qb, kb, vb, ob) = (
        rt::gpu_buffer(&q)?,
        rt::gpu_buffer(&k)?,
        rt::gpu_buffer(&v)?,
        rt::gpu_buffer(&out)?,
    );
    let mb = mask.as_ref().map(rt::gpu_buffer).transpose()?;
    fn gop<'a>(buf: &'a rt::GpuBuffer, v: &'a View) -> GpuOperand<'a> {
        GpuOperand {
            buf,
            batch_strides: &v.batch_strides,
            rs: v.rs,
            cs: v.cs,
        }
    }
    // `gop` borrows the views' strides; the mask's view exists exactly when its buffer does.
    let mop = match (mb, x.mask.as_ref()) {
        (Some(b), Some(v)) => Some(gop(b, v)),
        _ => None,
    };
    rt::gpu_attention(
        dev,
        "test/attention",
        dims(c),
        gop(qb, &x.q),
        gop(kb, &x.k),
        gop(vb, &x.v),
        mop,
        c.scale,
        c.causal,
        GpuOperand {
            buf: ob,
            batch_strides: &bs,
            rs,
            cs,
        },
    )?;
    out.to_vec()
}

fn check(c: &Case, dev: &str, buf: &[f32], want: &[f64]) -> f64 {
    let (got, untouched) = gather(c, buf);
    assert!(
        untouched,
        "{} on {dev}: wrote outside the output view",
        c.name
    );
    assert!(
        got.iter().all(|g| g.is_finite()),
        "{} on {dev}: non-finite output (unwritten elements are NaN)",
        c.name
    );
    let err = rel_error(&got, want);
    assert!(
        err <= TOL,
        "{} on {dev}: relative error {err:.3e} > {TOL:e}",
        c.name
    );
    err
}

#[test]
fn attention_matches_float64_reference() {
    let gpu = testing::gpu();
    for (i, c) in cases().iter().enumerate() {
        let x = inputs(c, 1000 + i as u64);
        let want = reference(c, &x);
        let cpu_err = check(c, "cpu", &run_cpu(c, &x), &want);
        let gpu_err = gpu.as_ref().map(|dev| {
            let buf = run_gpu(dev, c, &x).unwrap_or_else(|e| panic!("{} on gpu: {e}", c.name));
            check(c, "gpu", &buf, &want)
        });
        eprintln!(
            "{:<24} batch {:?} T {} S {} E {} Ev {}: cpu {cpu_err:.2e}, gpu {}",
            c.name,
            c.batch,
            c.t,
            c.s,
            c.e,
            c.ev,
            gpu_err.map_or("skipped".into(), |e| format!("{e:.2e}"))
        );
    }
}

#[test]
fn empty_sizes_write_nothing_and_do_not_fail() {
    let gpu = testing::gpu();
    for (batch, t, ev) in [(vec![0usize, 3], 4, 4), (vec![2], 0, 4), (vec![2], 4, 0)] {
        let mut c = case("empty", &batch, t, 5, 4, ev);
        c.causal = true;
        let x = inputs(&c, 7);
        let out = run_cpu(&c, &x);
        assert!(out.iter().all(|v| v.is_nan()));
        if let Some(dev) = &gpu {
            let out = run_gpu(dev, &c, &x).unwrap();
            assert!(out.iter().all(|v| v.is_nan()));
        }
    }
}

#[test]
fn gpu_rejects_views_past_their_buffers() {
    let Some(dev) = testing::gpu() else { return };
    let c = case("short", &[2], 4, 5, 8, 8);
    let x = inputs(&c, 9);
    let mut short = x.q.clone();
    short.data.truncate(short.data.len() - 1);
    let bad = Inputs {
        q: short,
        k: x.k.clone(),
        v: x.v.clone(),
        mask: None,
    };
    let err = run_gpu(&dev, &c, &bad).expect_err("a view past its buffer must be an error");
    assert!(err.to_string().contains("q view"), "{err}");
}

/// Unfused reference implementation for timing: scores materialised by the matmul engine,
/// a row softmax, then `P·V` by the matmul engine.
fn materialising(c: &Case, x: &Inputs, out: &mut [f32]) {
    let (bt, t, s, ev) = (c.batch.iter().product::<usize>(), c.t, c.s, c.ev);
    let mut scores = vec![0.0f32; bt * t * s];
    let sp = rt::OutPtr(scores.as_mut_ptr());
    let kt = MatOperand {
        pro: None,
        data: &x.k.data,
        batch_strides: &x.k.batch_strides,
        rs: x.k.cs,
        cs: x.k.rs,
    };
    let mdims = rt::MatDims {
        batch: &c.batch,
        m: t,
        n: s,
        k: c.e,
    };
    rt::matmul(mdims, x.q.op(), [kt], |bi, row, col0, acc: &[&[f32]; 1]| {
        let (sp, base) = (sp, (bi * t + row) * s + col0);
        for (j, &a) in acc[0].iter().enumerate() {
            // SAFETY: each (batch, row, col) is written once, inside `scores`.
            unsafe { *sp.0.add(base + j) = a * c.scale };
        }
    });
    use rayon::prelude::*;
    scores.par_chunks_mut(s).for_each(|row| {
        let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for v in row.iter_mut() {
            *v = mia_runtime::math::exp(*v - mx);
            sum += *v;
        }
        for v in row.iter_mut() {
            *v /= sum;
        }
    });
    let strides = vec![t * s; c.batch.len().min(1)];
    let p = MatOperand {
        pro: None,
        data: &scores,
        batch_strides: &strides,
        rs: s,
        cs: 1,
    };
    let op = rt::OutPtr(out.as_mut_ptr());
    let flat = [bt];
    let vflat = [x.v.batch_strides.last().copied().unwrap_or(0)];
    let v = MatOperand {
        pro: None,
        data: &x.v.data,
        batch_strides: &vflat[..c.batch.len().min(1)],
        rs: x.v.rs,
        cs: x.v.cs,
    };
    let pdims = rt::MatDims {
        batch: &flat[..c.batch.len().min(1)],
        m: t,
        n: ev,
        k: s,
    };
    rt::matmul(pdims, p, [v], |bi, row, col0, acc: &[&[f32]; 1]| {
        let (op, base) = (op, (bi * t + row) * ev + col0);
        for (j, &a) in acc[0].iter().enumerate() {
            // SAFETY: each (batch, row, col) is written once, inside `out`.
            unsafe { *op.0.add(base + j) = a };
        }
    });
}

/// `cargo test --release -p mia-runtime --test attention -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_cpu() {
    let time = |f: &mut dyn FnMut()| {
        f();
        let mut best = f64::MAX;
        for _ in 0..5 {
            let t0 = std::time::Instant::now();
            f();
            best = best.min(t0.elapsed().as_secs_f64());
        }
        best
    };
    for (name, h, n, e) in [
        ("minilm 32x12 128^2 e32", 384, 128, 32),
        ("4 heads 1024^2 e64", 4, 1024, 64),
    ] {
        let c = case(name, &[h], n, n, e, e);
        let x = inputs(&c, 1);
        let flops = 4.0 * (h * n * n * e) as f64;
        let mut out = vec![0.0f32; h * n * e];
        let fused = time(&mut || {
            run_cpu_into(&c, &x, &mut out);
        });
        let fused_out = out.clone();
        let naive = time(&mut || materialising(&c, &x, &mut out));
        let err = rel_error(
            &fused_out.iter().map(|&v| v as f64).collect::<Vec<_>>(),
            &out.iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        eprintln!(
            "{name}: fused {:.2} ms ({:.1} GFLOP/s), materialising {:.2} ms ({:.1} GFLOP/s), diff {err:.1e}",
            fused * 1e3,
            flops / fused / 1e9,
            naive * 1e3,
            flops / naive / 1e9
        );
    }
}

fn run_cpu_into(c: &Case, x: &Inputs, out: &mut [f32]) {
    let (_, bs, rs, cs) = out_layout(c);
    rt::attention(
        dims(c),
        AttnArgs {
            q: x.q.op(),
            k: x.k.op(),
            v: x.v.op(),
            mask: None,
            scale: c.scale,
            causal: c.causal,
        },
        AttnOut {
            data: out,
            batch_strides: &bs,
            rs,
            cs,
        },
    );
}

/// GPU timings (GPU timestamps): `cargo test --release -p mia-runtime --test attention --
/// --ignored --nocapture bench_gpu`.
#[test]
#[ignore]
fn bench_gpu() {
    let Some(dev) = testing::gpu() else { return };
    for (name, h, n, e, causal) in [
        ("minilm 32x12 128^2 e32", 384, 128, 32, false),
        ("16 heads 4096^2 e64", 16, 4096, 64, false),
        ("16 heads 4096^2 e64 causal", 16, 4096, 64, true),
        ("16 heads 1024^2 e128", 16, 1024, 128, false),
    ] {
        let mut c = case(name, &[h], n, n, e, e);
        c.causal = causal;
        let x = inputs(&c, 1);
        let up = |v: &View| Tensor::from_slice(&dev, [v.data.len()], &v.data).unwrap();
        let (q, k, v) = (up(&x.q), up(&x.k), up(&x.v));
        let out = Tensor::<f32>::full(&dev, [h * n * e], 0.0).unwrap();
        let (_, bs, rs, cs) = out_layout(&c);
        let buf = |t| rt::gpu_buffer(t).unwrap();
        let call = || {
            rt::gpu_attention(
                &dev,
                "bench/attention",
                dims(&c),
                GpuOperand {
                    buf: buf(&q),
                    batch_strides: &x.q.batch_strides,
                    rs: x.q.rs,
                    cs: x.q.cs,
                },
                GpuOperand {
                    buf: buf(&k),
                    batch_strides: &x.k.batch_strides,
                    rs: x.k.rs,
                    cs: x.k.cs,
                },
                GpuOperand {
                    buf: buf(&v),
                    batch_strides: &x.v.batch_strides,
                    rs: x.v.rs,
                    cs: x.v.cs,
                },
                None,
                c.scale,
                c.causal,
                GpuOperand {
                    buf: buf(&out),
                    batch_strides: &bs,
                    rs,
                    cs,
                },
            )
        };
        let t0 = std::time::Instant::now();
        while t0.elapsed().as_secs_f64() < 0.7 {
            call().unwrap();
            dev.synchronize().unwrap();
        }
        let reps = 20;
        let mut best = f64::MAX;
        for _ in 0..3 {
            let ((), t) = dev
                .gpu_profile(|| {
                    for _ in 0..reps {
                        call()?;
                    }
                    Ok(())
                })
                .unwrap();
            best = best.min(t.map_or(f64::NAN, |t| t.as_secs_f64()) / reps as f64);
        }
        let mut flops = 4.0 * (h * n * n * e) as f64;
        if causal {
            flops /= 2.0;
        }
        // Spot check against the CPU on the first head.
        let got = out.to_vec().unwrap();
        let mut cpu = vec![0.0f32; h * n * e];
        run_cpu_into(&c, &x, &mut cpu);
        let err = rel_error(
            &got[..n * e].iter().map(|&v| v as f64).collect::<Vec<_>>(),
            &cpu[..n * e].iter().map(|&v| v as f64).collect::<Vec<_>>(),
        );
        eprintln!(
            "{name}: {:.3} ms, {:.2} TFLOP/s (vs cpu {err:.1e})",
            best * 1e3,
            flops / best / 1e12
        );
    }
}
