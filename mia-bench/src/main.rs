//! mia's benchmark suite: every case checked against a float64 reference, then timed against
//! baselines measured in the same run.
//!
//! ```text
//! cargo run --release -p mia-bench -- [--device cpu|gpu|all|auto] [--json FILE] [--svg FILE]
//!                                     [--quick] [--filter SUBSTR] [--verbose]
//!                                     [--minilm DIR [--minilm-reference FILE]]
//! mia-bench report --mia A.json [--torch B.json] --out DIR
//! ```
//!
//! The run prints a summary table, writes every measurement as JSON (`--json`) and a chart
//! (`--svg`, else next to the JSON). A wrong result or a failed case is listed at the end and
//! makes the exit status 1. `report` merges a mia-bench JSON with the one
//! `bench/torch_bench.py` writes into `DIR/report.md`, `DIR/chart.svg` and `DIR/merged.json`.
//!
//! # Method
//! Inputs are seeded pseudo-random numbers (never zeros), the same in every run. Each
//! implementation's result is compared with a float64 reference before it is timed
//! (‖result − reference‖₂/‖reference‖₂ ≤ 1e-5). Each timing warms up for ≥ 0.5 s, then takes
//! the median of 20 samples (`--quick`: 0.05 s, 3 samples, tiny shapes: a smoke test, not a
//! measurement). On the CPU a sample is the mean of back-to-back calls lasting ≥ 10 ms. On a GPU, each call is timed from GPU timestamps when the adapter has them
//! (`Device::gpu_profile`; `timer: "gpu-timestamp"`), and host wall time around a call and a
//! synchronize is sampled too (`wall_median_s`).
//!
//! # Baselines
//! - `roofline-copy`: a copy of the same bytes (half read, half written): a parallel memcpy on
//!   the CPU, a vec4 WGSL copy dispatched like a mia pass on the GPU. Memory-bound cases only.
//! - `mia-fusion-off`: the same kernel body compiled with `#[kernel(fusion = false)]`.
//! - `hand-loop`: rayon-parallel Rust loops as a careful programmer writes them.
//! - `ndarray`: the NumPy-style pipeline, an operator per pass with temporaries.
//! - `gemm`: the `gemm` crate (candle's CPU matmul), for matrix products.
//! - `torch-eager`, `torch-compile`, `cublas-fp32`, `torch-sdpa`: from `bench/torch_bench.py`.
//!
//! # JSON schema (version 1)
//! ```text
//! { "schema": 1, "tool": "mia-bench 0.1.0", "date": "2026-11-20T10:00:00Z",
//!   "mode": "full" | "quick", "command": "...", "host": "CPU model (N threads), linux",
//!   "records": [ {
//!       "case": "softmax/4096", "op": "softmax", "shape": {"N": 4096, "D": 4096},
//!       "device": "cpu" | "gpu", "device_name": "NVIDIA H100 80GB HBM3 (Vulkan)",
//!       "implementation": "mia" | "mia-fusion-off" | "hand-loop" | "ndarray" | "gemm"
//!                       | "roofline-copy" | "torch-eager" | "torch-compile" | "cublas-fp32"
//!                       | "torch-sdpa",
//!       "passes": 1 | null,            // dispatches per call (mia kernels)
//!       "timer": "gpu-timestamp" | "cuda-event" | "wall",
//!       "samples": 20, "median_s": ..., "min_s": ..., "max_s": ...,   // from `timer`
//!       "calls_per_sample": 1,         // back-to-back calls a sample averages (CPU, torch)
//!       "wall_median_s": ...,          // host time of a call + synchronize
//!       "bytes": ...,                  // inputs read once + output written once
//!       "flops": ...,                  // nominal: 2MNK for matmul, ops × elements otherwise
//!       "gb_per_s": ..., "gflop_per_s": ...,          // bytes or flops / median_s / 1e9
//!       "rel_error": 1.2e-7 | null,    // vs the float64 reference
//!       "ratios": { "roofline-copy": 0.93, "ndarray": 12.5, ... },    // mia records only:
//!                                      // baseline median_s / mia median_s, same case+device
//!       "sentences_per_s": 2887.0,     // whole-model cases only: batch / median_s
//!       "note": "..."                  // optional, e.g. why the timer is wall time
//!   } ],
//!   "failures": [ { "case", "device", "implementation", "message" } ] }
//! ```
//!
//! # Adding a case
//! Add an entry to [`cases::suite`]: a [`cases::Case`] with its inputs, float64 reference and
//! implementations. A matrix product, for example (`matmul_baselines` supplies the inputs,
//! the reference and the `gemm` baseline; `bench/torch_bench.py` already knows `matmul`):
//! ```ignore
//! for (m, k, n) in [(1024, 1024, 1024), (4096, 4096, 4096), (128, 384, 1536)] {
//!     let mut case = cases::matmul_baselines(m, k, n);
//!     case.impls.insert(0, Impl::mia(imp::MIA, kernels::matmul::plan, |t| {
//!         Ok(kernels::matmul(arg(t, 0)?, arg(t, 1)?)?)
//!     }));
//!     cases.push(case);
//! }
//! ```

