//! The whole-model case: all-MiniLM-L6-v2 (`examples/minilm`, compiled by `graph!`) on batches
//! of 1 and 32 sentences of exactly 128 tokens (`--quick`: 1 × 16 and 2 × 32), in sentences per second. The same sentence and
//! the same cost model as `bench/torch_bench.py --minilm`, so the records pair with
//! sentence-transformers' (`torch-eager`) in a merged report.
//!
//! Before timing, the encoder embeds the sentences of `reference.json` (float64 embeddings of
//! the same weights) and must agree to 1e-4 per component and cosine ≥ 0.99999. The timed call
//! is the forward pass on inputs already on the device, up to its result on the device (as
//! PyTorch's `model(features)`); the timer is the host clock around a call and a synchronize,
//! as on the PyTorch side; the GPU's own time is in the note.

use std::collections::BTreeMap;
use std::path::Path;

use mia_runtime::{Device, PassKind};
use minilm::{Batch, Encoder, MiniLm, DIM};
use serde::Deserialize;

use crate::cases::Res;
use crate::measure::{stats, time, Method};
use crate::record::{imp, Record};

/// (sentences per forward pass, tokens per sentence) of the full run, and of `--quick` (a
/// smoke test of the whole path, small enough for CI's unoptimised build).
pub fn shapes(quick: bool) -> [(usize, usize); 2] {
    if quick {
        [(1, 16), (2, 32)]
    } else {
        [(1, 128), (32, 128)]
    }
}
/// The sentence, repeated past the length wanted (as torch_bench.py's `minilm_inputs`).
const WORDS: &str = "the quick brown fox jumps over the lazy dog while kernels fuse ";
/// Agreement with the float64 reference (reference.json's own tolerance).
const MAX_ABS: f64 = 1e-4;
const MIN_COSINE: f64 = 0.99999;

#[derive(Deserialize)]
struct Reference {
    cases: Vec<RefCase>,
}

#[derive(Deserialize)]
struct RefCase {
    text: String,
    embedding: Vec<f64>,
}

/// The case's name for a shape.
pub fn case_name((batch, t): (usize, usize)) -> String {
    format!("minilm/{batch}x{t}")
}

/// Max |component − reference|, min cosine and ‖got − ref‖/‖ref‖ over the reference sentences;
/// an error when they are off.
fn check(enc: &Encoder, reference: &Path) -> Res<(f64, f64, f64)> {
    let text = std::fs::read_to_string(reference)
        .map_err(|e| format!("reading {}: {e}", reference.display()))?;
    let r: Reference = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a reference file: {e}", reference.display()))?;
    let texts: Vec<&str> = r.cases.iter().map(|c| c.text.as_str()).collect();
    let got = enc.embed(&texts)?;
    let (mut max_abs, mut min_cos, mut diff2, mut ref2) = (0.0f64, 1.0f64, 0.0, 0.0);
    for (g, c) in got.iter().zip(&r.cases) {
        if g.len() != c.embedding.len() {
            return Err(format!(
                "{} floats for {:?}, the reference has {}",
                g.len(),
                c.text,
                c.embedding.len()
            )
            .into());
        }
        let (mut dot, mut gg, mut rr) = (0.0, 0.0, 0.0);
        for (&a, &b) in g.iter().zip(&c.embedding) {
            let a = f64::from(a);
            max_abs = max_abs.max((a - b).abs());
            diff2 += (a - b) * (a - b);
            (dot, gg, rr) = (dot + a * b, gg + a * a, rr + b * b);
        }
        ref2 += rr;
        min_cos = min_cos.min(dot / (gg.sqrt() * rr.sqrt()).max(f64::MIN_POSITIVE));
    }
    if !(max_abs <= MAX_ABS && min_cos >= MIN_COSINE) {
        return Err(format!(
            "wrong embeddings: max abs error {max_abs:.2e} (limit {MAX_ABS:.0e}), min cosine \
             {min_cos:.7} (limit {MIN_COSINE})"
        )
        .into());
    }
    Ok((
        max_abs,
        min_cos,
        (diff2 / ref2.max(f64::MIN_POSITIVE)).sqrt(),
    ))
}

/// Bytes and flops of one forward, as torch_bench.py's `minilm_cost`: every weight read once
/// plus the inputs and the output; 2 flops per multiply-add of the linear layers and of the
/// two attention products.
fn cost((batch, t): (usize, usize)) -> (u64, u64) {
    let params: usize = MiniLm::WEIGHTS
        .iter()
        .map(|(_, shape)| shape.iter().product::<usize>())
        .sum();
    let (h, f, layers) = (DIM, 1536, LAYERS);
    let per_layer = 2 * t * (4 * h * h + 2 * h * f) + 2 * 2 * t * t * h;
    (
        (4 * params + batch * t * 4 * 3 + batch * h * 4) as u64,
        (batch * layers * per_layer) as u64,
    )
}

/// Encoder layers of all-MiniLM-L6-v2.
const LAYERS: usize = 6;

/// Profiled forward calls per batch size, whose per-pass medians [`breakdown`] reports.
const PROFILED_CALLS: usize = 5;

/// Each pass's median time in seconds over several profiled calls (`None` when there were
/// none, or when the calls timed different numbers of passes).
fn median_passes(runs: &[Vec<std::time::Duration>]) -> Option<Vec<f64>> {
    let n = runs.first()?.len();
    if runs.iter().any(|r| r.len() != n) {
        return None;
    }
    Some(
        (0..n)
            .map(|i| {
                let ts: Vec<f64> = runs.iter().map(|r| r[i].as_secs_f64()).collect();
                stats(&ts).0
            })
            .collect(),
    )
}

