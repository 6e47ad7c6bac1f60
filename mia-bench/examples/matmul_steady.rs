//! MiniLM's batch-32 matrix products (4096 tokens) on the GPU, timed three ways: one call per
//! submission and wait (as mia-bench samples), calls queued back to back, and a chain of
//! dependent calls (as inside a model's forward pass). GPU timestamps, after a warm-up; prints
//! microseconds per call and TFLOP/s. On the H100 the three agreed within ~10%, while the same
//! kernels in mia-bench's process read up to 2x slower or faster: for passes of 50–200 µs the
//! GPU's clock state, not the kernel, can dominate one process's reading.
//!
//! `cargo run --release -p mia-bench --example matmul_steady [calls]`
use std::time::{Duration, Instant};

use mia_runtime::prelude::*;

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Uniform values in ±1/√fan_in (a chain stays finite), from a seed.
fn weights(dev: &Device, rows: usize, cols: usize, seed: u64) -> Res<Tensor<f32>> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let scale = 1.0 / (rows as f32).sqrt();
    let data = (0..rows * cols)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Ok(Tensor::from_vec(dev, [rows, cols], data)?)
}

fn secs(d: Option<Duration>) -> Res<f64> {
    d.map(|d| d.as_secs_f64())
        .ok_or_else(|| "the GPU has no timestamp queries".into())
}

/// Prints the three timings of `f` (one step of `flops`), which maps `x` to a tensor of its
/// shape.
fn time(
    dev: &Device,
    name: &str,
    flops: f64,
    calls: usize,
    x: &Tensor<f32>,
    f: &dyn Fn(&Tensor<f32>) -> mia_runtime::Result<Tensor<f32>>,
) -> Res<()> {
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_millis(500) {
        f(x)?;
        dev.synchronize()?;
    }
    let mut one = Vec::new();
    for _ in 0..calls {
        one.push(secs(dev.gpu_profile(|| f(x))?.1)?);
    }
    one.sort_by(f64::total_cmp);
    let one = one[calls / 2];
    let queued = secs(
        dev.gpu_profile(|| {
            (0..calls)
                .map(|_| f(x))
                .collect::<mia_runtime::Result<Vec<_>>>()
        })?
        .1,
    )? / calls as f64;
    let chain = secs(
        dev.gpu_profile(|| (0..calls).try_fold(x.clone(), |y, _| f(&y)))?
            .1,
    )? / calls as f64;
    let tf = |t: f64| flops / t / 1e12;
    println!(
        "{name:<34} alone {:7.1} us {:5.1} TF/s | queued {:7.1} us {:5.1} | chained {:7.1} us {:5.1}",
        one * 1e6,
        tf(one),
        queued * 1e6,
        tf(queued),
        chain * 1e6,
        tf(chain)
    );
    Ok(())
}

fn main() -> Res<()> {
    let calls: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20);
    let dev = Device::gpu()?;
    println!("{}", dev.name());
    let (m, d, h) = (4096usize, 384usize, 1536usize);
    let x = weights(&dev, m, d, 1)?;
    let (wq, wk) = (weights(&dev, d, d, 2)?, weights(&dev, d, d, 3)?);
    let (w1, w2) = (weights(&dev, d, h, 4)?, weights(&dev, h, d, 5)?);
    let fl = |k: usize, n: usize| (2 * m * k * n) as f64;
    time(&dev, "4096x384x384", fl(d, d), calls, &x, &|y| {
        mia_kernels::matmul(y, &wq)
    })?;
    time(
        &dev,
        "4096x384x(2x384) two products",
        2.0 * fl(d, d),
        calls,
        &x,
        &|y| mia_kernels::swiglu_gate(y, &wq, &wk),
    )?;
    time(
        &dev,
        "4096x384x1536 then 4096x1536x384",
        2.0 * fl(d, h),
        calls,
        &x,
        &|y| mia_kernels::matmul(&mia_kernels::matmul(y, &w1)?, &w2),
    )?;
    Ok(())
}
