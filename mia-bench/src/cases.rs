//! The suite: one [`Case`] per operation and shape, each listing its inputs, its float64
//! reference and its implementations. Adding a case is one entry in [`suite`] (usually one
//! call of a constructor like [`softmax`]); the harness derives everything else (bytes, the
//! roofline, checking, timing, ratios, the PyTorch run).

use mia_runtime::{Plan, Tensor};

use crate::baselines::{self, hand, nd};
use crate::kernels;
use crate::record::imp;
use crate::reference;

/// Errors of the benchmark: messages for people, never panics.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// `eps` of the normalization cases (PyTorch's default for layer norm).
pub const EPS: f32 = 1e-5;
/// The scale of the 4-op chain.
pub const CHAIN_C: f32 = 0.75;

/// An input's host data, row-major.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// The two sizes of a matrix, or an error naming the actual rank.
    pub fn dims2(&self) -> Res<[usize; 2]> {
        match self.shape[..] {
            [a, b] => Ok([a, b]),
            _ => Err(format!("expected a matrix, got shape {:?}", self.shape).into()),
        }
    }
}

/// The `i`-th input, or an error (the case table and its runners disagree).
pub fn arg<T>(t: &[T], i: usize) -> Res<&T> {
    t.get(i)
        .ok_or_else(|| format!("the case has {} inputs; its code wants #{i}", t.len()).into())
}

/// What bounds a case's speed, and so which roofline is meaningful.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Bytes: compared with a copy of the same bytes.
    Memory,
    /// Arithmetic (matrix products): compared with peers only.
    Compute,
}

/// How one implementation runs.
pub enum Runner {
    /// A mia kernel: runs on whichever device its input tensors live on.
    Mia {
        plan: fn() -> &'static Plan,
        call: fn(&[Tensor<f32>]) -> Res<Tensor<f32>>,
    },
    /// Host code (CPU only) writing the result into `out`, which it may resize or replace;
    /// `out` is kept between calls so a loop can reuse it.
    Host(fn(&[HostTensor], &mut Vec<f32>) -> Res<()>),
}

pub struct Impl {
    /// One of [`crate::record::imp`].
    pub name: &'static str,
    pub run: Runner,
}

impl Impl {
    pub fn mia(
        name: &'static str,
        plan: fn() -> &'static Plan,
        call: fn(&[Tensor<f32>]) -> Res<Tensor<f32>>,
    ) -> Impl {
        Impl {
            name,
            run: Runner::Mia { plan, call },
        }
    }

    pub fn host(name: &'static str, f: fn(&[HostTensor], &mut Vec<f32>) -> Res<()>) -> Impl {
        Impl {
            name,
            run: Runner::Host(f),
        }
    }
}

/// A random input: `shape`, uniform in `[lo, hi)`.
pub struct Input {
    pub shape: Vec<usize>,
    pub lo: f32,
    pub hi: f32,
}

impl Input {
    pub fn uniform(shape: &[usize], lo: f32, hi: f32) -> Input {
        Input {
            shape: shape.to_vec(),
            lo,
            hi,
        }
    }
}

