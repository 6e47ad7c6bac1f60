//! Autotune for matmul tilings: the first call of a pass on a device, for a bucket of shapes
//! (each size rounded up to a power of two), times every tiling compiled for it (on GPU
//! timestamps where the device has them) and keeps the fastest — in memory, and on disk so that later processes skip the measurement.
//!
//! The cache is a text file `autotune-v4.tsv` in `MIA_CACHE_DIR` (else
//! `$XDG_CACHE_HOME/mia`, else `$HOME/.cache/mia`): one `device \t pass \t bucket \t tiling`
//! line per choice. Lines that do not parse, and choices naming a tiling the pass no longer
//! has (a stale cache after an upgrade), are ignored; a cache that cannot be read or written
//! only costs a measurement. `MIA_AUTOTUNE=0` skips measuring and takes the first tiling;
//! `MIA_AUTOTUNE_LOG=1` prints each measurement (tiling and time) to stderr; `MIA_TILE=i`
//! takes the `i`-th tiling the device can run (for tests and measurements), when it exists.

use crate::{Device, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Version 4: tensor-core tilings joined the candidates, so choices made without them are
/// measured again. (Version 3: B's staged rows padded, epilogues unrolled; version 2: timed
/// on the GPU clock.)
const FILE: &str = "autotune-v4.tsv";

/// The cache directory (see the module docs), if one can be named.
pub fn cache_dir() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("MIA_CACHE_DIR")
        .or_else(|| env("XDG_CACHE_HOME").map(|d| d.join("mia")))
        .or_else(|| env("HOME").map(|d| d.join(".cache").join("mia")))
}

/// Choices by key; `None` until the disk cache has been read.
static MEMORY: Mutex<Option<HashMap<String, String>>> = Mutex::new(None);

fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Parses the cache file; malformed lines are skipped.
pub fn parse(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.len() == 4 && f.iter().all(|x| !x.is_empty()))
                .then(|| (format!("{}\t{}\t{}", f[0], f[1], f[2]), f[3].to_string()))
        })
        .collect()
}

fn load() -> HashMap<String, String> {
    cache_dir().map(|d| load_from(&d)).unwrap_or_default()
}

