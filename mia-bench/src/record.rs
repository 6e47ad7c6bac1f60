//! The JSON report: one [`Record`] per case × device × implementation, and the ratios between
//! implementations of the same case on the same device. `bench/torch_bench.py` writes the same
//! schema, so reports merge by concatenating their records (see [`Report::merge`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Version of the schema below; bumped when a field changes meaning.
pub const SCHEMA: u32 = 1;

/// The implementation every ratio is computed for.
pub const SUBJECT: &str = "mia";

/// Implementation names used across the suite (torch_bench.py uses the `torch-*`/`cublas-*`).
pub mod imp {
    pub const MIA: &str = "mia";
    pub const FUSION_OFF: &str = "mia-fusion-off";
    pub const HAND_LOOP: &str = "hand-loop";
    pub const NDARRAY: &str = "ndarray";
    pub const GEMM: &str = "gemm";
    /// `gemm` followed by a separate bias + GELU pass (what an unfused library does).
    pub const GEMM_THEN_PASS: &str = "gemm+pass";
    pub const ROOFLINE: &str = "roofline-copy";
    pub const TORCH_EAGER: &str = "torch-eager";
    pub const TORCH_COMPILE: &str = "torch-compile";
    pub const CUBLAS: &str = "cublas-fp32";
    pub const TORCH_SDPA: &str = "torch-sdpa";
}

/// Implementations that are other people's code: the "best peer" of a case is the fastest of
/// these on the same device. (The roofline is a bound, fusion-off is mia itself.)
pub const PEERS: &[&str] = &[
    imp::HAND_LOOP,
    imp::NDARRAY,
    imp::GEMM,
    imp::TORCH_EAGER,
    imp::TORCH_COMPILE,
    imp::CUBLAS,
    imp::TORCH_SDPA,
];

/// A whole run (or a merge of runs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema: u32,
    /// What wrote it: `mia-bench 0.1.0`, `torch_bench.py (torch 2.11.0)`, or a merge.
    pub tool: String,
    /// UTC time the run started, `YYYY-MM-DDTHH:MM:SSZ`.
    pub date: String,
    /// `full` or `quick`.
    pub mode: String,
    /// The command line that produced it.
    pub command: String,
    /// The host: CPU model and thread count, OS.
    pub host: String,
    pub records: Vec<Record>,
    /// Results that were wrong or could not be measured; a non-empty list is a failed run.
    #[serde(default)]
    pub failures: Vec<Failure>,
}

/// One implementation of one case on one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Case name, e.g. `softmax/4096` (op / row length or shape).
    pub case: String,
    /// The operation: `bias_gelu`, `chain4`, `softmax`, `layer_norm`, `rms_norm`, `matmul`, ...
    pub op: String,
    /// Sizes of the case's symbols, e.g. `{"N": 4096, "D": 4096}`.
    pub shape: BTreeMap<String, usize>,
    /// `cpu` or `gpu`.
    pub device: String,
    /// The adapter or CPU model, e.g. `NVIDIA H100 80GB HBM3 (Vulkan)`.
    pub device_name: String,
    /// Which code ran: see [`imp`].
    pub implementation: String,
    /// Dispatches per call, for mia kernels (from the kernel's fusion plan).
    #[serde(default)]
    pub passes: Option<usize>,
    /// What `median_s`/`min_s`/`max_s` were read from: `gpu-timestamp` (the GPU's own clock,
    /// first pass start to last pass end), `cuda-event`, or `wall` (host clock around the
    /// call and a synchronize).
    pub timer: String,
    pub samples: usize,
    /// Back-to-back calls each sample averages over (CPU: enough for ≥ 10 ms; PyTorch: 10).
    #[serde(default = "one")]
    pub calls_per_sample: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Median host time of one call followed by a synchronize, whatever `timer` is.
    pub wall_median_s: f64,
    /// Least bytes a call must move: every input read once and the output written once.
    pub bytes: u64,
    /// Nominal floating-point operations per call: `2·M·N·K` for matrix products; for the
    /// others, primitive ops per element (a transcendental function counts as one).
    pub flops: u64,
    /// `bytes / median_s / 1e9`.
    pub gb_per_s: f64,
    /// `flops / median_s / 1e9`.
    pub gflop_per_s: f64,
    /// ‖result − reference‖₂ / ‖reference‖₂ against a float64 reference computed on the CPU.
    #[serde(default)]
    pub rel_error: Option<f64>,
    /// For the subject (`mia`): per baseline measured for the same case and device in the
    /// same run, `baseline median_s / this median_s`. For `roofline-copy` that is the fraction
    /// of copy bandwidth reached (same bytes); for the others a speedup (> 1: mia is faster).
    #[serde(default)]
    pub ratios: BTreeMap<String, f64>,
    /// Whole-model cases: sentences embedded per second (batch / `median_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentences_per_s: Option<f64>,
    /// Anything a reader must know to interpret the numbers (e.g. no timestamp queries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

fn one() -> usize {
    1
}

