//! Host-side cost of recording GPU passes: the time a call takes to return (the GPU is not
//! waited for inside the timer), per pass. Two loads: a chain of small elementwise passes
//! (`relu` on 1024 elements, where recording is nearly all of the cost), and MiniLM's forward
//! pass at batch 1 × 128 tokens when `MIA_MINILM_DIR` names the model. Each round is followed
//! by an untimed synchronize, so rounds start with the GPU idle; prints the median of the
//! rounds.
//!
//! `cargo run --release -p mia-bench --example record_cost [rounds]`
use std::time::Instant;

use mia_runtime::prelude::*;
use minilm::{Batch, Encoder};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Passes per round of the elementwise chain (as many as MiniLM's forward pass records).
const CHAIN: usize = 63;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` over `rounds` (after a few untimed ones), each followed by an untimed
/// synchronize.
fn rounds(dev: &Device, rounds: usize, f: &mut dyn FnMut() -> Res<()>) -> Res<f64> {
    let mut t = Vec::with_capacity(rounds);
    for i in 0..rounds + 5 {
        let start = Instant::now();
        f()?;
        let s = start.elapsed().as_secs_f64();
        dev.synchronize()?;
        if i >= 5 {
            t.push(s);
        }
    }
    Ok(median(t))
}

fn main() -> Res<()> {
    let n: usize = std::env::args().nth(1).map_or(Ok(50), |s| s.parse())?;
    let dev = Device::gpu()?;
    println!("{}", dev.name());

    let x = Tensor::from_vec(&dev, [1024], (0..1024).map(|i| i as f32 - 512.0).collect())?;
    let chain = rounds(&dev, n, &mut || {
        let mut y = x.clone();
        for _ in 0..CHAIN {
            y = mia_kernels::relu(&y)?;
        }
        Ok(())
    })?;
    println!(
        "relu chain: {CHAIN} passes {:8.1} us, {:6.2} us a pass",
        chain * 1e6,
        chain * 1e6 / CHAIN as f64
    );

    let Ok(dir) = std::env::var("MIA_MINILM_DIR") else {
        println!("MiniLM: skipped (MIA_MINILM_DIR is not set)");
        return Ok(());
    };
    let enc = Encoder::open(dir, &dev)?;
    let text = "the quick brown fox jumps over the lazy dog while kernels fuse";
    let ids = enc.tokenize_exact(text, 128)?;
    let inputs = enc.upload(&Batch::new(&[&ids]))?;
    // The first call builds pipelines (and may autotune matmuls): not part of a profile.
    enc.forward(&inputs)?;
    dev.synchronize()?;
    let passes = dev
        .profile_passes(|| {
            enc.forward(&inputs)
                .map_err(|e| mia_runtime::Error::Internal(e.to_string()))
        })?
        .1
        .map_or(63, |t| t.len());
    let fwd = rounds(&dev, n, &mut || {
        enc.forward(&inputs)?;
        Ok(())
    })?;
    println!(
        "MiniLM 1x128 forward: {passes} passes {:8.1} us, {:6.2} us a pass",
        fwd * 1e6,
        fwd * 1e6 / passes as f64
    );
    Ok(())
}
