//! Elementwise ops, scalars, literals, casts, tuples and broadcasting, on every device
//! (`testing::devices()`: CPU, then the GPU) against float64 references (`common::Arr`).
//!
//! Tolerances: relative norm ‖got − ref‖/‖ref‖ in float64, plus per element
//! `|got − ref| ≤ 100·tol·max(|ref|, rms(ref))`, finiteness where the reference is finite in
//! f32, and the same ±inf where it overflows. Integer, bool and cast results are exact.
//!
//! | op                                              | CPU  | GPU  | worst measured (CPU / GPU) |
//! |-------------------------------------------------|------|------|----------------------------|
//! | + − × neg abs relu maximum minimum select       | 1e-7 | 1e-7 | 4e-8 / 4e-8                |
//! | /, sqrt                                         | 2e-7 | 5e-7 | 3e-8 / 4e-8                |
//! | rsqrt                                           | 2e-7 | 2e-6 | 7e-8 / 6e-8                |
//! | exp (x in ±80), sin, cos (x in ±1e4)            | 1e-6 | 2e-5 | 5e-8 / 3e-6                |
//! | ln, tanh, sigmoid, silu, swiglu                 | 1e-6 | 1e-5 | 1e-7 / 9e-7                |
//! | gelu, gelu_tanh (GPU: + 1e-6 absolute, see bug) | 1e-6 | 1e-5 | 1e-7 / 3e-7                |
//! | pow (x > 0)                                     | 1e-6 | 2e-5 | 4e-8 / 4e-7                |
//! | broadcast, literals, scalars, 2-op chains       | 1e-6 | 1e-6 | 1e-7 / 1e-7                |
//! | fused chains with transcendentals               | 1e-6 | 2e-5 | 1e-7 / 3e-7                |
//! | casts, comparisons, integer ops, bool           | exact| exact|                            |
mod common;

use common::*;
use mia_runtime::prelude::*;