mod baselines;
mod cases;
mod chart;
mod kernels;
mod measure;
mod minilm;
mod record;
mod reference;
mod report;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use mia_runtime::Device;

use crate::cases::Res;
use crate::record::Report;

#[derive(Parser)]
#[command(
    name = "mia-bench",
    version,
    about = "mia's benchmark suite: fused kernels against the memory roofline, fusion off, \
             hand-written loops, ndarray, gemm (and PyTorch, via bench/torch_bench.py)",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Where to run: `cpu`, `gpu`, `all` (both; an error without a GPU), or `auto` (the CPU,
    /// plus the GPU when there is one).
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// Write every measurement here as JSON (schema in the crate docs and BENCHMARKS.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the chart here (default: next to the JSON, with `.svg`).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Tiny shapes, short warm-up, 3 samples: a smoke test of correctness, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Only cases whose name contains this (e.g. `softmax`, `/4096`).
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Also run the whole-model case: all-MiniLM-L6-v2 from this folder (the unzipped
    /// model.zip), batches of 1 and 32 sentences of 128 tokens.
    #[arg(long, value_name = "DIR")]
    minilm: Option<PathBuf>,
    /// The float64 reference embeddings the MiniLM case is checked against first.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "../shared/minilm/reference.json"
    )]
    minilm_reference: PathBuf,
    /// Also print every measurement, not only the summary.
    #[arg(long)]
    verbose: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    Cpu,
    Gpu,
    All,
    Auto,
}

#[derive(Subcommand)]
enum Command {
    /// Merge a mia-bench JSON with bench/torch_bench.py's into DIR/report.md (Markdown table),
    /// DIR/chart.svg and DIR/merged.json.
    Report {
        /// JSON written by `mia-bench --json`.
        #[arg(long, value_name = "FILE")]
        mia: PathBuf,
        /// JSON written by `bench/torch_bench.py` (same schema).
        #[arg(long, value_name = "FILE")]
        torch: Option<PathBuf>,
        /// Folder for the report (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

fn devices(arg: DeviceArg) -> Res<Vec<Device>> {
    let gpu = || Device::gpu().map_err(|e| format!("--device needs a GPU: {e}"));
    Ok(match arg {
        DeviceArg::Cpu => vec![Device::cpu()],
        DeviceArg::Gpu => vec![gpu()?],
        DeviceArg::All => vec![Device::cpu(), gpu()?],
        DeviceArg::Auto => match Device::gpu() {
            Ok(g) => vec![Device::cpu(), g],
            Err(e) => {
                eprintln!("mia-bench: no GPU, running on the CPU only ({e})");
                vec![Device::cpu()]
            }
        },
    })
}

fn write(path: &Path, contents: &str) -> Res<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("creating folder {}: {e}", dir.display()))?;
    }
    std::fs::write(path, contents).map_err(|e| format!("writing {}: {e}", path.display()).into())
}

fn read_report(path: &Path) -> Res<Report> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let report: Report = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a mia-bench report: {e}", path.display()))?;
    if report.schema != record::SCHEMA {
        return Err(format!(
            "{} has schema version {}, this mia-bench reads {}",
            path.display(),
            report.schema,
            record::SCHEMA
        )
        .into());
    }
    Ok(report)
}

/// Runs the suite; `Ok(false)` when some case failed.
fn bench(args: &RunArgs) -> Res<bool> {
    let opts = run::Options {
        devices: devices(args.device)?,
        quick: args.quick,
        filter: args.filter.clone(),
        minilm: args
            .minilm
            .clone()
            .map(|dir| (dir, args.minilm_reference.clone())),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    for d in &opts.devices {
        eprintln!("device: {}", d.name());
    }
    let report = run::run(&opts)?;
    if args.verbose {
        println!("{}", report::detail_text(&report));
    }
    print!("{}", report::text(&report));
    if let Some(path) = &args.json {
        write(path, &serde_json::to_string_pretty(&report)?)?;
        eprintln!("wrote {}", path.display());
    }
    let svg = args
        .svg
        .clone()
        .or_else(|| args.json.as_ref().map(|j| j.with_extension("svg")));
    if let Some(path) = svg {
        if report.records.is_empty() {
            eprintln!("no results: no chart written");
        } else {
            write(&path, &chart::svg(&report)?)?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(report.failures.is_empty())
}

/// Merges reports into `out`; `Ok(false)` when either had failures.
fn merge(mia: &Path, torch: Option<&Path>, out: &Path) -> Res<bool> {
    let mut report = read_report(mia)?;
    if let Some(torch) = torch {
        report.merge(read_report(torch)?);
    }
    write(
        &out.join("merged.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    write(&out.join("chart.svg"), &chart::svg(&report)?)?;
    write(
        &out.join("report.md"),
        &report::markdown(&report, Some("chart.svg")),
    )?;
    print!("{}", report::text(&report));
    eprintln!("wrote {}/report.md, chart.svg, merged.json", out.display());
    Ok(report.failures.is_empty())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Report { mia, torch, out }) => merge(mia, torch.as_deref(), out),
        None => bench(&cli.run),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("mia-bench: some cases failed (listed above)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("mia-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
