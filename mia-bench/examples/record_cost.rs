//! Host-side cost of recording GPU passes: the time a call takes to return (the GPU is not
//! waited for inside the timer), per pass. Two loads: a chain of small elementwise passes
//! (`relu` on 1024 elements, where recording is nearly all of the cost), and MiniLM's forward
//! pass at batch 1 × 128 tokens when `MIA_MINILM_DIR` names the model. Each round is followed
//! by an untimed synchronize, so rounds start with the GPU idle; prints the median of the
//! rounds, of wall time and of the recording thread's CPU time (on lavapipe, submissions
//! block until the software GPU catches up, so wall time there is mostly its work).
//!
//! `cargo run --release -p mia-bench --example record_cost [rounds]`
//!
//! lavapipe on the 2-core CI machine (2026-11-24), host CPU a pass, median of alternating
//! runs: relu chain 12.3 us with a params buffer and a bind group made per pass, 8.3 us with
//! one params buffer per submission and cached bind groups; MiniLM 1x128 42-50 us before,
//! 24-27 us after. These runs are noisy (±30% between runs): compare binaries side by side.
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

/// Nanoseconds this thread has run on a CPU (Linux's schedstat), which leaves out the time it
/// blocked: on lavapipe `queue.submit` waits for the software GPU, which would otherwise hide
/// the host's own cost.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Median wall and thread-CPU seconds of `f` over `rounds` (after a few untimed ones), each
/// followed by an untimed synchronize.
fn rounds(dev: &Device, rounds: usize, f: &mut dyn FnMut() -> Res<()>) -> Res<(f64, f64)> {
    let (mut wall, mut cpu) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds + 5 {
        let c = thread_cpu_ns();
        let start = Instant::now();
        f()?;
        let s = start.elapsed().as_secs_f64();
        let c = thread_cpu_ns()
            .zip(c)
            .map_or(f64::NAN, |(b, a)| (b - a) as f64 * 1e-9);
        dev.synchronize()?;
        if i >= 5 {
            wall.push(s);
            cpu.push(c);
        }
    }
    Ok((median(wall), median(cpu)))
}

fn report(what: &str, passes: usize, (wall, cpu): (f64, f64)) {
    let us = |t: f64| t * 1e6 / passes as f64;
    println!(
        "{what}: {passes} passes, a pass {:6.2} us wall, {:6.2} us host CPU",
        us(wall),
        us(cpu)
    );
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
    report("relu chain", CHAIN, chain);

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
    report("MiniLM 1x128 forward", passes, fwd);
    Ok(())
}