fn load_from(dir: &Path) -> HashMap<String, String> {
    std::fs::read(dir.join(FILE))
        .map(|b| parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

/// Writes the whole map through a temporary file and a rename, so concurrent processes
/// never see a half-written cache. Errors are ignored: the cache is an optimisation.
fn save(map: &HashMap<String, String>) {
    if let Some(dir) = cache_dir() {
        save_to(&dir, map);
    }
}

fn save_to(dir: &Path, map: &HashMap<String, String>) {
    let mut lines: Vec<String> = map.iter().map(|(k, v)| format!("{k}\t{v}\n")).collect();
    lines.sort();
    let tmp = dir.join(format!("{FILE}.{}.tmp", std::process::id()));
    let ok = std::fs::create_dir_all(dir).is_ok() && std::fs::write(&tmp, lines.concat()).is_ok();
    if !ok || std::fs::rename(&tmp, dir.join(FILE)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Sizes rounded up to powers of two, e.g. `1x128x512x512`.
pub fn bucket(sizes: &[usize]) -> String {
    let b: Vec<String> = sizes
        .iter()
        .map(|s| s.max(&1).next_power_of_two().to_string())
        .collect();
    b.join("x")
}

/// The index of the tiling to use for pass `label` at `sizes` on `dev`; measures each of
/// `tilings` with `run` (which dispatches the pass with that tiling) when no choice is known.
pub fn autotune(
    dev: &Device,
    label: &str,
    sizes: &[usize],
    tilings: &[&str],
    run: &dyn Fn(usize) -> Result<()>,
) -> Result<usize> {
    let forced = std::env::var("MIA_TILE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(i) = forced.filter(|&i| i < tilings.len()) {
        return Ok(i);
    }
    if tilings.len() <= 1 || std::env::var("MIA_AUTOTUNE").is_ok_and(|v| v == "0") {
        return Ok(0);
    }
    let key = format!(
        "{}\t{}\t{}",
        clean(&dev.name()),
        clean(label),
        bucket(sizes)
    );
    let known = {
        let mut mem = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        mem.get_or_insert_with(load).get(&key).cloned()
    };
    if let Some(i) = known.and_then(|name| tilings.iter().position(|t| *t == name)) {
        return Ok(i);
    }
    // Each tiling runs once (building its pipeline), then the GPU is kept busy for ~0.1 s so
    // its clock is up, then rounds time every tiling in turn and keep each one's best: a clock
    // still rising favours no tiling.
    for i in 0..tilings.len() {
        run(i)?;
    }
    dev.synchronize()?;
    let warm = Instant::now();
    for _ in 0..50 {
        run(0)?;
        dev.synchronize()?;
        if warm.elapsed().as_secs_f64() > 0.1 {
            break;
        }
    }
    let mut clock = if dev.has_timestamps() {
        Clock::Gpu
    } else {
        Clock::Host
    };
    let mut best_of = vec![f64::INFINITY; tilings.len()];
    let mut reps = 5;
    for round in 0..4 {
        if round == 1 && clock == Clock::Host {
            // On the host clock, short passes run several times per wait, so the ~0.1 ms of
            // a submission and wait does not drown the differences between tilings.
            let fastest = best_of.iter().fold(f64::INFINITY, |a, &b| a.min(b));
            reps = (0.002 / fastest.max(1e-6)).clamp(1.0, 16.0) as usize;
        }
        for (i, b) in best_of.iter_mut().enumerate() {
            *b = b.min(time(dev, run, i, reps, &mut clock)?);
        }
    }
    let best = (0..tilings.len())
        .min_by(|&x, &y| best_of[x].total_cmp(&best_of[y]))
        .unwrap_or(0);
    if std::env::var_os("MIA_AUTOTUNE_LOG").is_some() {
        let times: Vec<String> = tilings
            .iter()
            .zip(&best_of)
            .map(|(t, b)| format!("{t} {:.1}us", b * 1e6))
            .collect();
        eprintln!(
            "mia autotune {label} {} ({clock:?} clock): {} -> {}",
            bucket(sizes),
            times.join(", "),
            tilings[best]
        );
    }
    let mut mem = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let map = mem.get_or_insert_with(load);
    // Merge with what other processes wrote meanwhile.
    for (k, v) in load() {
        map.entry(k).or_insert(v);
    }
    map.insert(key, tilings[best].to_string());
    save(map);
    Ok(best)
}

/// How autotune times a tiling.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Clock {
    /// GPU timestamps of each pass: the kernel's own time, so close tilings compare the same
    /// in every run (the host clock adds 0.1–0.4 ms of submission and wait, and its noise).
    Gpu,
    /// The host clock around runs and a wait: where the device has no timestamp queries, or
    /// a profile scope is already open (the caller's `Device::gpu_profile`, which scopes
    /// cannot nest in).
    Host,
}

/// Seconds per run of tiling `i`: on the GPU clock the median of `reps` runs, each timed
/// alone (independent passes queued back to back overlap on the GPU, which blurs per-pass
/// timestamps); on the host clock the mean of `reps` runs and one wait. Falls back to the host
/// clock for good when no GPU time comes back.
fn time(
    dev: &Device,
    run: &dyn Fn(usize) -> Result<()>,
    i: usize,
    reps: usize,
    clock: &mut Clock,
) -> Result<f64> {
    let mut times = Vec::with_capacity(reps);
    while *clock == Clock::Gpu && times.len() < reps {
        let mut ran = false;
        match dev.gpu_profile(|| {
            ran = true;
            run(i)
        }) {
            Ok((_, Some(t))) => times.push(t.as_secs_f64()),
            // A scope already open refuses ours before running anything.
            Err(_) if !ran => *clock = Clock::Host,
            Err(e) => return Err(e),
            Ok((_, None)) => *clock = Clock::Host,
        }
    }
    if *clock == Clock::Gpu {
        times.sort_by(f64::total_cmp);
        return Ok(times[times.len() / 2]);
    }
    let start = Instant::now();
    for _ in 0..reps {
        run(i)?;
    }
    dev.synchronize()?;
    Ok(start.elapsed().as_secs_f64() / reps as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_corrupt_lines() {
        let m = parse("dev\tk/pass0\t1x2x4\t64x64\ngarbage\n\t\t\t\nx\ty\tz\tw\textra\n\u{0}\u{1}");
        assert_eq!(m.len(), 1);
        assert_eq!(m["dev\tk/pass0\t1x2x4"], "64x64");
    }

    #[test]
    fn cache_round_trips_and_survives_corruption() {
        let dir = std::env::temp_dir().join(format!("mia-autotune-test-{}", std::process::id()));
        let mut map = HashMap::new();
        map.insert(
            "gpu a\tk/pass0\t1x8x8x8".to_string(),
            "64x64x16/4x4".to_string(),
        );
        map.insert(
            "gpu a\tk/pass1\t2x8x8x8".to_string(),
            "128x128x8/8x8".to_string(),
        );
        save_to(&dir, &map);
        assert_eq!(load_from(&dir), map);
        // Garbage appended, a truncated line, invalid UTF-8: the good lines survive.
        let mut bytes = std::fs::read(dir.join(FILE)).unwrap();
        bytes.extend_from_slice(b"half\tline\n\xff\xfe\x00junk\ngpu a\tk/pass2");
        std::fs::write(dir.join(FILE), bytes).unwrap();
        assert_eq!(load_from(&dir), map);
        // A cache that is not a file at all is empty, not an error.
        std::fs::remove_file(dir.join(FILE)).unwrap();
        std::fs::create_dir_all(dir.join(FILE)).unwrap();
        assert!(load_from(&dir).is_empty());
        save_to(&dir, &map);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Inside a caller's profile scope (which ours cannot nest in) timing falls back to the
    /// host clock instead of failing; outside one, a GPU with timestamps keeps the GPU clock.
    #[test]
    fn open_profile_scope_falls_back_to_host_clock() {
        let Some(dev) = crate::testing::gpu() else {
            return;
        };
        let runs = std::cell::Cell::new(0);
        let run = |_: usize| -> Result<()> {
            runs.set(runs.get() + 1);
            Ok(())
        };
        let mut clock = Clock::Gpu;
        dev.gpu_profile(|| time(&dev, &run, 0, 3, &mut clock))
            .expect("host timing inside a scope");
        assert_eq!(clock, Clock::Host);
        assert_eq!(runs.get(), 3);
        let mut clock = Clock::Gpu;
        time(&dev, &run, 0, 3, &mut clock).expect("timing outside a scope");
        let want = if dev.has_timestamps() {
            Clock::Gpu
        } else {
            Clock::Host
        };
        assert_eq!(clock, want);
    }

    #[test]
    fn buckets_round_up() {
        assert_eq!(bucket(&[1, 3, 128, 0]), "1x4x128x1");
    }
}
