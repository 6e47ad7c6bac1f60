//! Timing: warm up, then take samples; on a GPU both GPU timestamps (the kernel's own time)
//! and host wall time around a call and a synchronize (what a caller waits).

use std::time::{Duration, Instant};

use mia_runtime::Device;

use crate::cases::Res;

/// How long to warm up and how many samples to take.
#[derive(Clone, Copy, Debug)]
pub struct Method {
    /// Back-to-back calls before timing: GPU clocks drop after host pauses, and caches, page
    /// mappings and pipelines must be warm.
    pub warmup: Duration,
    pub samples: usize,
    /// Shortest CPU sample: faster calls are timed in back-to-back batches (the per-call mean
    /// of each batch is one sample), so that thread wake-ups and timer resolution do not
    /// dominate sub-millisecond calls.
    pub min_sample: Duration,
}

impl Method {
    /// Full runs: ≥ 0.5 s of warm-up, median of 20. `--quick`: 0.05 s and 3 samples.
    pub fn new(quick: bool) -> Method {
        if quick {
            Method {
                warmup: Duration::from_millis(50),
                samples: 3,
                min_sample: Duration::from_millis(1),
            }
        } else {
            Method {
                warmup: Duration::from_millis(500),
                samples: 20,
                min_sample: Duration::from_millis(10),
            }
        }
    }
}

/// What a timer read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    GpuTimestamp,
    Wall,
}

impl Timer {
    pub fn name(self) -> &'static str {
        match self {
            Timer::GpuTimestamp => "gpu-timestamp",
            Timer::Wall => "wall",
        }
    }
}

/// Samples of one implementation, in seconds.
#[derive(Clone, Debug)]
pub struct Timing {
    pub timer: Timer,
    /// Read from `timer`.
    pub samples: Vec<f64>,
    /// Host time of each call plus a synchronize.
    pub wall: Vec<f64>,
    /// Calls each CPU sample averages over (1 on a GPU).
    pub calls_per_sample: usize,
    /// Why the timer is not the one asked for, if so.
    pub note: Option<String>,
}

/// Median, minimum and maximum (zeros for no samples).
pub fn stats(samples: &[f64]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    };
    (median, s[0], s[n - 1])
}

/// Times `call` on `dev`: warm-up, then `samples` timed samples. On the CPU a sample is the
/// mean of a batch of back-to-back calls lasting at least `min_sample`. On a GPU a sample is
/// one call followed by a synchronize; GPU timestamps are read when the adapter has them, and
/// wall time is sampled separately so that reading timestamps does not inflate it.
pub fn time(dev: &Device, method: Method, mut call: impl FnMut() -> Res<()>) -> Res<Timing> {
    let once = |call: &mut dyn FnMut() -> Res<()>| -> Res<f64> {
        let t = Instant::now();
        call()?;
        dev.synchronize()?;
        Ok(t.elapsed().as_secs_f64())
    };
    let start = Instant::now();
    let mut calls = 0u32;
    loop {
        once(&mut call)?;
        calls += 1;
        if start.elapsed() >= method.warmup {
            break;
        }
    }
    let n = method.samples.max(1);
    if dev.is_cpu() {
        let per_call = start.elapsed().as_secs_f64() / f64::from(calls);
        let batch = (method.min_sample.as_secs_f64() / per_call.max(1e-9)).ceil();
        let batch = batch.clamp(1.0, 10_000.0) as usize;
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            for _ in 0..batch {
                call()?;
            }
            samples.push(t.elapsed().as_secs_f64() / batch as f64);
        }
        return Ok(Timing {
            timer: Timer::Wall,
            wall: samples.clone(),
            samples,
            calls_per_sample: batch,
            note: None,
        });
    }
    let mut gpu = Vec::new();
    if dev.is_gpu() && dev.has_timestamps() {
        for _ in 0..n {
            let (r, t) = dev.gpu_profile(|| Ok(call()))?;
            r?;
            match t {
                Some(t) if t > Duration::ZERO => gpu.push(t.as_secs_f64()),
                _ => break,
            }
        }
    }
    let wall = (0..n).map(|_| once(&mut call)).collect::<Res<Vec<f64>>>()?;
    Ok(if gpu.len() == n {
        Timing {
            timer: Timer::GpuTimestamp,
            samples: gpu,
            wall,
            calls_per_sample: 1,
            note: None,
        }
    } else {
        let note = if dev.has_timestamps() {
            "the adapter returned empty timestamps: wall time"
        } else {
            "the adapter has no timestamp queries: wall time"
        };
        Timing {
            timer: Timer::Wall,
            samples: wall.clone(),
            wall,
            calls_per_sample: 1,
            note: Some(note.to_string()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_of_odd_and_even_counts() {
        assert_eq!(stats(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(stats(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
        assert_eq!(stats(&[]), (0.0, 0.0, 0.0));
    }

    #[test]
    fn cpu_timing_uses_the_wall_clock() {
        let mut calls = 0;
        let m = Method {
            warmup: Duration::ZERO,
            samples: 4,
            min_sample: Duration::ZERO,
        };
        let t = time(&Device::cpu(), m, || {
            calls += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(t.timer, Timer::Wall);
        assert_eq!((t.samples.len(), t.wall.len(), calls), (4, 4, 5));
        assert_eq!(t.calls_per_sample, 1);
        assert!(t.note.is_none());
    }
}