/// Time per kind of pass (GPU: its own clock; CPU: host clock), e.g. `; by pass: matmul 4.10 ms (30), attention 0.61 ms (6), …`,
/// then the products by their place in a layer, summed over the layers, e.g.
/// `; products per layer: #1 (2×) 0.80 ms, …` (`2×`: two products in one pass)
/// (empty when the passes timed are not the plan's, e.g. a pass dispatched in chunks).
fn breakdown(passes: &[f64]) -> String {
    let plan = MiniLm::plan();
    if passes.len() != plan.passes() {
        return String::new();
    }
    let mut kinds: Vec<(&str, f64, usize)> = Vec::new();
    for (p, t) in plan.passes.iter().zip(passes) {
        let kind = match p.kind {
            PassKind::MatMul { .. } => "matmul",
            PassKind::Attention { .. } => "attention",
            PassKind::Rows { .. } => "rows",
            PassKind::Elementwise => "elementwise",
            PassKind::Gather => "gather",
            PassKind::Causal => "causal",
        };
        match kinds.iter_mut().find(|k| k.0 == kind) {
            Some(k) => (k.1, k.2) = (k.1 + t, k.2 + 1),
            None => kinds.push((kind, *t, 1)),
        }
    }
    // The products by their place in a layer (the plan repeats per layer): the j-th product
    // of every layer is one entry, with how many products its pass computes.
    let mm: Vec<(usize, f64)> = plan
        .passes
        .iter()
        .zip(passes)
        .filter_map(|(p, t)| match p.kind {
            PassKind::MatMul { products } => Some((products, *t)),
            _ => None,
        })
        .collect();
    let per_layer = mm.len() / LAYERS;
    let products: Vec<String> = if per_layer > 0 && mm.len().is_multiple_of(LAYERS) {
        (0..per_layer)
            .map(|j| {
                let t: f64 = mm.iter().skip(j).step_by(per_layer).map(|m| m.1).sum();
                format!("#{} ({}×) {:.3} ms", j + 1, mm[j].0, t * 1e3)
            })
            .collect()
    } else {
        Vec::new()
    };
    let parts: Vec<String> = kinds
        .iter()
        .map(|(k, t, n)| format!("{k} {:.3} ms ({n})", t * 1e3))
        .collect();
    format!(
        "; by pass: {}; products per layer: {}",
        parts.join(", "),
        products.join(", ")
    )
}

/// One record per batch size: checked against `reference`, then timed on `dev`.
pub fn run(
    dir: &Path,
    reference: &Path,
    dev: &Device,
    method: Method,
    quick: bool,
) -> Res<Vec<Record>> {
    let enc = Encoder::open(dir, dev)?;
    let (max_abs, min_cos, rel) = check(&enc, reference)?;
    let mut records = Vec::new();
    for (batch, t) in shapes(quick) {
        let ids = enc.tokenize_exact(&WORDS.repeat(t / 4 + 1), t)?;
        let rows: Vec<&[u32]> = (0..batch).map(|_| ids.as_slice()).collect();
        let inputs = enc.upload(&Batch::new(&rows))?;
        let timing = time(dev, method, || {
            enc.forward(&inputs).map(drop).map_err(Into::into)
        })?;
        let (median, min, max) = stats(&timing.wall);
        // More calls, profiled: where the time goes, each pass's median over the calls (one
        // call on a noisy host moved whole kinds of pass by 2x).
        let mut runs = Vec::new();
        for _ in 0..if quick { 1 } else { PROFILED_CALLS } {
            let (r, passes) = dev.profile_passes(|| Ok(enc.forward(&inputs)))?;
            r?;
            dev.synchronize()?;
            runs.extend(passes);
        }
        let passes = median_passes(&runs);
        let gpu_time = if dev.is_gpu() {
            // Host time to record a call's passes (the GPU starts only when they are submitted).
            let mut record = Vec::new();
            for _ in 0..method.samples.max(1) {
                let t = std::time::Instant::now();
                let y = enc.forward(&inputs)?;
                record.push(t.elapsed().as_secs_f64());
                drop(y);
                dev.synchronize()?;
            }
            format!(
                "; {} median {:.3} ms; host recording {:.3} ms",
                timing.timer.name(),
                stats(&timing.samples).0 * 1e3,
                stats(&record).0 * 1e3
            )
        } else {
            String::new()
        };
        let by_pass = passes.map_or(String::new(), |p| breakdown(&p));
        let (bytes, flops) = cost((batch, t));
        let rate = |x: u64| x as f64 / median.max(f64::MIN_POSITIVE) / 1e9;
        records.push(Record {
            case: case_name((batch, t)),
            op: "minilm".into(),
            shape: BTreeMap::from([("B".to_string(), batch), ("T".to_string(), t)]),
            device: crate::run::device_key(dev).to_string(),
            device_name: crate::run::device_name(dev),
            implementation: imp::MIA.into(),
            passes: Some(MiniLm::plan().passes()),
            timer: "wall".into(),
            samples: timing.wall.len(),
            calls_per_sample: timing.calls_per_sample,
            median_s: median,
            min_s: min,
            max_s: max,
            wall_median_s: median,
            bytes,
            flops,
            gb_per_s: rate(bytes),
            gflop_per_s: rate(flops),
            rel_error: Some(rel),
            ratios: BTreeMap::new(),
            sentences_per_s: Some(batch as f64 / median.max(f64::MIN_POSITIVE)),
            note: Some(format!(
                "forward on {batch} pre-tokenized {t}-token sentences, host clock around a call \
                 and a synchronize{gpu_time}{by_pass}; vs the float64 reference: max abs error \
                 {max_abs:.1e}, min cosine {min_cos:.9}"
            )),
        });
    }
    Ok(records)
}
