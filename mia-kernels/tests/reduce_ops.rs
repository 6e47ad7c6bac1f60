//! Reductions, softmax, norms, the library's row kernels, transpose and reshape, on every
//! device against float64 references (`common::Arr`), over seeded random shapes with odd
//! sizes, size-1 and empty dims, long rows (12,345) and extreme values.
//!
//! Tolerances (relative norm ‖got − ref‖/‖ref‖ in float64, plus the per-element, finiteness
//! and ±inf checks of `common::check`):
//!
//! | op                                                   | CPU  | GPU  | worst measured  |
//! |------------------------------------------------------|------|------|-----------------|
//! | max, min, transpose, reshape, split/merge heads      | 0    | 0    | 0               |
//! | sum, mean (rows up to 12,345; data in ±1)            | 1e-5 | 1e-5 | 1e-6 / 4e-7     |
//! | x − mean, x / sum, two-axis and tuple combinations   | 1e-5 | 1e-5 | 3e-7 / 2.5e-6   |
//! | softmax, log_softmax (any axis, logits up to ±1e3)   | 1e-5 | 2e-5 | 3e-7 / 1.2e-7   |
//! | layer_norm, rms_norm, add_layer_norm                 | 1e-5 | 2e-5 | 1e-7 / 1e-7     |
//! | layer_norm of data offset by 1e4 (spread 1; f32 mean)| 1e-2 | 1e-2 | 2e-3 / 2.6e-3   |
//! | integer sum / max / min                              | exact| exact|                 |
mod common;

use common::*;
use mia_runtime::prelude::*;
use rand::rngs::StdRng;
use rand::Rng;

type K1 = fn(&Tensor<f32>) -> Result<Tensor<f32>, Error>;

const SUM_TOL: f64 = 1e-5;
fn soft_tol(dev: &Device) -> f64 {
    if dev.is_gpu() {
        2e-5
    } else {
        1e-5
    }
}

/// Runs a one-input kernel on `x` and compares with `want`.
fn run1(dev: &Device, what: &str, k: K1, shape: &[usize], x: &[f32], want: &Arr, tol: f64) {
    let what = format!("{what} {shape:?}");
    let got = fetch(&what, k(&tensor(dev, shape, x)), &want.shape);
    check(&what, dev, &got, want, tol);
}

/// Rank-2 shapes: odd sizes, 1s, around the CPU lane width (16) and the GPU workgroup (256),
/// many short rows (the GPU's subgroup-per-row form), plus random ones. Long rows (12,345) are in `long_rows_and_columns`: on lavapipe every
/// row is a workgroup (~50 µs), so a [12,345, 3] softmax costs 0.6 s there.
fn shapes2(rng: &mut StdRng) -> Vec<[usize; 2]> {
    let mut v = vec![
        [1, 1],
        [1, 7],
        [7, 1],
        [3, 17],
        [17, 3],
        [2, 15],
        [2, 16],
        [2, 255],
        [2, 256],
        [2, 257],
        [5, 1023],
        [1023, 5],
        [4, 8],
        [8, 4],
        [12, 1024],
        // Enough short rows for one subgroup per row on GPUs with subgroups (at least
        // 2048 rows of at most 1024).
        [2048, 1],
        [2049, 7],
        [2500, 384],
    ];
    for _ in 0..5 {
        v.push([rng.random_range(1..40), rng.random_range(1..600)]);
    }
    v
}

fn shapes3(rng: &mut StdRng) -> Vec<[usize; 3]> {
    let mut v = vec![
        [1, 1, 1],
        [2, 3, 5],
        [3, 1, 17],
        [1, 7, 1],
        [4, 33, 9],
        [2, 5, 300],
    ];
    for _ in 0..4 {
        v.push([
            rng.random_range(1..8),
            rng.random_range(1..40),
            rng.random_range(1..70),
        ]);
    }
    v
}

// ---- sum / max / min / mean over every axis -------------------------------------------------

