//! The harness: for each case, make seeded random inputs and the float64 reference, then on
//! each device check every implementation against the reference and time it, then time the
//! roofline copy over the same bytes, and finally compute the ratios.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use mia_runtime::{Device, Tensor};

use crate::baselines::{par_copy, GpuCopy};
use crate::cases::{suite, Bound, Case, HostTensor, Impl, Res, Runner};
use crate::measure::{stats, time, Method, Timing};
use crate::record::{compute_ratios, imp, Failure, Record, Report, SCHEMA};
use crate::reference::rel_error;

/// What to run.
pub struct Options {
    pub devices: Vec<Device>,
    pub quick: bool,
    pub filter: Option<String>,
    /// The unzipped all-MiniLM-L6-v2 model and its float64 reference embeddings: adds the
    /// whole-model case (see [`crate::minilm`]).
    pub minilm: Option<(PathBuf, PathBuf)>,
    /// The command line, for the report.
    pub command: String,
}

/// SplitMix64: a tiny seeded generator, so inputs are the same in every run and version.
struct Rng(u64);

impl Rng {
    /// Seeded from the case name, so each case has its own reproducible inputs.
    fn for_case(name: &str) -> Rng {
        // FNV-1a.
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)` (24 random bits).
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}

/// `cpu` or `gpu`.
pub fn device_key(dev: &Device) -> &'static str {
    if dev.is_gpu() {
        "gpu"
    } else {
        "cpu"
    }
}

/// The CPU model from /proc/cpuinfo where there is one.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

pub fn device_name(dev: &Device) -> String {
    if dev.is_gpu() {
        dev.name()
    } else {
        format!("{} ({} threads)", cpu_model(), rayon::current_num_threads())
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_from_unix(secs)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn utc_from_unix(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// What one implementation measured, before it becomes a [`Record`].
struct Measured<'a> {
    implementation: &'a str,
    timing: Timing,
    bytes: u64,
    flops: u64,
    passes: Option<usize>,
    rel_error: f64,
}

/// A record of `case` on `dev`.
fn record(case: &Case, dev: &Device, m: Measured<'_>) -> Record {
    let Measured {
        implementation,
        timing,
        bytes,
        flops,
        passes,
        rel_error,
    } = m;
    let (median, min, max) = stats(&timing.samples);
    let (wall_median, _, _) = stats(&timing.wall);
    let rate = |x: u64| {
        if median > 0.0 {
            x as f64 / median / 1e9
        } else {
            0.0
        }
    };
    Record {
        case: case.name.clone(),
        op: case.op.to_string(),
        shape: case
            .dims
            .iter()
            .map(|&(k, v)| (k.to_string(), v))
            .collect::<BTreeMap<_, _>>(),
        device: device_key(dev).to_string(),
        device_name: device_name(dev),
        implementation: implementation.to_string(),
        passes,
        timer: timing.timer.name().to_string(),
        samples: timing.samples.len(),
        calls_per_sample: timing.calls_per_sample,
        median_s: median,
        min_s: min,
        max_s: max,
        wall_median_s: wall_median,
        bytes,
        flops,
        gb_per_s: rate(bytes),
        gflop_per_s: rate(flops),
        rel_error: Some(rel_error),
        ratios: BTreeMap::new(),
        sentences_per_s: None,
        note: timing.note,
    }
}

/// Progress on stderr, so a long run shows where it is.
fn progress(r: &Record) {
    eprintln!(
        "  {:<3} {:<18} {:<15} {:>10.3} ms {:>8.1} GB/s  err {}",
        r.device,
        r.case,
        r.implementation,
        r.median_s * 1e3,
        r.gb_per_s,
        r.rel_error.map_or("-".to_string(), |e| format!("{e:.1e}"))
    );
}

/// Checks `got` against the reference; `Err` with the error and tolerance when it is off.
fn check(case: &Case, got: &[f32], want: &[f64]) -> Res<f64> {
    if got.len() != want.len() {
        return Err(format!(
            "result has {} elements, the reference {}",
            got.len(),
            want.len()
        )
        .into());
    }
    let e = rel_error(got, want);
    if e <= case.tolerance {
        Ok(e)
    } else {
        Err(format!(
            "wrong result: relative error {e:.3e} against the float64 reference exceeds {:.0e}",
            case.tolerance
        )
        .into())
    }
}

/// Checks and times one implementation; `Ok(None)` when it does not run on `dev`.
fn run_impl(
    case: &Case,
    im: &Impl,
    dev: &Device,
    method: Method,
    host: &[HostTensor],
    tensors: &[Tensor<f32>],
    want: &[f64],
) -> Res<Option<Record>> {
    let (timing, passes, err) = match &im.run {
        Runner::Mia { plan, call } => {
            let got = call(tensors)?.to_vec()?;
            let err = check(case, &got, want)?;
            drop(got);
            let timing = time(dev, method, || call(tensors).map(drop))?;
            (timing, Some(plan().passes()), err)
        }
        Runner::Host(f) if dev.is_cpu() => {
            let mut out = Vec::new();
            f(host, &mut out)?;
            let err = check(case, &out, want)?;
            let timing = time(dev, method, || f(host, &mut out))?;
            (timing, None, err)
        }
        Runner::Host(_) => return Ok(None),
    };
    let m = Measured {
        implementation: im.name,
        timing,
        bytes: case.bytes(),
        flops: case.flops,
        passes,
        rel_error: err,
    };
    Ok(Some(record(case, dev, m)))
}

/// Times a copy of `bytes / 2` bytes on `dev` (rounded up to whole `vec4`s), checked exact.
fn roofline(case: &Case, dev: &Device, method: Method, host: &[HostTensor]) -> Res<Record> {
    let len = (case.bytes() / 8).div_ceil(4) as usize * 4;
    // Copy real data (the case's first input, repeated), not zeros.
    let first = host.first().map(|t| t.data.as_slice()).unwrap_or(&[]);
    let src: Vec<f32> = if first.is_empty() {
        vec![1.0; len]
    } else {
        first.iter().copied().cycle().take(len).collect()
    };
    let timing = if dev.is_gpu() {
        let copy = GpuCopy::new(dev, src)?;
        copy.run()?;
        if !copy.verify()? {
            return Err("the GPU copy kernel's output differs from its input".into());
        }
        time(dev, method, || copy.run())?
    } else {
        let mut dst = vec![0.0f32; len];
        par_copy(&mut dst, &src);
        if dst != src {
            return Err("the parallel copy's output differs from its input".into());
        }
        time(dev, method, || {
            par_copy(&mut dst, &src);
            Ok(())
        })?
    };
    let m = Measured {
        implementation: imp::ROOFLINE,
        timing,
        bytes: 8 * len as u64,
        flops: 0,
        passes: None,
        rel_error: 0.0,
    };
    Ok(record(case, dev, m))
}

/// Runs the suite and returns the report (failures included; the caller decides the exit).
pub fn run(opts: &Options) -> Res<Report> {
    let method = Method::new(opts.quick);
    let cases: Vec<Case> = suite(opts.quick)
        .into_iter()
        .filter(|c| opts.filter.as_ref().is_none_or(|f| c.name.contains(f)))
        .collect();
    let minilm = opts.minilm.as_ref().filter(|_| {
        opts.filter.as_ref().is_none_or(|f| {
            crate::minilm::shapes(opts.quick)
                .iter()
                .any(|&b| crate::minilm::case_name(b).contains(f.as_str()))
        })
    });
    if cases.is_empty() && minilm.is_none() {
        return Err(format!(
            "no case matches --filter {:?}; cases are named like `softmax/4096`",
            opts.filter.as_deref().unwrap_or("")
        )
        .into());
    }
    let mut report = Report {
        schema: SCHEMA,
        tool: format!("mia-bench {}", env!("CARGO_PKG_VERSION")),
        date: utc_now(),
        mode: if opts.quick { "quick" } else { "full" }.to_string(),
        command: opts.command.clone(),
        host: format!(
            "{} ({} threads), {}",
            cpu_model(),
            rayon::current_num_threads(),
            std::env::consts::OS
        ),
        records: Vec::new(),
        failures: Vec::new(),
    };
    // Copies are timed once per device and byte count: cases of equal size share them.
    let mut copies: HashMap<(&'static str, u64), Record> = HashMap::new();
    for case in &cases {
        eprintln!("{} ({:?})", case.name, case.dims);
        let fail = |dev: &str, implementation: &str, e: &dyn std::fmt::Display| Failure {
            case: case.name.clone(),
            device: dev.to_string(),
            implementation: implementation.to_string(),
            message: e.to_string(),
        };
        let mut rng = Rng::for_case(&case.name);
        let host: Vec<HostTensor> = case
            .inputs
            .iter()
            .map(|i| HostTensor {
                data: (0..i.shape.iter().product::<usize>())
                    .map(|_| rng.uniform(i.lo, i.hi))
                    .collect(),
                shape: i.shape.clone(),
            })
            .collect();
        let want = match (case.reference)(&host) {
            Ok(w) => w,
            Err(e) => {
                report.failures.push(fail("-", "reference", &e));
                continue;
            }
        };
        for dev in &opts.devices {
            let key = device_key(dev);
            let tensors = match host
                .iter()
                .map(|t| Tensor::from_slice(dev, t.shape.clone(), &t.data))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(t) => t,
                Err(e) => {
                    report.failures.push(fail(key, "inputs", &e));
                    continue;
                }
            };
            for im in &case.impls {
                match run_impl(case, im, dev, method, &host, &tensors, &want) {
                    Ok(Some(r)) => {
                        progress(&r);
                        report.records.push(r);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        eprintln!("  {key:<3} {:<18} {:<15} FAILED: {e}", case.name, im.name);
                        report.failures.push(fail(key, im.name, &e));
                    }
                }
            }
            if case.bound == Bound::Memory {
                let r = match copies.get(&(key, case.bytes())) {
                    Some(r) => Ok(Record {
                        case: case.name.clone(),
                        op: case.op.to_string(),
                        shape: case.dims.iter().map(|&(k, v)| (k.to_string(), v)).collect(),
                        ..r.clone()
                    }),
                    None => roofline(case, dev, method, &host).inspect(|r| {
                        copies.insert((key, case.bytes()), r.clone());
                    }),
                };
                match r {
                    Ok(r) => {
                        progress(&r);
                        report.records.push(r);
                    }
                    Err(e) => report.failures.push(fail(key, imp::ROOFLINE, &e)),
                }
            }
        }
    }
    if let Some((dir, reference)) = minilm {
        for dev in &opts.devices {
            eprintln!("minilm ({}) on {}", dir.display(), device_key(dev));
            match crate::minilm::run(dir, reference, dev, method, opts.quick) {
                Ok(records) => {
                    for r in records {
                        progress(&r);
                        report.records.push(r);
                    }
                }
                Err(e) => {
                    eprintln!("  {:<3} minilm FAILED: {e}", device_key(dev));
                    for b in crate::minilm::shapes(opts.quick) {
                        report.failures.push(Failure {
                            case: crate::minilm::case_name(b),
                            device: device_key(dev).to_string(),
                            implementation: imp::MIA.to_string(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
    }
    compute_ratios(&mut report.records);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(utc_from_unix(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_from_unix(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_from_unix(1_790_000_000), "2026-09-21T14:13:20Z");
    }

    #[test]
    fn inputs_are_seeded_and_in_range() {
        let a: Vec<f32> = {
            let mut r = Rng::for_case("softmax/384");
            (0..1000).map(|_| r.uniform(-4.0, 4.0)).collect()
        };
        let mut r = Rng::for_case("softmax/384");
        assert!(a.iter().all(|&v| v == r.uniform(-4.0, 4.0)));
        assert!(a.iter().all(|v| (-4.0..4.0).contains(v)));
        assert!(a.iter().filter(|&&v| v == 0.0).count() < 3);
    }

    /// The whole quick suite on the CPU, filtered to one op: every implementation agrees with
    /// the reference and every mia record has its ratios.
    #[test]
    fn quick_cpu_run_checks_and_ratios() {
        let opts = Options {
            devices: vec![Device::cpu()],
            quick: true,
            filter: Some("chain4/384".into()),
            minilm: None,
            command: "test".into(),
        };
        let r = run(&opts).unwrap();
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        let names: Vec<&str> = r
            .records
            .iter()
            .map(|r| r.implementation.as_str())
            .collect();
        assert_eq!(
            names,
            [
                imp::MIA,
                imp::FUSION_OFF,
                imp::HAND_LOOP,
                imp::NDARRAY,
                imp::ROOFLINE
            ]
        );
        let mia = &r.records[0];
        assert_eq!(mia.passes, Some(1));
        assert!(r.records[1].passes.unwrap_or(0) >= 4);
        assert_eq!(mia.ratios.len(), 4);
    }
}