/// A case that produced a wrong result or failed to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub case: String,
    pub device: String,
    pub implementation: String,
    pub message: String,
}

impl Record {
    /// True for records of the same case on the same device.
    fn same_slot(&self, other: &Record) -> bool {
        self.case == other.case && self.device == other.device
    }
}

/// Fills each subject record's `ratios` from the other records of its case and device.
pub fn compute_ratios(records: &mut [Record]) {
    let snapshot: Vec<(String, String, String, f64)> = records
        .iter()
        .map(|r| {
            (
                r.case.clone(),
                r.device.clone(),
                r.implementation.clone(),
                r.median_s,
            )
        })
        .collect();
    for r in records.iter_mut().filter(|r| r.implementation == SUBJECT) {
        r.ratios.clear();
        if r.median_s <= 0.0 {
            continue;
        }
        for (case, device, implementation, median) in &snapshot {
            if *case == r.case && *device == r.device && implementation != SUBJECT && *median > 0.0
            {
                r.ratios.insert(implementation.clone(), median / r.median_s);
            }
        }
    }
}

/// The subject's speed relative to the fastest peer of its case and device
/// (`peer median / mia median`, > 1: mia is faster) and that peer's name.
pub fn best_peer(records: &[Record], subject: &Record) -> Option<(String, f64)> {
    records
        .iter()
        .filter(|r| r.same_slot(subject) && PEERS.contains(&r.implementation.as_str()))
        .filter(|r| r.median_s > 0.0)
        .min_by(|a, b| a.median_s.total_cmp(&b.median_s))
        .filter(|_| subject.median_s > 0.0)
        .map(|p| (p.implementation.clone(), p.median_s / subject.median_s))
}

impl Report {
    /// Concatenates `other`'s records and failures into `self` and recomputes the ratios.
    pub fn merge(&mut self, other: Report) {
        self.tool = format!("{} + {}", self.tool, other.tool);
        self.command = format!("{}\n{}", self.command, other.command);
        self.records.extend(other.records);
        self.failures.extend(other.failures);
        compute_ratios(&mut self.records);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn rec(case: &str, device: &str, implementation: &str, median_s: f64) -> Record {
        Record {
            case: case.into(),
            op: "softmax".into(),
            shape: BTreeMap::from([("N".to_string(), 4), ("D".to_string(), 8)]),
            device: device.into(),
            device_name: "test".into(),
            implementation: implementation.into(),
            passes: None,
            timer: "wall".into(),
            samples: 3,
            calls_per_sample: 1,
            median_s,
            min_s: median_s,
            max_s: median_s,
            wall_median_s: median_s,
            bytes: 256,
            flops: 160,
            gb_per_s: 256.0 / median_s / 1e9,
            gflop_per_s: 160.0 / median_s / 1e9,
            rel_error: Some(1e-7),
            ratios: BTreeMap::new(),
            sentences_per_s: None,
            note: None,
        }
    }

    #[test]
    fn ratios_are_baseline_over_subject_within_case_and_device() {
        let mut records = vec![
            rec("softmax/8", "cpu", imp::MIA, 2.0),
            rec("softmax/8", "cpu", imp::ROOFLINE, 1.0),
            rec("softmax/8", "cpu", imp::NDARRAY, 10.0),
            rec("softmax/8", "gpu", imp::MIA, 1.0),
            rec("softmax/8", "gpu", imp::TORCH_EAGER, 3.0),
            rec("softmax/16", "cpu", imp::NDARRAY, 99.0),
        ];
        compute_ratios(&mut records);
        let cpu = &records[0].ratios;
        assert_eq!(cpu.len(), 2);
        assert_eq!(cpu[imp::ROOFLINE], 0.5);
        assert_eq!(cpu[imp::NDARRAY], 5.0);
        assert_eq!(records[3].ratios[imp::TORCH_EAGER], 3.0);
        assert!(records[1].ratios.is_empty());
        assert_eq!(
            best_peer(&records, &records[0]),
            Some((imp::NDARRAY.to_string(), 5.0))
        );
    }

    #[test]
    fn merge_adds_torch_ratios_and_json_round_trips() {
        let mut a = Report {
            schema: SCHEMA,
            tool: "mia-bench".into(),
            date: "2026-01-01T00:00:00Z".into(),
            mode: "quick".into(),
            command: "mia-bench".into(),
            host: "test".into(),
            records: vec![rec("softmax/8", "gpu", imp::MIA, 1.0)],
            failures: vec![],
        };
        let mut b = a.clone();
        b.records = vec![
            rec("softmax/8", "gpu", imp::TORCH_EAGER, 2.0),
            rec("softmax/8", "gpu", imp::TORCH_COMPILE, 0.5),
        ];
        a.merge(b);
        assert_eq!(a.records[0].ratios[imp::TORCH_COMPILE], 0.5);
        assert_eq!(
            best_peer(&a.records, &a.records[0]),
            Some((imp::TORCH_COMPILE.to_string(), 0.5))
        );
        let json = serde_json::to_string(&a).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.records, a.records);
    }
}