#[kernel]
fn sum0(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> {
    x.sum(0)
}
#[kernel]
fn sum1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.sum(1)
}
#[kernel]
fn sum_m1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.sum(-1)
}
#[kernel]
fn max0(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> {
    x.max(0)
}
#[kernel]
fn max1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.max(1)
}
#[kernel]
fn max_m1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.max(-1)
}
#[kernel]
fn min0(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> {
    x.min(0)
}
#[kernel]
fn min1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.min(1)
}
#[kernel]
fn min_m1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.min(-1)
}
#[kernel]
fn mean0(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> {
    x.mean(0)
}
#[kernel]
fn mean1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.mean(1)
}
#[kernel]
fn mean_m1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.mean(-1)
}
#[kernel]
fn sum3_0(x: Tensor<f32, A, B, C>) -> Tensor<f32, 1, B, C> {
    x.sum(0)
}
#[kernel]
fn sum3_1(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, 1, C> {
    x.sum(1)
}
#[kernel]
fn sum3_2(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, 1> {
    x.sum(2)
}
#[kernel]
fn max3_0(x: Tensor<f32, A, B, C>) -> Tensor<f32, 1, B, C> {
    x.max(0)
}
#[kernel]
fn max3_1(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, 1, C> {
    x.max(-2)
}
#[kernel]
fn max3_2(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, 1> {
    x.max(-1)
}
#[kernel]
fn min3_0(x: Tensor<f32, A, B, C>) -> Tensor<f32, 1, B, C> {
    x.min(-3)
}
#[kernel]
fn min3_1(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, 1, C> {
    x.min(1)
}
#[kernel]
fn min3_2(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, 1> {
    x.min(2)
}
#[kernel]
fn mean3_0(x: Tensor<f32, A, B, C>) -> Tensor<f32, 1, B, C> {
    x.mean(0)
}
#[kernel]
fn mean3_1(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, 1, C> {
    x.mean(1)
}
#[kernel]
fn mean3_2(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, 1> {
    x.mean(2)
}

type Red = fn(&Arr, isize) -> Arr;

/// (name, kernel, axis, reference, exact?)
const REDUCTIONS2: &[(&str, K1, isize, Red, bool)] = &[
    ("sum(0)", sum0, 0, Arr::sum, false),
    ("sum(1)", sum1, 1, Arr::sum, false),
    ("sum(-1)", sum_m1, -1, Arr::sum, false),
    ("max(0)", max0, 0, Arr::max, true),
    ("max(1)", max1, 1, Arr::max, true),
    ("max(-1)", max_m1, -1, Arr::max, true),
    ("min(0)", min0, 0, Arr::min, true),
    ("min(1)", min1, 1, Arr::min, true),
    ("min(-1)", min_m1, -1, Arr::min, true),
    ("mean(0)", mean0, 0, Arr::mean, false),
    ("mean(1)", mean1, 1, Arr::mean, false),
    ("mean(-1)", mean_m1, -1, Arr::mean, false),
];

const REDUCTIONS3: &[(&str, K1, isize, Red, bool)] = &[
    ("sum(0)", sum3_0, 0, Arr::sum, false),
    ("sum(1)", sum3_1, 1, Arr::sum, false),
    ("sum(2)", sum3_2, 2, Arr::sum, false),
    ("max(0)", max3_0, 0, Arr::max, true),
    ("max(-2)", max3_1, 1, Arr::max, true),
    ("max(-1)", max3_2, 2, Arr::max, true),
    ("min(-3)", min3_0, 0, Arr::min, true),
    ("min(1)", min3_1, 1, Arr::min, true),
    ("min(2)", min3_2, 2, Arr::min, true),
    ("mean(0)", mean3_0, 0, Arr::mean, false),
    ("mean(1)", mean3_1, 1, Arr::mean, false),
    ("mean(2)", mean3_2, 2, Arr::mean, false),
];

#[test]
fn reductions_over_every_axis() {
    let _serial = serial();
    let mut rng = rng(11);
    for dev in devices() {
        for shape in shapes2(&mut rng) {
            let x = uniform(&mut rng, shape[0] * shape[1], -1.0, 1.0);
            let ax = Arr::new(&shape, &x);
            for &(name, k, axis, r, exact) in REDUCTIONS2 {
                let tol = if exact { 0.0 } else { SUM_TOL };
                run1(&dev, name, k, &shape, &x, &r(&ax, axis), tol);
            }
        }
        for shape in shapes3(&mut rng) {
            let x = uniform(&mut rng, shape.iter().product(), -1.0, 1.0);
            let ax = Arr::new(&shape, &x);
            for &(name, k, axis, r, exact) in REDUCTIONS3 {
                let tol = if exact { 0.0 } else { SUM_TOL };
                run1(&dev, name, k, &shape, &x, &r(&ax, axis), tol);
            }
        }
    }
}

/// Empty tensors: an empty outer dim gives an empty result; reducing an empty axis gives the
/// identity (sum 0, max -inf, min +inf).
#[test]
fn reductions_of_empty_tensors() {
    let _serial = serial();
    for dev in devices() {
        for shape in [[0, 5], [5, 0], [0, 0]] {
            let ax = Arr::new(&shape, &[]);
            for &(name, k, axis, r, _) in REDUCTIONS2 {
                if name.starts_with("mean") && shape[axis.rem_euclid(2) as usize] == 0 {
                    continue; // 0 / 0
                }
                run1(&dev, name, k, &shape, &[], &r(&ax, axis), 0.0);
            }
        }
        let ax = Arr::new(&[2, 0, 3], &[]);
        for &(name, k, axis, r, _) in REDUCTIONS3 {
            if !name.starts_with("mean") || axis != 1 {
                run1(&dev, name, k, &[2, 0, 3], &[], &r(&ax, axis), 0.0);
            }
        }
    }
}

// ---- reductions broadcast back, two axes, tuples --------------------------------------------

#[kernel]
fn center_rows(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x - x.mean(-1)
}
#[kernel]
fn center_cols(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x - x.mean(0)
}
#[kernel]
fn normalize_cols(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x / x.sum(0)
}
#[kernel]
fn sub_max_mid(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, C> {
    x - x.max(1)
}
#[kernel]
fn variance(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    let xc = x - x.mean(-1);
    (xc * xc).mean(-1)
}
#[kernel]
fn range_rows(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    x.max(-1) - x.min(-1)
}
#[kernel]
fn count_rows(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    (x * 0.0 + 1.0).sum(-1)
}
#[kernel]
fn two_axes(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x - x.mean(-1) - x.mean(0)
}
#[kernel]
fn total(x: Tensor<f32, N, D>) -> Tensor<f32, 1, 1> {
    x.sum(1).sum(0)
}
#[kernel]
fn softmax_both(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(softmax(x, -1), 0)
}
#[kernel]
fn col_then_row(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    (x - x.max(0)).sum(-1)
}
#[kernel]
fn reduce_size1(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    (x.max(-1) * 2.0).sum(-1)
}
#[kernel]
fn tuple_axes(x: Tensor<f32, N, D>) -> (Tensor<f32, N, 1>, Tensor<f32, 1, D>) {
    (x.sum(-1), x.sum(0))
}
#[kernel]
fn tuple_row(x: Tensor<f32, N, D>) -> (Tensor<f32, N, D>, Tensor<f32, N, 1>, Tensor<f32, N, 1>) {
    (softmax(x, -1), x.max(-1), x.mean(-1))
}

#[test]
fn reductions_broadcast_back_and_combine() {
    let _serial = serial();
    let mut rng = rng(12);
    for dev in devices() {
        let st = soft_tol(&dev);
        for shape in shapes2(&mut rng) {
            let x = uniform(&mut rng, shape[0] * shape[1], -1.0, 1.0);
            let xp: Vec<f32> = x.iter().map(|v| v + 1.5).collect();
            let (ax, ap) = (Arr::new(&shape, &x), Arr::new(&shape, &xp));
            let cases: &[(&str, K1, &[f32], Arr, f64)] = &[
                (
                    "x - x.mean(-1)",
                    center_rows,
                    &x,
                    ax.sub(&ax.mean(-1)),
                    SUM_TOL,
                ),
                (
                    "x - x.mean(0)",
                    center_cols,
                    &x,
                    ax.sub(&ax.mean(0)),
                    SUM_TOL,
                ),
                (
                    "x / x.sum(0)",
                    normalize_cols,
                    &xp,
                    ap.div(&ap.sum(0)),
                    SUM_TOL,
                ),
                (
                    "variance",
                    variance,
                    &x,
                    {
                        let xc = ax.sub(&ax.mean(-1));
                        xc.mul(&xc).mean(-1)
                    },
                    SUM_TOL,
                ),
                (
                    "max - min",
                    range_rows,
                    &x,
                    ax.max(-1).sub(&ax.min(-1)),
                    1e-7,
                ),
                ("count", count_rows, &x, ax.map(|_| 1.0).sum(-1), 0.0),
                (
                    "x - mean(-1) - mean(0)",
                    two_axes,
                    &x,
                    ax.sub(&ax.mean(-1)).sub(&ax.mean(0)),
                    SUM_TOL,
                ),
                ("sum(1).sum(0)", total, &x, ax.sum(1).sum(0), SUM_TOL),
                (
                    "softmax(softmax(x,-1),0)",
                    softmax_both,
                    &x,
                    ax.softmax(-1).softmax(0),
                    st,
                ),
                (
                    "(x - max(0)).sum(-1)",
                    col_then_row,
                    &x,
                    ax.sub(&ax.max(0)).sum(-1),
                    SUM_TOL,
                ),
                (
                    "(max(-1)*2).sum(-1)",
                    reduce_size1,
                    &x,
                    ax.max(-1).map(|v| 2.0 * v),
                    0.0,
                ),
            ];
            for (name, k, data, want, tol) in cases {
                run1(&dev, name, *k, &shape, data, want, *tol);
            }
            let tx = tensor(&dev, &shape, &x);
            let (a, b) = tuple_axes(&tx).unwrap();
            check(
                "(sum(-1), sum(0)).0",
                &dev,
                &a.to_vec().unwrap(),
                &ax.sum(-1),
                SUM_TOL,
            );
            check(
                "(sum(-1), sum(0)).1",
                &dev,
                &b.to_vec().unwrap(),
                &ax.sum(0),
                SUM_TOL,
            );
            let (s, m, mu) = tuple_row(&tx).unwrap();
            check(
                "(softmax, max, mean).0",
                &dev,
                &s.to_vec().unwrap(),
                &ax.softmax(-1),
                st,
            );
            check(
                "(softmax, max, mean).1",
                &dev,
                &m.to_vec().unwrap(),
                &ax.max(-1),
                0.0,
            );
            check(
                "(softmax, max, mean).2",
                &dev,
                &mu.to_vec().unwrap(),
                &ax.mean(-1),
                SUM_TOL,
            );
        }
        for shape in shapes3(&mut rng) {
            let x = uniform(&mut rng, shape.iter().product(), -1.0, 1.0);
            let ax = Arr::new(&shape, &x);
            run1(
                &dev,
                "x - x.max(1)",
                sub_max_mid,
                &shape,
                &x,
                &ax.sub(&ax.max(1)),
                1e-7,
            );
        }
    }
}

// ---- softmax, log_softmax, norms ------------------------------------------------------------

#[kernel]
fn softmax_last(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, -1)
}
#[kernel]
fn softmax_first(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, 0)
}
#[kernel]
fn softmax_manual(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    let e = exp(x - x.max(-1));
    e / e.sum(-1)
}
#[kernel]
fn softmax_manual0(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    let e = (x - x.max(0)).exp();
    e / e.sum(0)
}
#[kernel]
fn softmax_mid(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, C> {
    softmax(x, 1)
}
#[kernel]
fn log_softmax_manual(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x - x.max(-1) - ln(exp(x - x.max(-1)).sum(-1))
}
#[kernel]
fn softmax_scaled(x: Tensor<f32, N, D>, scale: f32) -> Tensor<f32, N, D> {
    softmax(x * scale, -1)
}

#[test]
fn softmax_on_every_axis() {
    let _serial = serial();
    let mut rng = rng(13);
    for dev in devices() {
        let st = soft_tol(&dev);
        for shape in shapes2(&mut rng) {
            for (lo, hi) in [(-5.0, 5.0), (100.0, 900.0), (-1e3, 1e3)] {
                let x = uniform(&mut rng, shape[0] * shape[1], lo, hi);
                let ax = Arr::new(&shape, &x);
                let cases: &[(&str, K1, Arr)] = &[
                    ("softmax(x, -1)", softmax_last, ax.softmax(-1)),
                    ("softmax(x, 0)", softmax_first, ax.softmax(0)),
                    ("lib softmax", mia_kernels::softmax, ax.softmax(-1)),
                    ("manual softmax", softmax_manual, ax.softmax(-1)),
                    ("manual softmax axis 0", softmax_manual0, ax.softmax(0)),
                    (
                        "lib log_softmax",
                        mia_kernels::log_softmax,
                        ax.log_softmax(-1),
                    ),
                    ("manual log_softmax", log_softmax_manual, ax.log_softmax(-1)),
                ];
                for (name, k, want) in cases {
                    run1(
                        &dev,
                        &format!("{name} in [{lo}, {hi}]"),
                        *k,
                        &shape,
                        &x,
                        want,
                        st,
                    );
                }
                let got = fetch(
                    "scaled",
                    softmax_scaled(&tensor(&dev, &shape, &x), 0.125),
                    &shape,
                );
                check(
                    "softmax(x * 0.125)",
                    &dev,
                    &got,
                    &ax.map(|v| v * 0.125).softmax(-1),
                    st,
                );
            }
        }
        for shape in shapes3(&mut rng) {
            let x = uniform(&mut rng, shape.iter().product(), -5.0, 5.0);
            let ax = Arr::new(&shape, &x);
            run1(
                &dev,
                "softmax(x, 1)",
                softmax_mid,
                &shape,
                &x,
                &ax.softmax(1),
                st,
            );
        }
        // Constant rows (all -1e3 / all +1e3): uniform, not NaN.
        for v in [-1e3f32, 1e3, 0.0] {
            let x = vec![v; 3 * 257];
            run1(
                &dev,
                "softmax const",
                softmax_last,
                &[3, 257],
                &x,
                &Arr::new(&[3, 257], &x).softmax(-1),
                st,
            );
            run1(
                &dev,
                "log_softmax const",
                mia_kernels::log_softmax,
                &[3, 257],
                &x,
                &Arr::new(&[3, 257], &x).log_softmax(-1),
                st,
            );
        }
        // Empty: no rows, or empty rows.
        for shape in [[0, 7], [4, 0]] {
            run1(
                &dev,
                "softmax empty",
                softmax_last,
                &shape,
                &[],
                &Arr::new(&shape, &[]),
                0.0,
            );
            run1(
                &dev,
                "softmax(x, 0) empty",
                softmax_first,
                &shape,
                &[],
                &Arr::new(&shape, &[]),
                0.0,
            );
        }
    }
}

#[kernel]
fn layer_norm_inline(
    x: Tensor<f32, N, D>,
    g: Tensor<f32, D>,
    b: Tensor<f32, D>,
) -> Tensor<f32, N, D> {
    layer_norm(x, g, b, 1e-5)
}
#[kernel]
fn layer_norm_manual(
    x: Tensor<f32, N, D>,
    g: Tensor<f32, D>,
    b: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, N, D> {
    let mu = x.mean(-1);
    let xc = x - mu;
    let var = (xc * xc).mean(-1);
    xc * rsqrt(var + eps) * g + b
}
#[kernel]
fn rms_norm_inline(x: Tensor<f32, N, D>, g: Tensor<f32, D>) -> Tensor<f32, N, D> {
    rms_norm(x, g, 1e-6)
}
#[kernel]
fn layer_norm3(
    x: Tensor<f32, A, B, D>,
    g: Tensor<f32, D>,
    b: Tensor<f32, D>,
    eps: f32,
) -> Tensor<f32, A, B, D> {
    layer_norm(x, g, b, eps)
}
#[kernel]
fn rms_norm3(x: Tensor<f32, A, B, D>, g: Tensor<f32, D>, eps: f32) -> Tensor<f32, A, B, D> {
    x.rms_norm(g, eps)
}

#[test]
fn norms_match_f64() {
    let _serial = serial();
    let mut rng = rng(14);
    for dev in devices() {
        let st = soft_tol(&dev);
        for shape in shapes2(&mut rng) {
            let [n, d] = shape;
            // Centred data, and data with a large common offset (1e4) and small spread.
            // f32 rounding of the mean alone is ~1e-7·offset/spread·√D relative there, hence
            // the looser tolerance; a one-pass E[x²] − E[x]² would be off by O(1) or NaN.
            for (off, spread, tol) in [(0.0f32, 2.0f32, st), (1e4, 1.0, 1e-2)] {
                let x: Vec<f32> = uniform(&mut rng, n * d, -spread, spread)
                    .iter()
                    .map(|v| v + off)
                    .collect();
                let r = uniform(&mut rng, n * d, -1.0, 1.0);
                let g = uniform(&mut rng, d, 0.5, 1.5);
                let b = uniform(&mut rng, d, -1.0, 1.0);
                let (ax, ar, ag, ab) = (
                    Arr::new(&shape, &x),
                    Arr::new(&shape, &r),
                    Arr::new(&[d], &g),
                    Arr::new(&[d], &b),
                );
                let (tx, tr, tg, tb) = (
                    tensor(&dev, &shape, &x),
                    tensor(&dev, &shape, &r),
                    tensor(&dev, &[d], &g),
                    tensor(&dev, &[d], &b),
                );
                let st = tol;
                let tag = format!("{shape:?} offset {off}");
                let eps = 1e-5f32;
                let ln_ref = ax.layer_norm(&ag, &ab, eps as f64);
                let got = fetch(&tag, mia_kernels::layer_norm(&tx, &tg, &tb, eps), &shape);
                check(&format!("lib layer_norm {tag}"), &dev, &got, &ln_ref, st);
                let got = fetch(&tag, layer_norm_inline(&tx, &tg, &tb), &shape);
                check(
                    &format!("layer_norm(.., 1e-5) {tag}"),
                    &dev,
                    &got,
                    &ln_ref,
                    st,
                );
                let got = fetch(&tag, layer_norm_manual(&tx, &tg, &tb, eps), &shape);
                check(&format!("manual layer_norm {tag}"), &dev, &got, &ln_ref, st);
                let got = fetch(
                    &tag,
                    mia_kernels::add_layer_norm(&tx, &tr, &tg, &tb, eps),
                    &shape,
                );
                check(
                    &format!("lib add_layer_norm {tag}"),
                    &dev,
                    &got,
                    &ax.add(&ar).layer_norm(&ag, &ab, eps as f64),
                    st,
                );
                let got = fetch(&tag, mia_kernels::rms_norm(&tx, &tg, 1e-6), &shape);
                check(
                    &format!("lib rms_norm {tag}"),
                    &dev,
                    &got,
                    &ax.rms_norm(&ag, 1e-6),
                    soft_tol(&dev),
                );
                let got = fetch(&tag, rms_norm_inline(&tx, &tg), &shape);
                check(
                    &format!("rms_norm(.., 1e-6) {tag}"),
                    &dev,
                    &got,
                    &ax.rms_norm(&ag, 1e-6),
                    soft_tol(&dev),
                );
            }
        }
        for shape in shapes3(&mut rng) {
            let d = shape[2];
            let x = uniform(&mut rng, shape.iter().product(), -2.0, 2.0);
            let g = uniform(&mut rng, d, 0.5, 1.5);
            let b = uniform(&mut rng, d, -1.0, 1.0);
            let (ax, ag, ab) = (Arr::new(&shape, &x), Arr::new(&[d], &g), Arr::new(&[d], &b));
            let (tx, tg, tb) = (
                tensor(&dev, &shape, &x),
                tensor(&dev, &[d], &g),
                tensor(&dev, &[d], &b),
            );
            let got = fetch("ln3", layer_norm3(&tx, &tg, &tb, 1e-3), &shape);
            check(
                &format!("layer_norm rank 3 {shape:?}"),
                &dev,
                &got,
                &ax.layer_norm(&ag, &ab, 1e-3),
                st,
            );
            let got = fetch("rms3", rms_norm3(&tx, &tg, 1e-3), &shape);
            check(
                &format!("rms_norm rank 3 {shape:?}"),
                &dev,
                &got,
                &ax.rms_norm(&ag, 1e-3),
                st,
            );
        }
        // A constant row: layer_norm gives beta (variance 0, eps keeps it finite).
        let x = vec![3.0f32; 2 * 9];
        let g = vec![2.0f32; 9];
        let b: Vec<f32> = (0..9).map(|i| i as f32).collect();
        let got = fetch(
            "const",
            mia_kernels::layer_norm(
                &tensor(&dev, &[2, 9], &x),
                &tensor(&dev, &[9], &g),
                &tensor(&dev, &[9], &b),
                1e-5,
            ),
            &[2, 9],
        );
        check(
            "layer_norm of a constant row",
            &dev,
            &got,
            &Arr::new(&[9], &b).broadcast_to(&[2, 9]),
            1e-6,
        );
    }
}

// ---- integer reductions ---------------------------------------------------------------------

#[kernel]
fn isum(x: Tensor<i32, N, D>) -> (Tensor<i32, N, 1>, Tensor<i32, 1, D>) {
    (x.sum(-1), x.sum(0))
}
#[kernel]
fn iminmax(x: Tensor<i32, N, D>) -> (Tensor<i32, N, 1>, Tensor<i32, 1, D>) {
    (x.max(-1), x.min(0))
}
#[kernel]
fn usum(x: Tensor<u32, N, D>) -> (Tensor<u32, N, 1>, Tensor<u32, N, 1>, Tensor<u32, N, 1>) {
    (x.sum(-1), x.max(-1), x.min(-1))
}

#[test]
fn integer_reductions_are_exact() {
    let _serial = serial();
    let mut rng = rng(15);
    for dev in devices() {
        for [n, d] in shapes2(&mut rng) {
            let x: Vec<i32> = (0..n * d)
                .map(|_| rng.random_range(-100_000..100_000))
                .collect();
            let row = |f: &dyn Fn(&[i32]) -> i32| -> Vec<i32> {
                (0..n).map(|i| f(&x[i * d..(i + 1) * d])).collect()
            };
            let col = |f: &dyn Fn(&[i32]) -> i32| -> Vec<i32> {
                (0..d)
                    .map(|j| f(&(0..n).map(|i| x[i * d + j]).collect::<Vec<_>>()))
                    .collect()
            };
            let sum = |v: &[i32]| v.iter().fold(0i32, |a, &b| a.wrapping_add(b));
            let tx = tensor(&dev, &[n, d], &x);
            let (a, b) = isum(&tx).unwrap();
            check_exact(
                &format!("i32 sum(-1) [{n}, {d}]"),
                &dev,
                &a.to_vec().unwrap(),
                &row(&sum),
            );
            check_exact(
                &format!("i32 sum(0) [{n}, {d}]"),
                &dev,
                &b.to_vec().unwrap(),
                &col(&sum),
            );
            let (a, b) = iminmax(&tx).unwrap();
            check_exact(
                "i32 max(-1)",
                &dev,
                &a.to_vec().unwrap(),
                &row(&|v| *v.iter().max().unwrap()),
            );
            check_exact(
                "i32 min(0)",
                &dev,
                &b.to_vec().unwrap(),
                &col(&|v| *v.iter().min().unwrap()),
            );
            let xu: Vec<u32> = x.iter().map(|&v| v as u32).collect();
            let (s, mx, mn) = usum(&tensor(&dev, &[n, d], &xu)).unwrap();
            let urow = |f: &dyn Fn(&[u32]) -> u32| -> Vec<u32> {
                (0..n).map(|i| f(&xu[i * d..(i + 1) * d])).collect()
            };
            check_exact(
                "u32 sum(-1)",
                &dev,
                &s.to_vec().unwrap(),
                &urow(&|v| v.iter().fold(0u32, |a, &b| a.wrapping_add(b))),
            );
            check_exact(
                "u32 max(-1)",
                &dev,
                &mx.to_vec().unwrap(),
                &urow(&|v| *v.iter().max().unwrap()),
            );
            check_exact(
                "u32 min(-1)",
                &dev,
                &mn.to_vec().unwrap(),
                &urow(&|v| *v.iter().min().unwrap()),
            );
        }
    }
}

// ---- transpose and reshape ------------------------------------------------------------------

#[kernel]
fn tr2(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    transpose(x, 0, 1)
}
#[kernel]
fn tr3_02(x: Tensor<f32, A, B, C>) -> Tensor<f32, C, B, A> {
    transpose(x, 0, 2)
}
#[kernel]
fn tr3_12(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, C, B> {
    x.transpose(-1, -2)
}
#[kernel]
fn tr_computed(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    transpose(x * 2.0 + 1.0, 0, 1)
}
#[kernel]
fn tr_sum(x: Tensor<f32, N, D>) -> Tensor<f32, D, 1> {
    transpose(x, 0, 1).sum(-1)
}
#[kernel]
fn tr_add(x: Tensor<f32, N, D>, y: Tensor<f32, D, N>) -> Tensor<f32, D, N> {
    transpose(x, 0, 1) + y
}
#[kernel]
fn tr_softmax(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    softmax(transpose(x, 0, 1), -1)
}
#[kernel]
fn split_heads(x: Tensor<f32, T, D>, heads: Tensor<f32, H>) -> Tensor<f32, H, T, { D / H }> {
    transpose(reshape(x, [T, H, { D / H }]), 0, 1)
}
#[kernel]
fn merge_heads(x: Tensor<f32, H, T, { D / H }>, d: Tensor<f32, D>) -> Tensor<f32, T, D> {
    reshape(transpose(x, 0, 1), [T, D])
}
#[kernel]
fn heads_view(x: Tensor<f32, N, D>, heads: Tensor<f32, H>) -> Tensor<f32, N, H, { D / H }> {
    reshape(x, [N, H, { D / H }])
}
#[kernel]
fn head_sums(x: Tensor<f32, N, D>, heads: Tensor<f32, H>) -> Tensor<f32, N, H, 1> {
    reshape(x, [N, H, { D / H }]).sum(-1)
}
#[kernel]
fn head_softmax(x: Tensor<f32, N, D>, heads: Tensor<f32, H>) -> Tensor<f32, N, H, { D / H }> {
    softmax(reshape(x, [N, H, { D / H }]), -1)
}
#[kernel]
fn flat_sum(x: Tensor<f32, N, D>) -> Tensor<f32, 1> {
    reshape(x * 2.0, [{ N * D }]).sum(0)
}
#[kernel]
fn halves(x: Tensor<f32, N, D>) -> Tensor<f32, N, 2, { D / 2 }> {
    reshape(x, [N, 2, { D / 2 }])
}

#[test]
fn transpose_and_reshape() {
    let _serial = serial();
    let mut rng = rng(16);
    for dev in devices() {
        let st = soft_tol(&dev);
        for shape in shapes2(&mut rng) {
            let [n, d] = shape;
            let x = uniform(&mut rng, n * d, -2.0, 2.0);
            let y = uniform(&mut rng, n * d, -2.0, 2.0);
            let ax = Arr::new(&shape, &x);
            let t = ax.transpose(0, 1);
            run1(&dev, "transpose(x, 0, 1)", tr2, &shape, &x, &t, 0.0);
            run1(
                &dev,
                "transpose(2x + 1)",
                tr_computed,
                &shape,
                &x,
                &ax.map(|v| 2.0 * v + 1.0).transpose(0, 1),
                0.0,
            );
            run1(
                &dev,
                "transpose(x).sum(-1)",
                tr_sum,
                &shape,
                &x,
                &t.sum(-1),
                SUM_TOL,
            );
            run1(
                &dev,
                "softmax(transpose(x), -1)",
                tr_softmax,
                &shape,
                &x,
                &t.softmax(-1),
                st,
            );
            let got = fetch(
                "tr_add",
                tr_add(&tensor(&dev, &shape, &x), &tensor(&dev, &[d, n], &y)),
                &[d, n],
            );
            check(
                "transpose(x) + y",
                &dev,
                &got,
                &t.add(&Arr::new(&[d, n], &y)),
                1e-7,
            );
            // Positive data: a sum of mixed signs has no relative accuracy to test.
            let xp: Vec<f32> = x.iter().map(|v| v.abs()).collect();
            let ap = Arr::new(&shape, &xp);
            let want = ap.map(|v| 2.0 * v).reshape(&[n * d]).sum(0);
            run1(
                &dev,
                "reshape(2|x|).sum(0)",
                flat_sum,
                &shape,
                &xp,
                &want,
                SUM_TOL,
            );
        }
        for shape in shapes3(&mut rng) {
            let x = uniform(&mut rng, shape.iter().product(), -2.0, 2.0);
            let ax = Arr::new(&shape, &x);
            run1(
                &dev,
                "transpose(x, 0, 2)",
                tr3_02,
                &shape,
                &x,
                &ax.transpose(0, 2),
                0.0,
            );
            run1(
                &dev,
                "x.transpose(-1, -2)",
                tr3_12,
                &shape,
                &x,
                &ax.transpose(-1, -2),
                0.0,
            );
        }
        // Attention-style head split/merge with a braced {D / H} dimension.
        for (t, h, dh) in [
            (1, 1, 1),
            (5, 2, 3),
            (7, 4, 16),
            (33, 12, 8),
            (3, 1, 12_345 / 5),
        ] {
            let d = h * dh;
            let x = uniform(&mut rng, t * d, -2.0, 2.0);
            let (tx, th) = (
                tensor(&dev, &[t, d], &x),
                tensor(&dev, &[h], &vec![0.0f32; h]),
            );
            let ax = Arr::new(&[t, d], &x);
            let split = ax.reshape(&[t, h, dh]).transpose(0, 1);
            let got = fetch("split", split_heads(&tx, &th), &[h, t, dh]);
            check(&format!("split_heads T={t} H={h}"), &dev, &got, &split, 0.0);
            let ts = tensor(
                &dev,
                &[h, t, dh],
                &split.data.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            );
            let got = fetch(
                "merge",
                merge_heads(&ts, &tensor(&dev, &[d], &vec![0.0f32; d])),
                &[t, d],
            );
            check(&format!("merge_heads T={t} H={h}"), &dev, &got, &ax, 0.0);
            let got = fetch("view", heads_view(&tx, &th), &[t, h, dh]);
            check(
                &format!("reshape [N, H, D/H] T={t} H={h}"),
                &dev,
                &got,
                &ax.reshape(&[t, h, dh]),
                0.0,
            );
            let got = fetch("head sums", head_sums(&tx, &th), &[t, h, 1]);
            check(
                &format!("per-head sums T={t} H={h}"),
                &dev,
                &got,
                &ax.reshape(&[t, h, dh]).sum(-1),
                SUM_TOL,
            );
            let got = fetch("head softmax", head_softmax(&tx, &th), &[t, h, dh]);
            check(
                &format!("per-head softmax T={t} H={h}"),
                &dev,
                &got,
                &ax.reshape(&[t, h, dh]).softmax(-1),
                st,
            );
        }
        let x = uniform(&mut rng, 3 * 8, -1.0, 1.0);
        let got = fetch("halves", halves(&tensor(&dev, &[3, 8], &x)), &[3, 2, 4]);
        check(
            "reshape [N, 2, D/2]",
            &dev,
            &got,
            &Arr::new(&[3, 2, 4], &x),
            0.0,
        );
    }
}

#[kernel]
fn tr_square(x: Tensor<f32, N, N>) -> Tensor<f32, N, N> {
    transpose(x * 2.0, 0, 1)
}
#[kernel]
fn tr_square_pair(x: Tensor<f32, N, N>) -> (Tensor<f32, N, N>, Tensor<f32, N, N>) {
    let y = exp(x);
    (y, transpose(y, 0, 1))
}
#[kernel]
fn tr_two_axes(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    transpose(x - x.mean(-1) - x.mean(0), 0, 1)
}
#[kernel]
fn flat_two_axes(x: Tensor<f32, N, D>) -> Tensor<f32, { N * D }> {
    reshape(x - x.mean(-1) - x.mean(0), [{ N * D }])
}

/// The transpose of a computed [N, N] value: the value goes to a buffer and the output reads
/// it transposed, so the two must be separate passes (another element's value is read).
#[test]
fn transpose_of_a_computed_square_matrix() {
    let _serial = serial();
    let mut rng = rng(24);
    for dev in devices() {
        for n in [2, 17, 300] {
            let x = uniform(&mut rng, n * n, -1.0, 1.0);
            let ax = Arr::new(&[n, n], &x);
            run1(
                &dev,
                "transpose(2x)",
                tr_square,
                &[n, n],
                &x,
                &ax.map(|v| 2.0 * v).transpose(0, 1),
                0.0,
            );
            let (y, t) = tr_square_pair(&tensor(&dev, &[n, n], &x)).unwrap();
            let tol = if dev.is_gpu() { 1e-5 } else { 1e-6 };
            check("(exp(x), ..).0", &dev, &y.to_vec().unwrap(), &ax.exp(), tol);
            check(
                "(.., exp(x)ᵀ).1",
                &dev,
                &t.to_vec().unwrap(),
                &ax.exp().transpose(0, 1),
                tol,
            );
        }
    }
}

/// A layout op over a value that needs two passes: the view must be read after both.
#[test]
fn layout_of_a_multi_pass_value() {
    let _serial = serial();
    let mut rng = rng(25);
    for dev in devices() {
        for [n, d] in [[2, 3], [17, 5], [33, 257]] {
            let x = uniform(&mut rng, n * d, -1.0, 1.0);
            let ax = Arr::new(&[n, d], &x);
            let y = ax.sub(&ax.mean(-1)).sub(&ax.mean(0));
            run1(
                &dev,
                "transpose(two axes)",
                tr_two_axes,
                &[n, d],
                &x,
                &y.transpose(0, 1),
                SUM_TOL,
            );
            run1(
                &dev,
                "reshape(two axes)",
                flat_two_axes,
                &[n, d],
                &x,
                &y.reshape(&[n * d]),
                SUM_TOL,
            );
        }
    }
}

/// `{D / H}` is exact division ("checked when the kernel is called", DESIGN.md): sizes that do
/// not divide must be an error, not a truncated shape that drops or invents elements.
#[test]
fn reshape_with_inexact_division_is_an_error() {
    let _serial = serial();
    for dev in devices() {
        let r = halves(&tensor(&dev, &[3, 5], &[1.0f32; 15])).map(|t| t.shape().to_vec());
        assert!(r.is_err(), "[3, 5] -> [N, 2, D/2] on {dev:?}: {r:?}");
        let h3 = tensor(&dev, &[3], &[0.0f32; 3]);
        let r = heads_view(&tensor(&dev, &[2, 10], &[1.0f32; 20]), &h3).map(|t| t.shape().to_vec());
        assert!(
            r.is_err(),
            "[2, 10] -> [N, H, D/H], H = 3 on {dev:?}: {r:?}"
        );
        // An input [H, T, {D / H}] = [3, 2, 3] with D = 10: 18 elements cannot become [2, 10].
        let d10 = tensor(&dev, &[10], &[0.0f32; 10]);
        let r = merge_heads(&tensor(&dev, &[3, 2, 3], &[1.0f32; 18]), &d10).map(|t| t.to_vec());
        assert!(r.is_err(), "[3, 2, 3] -> [T, D], D = 10 on {dev:?}: {r:?}");
    }
}

// ---- layouts mixed with reductions ----------------------------------------------------------

#[kernel]
fn vec_sum(x: Tensor<f32, N>) -> Tensor<f32, 1> {
    x.sum(0)
}
#[kernel]
fn vec_softmax(x: Tensor<f32, N>) -> Tensor<f32, N> {
    softmax(x, 0)
}
#[kernel]
fn sym_part(x: Tensor<f32, N, N>) -> Tensor<f32, N, N> {
    (x + transpose(x, 0, 1)) * 0.5
}
#[kernel]
fn softmax_t(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    transpose(softmax(x, -1), 0, 1)
}
#[kernel]
fn row_sums_flat(x: Tensor<f32, N, D>) -> Tensor<f32, N> {
    reshape(x.sum(-1), [N])
}
#[kernel]
fn sums_and_centered(x: Tensor<f32, N, D>) -> (Tensor<f32, N, 1>, Tensor<f32, N, D>) {
    (x.sum(-1), x - x.sum(0))
}
#[kernel]
fn fixed_width(x: Tensor<f32, N, 3>) -> Tensor<f32, N, 1> {
    x.max(-1) - x.min(-1)
}

#[test]
fn layouts_mixed_with_reductions() {
    let _serial = serial();
    let mut rng = rng(17);
    for dev in devices() {
        let st = soft_tol(&dev);
        for n in [1usize, 2, 3, 17, 255, 256, 1023, 12_345] {
            let x = uniform(&mut rng, n, 0.0, 2.0);
            let ax = Arr::new(&[n], &x);
            run1(
                &dev,
                "rank-1 sum(0)",
                vec_sum,
                &[n],
                &x,
                &ax.sum(0),
                SUM_TOL,
            );
            run1(
                &dev,
                "rank-1 softmax(x, 0)",
                vec_softmax,
                &[n],
                &x,
                &ax.softmax(0),
                st,
            );
        }
        for shape in shapes2(&mut rng) {
            let [n, d] = shape;
            let x = uniform(&mut rng, n * d, -1.0, 1.0);
            let ax = Arr::new(&shape, &x);
            let t = ax.softmax(-1).transpose(0, 1);
            run1(&dev, "transpose(softmax(x))", softmax_t, &shape, &x, &t, st);
            run1(
                &dev,
                "reshape(x.sum(-1), [N])",
                row_sums_flat,
                &shape,
                &x,
                &ax.sum(-1).reshape(&[n]),
                SUM_TOL,
            );
            let (a, b) = sums_and_centered(&tensor(&dev, &shape, &x)).unwrap();
            check(
                "(sum(-1), x - sum(0)).0",
                &dev,
                &a.to_vec().unwrap(),
                &ax.sum(-1),
                SUM_TOL,
            );
            check(
                "(sum(-1), x - sum(0)).1",
                &dev,
                &b.to_vec().unwrap(),
                &ax.sub(&ax.sum(0)),
                SUM_TOL,
            );
            let n = n.min(300);
            let sq = uniform(&mut rng, n * n, -1.0, 1.0);
            let asq = Arr::new(&[n, n], &sq);
            run1(
                &dev,
                "(x + xᵀ)/2",
                sym_part,
                &[n, n],
                &sq,
                &asq.add(&asq.transpose(0, 1)).map(|v| v / 2.0),
                1e-7,
            );
            let x3 = uniform(&mut rng, n * 3, -1.0, 1.0);
            let a3 = Arr::new(&[n, 3], &x3);
            run1(
                &dev,
                "[N, 3] max - min",
                fixed_width,
                &[n, 3],
                &x3,
                &a3.max(-1).sub(&a3.min(-1)),
                1e-7,
            );
        }
        // Literal and repeated symbols are checked at run time.
        assert!(fixed_width(&tensor(&dev, &[2, 4], &[0.0f32; 8])).is_err());
        assert!(sym_part(&tensor(&dev, &[2, 3], &[0.0f32; 6])).is_err());
    }
}

/// More rows than one grid dimension holds (65,535 workgroups): the GPU lays rows out in 2-D.
#[test]
fn many_rows() {
    let _serial = serial();
    let mut rng = rng(18);
    let shape = [65_600, 3];
    let x = uniform(&mut rng, shape[0] * shape[1], -1.0, 1.0);
    let ax = Arr::new(&shape, &x);
    for dev in devices() {
        let (st, want) = (soft_tol(&dev), ax.softmax(-1));
        run1(
            &dev,
            "softmax, 65,600 rows",
            mia_kernels::softmax,
            &shape,
            &x,
            &want,
            st,
        );
    }
}

/// Reductions along a long axis (12,345): rows for axis -1, columns for axis 0.
#[test]
fn long_rows_and_columns() {
    let _serial = serial();
    let mut rng = rng(19);
    let (wide, tall) = ([3, 12_345], [12_345, 3]);
    let xw = uniform(&mut rng, 3 * 12_345, -1.0, 1.0);
    let xt = uniform(&mut rng, 3 * 12_345, -1.0, 1.0);
    let (aw, at) = (Arr::new(&wide, &xw), Arr::new(&tall, &xt));
    let g = uniform(&mut rng, 12_345, 0.5, 1.5);
    let b = uniform(&mut rng, 12_345, -1.0, 1.0);
    let (ag, ab) = (Arr::new(&[12_345], &g), Arr::new(&[12_345], &b));
    for dev in devices() {
        let st = soft_tol(&dev);
        for &(name, k, axis, r, exact) in REDUCTIONS2 {
            let tol = if exact { 0.0 } else { SUM_TOL };
            let (shape, x, ax) = if axis == 0 {
                (tall, &xt, &at)
            } else {
                (wide, &xw, &aw)
            };
            run1(&dev, name, k, &shape, x, &r(ax, axis), tol);
        }
        run1(
            &dev,
            "softmax(x, -1)",
            softmax_last,
            &wide,
            &xw,
            &aw.softmax(-1),
            st,
        );
        run1(
            &dev,
            "softmax(x, 0)",
            softmax_first,
            &tall,
            &xt,
            &at.softmax(0),
            st,
        );
        run1(
            &dev,
            "x - x.mean(-1)",
            center_rows,
            &wide,
            &xw,
            &aw.sub(&aw.mean(-1)),
            SUM_TOL,
        );
        run1(
            &dev,
            "x - x.mean(0)",
            center_cols,
            &tall,
            &xt,
            &at.sub(&at.mean(0)),
            SUM_TOL,
        );
        run1(
            &dev,
            "two axes",
            two_axes,
            &tall,
            &xt,
            &at.sub(&at.mean(-1)).sub(&at.mean(0)),
            SUM_TOL,
        );
        for (lo, hi) in [(-5.0f32, 5.0f32), (100.0, 900.0), (-1e3, 1e3)] {
            let x: Vec<f32> = xw
                .iter()
                .map(|v| lo + (v + 1.0) / 2.0 * (hi - lo))
                .collect();
            let ax = Arr::new(&wide, &x);
            let tag = format!("in [{lo}, {hi}]");
            run1(
                &dev,
                &format!("lib softmax {tag}"),
                mia_kernels::softmax,
                &wide,
                &x,
                &ax.softmax(-1),
                st,
            );
            run1(
                &dev,
                &format!("lib log_softmax {tag}"),
                mia_kernels::log_softmax,
                &wide,
                &x,
                &ax.log_softmax(-1),
                st,
            );
        }
        let (tx, tg, tb) = (
            tensor(&dev, &wide, &xw),
            tensor(&dev, &[12_345], &g),
            tensor(&dev, &[12_345], &b),
        );
        let got = fetch("ln", mia_kernels::layer_norm(&tx, &tg, &tb, 1e-5), &wide);
        check(
            "lib layer_norm [3, 12345]",
            &dev,
            &got,
            &aw.layer_norm(&ag, &ab, 1e-5),
            st,
        );
        let got = fetch("rms", mia_kernels::rms_norm(&tx, &tg, 1e-6), &wide);
        check(
            "lib rms_norm [3, 12345]",
            &dev,
            &got,
            &aw.rms_norm(&ag, 1e-6),
            st,
        );
        let got = fetch(
            "aln",
            mia_kernels::add_layer_norm(&tx, &tx, &tg, &tb, 1e-5),
            &wide,
        );
        check(
            "lib add_layer_norm [3, 12345]",
            &dev,
            &got,
            &aw.add(&aw).layer_norm(&ag, &ab, 1e-5),
            st,
        );
    }
}

// ---- masks, casts and selects inside row passes; rank 4 -------------------------------------

#[kernel]
fn masked_softmax(x: Tensor<f32, N, D>, keep: Tensor<bool, N, D>) -> Tensor<f32, N, D> {
    softmax(select(keep, x, -1e30), -1)
}
#[kernel]
fn count_positive(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    cast::<f32>(x > 0.0).sum(-1)
}
#[kernel]
fn above_mean_sum(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> {
    select(x > x.mean(-1), x, 0.0).sum(-1)
}
#[kernel]
fn scaled_sum(x: Tensor<f32, N, D>, alpha: f32) -> Tensor<f32, N, 1> {
    (x * alpha).sum(-1) + alpha
}
#[kernel]
fn sums_t(x: Tensor<f32, N, D>) -> Tensor<f32, 1, N> {
    transpose(x.sum(-1), 0, 1)
}
#[kernel]
fn sum4_1(x: Tensor<f32, A, B, C, D>) -> Tensor<f32, A, 1, C, D> {
    x.sum(1)
}
#[kernel]
fn softmax4_2(x: Tensor<f32, A, B, C, D>) -> Tensor<f32, A, B, C, D> {
    softmax(x, 2)
}
#[kernel]
fn bcast4(x: Tensor<f32, A, 1, C, 1>, y: Tensor<f32, B, 1, D>) -> Tensor<f32, A, B, C, D> {
    x * y + y
}

#[test]
fn masks_casts_and_rank4() {
    let _serial = serial();
    let mut rng = rng(20);
    for dev in devices() {
        let st = soft_tol(&dev);
        for shape in shapes2(&mut rng) {
            let [n, d] = shape;
            let x = uniform(&mut rng, n * d, -3.0, 3.0);
            let ax = Arr::new(&shape, &x);
            // Row 0 fully masked (uniform result), the others masked at random.
            let keep: Vec<bool> = (0..n * d).map(|i| i >= d && rng.random_bool(0.7)).collect();
            let masked: Vec<f32> = x
                .iter()
                .zip(&keep)
                .map(|(&v, &k)| if k { v } else { -1e30 })
                .collect();
            let got = fetch(
                "masked",
                masked_softmax(&tensor(&dev, &shape, &x), &tensor(&dev, &shape, &keep)),
                &shape,
            );
            check(
                "masked softmax",
                &dev,
                &got,
                &Arr::new(&shape, &masked).softmax(-1),
                st,
            );
            let pos = ax.map(|v| (v > 0.0) as u8 as f64).sum(-1);
            run1(
                &dev,
                "cast(x > 0).sum(-1)",
                count_positive,
                &shape,
                &x,
                &pos,
                0.0,
            );
            let above = ax
                .zip(&ax.mean(-1), |v, m| if v > m { v } else { 0.0 })
                .sum(-1);
            run1(
                &dev,
                "select(x > mean, x, 0).sum(-1)",
                above_mean_sum,
                &shape,
                &x,
                &above,
                SUM_TOL,
            );
            let got = fetch(
                "scaled",
                scaled_sum(&tensor(&dev, &shape, &x), -0.5),
                &[n, 1],
            );
            check(
                "(x * alpha).sum(-1) + alpha",
                &dev,
                &got,
                &ax.map(|v| -0.5 * v).sum(-1).map(|v| v - 0.5),
                SUM_TOL,
            );
            run1(
                &dev,
                "transpose(x.sum(-1))",
                sums_t,
                &shape,
                &x,
                &ax.sum(-1).transpose(0, 1),
                SUM_TOL,
            );
        }
        for shape in [
            [1, 1, 1, 1],
            [2, 3, 4, 5],
            [3, 1, 7, 2],
            [2, 5, 33, 3],
            [1, 4, 2, 300],
        ] {
            let x = uniform(&mut rng, shape.iter().product(), -2.0, 2.0);
            let ax = Arr::new(&shape, &x);
            run1(
                &dev,
                "rank-4 sum(1)",
                sum4_1,
                &shape,
                &x,
                &ax.sum(1),
                SUM_TOL,
            );
            run1(
                &dev,
                "rank-4 softmax(x, 2)",
                softmax4_2,
                &shape,
                &x,
                &ax.softmax(2),
                st,
            );
            let [a, b, c, d] = shape;
            let xs = uniform(&mut rng, a * c, -2.0, 2.0);
            let ys = uniform(&mut rng, b * d, -2.0, 2.0);
            let (axs, ays) = (Arr::new(&[a, 1, c, 1], &xs), Arr::new(&[b, 1, d], &ys));
            let got = fetch(
                "bcast4",
                bcast4(
                    &tensor(&dev, &[a, 1, c, 1], &xs),
                    &tensor(&dev, &[b, 1, d], &ys),
                ),
                &shape,
            );
            check(
                &format!("[A,1,C,1]*[B,1,D] {shape:?}"),
                &dev,
                &got,
                &axs.mul(&ays).add(&ays),
                1e-6,
            );
        }
    }
}

// ---- more row-pass patterns -----------------------------------------------------------------

#[kernel]
fn max_and_two_axes(x: Tensor<f32, N, D>) -> (Tensor<f32, N, 1>, Tensor<f32, N, D>) {
    let m = x.max(-1);
    (m, x - m - x.mean(0))
}
#[kernel]
fn sums_of_two_inputs(x: Tensor<f32, N, D>, y: Tensor<f32, N, E>) -> Tensor<f32, N, 1> {
    x.sum(-1) - y.max(-1)
}
#[kernel]
fn outer_row_sums(a: Tensor<f32, N, 1>, c: Tensor<f32, 1, D>) -> Tensor<f32, N, 1> {
    (a * c).sum(-1)
}
#[kernel]
fn sum_size1(x: Tensor<f32, N, 1>) -> (Tensor<f32, N, 1>, Tensor<f32, N, 1>) {
    (x.sum(1), softmax(x, -1))
}
#[kernel]
fn one_hot_max(
    x: Tensor<f32, N, D>,
) -> (Tensor<f32, N, D>, Tensor<bool, N, D>, Tensor<bool, N, 1>) {
    let m = x.max(-1);
    (select(x == m, 1.0, 0.0), x == m, m > 0.0)
}
#[kernel]
fn folded_literals(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x * (1 / 2) + (3 - 5) - x.mean(-1) * -(1.5)
}

#[test]
fn more_row_patterns() {
    let _serial = serial();
    let mut rng = rng(27);
    for dev in devices() {
        let st = soft_tol(&dev);
        for shape in shapes2(&mut rng) {
            let [n, d] = shape;
            let x = uniform(&mut rng, n * d, -1.0, 1.0);
            let ax = Arr::new(&shape, &x);
            let tx = tensor(&dev, &shape, &x);
            let (m, y) = max_and_two_axes(&tx).unwrap();
            check("(m, ..).0", &dev, &m.to_vec().unwrap(), &ax.max(-1), 0.0);
            check(
                "(.., x - m - mean(0)).1",
                &dev,
                &y.to_vec().unwrap(),
                &ax.sub(&ax.max(-1)).sub(&ax.mean(0)),
                SUM_TOL,
            );
            let e = d % 7 + 1;
            let yv = uniform(&mut rng, n * e, -1.0, 1.0);
            let got = fetch(
                "two inputs",
                sums_of_two_inputs(&tx, &tensor(&dev, &[n, e], &yv)),
                &[n, 1],
            );
            check(
                "x.sum(-1) - y.max(-1)",
                &dev,
                &got,
                &ax.sum(-1).sub(&Arr::new(&[n, e], &yv).max(-1)),
                SUM_TOL,
            );
            let a = uniform(&mut rng, n, -1.0, 1.0);
            let c = uniform(&mut rng, d, -1.0, 1.0);
            let got = fetch(
                "outer",
                outer_row_sums(&tensor(&dev, &[n, 1], &a), &tensor(&dev, &[1, d], &c)),
                &[n, 1],
            );
            let want = Arr::new(&[n, 1], &a).mul(&Arr::new(&[1, d], &c)).sum(-1);
            check("([N,1] * [1,D]).sum(-1)", &dev, &got, &want, SUM_TOL);
            let (s1, sm) = sum_size1(&tensor(&dev, &[n, 1], &a)).unwrap();
            check(
                "[N,1].sum(1)",
                &dev,
                &s1.to_vec().unwrap(),
                &Arr::new(&[n, 1], &a),
                0.0,
            );
            check(
                "softmax of [N,1]",
                &dev,
                &sm.to_vec().unwrap(),
                &Arr::new(&[n, 1], &a).map(|_| 1.0),
                0.0,
            );
            let (oh, eq, pos) = one_hot_max(&tx).unwrap();
            let mx = ax.max(-1);
            let want_oh = ax.zip(&mx, |v, m| (v == m) as u8 as f64);
            check(
                "select(x == max, 1, 0)",
                &dev,
                &oh.to_vec().unwrap(),
                &want_oh,
                0.0,
            );
            let want_eq: Vec<bool> = want_oh.data.iter().map(|&v| v == 1.0).collect();
            check_exact("x == max", &dev, &eq.to_vec().unwrap(), &want_eq);
            let want_pos: Vec<bool> = mx.data.iter().map(|&v| v > 0.0).collect();
            check_exact("max > 0", &dev, &pos.to_vec().unwrap(), &want_pos);
            let want = ax.map(|v| 0.5 * v - 2.0).add(&ax.mean(-1).map(|v| 1.5 * v));
            run1(
                &dev,
                "x * (1/2) + (3-5) - mean * -(1.5)",
                folded_literals,
                &shape,
                &x,
                &want,
                SUM_TOL,
            );
            let _ = st;
        }
    }
}

#[kernel]
fn sum5(x: Tensor<f32, A, B, C, D, E>) -> Tensor<f32, A, B, 1, D, E> {
    x.sum(2)
}
#[kernel]
fn bcast5(x: Tensor<f32, A, B, C, D, E>, y: Tensor<f32, B, 1, D, 1>) -> Tensor<f32, A, B, C, D, E> {
    softmax(x * y, -2)
}

#[test]
fn rank5_and_wrapping_integer_sums() {
    let _serial = serial();
    let mut rng = rng(28);
    for dev in devices() {
        for shape in [
            [1, 1, 1, 1, 1],
            [2, 3, 4, 5, 6],
            [1, 2, 7, 3, 17],
            [3, 1, 5, 1, 2],
        ] {
            let [_, b, _, d, _] = shape;
            let x = uniform(&mut rng, shape.iter().product(), -2.0, 2.0);
            let y = uniform(&mut rng, b * d, -2.0, 2.0);
            let ax = Arr::new(&shape, &x);
            run1(&dev, "rank-5 sum(2)", sum5, &shape, &x, &ax.sum(2), SUM_TOL);
            let got = fetch(
                "bcast5",
                bcast5(&tensor(&dev, &shape, &x), &tensor(&dev, &[b, 1, d, 1], &y)),
                &shape,
            );
            let want = ax.mul(&Arr::new(&[b, 1, d, 1], &y)).softmax(-2);
            check(
                &format!("rank-5 softmax(x * y, -2) {shape:?}"),
                &dev,
                &got,
                &want,
                soft_tol(&dev),
            );
        }
        // i32 sums wrap, as WGSL's do.
        let x = [i32::MAX, 1, 1, i32::MIN, -1, -1];
        let (s, c) = isum(&tensor(&dev, &[2, 3], &x)).unwrap();
        check_exact(
            "i32 sum wraps",
            &dev,
            &s.to_vec().unwrap(),
            &[i32::MIN + 1, i32::MAX - 1],
        );
        check_exact("i32 column sums", &dev, &c.to_vec().unwrap(), &[-1, 0, 0]);
    }
}