pub struct Case {
    /// `op/row length` (or `op/shape`), unique in the suite; `--filter` matches it.
    pub name: String,
    /// The operation, also what torch_bench.py implements: see its `OPS`.
    pub op: &'static str,
    /// Sizes of the symbols, e.g. `[("N", 4096), ("D", 4096)]`.
    pub dims: Vec<(&'static str, usize)>,
    pub inputs: Vec<Input>,
    /// Elements of the (single) output.
    pub output_len: usize,
    /// Float64 result of the inputs.
    pub reference: fn(&[HostTensor]) -> Res<Vec<f64>>,
    /// Largest accepted [`reference::rel_error`].
    pub tolerance: f64,
    pub flops: u64,
    pub bound: Bound,
    /// The subject, `mia`, first.
    pub impls: Vec<Impl>,
}

impl Case {
    /// Least bytes a call moves: each input read once, the output written once (f32).
    pub fn bytes(&self) -> u64 {
        let inputs: usize = self
            .inputs
            .iter()
            .map(|i| i.shape.iter().product::<usize>())
            .sum();
        4 * (inputs + self.output_len) as u64
    }
}

/// Row lengths of the row-wise cases (a MiniLM-sized hidden dimension, a large one, a very
/// long row that a single workgroup must loop over).
pub const ROW_LENGTHS: [usize; 3] = [384, 4096, 32768];

/// Elements per tensor: 16M (64 MiB, past an H100's 50 MB L2 for in + out), 64K in `--quick`.
pub fn elements(quick: bool) -> usize {
    if quick {
        1 << 16
    } else {
        1 << 24
    }
}

/// The whole suite, in report order.
pub fn suite(quick: bool) -> Vec<Case> {
    let elems = elements(quick);
    let mut cases = Vec::new();
    for make in [bias_gelu, chain4, softmax, layer_norm, rms_norm] {
        for d in ROW_LENGTHS {
            cases.push(make((elems / d).max(1), d));
        }
    }
    // Matrix products at transformer shapes (MiniLM's projections and FFN, 384 ↔ 1536, at
    // 128 tokens and at a batch of 32 × 128 tokens) and squares.
    let squares: &[usize] = if quick { &[64] } else { &[1024, 4096] };
    let mut shapes = vec![(128, 384, 1536), (128, 1536, 384)];
    if !quick {
        shapes.extend([
            (128, 384, 384),
            (4096, 384, 384),
            (4096, 384, 1536),
            (4096, 1536, 384),
        ]);
    }
    for (m, k, n) in shapes {
        cases.push(matmul(m, k, n));
    }
    for &s in squares {
        cases.push(matmul(s, s, s));
    }
    cases.push(linear_gelu(128, 384, 1536));
    if !quick {
        cases.push(linear_gelu(4096, 1024, 4096));
    }
    // Attention per head: 16 heads of 64, sequence 256 (quick: 2 heads of 16, sequence 32),
    // MiniLM's 32 × 12 heads of 32 at 128 tokens, and 4 heads of 64 at 1024 (CPU-sized); the
    // long-sequence case is GPU-sized.
    if quick {
        cases.push(attention(2, 32, 16));
    } else {
        cases.push(attention(16, 256, 64));
        cases.push(attention(384, 128, 32));
        cases.push(attention(4, 1024, 64));
        cases.push(attention(16, 4096, 64));
    }
    cases
}

/// A case over `x[N, D]` and vectors of length `D` (uniform in the given ranges), with
/// `flops_per_element` nominal flops per element of `x`; its implementations come next.
fn rowwise(
    op: &'static str,
    n: usize,
    d: usize,
    vectors: &[(f32, f32)],
    reference: fn(&[HostTensor]) -> Res<Vec<f64>>,
    flops_per_element: u64,
) -> Case {
    let mut inputs = vec![Input::uniform(&[n, d], -4.0, 4.0)];
    inputs.extend(vectors.iter().map(|&(lo, hi)| Input::uniform(&[d], lo, hi)));
    Case {
        name: format!("{op}/{d}"),
        op,
        dims: vec![("N", n), ("D", d)],
        inputs,
        output_len: n * d,
        reference,
        tolerance: 1e-5,
        flops: flops_per_element * (n * d) as u64,
        bound: Bound::Memory,
        impls: Vec::new(),
    }
}

/// `gelu(x + b)` (exact, erf-based GELU).
pub fn bias_gelu(n: usize, d: usize) -> Case {
    Case {
        impls: vec![
            Impl::mia(imp::MIA, mia_kernels::bias_gelu::plan, |t| {
                Ok(mia_kernels::bias_gelu(arg(t, 0)?, arg(t, 1)?)?)
            }),
            Impl::mia(imp::FUSION_OFF, kernels::bias_gelu_unfused::plan, |t| {
                Ok(kernels::bias_gelu_unfused(arg(t, 0)?, arg(t, 1)?)?)
            }),
            Impl::host(imp::HAND_LOOP, hand::bias_gelu),
            Impl::host(imp::NDARRAY, nd::bias_gelu),
        ],
        // Flops: add, then GELU's scale, erf, add, two multiplies.
        ..rowwise("bias_gelu", n, d, &[(-1.0, 1.0)], reference::bias_gelu, 6)
    }
}

/// `relu(x·a + b)·c`: four elementwise ops.
pub fn chain4(n: usize, d: usize) -> Case {
    Case {
        impls: vec![
            Impl::mia(imp::MIA, kernels::chain4::plan, |t| {
                Ok(kernels::chain4(
                    arg(t, 0)?,
                    arg(t, 1)?,
                    arg(t, 2)?,
                    CHAIN_C,
                )?)
            }),
            Impl::mia(imp::FUSION_OFF, kernels::chain4_unfused::plan, |t| {
                Ok(kernels::chain4_unfused(
                    arg(t, 0)?,
                    arg(t, 1)?,
                    arg(t, 2)?,
                    CHAIN_C,
                )?)
            }),
            Impl::host(imp::HAND_LOOP, |t, out| hand::chain4(t, CHAIN_C, out)),
            Impl::host(imp::NDARRAY, |t, out| nd::chain4(t, CHAIN_C, out)),
        ],
        ..rowwise(
            "chain4",
            n,
            d,
            &[(0.5, 1.5), (-1.0, 1.0)],
            |t| reference::chain4(t, CHAIN_C),
            4,
        )
    }
}

/// Softmax over rows.
pub fn softmax(n: usize, d: usize) -> Case {
    Case {
        impls: vec![
            Impl::mia(imp::MIA, mia_kernels::softmax::plan, |t| {
                Ok(mia_kernels::softmax(arg(t, 0)?)?)
            }),
            Impl::mia(imp::FUSION_OFF, kernels::softmax_unfused::plan, |t| {
                Ok(kernels::softmax_unfused(arg(t, 0)?)?)
            }),
            Impl::host(imp::HAND_LOOP, hand::softmax),
            Impl::host(imp::NDARRAY, nd::softmax),
        ],
        // Flops: max, subtract, exp, sum, divide.
        ..rowwise("softmax", n, d, &[], reference::softmax, 5)
    }
}

/// Layer norm over rows, with weight and bias.
pub fn layer_norm(n: usize, d: usize) -> Case {
    Case {
        impls: vec![
            Impl::mia(imp::MIA, mia_kernels::layer_norm::plan, |t| {
                Ok(mia_kernels::layer_norm(
                    arg(t, 0)?,
                    arg(t, 1)?,
                    arg(t, 2)?,
                    EPS,
                )?)
            }),
            Impl::mia(imp::FUSION_OFF, kernels::layer_norm_unfused::plan, |t| {
                Ok(kernels::layer_norm_unfused(
                    arg(t, 0)?,
                    arg(t, 1)?,
                    arg(t, 2)?,
                    EPS,
                )?)
            }),
            Impl::host(imp::HAND_LOOP, |t, out| hand::layer_norm(t, EPS, out)),
            Impl::host(imp::NDARRAY, |t, out| nd::layer_norm(t, EPS, out)),
        ],
        // Flops: sum, subtract, square, sum, scale, weight, bias.
        ..rowwise(
            "layer_norm",
            n,
            d,
            &[(0.5, 1.5), (-0.5, 0.5)],
            |t| reference::layer_norm(t, EPS),
            7,
        )
    }
}

/// RMS norm over rows, with weight.
pub fn rms_norm(n: usize, d: usize) -> Case {
    Case {
        impls: vec![
            Impl::mia(imp::MIA, mia_kernels::rms_norm::plan, |t| {
                Ok(mia_kernels::rms_norm(arg(t, 0)?, arg(t, 1)?, EPS)?)
            }),
            Impl::mia(imp::FUSION_OFF, kernels::rms_norm_unfused::plan, |t| {
                Ok(kernels::rms_norm_unfused(arg(t, 0)?, arg(t, 1)?, EPS)?)
            }),
            Impl::host(imp::HAND_LOOP, |t, out| hand::rms_norm(t, EPS, out)),
            Impl::host(imp::NDARRAY, |t, out| nd::rms_norm(t, EPS, out)),
        ],
        // Flops: square, sum, scale, weight.
        ..rowwise(
            "rms_norm",
            n,
            d,
            &[(0.5, 1.5)],
            |t| reference::rms_norm(t, EPS),
            4,
        )
    }
}

/// A matrix product `a[M, K] · b[K, N]` without its mia implementation: the `gemm` baseline
/// and the float64 reference, for the matmul entries to extend with
/// `impls.insert(0, Impl::mia(imp::MIA, ...))`.
/// `a · b` against the gemm crate.
pub fn matmul(m: usize, k: usize, n: usize) -> Case {
    let mut case = matmul_baselines(m, k, n);
    case.impls.insert(
        0,
        Impl::mia(imp::MIA, mia_kernels::matmul::plan, |t| {
            Ok(mia_kernels::matmul(arg(t, 0)?, arg(t, 1)?)?)
        }),
    );
    case
}

/// `gelu(x · w + b)`: one dispatch in mia, against fusion off and gemm plus a separate pass.
pub fn linear_gelu(m: usize, k: usize, n: usize) -> Case {
    let mut case = matmul_baselines(m, k, n);
    case.name = format!("linear_gelu/{m}x{k}x{n}");
    case.op = "linear_gelu";
    case.inputs.push(Input::uniform(&[n], -1.0, 1.0));
    case.reference = reference::linear_gelu;
    case.flops += 8 * (m * n) as u64;
    case.impls = vec![
        Impl::mia(imp::MIA, mia_kernels::linear_gelu::plan, |t| {
            Ok(mia_kernels::linear_gelu(
                arg(t, 0)?,
                arg(t, 1)?,
                arg(t, 2)?,
            )?)
        }),
        Impl::mia(imp::FUSION_OFF, kernels::linear_gelu_unfused::plan, |t| {
            Ok(kernels::linear_gelu_unfused(
                arg(t, 0)?,
                arg(t, 1)?,
                arg(t, 2)?,
            )?)
        }),
        Impl::host(imp::GEMM_THEN_PASS, baselines::gemm_bias_gelu),
    ];
    case
}

/// `softmax(q·kᵀ/√d)·v` over `h` heads of `s` positions and width `d`, against the unfused
/// form on `gemm` (CPU) and against fusion off where its `h·s²` scores fit in 64 MiB.
pub fn attention(h: usize, s: usize, d: usize) -> Case {
    let shape = [h, s, d];
    let mut case = Case {
        name: format!("attention/{h}x{s}x{d}"),
        op: "attention",
        dims: vec![("H", h), ("S", s), ("D", d)],
        inputs: vec![
            Input::uniform(&shape, -1.0, 1.0),
            Input::uniform(&shape, -1.0, 1.0),
            Input::uniform(&shape, -1.0, 1.0),
        ],
        output_len: h * s * d,
        reference: reference::attention,
        tolerance: 1e-5,
        // Two products, plus the softmax's ~5 flops per score.
        flops: (4 * h * s * s * d + 5 * h * s * s) as u64,
        bound: Bound::Compute,
        impls: vec![Impl::mia(imp::MIA, mia_kernels::attention::plan, |t| {
            let scale = 1.0 / (arg(t, 0)?.shape()[2] as f32).sqrt();
            Ok(mia_kernels::attention(
                arg(t, 0)?,
                arg(t, 1)?,
                arg(t, 2)?,
                scale,
            )?)
        })],
    };
    case.impls
        .push(Impl::host(imp::GEMM_THEN_PASS, baselines::gemm_attention));
    if h * s * s <= 1 << 24 {
        case.impls.push(Impl::mia(
            imp::FUSION_OFF,
            kernels::attention_unfused::plan,
            |t| {
                let scale = 1.0 / (arg(t, 0)?.shape()[2] as f32).sqrt();
                Ok(kernels::attention_unfused(
                    arg(t, 0)?,
                    arg(t, 1)?,
                    arg(t, 2)?,
                    scale,
                )?)
            },
        ));
    }
    case
}

pub fn matmul_baselines(m: usize, k: usize, n: usize) -> Case {
    Case {
        name: format!("matmul/{m}x{k}x{n}"),
        op: "matmul",
        dims: vec![("M", m), ("K", k), ("N", n)],
        inputs: vec![
            Input::uniform(&[m, k], -1.0, 1.0),
            Input::uniform(&[k, n], -1.0, 1.0),
        ],
        output_len: m * n,
        reference: reference::matmul,
        tolerance: 1e-5,
        flops: 2 * (m * n * k) as u64,
        bound: Bound::Compute,
        impls: vec![Impl::host(imp::GEMM, baselines::gemm_matmul)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_names_are_unique_and_subject_first() {
        let cases = suite(true);
        assert_eq!(cases.len(), 20);
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len());
        for c in &cases {
            assert_eq!(c.impls[0].name, imp::MIA, "{}", c.name);
        }
    }

    /// The gemm baseline the matmul cases will use, on a shape with ragged edges.
    #[test]
    fn gemm_baseline_matches_reference() {
        let c = matmul_baselines(37, 50, 23);
        let host: Vec<HostTensor> = c
            .inputs
            .iter()
            .enumerate()
            .map(|(j, i)| {
                let len: usize = i.shape.iter().product();
                HostTensor {
                    shape: i.shape.clone(),
                    data: (0..len).map(|x| ((x * 7 + j) % 13) as f32 - 6.0).collect(),
                }
            })
            .collect();
        let want = (c.reference)(&host).unwrap();
        let Runner::Host(f) = c.impls[0].run else {
            panic!("gemm is host code")
        };
        let mut out = Vec::new();
        f(&host, &mut out).unwrap();
        assert!(crate::reference::rel_error(&out, &want) < 1e-6);
        assert!(crate::baselines::gemm_f32(&[1.0], &[1.0], &mut [0.0; 2], 1, 1, 1).is_err());
    }

    /// The fusion-off attention is the naive form: two product passes around the softmax.
    #[test]
    fn unfused_attention_is_not_flash() {
        let plan = kernels::attention_unfused::plan();
        assert!(plan.passes() >= 3, "{:#?}", plan.passes);
    }

    #[test]
    fn bytes_count_inputs_and_output_once() {
        let c = bias_gelu(8, 384);
        assert_eq!(c.bytes(), 4 * (2 * 8 * 384 + 384));
        let plan_bytes = mia_kernels::bias_gelu::plan().min_bytes(&[("N", 8), ("D", 384)]);
        assert_eq!(plan_bytes, Some(c.bytes()));
    }
}
