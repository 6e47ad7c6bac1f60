//! mia quickstart: the kernels of DESIGN.md, run on the best device present (a GPU through
//! wgpu if there is one, else the CPU; `MIA_DEVICE=cpu|gpu` overrides), checked against plain
//! Rust loops in float64, with each kernel's fusion plan and timings.
//!
//! `cargo run --release --example quickstart`

use mia_examples::{gelu64, median_time, par_copy, rel_error};
use mia_runtime::prelude::*;
use std::time::Duration;

#[kernel]
pub fn bias_gelu(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    gelu(x + b)
}

#[kernel]
pub fn softmax_rows(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    let e = exp(x - x.max(-1));
    e / e.sum(-1)
}

#[kernel]
pub fn scaled(x: Tensor<f32, N>, alpha: f32) -> (Tensor<f32, N>, Tensor<f32, N>) {
    (x * alpha, relu(x) + 1.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::from_env()?;
    println!("device: {}", dev.name());

    // Deterministic pseudo-random data in [-4, 4).
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 40) as f32 / (1u64 << 24) as f32 * 8.0 - 4.0
    };
    let (n, d) = (2048, 4096);
    let xs: Vec<f32> = (0..n * d).map(|_| rand()).collect();
    let bs: Vec<f32> = (0..d).map(|_| rand()).collect();
    let x = Tensor::from_vec(&dev, [n, d], xs.clone())?;
    let b = Tensor::from_vec(&dev, [d], bs.clone())?;

    // Correctness against float64 loops.
    let y = bias_gelu(&x, &b)?.to_vec()?;
    let want: Vec<f64> = (0..n * d)
        .map(|i| gelu64(xs[i] as f64 + bs[i % d] as f64))
        .collect();
    println!(
        "bias_gelu     rel. error vs f64 loop: {:.2e}",
        rel_error(&y, &want)
    );
    let s = softmax_rows(&x)?.to_vec()?;
    let mut want = vec![0.0f64; n * d];
    for r in 0..n {
        let row = &xs[r * d..(r + 1) * d];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let sum: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for j in 0..d {
            want[r * d + j] = (row[j] as f64 - m).exp() / sum;
        }
    }
    println!(
        "softmax_rows  rel. error vs f64 loop: {:.2e}",
        rel_error(&s, &want)
    );
    let flat = Tensor::from_vec(&dev, [n * d], xs.clone())?;
    let (a, c) = scaled(&flat, 0.5)?;
    let (a, c) = (a.to_vec()?, c.to_vec()?);
    let wa: Vec<f64> = xs.iter().map(|&v| v as f64 * 0.5).collect();
    let wc: Vec<f64> = xs.iter().map(|&v| (v as f64).max(0.0) + 1.0).collect();
    println!(
        "scaled        rel. error vs f64 loop: {:.2e}, {:.2e}",
        rel_error(&a, &wa),
        rel_error(&c, &wc)
    );

    // Plans.
    println!();
    for (p, sizes) in [
        (bias_gelu::plan(), [("N", n), ("D", d)]),
        (softmax_rows::plan(), [("N", n), ("D", d)]),
        (scaled::plan(), [("N", n * d), ("D", 0)]),
    ] {
        let bytes = p.min_bytes(&sizes).unwrap_or(0);
        println!(
            "{p}; moves at least {:.1} MiB here",
            bytes as f64 / (1 << 20) as f64
        );
    }
    println!(
        "\nsoftmax_rows as Graphviz:\n{}",
        softmax_rows::plan().to_dot()
    );

    // Timings: median of 20 after 0.5 s of warm-up; GB/s counts bytes read + written. On a GPU
    // each sample queues 10 calls and waits once, so the ~0.1 ms a submission costs is shared.
    println!();
    let warm = Duration::from_millis(500);
    let reps = if dev.is_cpu() { 1 } else { 10 };
    let time = |f: &dyn Fn() -> Result<Tensor<f32>, Error>| {
        median_time(warm, 20, || {
            for _ in 0..reps {
                let _ = f();
            }
            let _ = dev.synchronize();
        }) / reps
    };
    let gbs = |bytes: usize, t: Duration| bytes as f64 / t.as_secs_f64() / 1e9;
    let elems = n * d;
    let results = [
        (
            "bias_gelu",
            2 * elems * 4 + d * 4,
            time(&|| bias_gelu(&x, &b)),
        ),
        ("softmax_rows", 2 * elems * 4, time(&|| softmax_rows(&x))),
        (
            "scaled",
            3 * elems * 4,
            time(&|| scaled(&flat, 0.5).map(|(a, _)| a)),
        ),
    ];
    let copy = if dev.is_cpu() {
        let mut dst = vec![0.0f32; elems];
        let t = median_time(warm, 20, || par_copy(&mut dst, &xs));
        Some(gbs(2 * elems * 4, t))
    } else {
        None
    };
    for (name, bytes, t) in results {
        let rate = gbs(bytes, t);
        let share = copy
            .map(|c| format!("  {:>4.0}% of memcpy", 100.0 * rate / c))
            .unwrap_or_default();
        println!(
            "{name:<13} {:>8.3} ms  {rate:>7.1} GB/s{share}",
            t.as_secs_f64() * 1e3
        );
    }
    if let Some(c) = copy {
        println!("memcpy        {c:>19.1} GB/s (the roofline, same buffers)");
    }
    Ok(())
}