type Unary = fn(&Tensor<f32>) -> Result<Tensor<f32>, Error>;
type Binary = fn(&Tensor<f32>, &Tensor<f32>) -> Result<Tensor<f32>, Error>;
/// (name, kernel, float64 reference)
type UnaryRef = (&'static str, Unary, fn(f64) -> f64);

/// Lengths used by the 1-D tables: empty, odd, around the CPU lane width (16) and the GPU
/// workgroup (256), and long.
const LENS: &[usize] = &[0, 1, 3, 4, 7, 15, 16, 17, 255, 257, 1023, 1024, 12_345];

// ---- unary functions (function and method forms) --------------------------------------------

#[kernel]
fn k_exp(x: Tensor<f32, N>) -> Tensor<f32, N> {
    exp(x)
}
#[kernel]
fn k_ln(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.ln()
}
#[kernel]
fn k_sqrt(x: Tensor<f32, N>) -> Tensor<f32, N> {
    sqrt(x)
}
#[kernel]
fn k_rsqrt(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.rsqrt()
}
#[kernel]
fn k_abs(x: Tensor<f32, N>) -> Tensor<f32, N> {
    abs(x)
}
#[kernel]
fn k_neg_fn(x: Tensor<f32, N>) -> Tensor<f32, N> {
    neg(x)
}
#[kernel]
fn k_neg_op(x: Tensor<f32, N>) -> Tensor<f32, N> {
    -x
}
#[kernel]
fn k_neg_method(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.neg()
}
#[kernel]
fn k_tanh(x: Tensor<f32, N>) -> Tensor<f32, N> {
    tanh(x)
}
#[kernel]
fn k_sigmoid(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.sigmoid()
}
#[kernel]
fn k_relu(x: Tensor<f32, N>) -> Tensor<f32, N> {
    relu(x)
}
#[kernel]
fn k_gelu(x: Tensor<f32, N>) -> Tensor<f32, N> {
    gelu(x)
}
#[kernel]
fn k_gelu_tanh(x: Tensor<f32, N>) -> Tensor<f32, N> {
    gelu_tanh(x)
}
#[kernel]
fn k_silu(x: Tensor<f32, N>) -> Tensor<f32, N> {
    silu(x)
}
#[kernel]
fn k_sin(x: Tensor<f32, N>) -> Tensor<f32, N> {
    sin(x)
}
#[kernel]
fn k_cos(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.cos()
}
#[kernel]
fn k_exp_method(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x.exp()
}

struct UnaryCase {
    name: &'static str,
    k: Unary,
    r: fn(f64) -> f64,
    lo: f32,
    hi: f32,
    cpu: f64,
    gpu: f64,
    /// Absolute floor on the GPU (see `check_abs`).
    gpu_abs: f64,
}

const fn u(
    name: &'static str,
    k: Unary,
    r: fn(f64) -> f64,
    (lo, hi): (f32, f32),
    (cpu, gpu, gpu_abs): (f64, f64, f64),
) -> UnaryCase {
    UnaryCase {
        name,
        k,
        r,
        lo,
        hi,
        cpu,
        gpu,
        gpu_abs,
    }
}

/// Every unary op of the DSL and of the library (mia_kernels::*), with its input range.
const UNARY: &[UnaryCase] = &[
    u("exp", k_exp, f64::exp, (-80.0, 80.0), (1e-6, 2e-5, 0.0)),
    u(
        "x.exp()",
        k_exp_method,
        f64::exp,
        (-10.0, 10.0),
        (1e-6, 1e-5, 0.0),
    ),
    u("ln", k_ln, f64::ln, (1e-30, 1e30), (1e-6, 1e-6, 0.0)),
    u("ln near 1", k_ln, f64::ln, (0.5, 2.0), (1e-6, 1e-5, 0.0)),
    u("sqrt", k_sqrt, f64::sqrt, (0.0, 1e6), (2e-7, 5e-7, 0.0)),
    u(
        "rsqrt",
        k_rsqrt,
        |x| 1.0 / x.sqrt(),
        (1e-6, 1e6),
        (2e-7, 2e-6, 0.0),
    ),
    u("abs", k_abs, f64::abs, (-5.0, 5.0), (1e-7, 1e-7, 0.0)),
    u("neg(x)", k_neg_fn, |x| -x, (-5.0, 5.0), (1e-7, 1e-7, 0.0)),
    u("-x", k_neg_op, |x| -x, (-5.0, 5.0), (1e-7, 1e-7, 0.0)),
    u(
        "x.neg()",
        k_neg_method,
        |x| -x,
        (-5.0, 5.0),
        (1e-7, 1e-7, 0.0),
    ),
    u("tanh", k_tanh, f64::tanh, (-12.0, 12.0), (1e-6, 1e-5, 0.0)),
    u(
        "sigmoid",
        k_sigmoid,
        sigmoid,
        (-30.0, 30.0),
        (1e-6, 1e-5, 0.0),
    ),
    u(
        "relu",
        k_relu,
        |x| x.max(0.0),
        (-5.0, 5.0),
        (1e-7, 1e-7, 0.0),
    ),
    u("gelu", k_gelu, gelu, (-8.0, 8.0), (1e-6, 1e-5, 1e-6)),
    u(
        "gelu_tanh",
        k_gelu_tanh,
        gelu_tanh,
        (-8.0, 8.0),
        (1e-6, 1e-5, 1e-6),
    ),
    u("silu", k_silu, silu, (-30.0, 30.0), (1e-6, 1e-5, 0.0)),
    u("sin", k_sin, f64::sin, (-10.0, 10.0), (1e-6, 2e-5, 0.0)),
    u("cos", k_cos, f64::cos, (-10.0, 10.0), (1e-6, 2e-5, 0.0)),
    u("sin large", k_sin, f64::sin, (-1e4, 1e4), (1e-6, 2e-5, 0.0)),
    u(
        "lib gelu",
        mia_kernels::gelu,
        gelu,
        (-8.0, 8.0),
        (1e-6, 1e-5, 1e-6),
    ),
    u(
        "lib gelu_tanh",
        mia_kernels::gelu_tanh,
        gelu_tanh,
        (-8.0, 8.0),
        (1e-6, 1e-5, 1e-6),
    ),
    u(
        "lib silu",
        mia_kernels::silu,
        silu,
        (-30.0, 30.0),
        (1e-6, 1e-5, 0.0),
    ),
    u(
        "lib relu",
        mia_kernels::relu,
        |x| x.max(0.0),
        (-5.0, 5.0),
        (1e-7, 1e-7, 0.0),
    ),
    u(
        "lib sigmoid",
        mia_kernels::sigmoid,
        sigmoid,
        (-30.0, 30.0),
        (1e-6, 1e-5, 0.0),
    ),
    u(
        "lib tanh",
        mia_kernels::tanh,
        f64::tanh,
        (-12.0, 12.0),
        (1e-6, 1e-5, 0.0),
    ),
];

#[test]
fn unary_ops_match_f64() {
    let _serial = serial();
    let mut rng = rng(1);
    for dev in devices() {
        for c in UNARY {
            let (tol, atol) = if dev.is_gpu() {
                (c.gpu, c.gpu_abs)
            } else {
                (c.cpu, 0.0)
            };
            for &n in LENS {
                // Log-uniform for ranges spanning many decades, else uniform.
                let x: Vec<f32> = if c.lo > 0.0 && c.hi / c.lo > 1e3 {
                    let (a, b) = (c.lo.ln(), c.hi.ln());
                    uniform(&mut rng, n, a, b).iter().map(|v| v.exp()).collect()
                } else {
                    uniform(&mut rng, n, c.lo, c.hi)
                };
                let what = format!("{} n={n}", c.name);
                let got = fetch(&what, (c.k)(&tensor(&dev, &[n], &x)), &[n]);
                check_abs(&what, &dev, &got, &Arr::new(&[n], &x).map(c.r), tol, atol);
            }
        }
    }
}

/// Saturation and overflow: no NaN where the function is finite, ±inf where it overflows.
#[test]
fn unary_extreme_values() {
    let _serial = serial();
    let x: Vec<f32> = vec![
        -1e3, -200.0, -100.0, -88.0, -30.0, -20.0, -9.0, -1.0, -1e-6, -0.0, 0.0, 1e-6, 1.0, 9.0,
        20.0, 30.0, 88.0, 88.7, 100.0, 200.0, 1e3,
    ];
    let n = x.len();
    let cases: &[UnaryRef] = &[
        ("exp", k_exp, f64::exp),
        ("tanh", k_tanh, f64::tanh),
        ("sigmoid", k_sigmoid, sigmoid),
        ("gelu", k_gelu, gelu),
        ("gelu_tanh", k_gelu_tanh, gelu_tanh),
        ("silu", k_silu, silu),
        ("relu", k_relu, |v| v.max(0.0)),
        ("abs", k_abs, f64::abs),
    ];
    for dev in devices() {
        let tol = if dev.is_gpu() { 2e-5 } else { 1e-6 };
        for (name, k, r) in cases {
            let what = format!("{name} extremes");
            let got = fetch(&what, k(&tensor(&dev, &[n], &x)), &[n]);
            check(&what, &dev, &got, &Arr::new(&[n], &x).map(*r), tol);
        }
    }
}

/// ln(0) = -inf, sqrt(0) = 0, rsqrt(0) = +inf, exp(-inf) = 0: exact special values.
#[test]
fn special_values() {
    let _serial = serial();
    for dev in devices() {
        let z = tensor(&dev, &[2], &[0.0f32, f32::NEG_INFINITY]);
        let ln = fetch("ln(0)", k_ln(&z), &[2]);
        assert_eq!(ln[0], f32::NEG_INFINITY, "ln(0) on {dev:?}");
        let sq = fetch("sqrt(0)", k_sqrt(&z), &[2]);
        assert_eq!(sq[0], 0.0, "sqrt(0) on {dev:?}");
        let rs = fetch("rsqrt(0)", k_rsqrt(&z), &[2]);
        assert_eq!(rs[0], f32::INFINITY, "rsqrt(0) on {dev:?}");
        let ex = fetch("exp(-inf)", k_exp(&z), &[2]);
        assert_eq!(ex, vec![1.0, 0.0], "exp on {dev:?}");
    }
}

/// tanh(x) ≈ x near 0: the result must keep its relative accuracy (the CPU's does, 2.4e-7).
#[test]
fn tanh_near_zero_is_relatively_accurate() {
    let _serial = serial();
    let x: Vec<f32> = (0..60)
        .map(|i| 10f32.powf(-8.0 + i as f32 / 10.0) * if i % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    for dev in devices() {
        let got = fetch("tanh", k_tanh(&tensor(&dev, &[60], &x)), &[60]);
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            let r = (v as f64).tanh();
            let rel = ((g as f64 - r) / r).abs();
            assert!(
                rel < 1e-5,
                "tanh({v}) on {dev:?} = {g}, want {r} (relative error {rel:.1e}) [{i}]"
            );
        }
    }
}

/// Left tails: gelu(x) = x·Φ(x) and gelu_tanh are tiny but nonzero for x ≪ 0, and the
/// CPU keeps their relative accuracy (`math::gelu` avoids `1 + erf` cancelling).
#[test]
fn gelu_left_tail_is_relatively_accurate() {
    let _serial = serial();
    let x: Vec<f32> = vec![-3.0, -4.0, -5.0, -6.0, -8.0, -10.0, -12.0];
    let cases: &[UnaryRef] = &[
        ("gelu", k_gelu, gelu),
        ("gelu_tanh", k_gelu_tanh, gelu_tanh),
        ("sigmoid", k_sigmoid, sigmoid),
        ("silu", k_silu, silu),
    ];
    for dev in devices() {
        for (name, k, r) in cases {
            let got = fetch(name, k(&tensor(&dev, &[x.len()], &x)), &[x.len()]);
            for (&g, &v) in got.iter().zip(&x) {
                let w = r(v as f64);
                if (w.abs() as f32) < f32::MIN_POSITIVE {
                    continue; // subnormal or zero in f32
                }
                let rel = ((g as f64 - w) / w).abs();
                assert!(
                    rel < 1e-4,
                    "{name}({v}) on {dev:?} = {g:e}, want {w:e} (relative error {rel:.1e})"
                );
            }
        }
    }
}

// ---- binary f32 ops -------------------------------------------------------------------------

#[kernel]
fn k_add(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    a + b
}
#[kernel]
fn k_sub(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    a - b
}
#[kernel]
fn k_mul(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    a * b
}
#[kernel]
fn k_div(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    a / b
}
#[kernel]
fn k_maximum(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    maximum(a, b)
}
#[kernel]
fn k_minimum(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    a.minimum(b)
}
#[kernel]
fn k_pow(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    pow(a, b)
}
#[kernel]
fn k_swiglu_manual(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    a.silu() * b
}

#[test]
fn binary_ops_match_f64() {
    let _serial = serial();
    type Case = (
        &'static str,
        Binary,
        fn(f64, f64) -> f64,
        (f32, f32),
        (f32, f32),
        f64,
        f64,
    );
    let cases: &[Case] = &[
        (
            "+",
            k_add,
            |a, b| a + b,
            (-10.0, 10.0),
            (-10.0, 10.0),
            1e-7,
            1e-7,
        ),
        (
            "-",
            k_sub,
            |a, b| a - b,
            (-10.0, 10.0),
            (-10.0, 10.0),
            1e-7,
            1e-7,
        ),
        (
            "*",
            k_mul,
            |a, b| a * b,
            (-10.0, 10.0),
            (-10.0, 10.0),
            1e-7,
            1e-7,
        ),
        (
            "/",
            k_div,
            |a, b| a / b,
            (-10.0, 10.0),
            (0.5, 4.0),
            2e-7,
            5e-7,
        ),
        (
            "maximum",
            k_maximum,
            f64::max,
            (-1.0, 1.0),
            (-1.0, 1.0),
            1e-7,
            1e-7,
        ),
        (
            "minimum",
            k_minimum,
            f64::min,
            (-1.0, 1.0),
            (-1.0, 1.0),
            1e-7,
            1e-7,
        ),
        (
            "pow",
            k_pow,
            f64::powf,
            (0.01, 10.0),
            (-3.0, 3.0),
            1e-6,
            2e-5,
        ),
        (
            "swiglu",
            mia_kernels::swiglu,
            |a, b| silu(a) * b,
            (-20.0, 20.0),
            (-2.0, 2.0),
            1e-6,
            1e-5,
        ),
        (
            "silu(a)*b",
            k_swiglu_manual,
            |a, b| silu(a) * b,
            (-20.0, 20.0),
            (-2.0, 2.0),
            1e-6,
            1e-5,
        ),
    ];
    let mut rng = rng(2);
    for dev in devices() {
        for &(name, k, r, ra, rb, cpu, gpu) in cases {
            let tol = if dev.is_gpu() { gpu } else { cpu };
            for &n in LENS {
                let a = uniform(&mut rng, n, ra.0, ra.1);
                let mut b = uniform(&mut rng, n, rb.0, rb.1);
                if name == "/" {
                    // Divisors of both signs.
                    b.iter_mut().step_by(2).for_each(|v| *v = -*v);
                }
                let what = format!("{name} n={n}");
                let got = fetch(
                    &what,
                    k(&tensor(&dev, &[n], &a), &tensor(&dev, &[n], &b)),
                    &[n],
                );
                let want = Arr::new(&[n], &a).zip(&Arr::new(&[n], &b), r);
                check(&what, &dev, &got, &want, tol);
            }
        }
    }
}

/// `pow` of a negative base with an integer exponent is defined (IEEE 754 pow, and
/// mia_runtime::math::pow on the CPU): (-2)^3 = -8.
#[test]
fn pow_negative_base_integer_exponent() {
    let _serial = serial();
    let a = [-2.0f32, -3.0, -0.5, -1.0, 2.0];
    let b = [3.0f32, 2.0, -2.0, 7.0, 3.0];
    for dev in devices() {
        let got = fetch(
            "pow neg",
            k_pow(&tensor(&dev, &[5], &a), &tensor(&dev, &[5], &b)),
            &[5],
        );
        let want = Arr::new(&[5], &a).zip(&Arr::new(&[5], &b), f64::powf);
        check("pow(neg, int)", &dev, &got, &want, 1e-5);
    }
}

// ---- comparisons, select, bool --------------------------------------------------------------

#[kernel]
fn k_lt(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    a < b
}
#[kernel]
fn k_le(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    a <= b
}
#[kernel]
fn k_gt(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    a > b
}
#[kernel]
fn k_ge(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    a >= b
}
#[kernel]
fn k_eq(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    a == b
}
#[kernel]
fn k_ne(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    a != b
}
#[kernel]
fn k_gt_lit(a: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<bool, N> {
    (a > 0.0) == (b <= 0.5)
}

type Cmp = fn(&Tensor<f32>, &Tensor<f32>) -> Result<Tensor<bool>, Error>;
type CmpRef = fn(f32, f32) -> bool;

#[test]
fn comparisons_are_exact() {
    let _serial = serial();
    let cases: &[(&str, Cmp, CmpRef)] = &[
        ("<", k_lt, |a, b| a < b),
        ("<=", k_le, |a, b| a <= b),
        (">", k_gt, |a, b| a > b),
        (">=", k_ge, |a, b| a >= b),
        ("==", k_eq, |a, b| a == b),
        ("!=", k_ne, |a, b| a != b),
        ("(a>0)==(b<=0.5)", k_gt_lit, |a, b| (a > 0.0) == (b <= 0.5)),
    ];
    let mut rng = rng(3);
    for dev in devices() {
        for &(name, k, r) in cases {
            for &n in LENS {
                // Values on a coarse grid so that ties (and -0 == 0) occur often.
                let grid = |v: f32| (v * 2.0).round() / 2.0;
                let a: Vec<f32> = uniform(&mut rng, n, -2.0, 2.0)
                    .into_iter()
                    .map(grid)
                    .collect();
                let mut b: Vec<f32> = uniform(&mut rng, n, -2.0, 2.0)
                    .into_iter()
                    .map(grid)
                    .collect();
                b.iter_mut().step_by(7).for_each(|v| *v = -0.0);
                let what = format!("{name} n={n}");
                let got = fetch(
                    &what,
                    k(&tensor(&dev, &[n], &a), &tensor(&dev, &[n], &b)),
                    &[n],
                );
                let want: Vec<bool> = a.iter().zip(&b).map(|(&x, &y)| r(x, y)).collect();
                check_exact(&what, &dev, &got, &want);
            }
        }
    }
}

#[kernel]
fn k_select(x: Tensor<f32, N>, y: Tensor<f32, N>) -> Tensor<f32, N> {
    select(x > y, x, y * 2.0)
}
#[kernel]
fn k_select_lits(x: Tensor<f32, N>) -> Tensor<f32, N> {
    select(x >= 0.0, 1.0, -1.0)
}
#[kernel]
fn k_select_mask(m: Tensor<bool, N>, x: Tensor<f32, N>) -> Tensor<f32, N> {
    select(m, x, 0.0)
}
#[kernel]
fn k_select_bcast(
    m: Tensor<bool, N, 1>,
    a: Tensor<f32, N, D>,
    b: Tensor<f32, D>,
) -> Tensor<f32, N, D> {
    m.select(a, b)
}
#[kernel]
fn k_bool_eq(a: Tensor<bool, N>, b: Tensor<bool, N>) -> (Tensor<bool, N>, Tensor<bool, N>) {
    (a == b, a != true)
}
#[kernel]
fn k_flag(x: Tensor<f32, N>, flag: bool) -> Tensor<f32, N> {
    select(flag, x, -x)
}

#[test]
fn select_and_bool() {
    let _serial = serial();
    let mut rng = rng(4);
    for dev in devices() {
        for &n in LENS {
            let x = uniform(&mut rng, n, -3.0, 3.0);
            let y = uniform(&mut rng, n, -3.0, 3.0);
            let m: Vec<bool> = x.iter().map(|&v| v > 0.5).collect();
            let m2: Vec<bool> = y.iter().map(|&v| v > 0.0).collect();
            let (tx, ty) = (tensor(&dev, &[n], &x), tensor(&dev, &[n], &y));
            let (ax, ay) = (Arr::new(&[n], &x), Arr::new(&[n], &y));
            let got = fetch("select", k_select(&tx, &ty), &[n]);
            let want = ax.zip(&ay, |a, b| if a > b { a } else { 2.0 * b });
            check("select(x>y, x, 2y)", &dev, &got, &want, 1e-7);
            let got = fetch("select lits", k_select_lits(&tx), &[n]);
            check(
                "select lits",
                &dev,
                &got,
                &ax.map(|a| if a >= 0.0 { 1.0 } else { -1.0 }),
                0.0,
            );
            let tm = tensor(&dev, &[n], &m);
            let got = fetch("select mask", k_select_mask(&tm, &tx), &[n]);
            check(
                "select mask",
                &dev,
                &got,
                &ax.map(|a| if a > 0.5 { a } else { 0.0 }),
                0.0,
            );
            let (eq, ne) = k_bool_eq(&tm, &tensor(&dev, &[n], &m2)).unwrap();
            let want: Vec<bool> = m.iter().zip(&m2).map(|(a, b)| a == b).collect();
            check_exact("bool ==", &dev, &eq.to_vec().unwrap(), &want);
            let want: Vec<bool> = m.iter().map(|a| !a).collect();
            check_exact("bool != true", &dev, &ne.to_vec().unwrap(), &want);
            for flag in [true, false] {
                let got = fetch("flag", k_flag(&tx, flag), &[n]);
                check(
                    "select(flag)",
                    &dev,
                    &got,
                    &ax.map(|a| if flag { a } else { -a }),
                    0.0,
                );
            }
        }
        let (n, d) = (5, 19);
        let mb: Vec<bool> = (0..n).map(|i| i % 2 == 0).collect();
        let a = uniform(&mut rng, n * d, -1.0, 1.0);
        let b = uniform(&mut rng, d, -1.0, 1.0);
        let got = fetch(
            "select bcast",
            k_select_bcast(
                &tensor(&dev, &[n, 1], &mb),
                &tensor(&dev, &[n, d], &a),
                &tensor(&dev, &[d], &b),
            ),
            &[n, d],
        );
        let mf = Arr::f64(&[n, 1], mb.iter().map(|&v| v as u8 as f64).collect());
        let want = mf
            .mul(&Arr::new(&[n, d], &a))
            .add(&mf.map(|v| 1.0 - v).mul(&Arr::new(&[d], &b)));
        check("select broadcast", &dev, &got, &want, 0.0);
    }
}

// ---- casts ----------------------------------------------------------------------------------

#[kernel]
fn k_f2i(x: Tensor<f32, N>) -> Tensor<i32, N> {
    cast::<i32>(x)
}
#[kernel]
fn k_i2f(x: Tensor<i32, N>) -> Tensor<f32, N> {
    x.cast::<f32>()
}
#[kernel]
fn k_f2b(x: Tensor<f32, N>) -> Tensor<bool, N> {
    cast::<bool>(x)
}
#[kernel]
fn k_b2f(x: Tensor<bool, N>) -> Tensor<f32, N> {
    cast::<f32>(x)
}
#[kernel]
fn k_f2u(x: Tensor<f32, N>) -> Tensor<u32, N> {
    cast::<u32>(x)
}
#[kernel]
fn k_u2f(x: Tensor<u32, N>) -> Tensor<f32, N> {
    cast::<f32>(x)
}
#[kernel]
fn k_b2i(x: Tensor<bool, N>) -> Tensor<i32, N> {
    cast::<i32>(x)
}
#[kernel]
fn k_i2u(x: Tensor<i32, N>) -> Tensor<u32, N> {
    cast::<u32>(x)
}
#[kernel]
fn k_mask_count(x: Tensor<f32, N>) -> Tensor<f32, N> {
    cast::<f32>(x > 0.0) * x
}

#[test]
fn casts_are_exact() {
    let _serial = serial();
    let mut rng = rng(5);
    for dev in devices() {
        for &n in LENS {
            // Fractions of both signs (truncation toward zero), exact integers, ±0.
            let mut x = uniform(&mut rng, n, -1000.0, 1000.0);
            for (i, v) in x.iter_mut().enumerate() {
                match i % 5 {
                    0 => *v = v.round(),
                    1 => *v /= 1000.0,
                    2 if i % 10 == 2 => *v = 0.0,
                    _ => {}
                }
            }
            let tx = tensor(&dev, &[n], &x);
            let want: Vec<i32> = x.iter().map(|&v| v.trunc() as i32).collect();
            check_exact("f32->i32", &dev, &fetch("f2i", k_f2i(&tx), &[n]), &want);
            let want: Vec<bool> = x.iter().map(|&v| v != 0.0).collect();
            check_exact("f32->bool", &dev, &fetch("f2b", k_f2b(&tx), &[n]), &want);
            let xa: Vec<f32> = x.iter().map(|v| v.abs() * 1000.0).collect();
            let want: Vec<u32> = xa.iter().map(|&v| v.trunc() as u32).collect();
            check_exact(
                "f32->u32",
                &dev,
                &fetch("f2u", k_f2u(&tensor(&dev, &[n], &xa)), &[n]),
                &want,
            );
            let want: Vec<f32> = x.iter().map(|&v| if v > 0.0 { v } else { 0.0 }).collect();
            check_exact(
                "cast(x>0)*x",
                &dev,
                &fetch("mask", k_mask_count(&tx), &[n]),
                &want,
            );

            let xi: Vec<i32> = (0..n)
                .map(|i| (i as i32 - 3) * 1021 * if i % 2 == 0 { 1 } else { -1 })
                .collect();
            let ti = tensor(&dev, &[n], &xi);
            let want: Vec<f32> = xi.iter().map(|&v| v as f32).collect();
            check_exact("i32->f32", &dev, &fetch("i2f", k_i2f(&ti), &[n]), &want);
            let want: Vec<u32> = xi.iter().map(|&v| v as u32).collect();
            check_exact("i32->u32", &dev, &fetch("i2u", k_i2u(&ti), &[n]), &want);
            let xu: Vec<u32> = (0..n as u32)
                .map(|i| i.wrapping_mul(2_654_435_761) >> 8)
                .collect();
            let want: Vec<f32> = xu.iter().map(|&v| v as f32).collect();
            check_exact(
                "u32->f32",
                &dev,
                &fetch("u2f", k_u2f(&tensor(&dev, &[n], &xu)), &[n]),
                &want,
            );
            let xb: Vec<bool> = (0..n).map(|i| i % 3 == 1).collect();
            let tb = tensor(&dev, &[n], &xb);
            let want: Vec<f32> = xb.iter().map(|&v| v as u8 as f32).collect();
            check_exact("bool->f32", &dev, &fetch("b2f", k_b2f(&tb), &[n]), &want);
            let want: Vec<i32> = xb.iter().map(|&v| v as i32).collect();
            check_exact("bool->i32", &dev, &fetch("b2i", k_b2i(&tb), &[n]), &want);
        }
    }
}

// ---- integer arithmetic ---------------------------------------------------------------------

#[kernel]
fn k_iarith(
    a: Tensor<i32, N>,
    b: Tensor<i32, N>,
) -> (
    Tensor<i32, N>,
    Tensor<i32, N>,
    Tensor<i32, N>,
    Tensor<i32, N>,
) {
    (a + b, a - b, a * b, a / b)
}
#[kernel]
fn k_iunary(
    a: Tensor<i32, N>,
    b: Tensor<i32, N>,
) -> (
    Tensor<i32, N>,
    Tensor<i32, N>,
    Tensor<i32, N>,
    Tensor<i32, N>,
) {
    (-a, abs(a), relu(a), maximum(a, b) - minimum(a, b))
}
#[kernel]
fn k_icmp(a: Tensor<i32, N>, b: Tensor<i32, N>) -> (Tensor<bool, N>, Tensor<bool, N>) {
    (a < b, a >= b * 2)
}
#[kernel]
fn k_ilit(a: Tensor<i32, N>, k: i32) -> Tensor<i32, N> {
    a * 3 + k - 7
}
#[kernel]
fn k_uarith(
    a: Tensor<u32, N>,
    b: Tensor<u32, N>,
) -> (
    Tensor<u32, N>,
    Tensor<u32, N>,
    Tensor<u32, N>,
    Tensor<u32, N>,
) {
    (a + b, a - b, a * b, a / b)
}
#[kernel]
fn k_uother(
    a: Tensor<u32, N>,
    b: Tensor<u32, N>,
    k: u32,
) -> (Tensor<u32, N>, Tensor<bool, N>, Tensor<u32, N>) {
    (maximum(a, b) + k, a > b, abs(a) + relu(b))
}

#[test]
fn integer_ops_are_exact() {
    let _serial = serial();
    let mut rng = rng(6);
    // WGSL integer semantics: wrapping arithmetic, x / 0 = x, i32::MIN / -1 = i32::MIN.
    let idiv = |a: i32, b: i32| if b == 0 { a } else { a.wrapping_div(b) };
    let udiv = |a: u32, b: u32| a.checked_div(b).unwrap_or(a);
    for dev in devices() {
        for &n in LENS {
            let mut a: Vec<i32> = (0..n)
                .map(|_| rand::Rng::random_range(&mut rng, -50_000..50_000))
                .collect();
            let mut b: Vec<i32> = (0..n)
                .map(|_| rand::Rng::random_range(&mut rng, -300..300))
                .collect();
            // Overflow, division by zero and by -1 of i32::MIN.
            for (i, (x, y)) in a.iter_mut().zip(b.iter_mut()).enumerate() {
                match i % 6 {
                    1 => *y = 0,
                    2 => (*x, *y) = (i32::MIN, -1),
                    3 => (*x, *y) = (i32::MAX, 3),
                    _ => {}
                }
            }
            let (ta, tb) = (tensor(&dev, &[n], &a), tensor(&dev, &[n], &b));
            let (s, d, m, q) = k_iarith(&ta, &tb).unwrap();
            let z = |f: &dyn Fn(i32, i32) -> i32| -> Vec<i32> {
                a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect()
            };
            check_exact(
                "i32 +",
                &dev,
                &s.to_vec().unwrap(),
                &z(&|x, y| x.wrapping_add(y)),
            );
            check_exact(
                "i32 -",
                &dev,
                &d.to_vec().unwrap(),
                &z(&|x, y| x.wrapping_sub(y)),
            );
            check_exact(
                "i32 *",
                &dev,
                &m.to_vec().unwrap(),
                &z(&|x, y| x.wrapping_mul(y)),
            );
            check_exact("i32 /", &dev, &q.to_vec().unwrap(), &z(&idiv));
            let (ng, ab, re, mm) = k_iunary(&ta, &tb).unwrap();
            check_exact(
                "i32 neg",
                &dev,
                &ng.to_vec().unwrap(),
                &z(&|x, _| x.wrapping_neg()),
            );
            check_exact(
                "i32 abs",
                &dev,
                &ab.to_vec().unwrap(),
                &z(&|x, _| x.wrapping_abs()),
            );
            check_exact(
                "i32 relu",
                &dev,
                &re.to_vec().unwrap(),
                &z(&|x, _| x.max(0)),
            );
            check_exact(
                "i32 max-min",
                &dev,
                &mm.to_vec().unwrap(),
                &z(&|x, y| x.max(y).wrapping_sub(x.min(y))),
            );
            let (lt, ge) = k_icmp(&ta, &tb).unwrap();
            let zb = |f: &dyn Fn(i32, i32) -> bool| -> Vec<bool> {
                a.iter().zip(&b).map(|(&x, &y)| f(x, y)).collect()
            };
            check_exact("i32 <", &dev, &lt.to_vec().unwrap(), &zb(&|x, y| x < y));
            check_exact(
                "i32 >= 2b",
                &dev,
                &ge.to_vec().unwrap(),
                &zb(&|x, y| x >= y.wrapping_mul(2)),
            );
            let got = fetch("i32 lit", k_ilit(&ta, -11), &[n]);
            check_exact(
                "a*3+k-7",
                &dev,
                &got,
                &z(&|x, _| x.wrapping_mul(3).wrapping_add(-11).wrapping_sub(7)),
            );

            let ua: Vec<u32> = a.iter().map(|&v| v as u32).collect();
            let ub: Vec<u32> = b.iter().map(|&v| v.unsigned_abs() % 1000).collect();
            let (ta, tb) = (tensor(&dev, &[n], &ua), tensor(&dev, &[n], &ub));
            let zu = |f: &dyn Fn(u32, u32) -> u32| -> Vec<u32> {
                ua.iter().zip(&ub).map(|(&x, &y)| f(x, y)).collect()
            };
            let (s, d, m, q) = k_uarith(&ta, &tb).unwrap();
            check_exact(
                "u32 +",
                &dev,
                &s.to_vec().unwrap(),
                &zu(&|x, y| x.wrapping_add(y)),
            );
            check_exact(
                "u32 -",
                &dev,
                &d.to_vec().unwrap(),
                &zu(&|x, y| x.wrapping_sub(y)),
            );
            check_exact(
                "u32 *",
                &dev,
                &m.to_vec().unwrap(),
                &zu(&|x, y| x.wrapping_mul(y)),
            );
            check_exact("u32 /", &dev, &q.to_vec().unwrap(), &zu(&udiv));
            let (mx, gt, ar) = k_uother(&ta, &tb, 4_000_000_000).unwrap();
            check_exact(
                "u32 max+k",
                &dev,
                &mx.to_vec().unwrap(),
                &zu(&|x, y| x.max(y).wrapping_add(4_000_000_000)),
            );
            let want: Vec<bool> = ua.iter().zip(&ub).map(|(x, y)| x > y).collect();
            check_exact("u32 >", &dev, &gt.to_vec().unwrap(), &want);
            check_exact(
                "u32 abs+relu",
                &dev,
                &ar.to_vec().unwrap(),
                &zu(&|x, y| x.wrapping_add(y)),
            );
        }
    }
}

// ---- scalars, literals, tuples --------------------------------------------------------------

#[kernel]
fn k_axpy(x: Tensor<f32, N>, y: Tensor<f32, N>, alpha: f32) -> Tensor<f32, N> {
    x * alpha + y
}
#[kernel]
fn k_literals(x: Tensor<f32, N>) -> Tensor<f32, N> {
    (x * 2 + 0.5) / 4.0 - (1 + 2) * x + -1.5 * (2.0 * 3.0) + 1e-3 / x.abs().maximum(1.0)
}
#[kernel]
fn k_lit_left(x: Tensor<f32, N>, a: f32, b: f32) -> Tensor<f32, N> {
    1.0 - a / (b + x * x)
}
#[kernel]
fn k_fill(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x * 0.0 + 3.5
}
#[kernel]
fn k_identity(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x
}
#[kernel]
fn k_identity_pair(x: Tensor<f32, N>) -> (Tensor<f32, N>, Tensor<f32, N>) {
    (x * 2.0, x)
}
#[kernel]
fn k_cast_same(x: Tensor<f32, N>) -> Tensor<f32, N> {
    cast::<f32>(x)
}
#[kernel]
fn k_tuple(x: Tensor<f32, N>, alpha: f32) -> (Tensor<f32, N>, Tensor<f32, N>, Tensor<bool, N>) {
    let y = x * alpha;
    (y, relu(y) + 1.0, y > 1.0)
}
#[kernel]
fn k_tuple_same(x: Tensor<f32, N>) -> (Tensor<f32, N>, Tensor<f32, N>) {
    let e = exp(x);
    (e, e)
}
#[kernel]
fn k_chain(x: Tensor<f32, N>, b: Tensor<f32, N>) -> Tensor<f32, N> {
    let h = (x + b) * 0.5;
    let g = h.tanh() * sigmoid(h) - h.abs().sqrt();
    gelu(g) + silu(-g) * cos(h) - sin(x) / (1.0 + exp(-b))
}

#[test]
fn scalars_literals_and_tuples() {
    let _serial = serial();
    let mut rng = rng(7);
    for dev in devices() {
        let t = if dev.is_gpu() { 2e-5 } else { 1e-6 };
        for &n in LENS {
            let x = uniform(&mut rng, n, -3.0, 3.0);
            let y = uniform(&mut rng, n, -3.0, 3.0);
            let (tx, ty) = (tensor(&dev, &[n], &x), tensor(&dev, &[n], &y));
            let (ax, ay) = (Arr::new(&[n], &x), Arr::new(&[n], &y));
            for alpha in [0.0f32, -2.5, 1e-3, 7.0] {
                let got = fetch("axpy", k_axpy(&tx, &ty, alpha), &[n]);
                check(
                    "x*alpha+y",
                    &dev,
                    &got,
                    &ax.zip(&ay, |a, b| a * alpha as f64 + b),
                    1e-7,
                );
            }
            let got = fetch("literals", k_literals(&tx), &[n]);
            let want = ax.map(|v| (v * 2.0 + 0.5) / 4.0 - 3.0 * v - 9.0 + 1e-3 / v.abs().max(1.0));
            check("literals", &dev, &got, &want, 1e-6);
            let got = fetch("lit left", k_lit_left(&tx, 2.0, 0.25), &[n]);
            check(
                "1 - a/(b+x²)",
                &dev,
                &got,
                &ax.map(|v| 1.0 - 2.0 / (0.25 + v * v)),
                1e-6,
            );
            let got = fetch("fill", k_fill(&tx), &[n]);
            check("literal output", &dev, &got, &ax.map(|_| 3.5), 0.0);
            let (a, b, c) = k_tuple(&tx, 1.5).unwrap();
            check(
                "tuple 0",
                &dev,
                &a.to_vec().unwrap(),
                &ax.map(|v| 1.5 * v),
                1e-7,
            );
            check(
                "tuple 1",
                &dev,
                &b.to_vec().unwrap(),
                &ax.map(|v| (1.5 * v).max(0.0) + 1.0),
                1e-7,
            );
            let want: Vec<bool> = x.iter().map(|&v| v * 1.5 > 1.0).collect();
            check_exact("tuple 2", &dev, &c.to_vec().unwrap(), &want);
            let (e1, e2) = k_tuple_same(&tx).unwrap();
            check("(e, e).0", &dev, &e1.to_vec().unwrap(), &ax.exp(), t);
            check("(e, e).1", &dev, &e2.to_vec().unwrap(), &ax.exp(), t);
            let got = fetch("chain", k_chain(&tx, &ty), &[n]);
            let want = ax.zip(&ay, |x, b| {
                let h = (x + b) * 0.5;
                let g = h.tanh() * sigmoid(h) - h.abs().sqrt();
                gelu(g) + silu(-g) * h.cos() - x.sin() / (1.0 + (-b).exp())
            });
            check("14-op chain", &dev, &got, &want, t);
        }
    }
}

/// A body that returns an input as it is (`x`, or a no-op `cast::<f32>` of an f32 input) must
/// copy it; returning it next to another output must not corrupt that output either.
#[test]
fn returning_an_input_copies_it() {
    let _serial = serial();
    for dev in devices() {
        let x = [1.0f32, -2.0, 3.0, 4.5];
        let (tx, ax) = (tensor(&dev, &[4], &x), Arr::new(&[4], &x));
        check("x", &dev, &fetch("id", k_identity(&tx), &[4]), &ax, 0.0);
        check(
            "cast::<f32>(x)",
            &dev,
            &fetch("cast", k_cast_same(&tx), &[4]),
            &ax,
            0.0,
        );
        let (twice, id) = k_identity_pair(&tx).unwrap();
        check(
            "(x*2, x).0",
            &dev,
            &twice.to_vec().unwrap(),
            &ax.map(|v| 2.0 * v),
            0.0,
        );
        check("(x*2, x).1", &dev, &id.to_vec().unwrap(), &ax, 0.0);
    }
}

// ---- broadcasting ---------------------------------------------------------------------------

#[kernel]
fn k_row_bias(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    x + b
}
#[kernel]
fn k_outer(a: Tensor<f32, N, 1>, b: Tensor<f32, 1, D>) -> Tensor<f32, N, D> {
    a * b
}
#[kernel]
fn k_col_scale(x: Tensor<f32, N, D>, s: Tensor<f32, N, 1>) -> Tensor<f32, N, D> {
    x * s - s
}
#[kernel]
fn k_rank0(x: Tensor<f32, N, D>, s: Tensor<f32>) -> Tensor<f32, N, D> {
    x * s + s
}
#[kernel]
fn k_rank0_out(s: Tensor<f32>, t: Tensor<f32>) -> Tensor<f32> {
    s * t + 1.0
}
#[kernel]
fn k_rank3(
    x: Tensor<f32, B, N, D>,
    y: Tensor<f32, N, 1>,
    z: Tensor<f32, B, 1, D>,
) -> Tensor<f32, B, N, D> {
    x + y - z
}
#[kernel]
fn k_both_ways(a: Tensor<f32, N, 1, D>, b: Tensor<f32, M, D>) -> Tensor<f32, N, M, D> {
    a - b
}
#[kernel]
fn k_bias_gelu_manual(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    gelu(x + b)
}
#[kernel]
fn k_rank3_unary(x: Tensor<f32, A, B, C>) -> Tensor<f32, A, B, C> {
    exp(x) * 2.0
}

/// Random (N, D) pairs with odd sizes, 1s and zeros, plus a long row.
fn shapes2(rng: &mut rand::rngs::StdRng) -> Vec<(usize, usize)> {
    let mut v = vec![
        (1, 1),
        (0, 5),
        (5, 0),
        (1, 7),
        (7, 1),
        (3, 17),
        (17, 3),
        (4, 257),
        (3, 12_345),
        (1023, 3),
        (4, 4),
        (3, 16),
        (5, 256),
        (2, 1024),
    ];
    for _ in 0..8 {
        v.push((
            rand::Rng::random_range(rng, 1..40),
            rand::Rng::random_range(rng, 1..300),
        ));
    }
    v
}

#[test]
fn broadcasting_matches_numpy() {
    let _serial = serial();
    let mut rng = rng(8);
    for dev in devices() {
        let t = if dev.is_gpu() { 2e-6 } else { 1e-6 };
        for (n, d) in shapes2(&mut rng) {
            let x = uniform(&mut rng, n * d, -2.0, 2.0);
            let b = uniform(&mut rng, d, -2.0, 2.0);
            let s = uniform(&mut rng, n, -2.0, 2.0);
            let (tx, ax) = (tensor(&dev, &[n, d], &x), Arr::new(&[n, d], &x));
            let (ab, as_) = (Arr::new(&[d], &b), Arr::new(&[n, 1], &s));
            let tag = format!("[{n}, {d}]");
            let got = fetch(&tag, k_row_bias(&tx, &tensor(&dev, &[d], &b)), &[n, d]);
            check(&format!("[N,D]+[D] {tag}"), &dev, &got, &ax.add(&ab), 1e-7);
            let got = fetch(
                &tag,
                k_outer(&tensor(&dev, &[n, 1], &s), &tensor(&dev, &[1, d], &b)),
                &[n, d],
            );
            check(
                &format!("[N,1]*[1,D] {tag}"),
                &dev,
                &got,
                &as_.mul(&ab.reshape(&[1, d])),
                1e-7,
            );
            let got = fetch(&tag, k_col_scale(&tx, &tensor(&dev, &[n, 1], &s)), &[n, d]);
            check(
                &format!("[N,D]*[N,1] {tag}"),
                &dev,
                &got,
                &ax.mul(&as_).sub(&as_),
                1e-6,
            );
            let got = fetch(
                &tag,
                k_rank0(&tx, &Tensor::scalar(&dev, -1.25f32).unwrap()),
                &[n, d],
            );
            let sc = Arr::scalar(-1.25);
            check(
                &format!("[N,D]*[] {tag}"),
                &dev,
                &got,
                &ax.mul(&sc).add(&sc),
                1e-6,
            );
            let got = fetch(
                &tag,
                mia_kernels::bias_gelu(&tx, &tensor(&dev, &[d], &b)),
                &[n, d],
            );
            check(
                &format!("lib bias_gelu {tag}"),
                &dev,
                &got,
                &ax.add(&ab).map(gelu),
                t * 10.0,
            );
            let got = fetch(
                &tag,
                k_bias_gelu_manual(&tx, &tensor(&dev, &[d], &b)),
                &[n, d],
            );
            check(
                &format!("gelu(x+b) {tag}"),
                &dev,
                &got,
                &ax.add(&ab).map(gelu),
                t * 10.0,
            );
        }
        for (bb, n, d) in [
            (2, 3, 5),
            (1, 1, 1),
            (3, 1, 17),
            (4, 33, 9),
            (2, 0, 3),
            (5, 7, 300),
        ] {
            let x = uniform(&mut rng, bb * n * d, -2.0, 2.0);
            let y = uniform(&mut rng, n, -2.0, 2.0);
            let z = uniform(&mut rng, bb * d, -2.0, 2.0);
            let tag = format!("[{bb}, {n}, {d}]");
            let got = fetch(
                &tag,
                k_rank3(
                    &tensor(&dev, &[bb, n, d], &x),
                    &tensor(&dev, &[n, 1], &y),
                    &tensor(&dev, &[bb, 1, d], &z),
                ),
                &[bb, n, d],
            );
            let want = Arr::new(&[bb, n, d], &x)
                .add(&Arr::new(&[n, 1], &y))
                .sub(&Arr::new(&[bb, 1, d], &z));
            check(
                &format!("[B,N,D]+[N,1]-[B,1,D] {tag}"),
                &dev,
                &got,
                &want,
                1e-6,
            );
            // [N,1,D] - [M,D] -> [N,M,D], with (N, M, D) = (bb, n, d).
            let a = uniform(&mut rng, bb * d, -2.0, 2.0);
            let b = uniform(&mut rng, n * d, -2.0, 2.0);
            let got = fetch(
                &tag,
                k_both_ways(&tensor(&dev, &[bb, 1, d], &a), &tensor(&dev, &[n, d], &b)),
                &[bb, n, d],
            );
            let want = Arr::new(&[bb, 1, d], &a).sub(&Arr::new(&[n, d], &b));
            check(&format!("[N,1,D]-[M,D] {tag}"), &dev, &got, &want, 1e-7);
            let got = fetch(
                &tag,
                k_rank3_unary(&tensor(&dev, &[bb, n, d], &x)),
                &[bb, n, d],
            );
            check(
                &format!("exp rank 3 {tag}"),
                &dev,
                &got,
                &Arr::new(&[bb, n, d], &x).map(|v| 2.0 * v.exp()),
                t * 10.0,
            );
        }
        let got = fetch(
            "rank0",
            k_rank0_out(
                &Tensor::scalar(&dev, 3.0f32).unwrap(),
                &Tensor::scalar(&dev, -0.5f32).unwrap(),
            ),
            &[],
        );
        check("rank-0 output", &dev, &got, &Arr::scalar(-0.5), 0.0);
    }
}

#[kernel]
#[allow(clippy::too_many_arguments)]
fn k_many_inputs(
    a: Tensor<f32, N>,
    b: Tensor<f32, N>,
    c: Tensor<f32, N>,
    d: Tensor<f32, N>,
    e: Tensor<f32, N>,
    f: Tensor<f32, N>,
    g: Tensor<f32, N>,
    h: Tensor<f32, N>,
    i: Tensor<f32, N>,
    j: Tensor<f32, N>,
) -> (Tensor<f32, N>, Tensor<f32, N>) {
    (a + b + c + d + e, f * g - h * i + j)
}

/// Ten inputs and two outputs (13 storage bindings with the parameters): past wgpu's default
/// limit of 8 per stage, within what real adapters (and lavapipe) support.
#[test]
fn many_inputs_and_outputs() {
    let _serial = serial();
    let mut rng = rng(9);
    for dev in devices() {
        let n = 1001;
        let v: Vec<Vec<f32>> = (0..10).map(|_| uniform(&mut rng, n, -1.0, 1.0)).collect();
        let t: Vec<Tensor<f32>> = v.iter().map(|x| tensor(&dev, &[n], x)).collect();
        let a: Vec<Arr> = v.iter().map(|x| Arr::new(&[n], x)).collect();
        let (s, p) = k_many_inputs(
            &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7], &t[8], &t[9],
        )
        .unwrap();
        let want = a[0].add(&a[1]).add(&a[2]).add(&a[3]).add(&a[4]);
        check("sum of 5", &dev, &s.to_vec().unwrap(), &want, 1e-6);
        let want = a[5].mul(&a[6]).sub(&a[7].mul(&a[8])).add(&a[9]);
        check("f*g - h*i + j", &dev, &p.to_vec().unwrap(), &want, 1e-6);
    }
}

/// Run-time shape checks are `Result`s, never panics.
#[test]
fn shape_errors_are_results() {
    let _serial = serial();
    for dev in devices() {
        let x = tensor(&dev, &[3, 4], &[0.0f32; 12]);
        assert!(k_row_bias(&x, &tensor(&dev, &[5], &[0.0f32; 5])).is_err());
        assert!(k_row_bias(&x, &tensor(&dev, &[3, 4], &[0.0f32; 12])).is_err());
        assert!(k_outer(
            &tensor(&dev, &[3, 2], &[0.0f32; 6]),
            &tensor(&dev, &[1, 4], &[0.0f32; 4])
        )
        .is_err());
        assert!(k_add(
            &tensor(&dev, &[3], &[0.0f32; 3]),
            &tensor(&dev, &[4], &[0.0f32; 4])
        )
        .is_err());
    }
    // Tensors on two devices.
    let devs = devices();
    if let [cpu, gpu] = &devs[..] {
        let (a, b) = (
            tensor(cpu, &[3], &[1.0f32; 3]),
            tensor(gpu, &[3], &[1.0f32; 3]),
        );
        assert!(matches!(k_add(&a, &b), Err(Error::Devices { .. })));
    }
}

/// Kernels and read-backs from several threads at once (tests run on parallel threads).
#[test]
fn concurrent_readbacks_from_threads_succeed() {
    let Some(dev) = mia_runtime::testing::gpu() else {
        return;
    };
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let dev = dev.clone();
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let n = if t % 2 == 0 { 2 } else { 3000 };
                    let x = tensor(&dev, &[n], &vec![(t + i) as f32 * 1e-3; n]);
                    let y = k_exp(&x).and_then(|y| y.to_vec());
                    if let Err(e) = y {
                        return Err(format!("thread {t}, call {i}: {e}"));
                    }
                }
                Ok(())
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().unwrap();
    }
}
