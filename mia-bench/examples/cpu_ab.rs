//! Interleaved A/B timing of the CPU matrix product and attention against their baselines:
//! one sample of each implementation in turn, so that load from other processes hits both
//! alike; prints the median of each and their ratio.
//!
//! `cargo run --release -p mia-bench --example cpu_ab [rounds [name filter]]`
use std::time::Instant;

use mia_runtime::prelude::*;

/// Mean seconds per call over calls lasting at least 5 ms.
fn sample(f: &mut dyn FnMut()) -> f64 {
    let t = Instant::now();
    let mut n = 0;
    while t.elapsed().as_secs_f64() < 5e-3 || n == 0 {
        f();
        n += 1;
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Times the implementations interleaved; prints medians and each one's time over the first's.
fn ab(name: &str, rounds: usize, impls: &mut [(&str, &mut dyn FnMut())]) {
    if !std::env::args().nth(2).is_none_or(|f| name.contains(&f)) {
        return;
    }
    for (_, f) in impls.iter_mut() {
        for _ in 0..3 {
            sample(*f);
        }
    }
    let mut times = vec![Vec::new(); impls.len()];
    for _ in 0..rounds {
        for (t, (_, f)) in times.iter_mut().zip(impls.iter_mut()) {
            t.push(sample(*f));
        }
    }
    let meds: Vec<f64> = times.into_iter().map(median).collect();
    let mut line = format!("{name:24}");
    for ((n, _), m) in impls.iter().zip(&meds) {
        line += &format!(" {n} {:8.3} ms ({:.2})", m * 1e3, m / meds[0]);
    }
    println!("{line}");
}

fn data(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 31) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

// The suite's own twins (`attention_unfused`: fusion off).
#[allow(dead_code)]
#[path = "../src/kernels.rs"]
mod kernels;

/// A BERT linear layer as the model writes it: tokens `[B, T, K]`, weight stored `[N, K]`.
#[kernel]
fn bert_linear(x: Tensor<f32, B, T, K>, w: Tensor<f32, N, K>) -> Tensor<f32, B, T, N> {
    matmul(x, transpose(w, 0, 1))
}

/// [`bert_linear`] with BERT's bias and GELU.
#[kernel]
fn bert_linear_gelu(
    x: Tensor<f32, B, T, K>,
    w: Tensor<f32, N, K>,
    bias: Tensor<f32, N>,
) -> Tensor<f32, B, T, N> {
    gelu(matmul(x, transpose(w, 0, 1)) + bias)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(15), |s| s.parse())?;
    let dev = Device::cpu();
    for (m, k, n) in [
        (128, 384, 1536),
        (128, 1536, 384),
        (128, 384, 384),
        (4096, 384, 384),
        (4096, 384, 1536),
        (4096, 1536, 384),
        (1024, 1024, 1024),
    ] {
        let (av, bv) = (data(m * k, 1), data(k * n, 2));
        let a = Tensor::from_slice(&dev, [m, k], &av)?;
        let b = Tensor::from_slice(&dev, [k, n], &bv)?;
        let mut c = vec![0.0f32; m * n];
        let threads = rayon::current_num_threads();
        ab(
            &format!("matmul/{m}x{k}x{n}"),
            rounds,
            &mut [
                ("mia", &mut || drop(mia_kernels::matmul(&a, &b).unwrap())),
                // SAFETY: row-major operands of exactly these sizes; `c` aliases neither.
                ("gemm", &mut || unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        av.as_ptr(),
                        1,
                        k as isize,
                        bv.as_ptr(),
                        1,
                        n as isize,
                        0.0f32,
                        1.0f32,
                        false,
                        false,
                        false,
                        gemm::Parallelism::Rayon(threads),
                    )
                }),
            ],
        );
    }
    // The epilogues of BERT's FFN products: each product alone against it with its epilogue.
    // Weights scaled as a trained layer's (pre-activations mostly within ±4); `W=1` for ±20.
    let scale: f32 = std::env::var("W").map_or(Ok(1.0 / 16.0), |s| s.parse())?;
    for (m, k, n) in [
        (128, 384, 1536),
        (4096, 384, 1536),
        (128, 1536, 384),
        (4096, 1536, 384),
    ] {
        let t = |r, c, seed, s: f32| {
            Tensor::from_vec(
                &dev,
                [r, c],
                data(r * c, seed).iter().map(|v| v * s).collect(),
            )
        };
        let (x, w, res) = (t(m, k, 1, 1.0)?, t(k, n, 2, scale)?, t(m, n, 3, 4.0)?);
        let bias = Tensor::from_vec(&dev, [n], data(n, 4))?;
        // The same tokens as sentences of 128, and a weight stored `[out, in]`.
        let (x3, wt) = (x.reshape([m / 128, 128, k])?, t(n, k, 2, scale)?);
        ab(
            &format!("epilogue/{m}x{k}x{n}"),
            rounds,
            &mut [
                ("matmul", &mut || drop(mia_kernels::matmul(&x, &w).unwrap())),
                ("+gelu", &mut || {
                    drop(mia_kernels::linear_gelu(&x, &w, &bias).unwrap())
                }),
                ("+residual", &mut || {
                    drop(mia_kernels::linear_residual(&x, &w, &bias, &res).unwrap())
                }),
                ("bert", &mut || drop(bert_linear(&x3, &wt).unwrap())),
                ("bert+gelu", &mut || {
                    drop(bert_linear_gelu(&x3, &wt, &bias).unwrap())
                }),
                ("gelu pass", &mut || {
                    drop(mia_kernels::bias_gelu(&res, &bias).unwrap())
                }),
            ],
        );
    }
    for (h, s, d) in [(384, 128, 32), (4, 1024, 64), (16, 256, 64)] {
        let t = |seed| Tensor::from_vec(&dev, [h, s, d], data(h * s * d, seed));
        let (q, k, v) = (t(1)?, t(2)?, t(3)?);
        let scale = 1.0 / (d as f32).sqrt();
        ab(
            &format!("attention/{h}x{s}x{d}"),
            rounds,
            &mut [
                ("fused", &mut || {
                    drop(mia_kernels::attention(&q, &k, &v, scale).unwrap())
                }),
                ("unfused", &mut || {
                    drop(kernels::attention_unfused(&q, &k, &v, scale).unwrap())
                }),
            ],
        );
    }
    Ok(())
}
