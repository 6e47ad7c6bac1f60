//! Accuracy and special values of `mia_runtime::math` against `f64` references.
//!
//! Each function is swept over dense grids, over every 2^k-th bit pattern of the whole `f32`
//! line (so all binades, subnormals, ±inf and NaN are hit), and over random samples. An
//! error passes if it is within `rel·|reference|` or within `abs` (the latter only for
//! results that are subnormal or that a function documents as flushed). The bounds are the
//! measured maxima (exhaustive, in `math.rs` doc comments) with a small margin, so a
//! regression of even one ulp in a polynomial shows up.

use mia_runtime::math;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::f64::consts::FRAC_2_SQRT_PI;

/// Smallest positive subnormal `f32`, 2^-149.
const SUB_ULP: f64 = 1.401_298_464_324_817e-45;

// ---------------------------------------------------------------- f64 references

use mia_runtime::testing::reference::{erf64, erfc64, gelu64, gelu_tanh64, sigmoid64};

/// The activations' references take their limit at -inf (`x·0` would be NaN).
fn silu64(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        -0.0
    } else {
        x * sigmoid64(x)
    }
}

#[test]
fn erf_reference_matches_known_values() {
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((erf64(x) - want).abs() < 1e-15, "erf64({x}) = {}", erf64(x));
        assert!((erf64(-x) + want).abs() < 1e-15);
    }
    // erfc(5) = 1.5374597944280349e-12, erfc(10) = 2.088487583762545e-45
    assert!((erfc64(5.0) / 1.537_459_794_428_035e-12 - 1.0).abs() < 1e-13);
    assert!((erfc64(10.0) / 2.088_487_583_762_545e-45 - 1.0).abs() < 1e-13);
}

// ---------------------------------------------------------------- the checker

/// Runs `f` over `xs` against `r`, asserts every point, returns the max relative error
/// over normal results (printed with `--nocapture`).
fn check(
    name: &str,
    f: impl Fn(f32) -> f32,
    r: impl Fn(f64) -> f64,
    xs: impl IntoIterator<Item = f32>,
    rel: f64,
    abs: f64,
) -> f64 {
    let (mut max_rel, mut at, mut n) = (0.0f64, 0.0f32, 0usize);
    for x in xs {
        n += 1;
        let got = f(x);
        let want = r(x as f64);
        if want.is_nan() {
            assert!(got.is_nan(), "{name}({x:e}) = {got:e}, want NaN");
            continue;
        }
        let want32 = want as f32;
        if want32.is_infinite() || got.is_infinite() {
            assert_eq!(got, want32, "{name}({x:e}): got {got:e}, want {want:e}");
            continue;
        }
        let err = (got as f64 - want).abs();
        assert!(
            err <= rel * want.abs() || err <= abs,
            "{name}({x:e}) = {got:e}, want {want:e}: rel error {:.3e} > {rel:e}",
            err / want.abs()
        );
        if want.abs() >= f32::MIN_POSITIVE as f64 && err / want.abs() > max_rel {
            max_rel = err / want.abs();
            at = x;
        }
    }
    println!("{name:10} {n:7} points, max rel error {max_rel:.3e} at {at:e}");
    max_rel
}

/// `n` evenly spaced points over [lo, hi].
fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
    (0..=n).map(move |i| (lo as f64 + (hi as f64 - lo as f64) * i as f64 / n as f64) as f32)
}

/// Every `step`-th bit pattern of both signs: all binades, subnormals, ±inf, NaNs.
fn all_binades(step: u32) -> impl Iterator<Item = f32> {
    (0..=u32::MAX / step).flat_map(move |i| {
        let b = i * step;
        [f32::from_bits(b), f32::from_bits(b ^ 0x8000_0000)]
    })
}

/// Uniform random samples in [lo, hi].
fn uniform(seed: u64, lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(move |_| rng.random_range(lo..=hi))
}

/// Random bit patterns (every float equally likely by representation).
fn random_bits(seed: u64, n: usize) -> impl Iterator<Item = f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(move |_| f32::from_bits(rng.random::<u32>()))
}

fn same(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

macro_rules! assert_same {
    ($got:expr, $want:expr) => {{
        let (g, w): (f32, f32) = ($got, $want);
        assert!(
            same(g, w),
            "{} = {g:e} ({:#x}), want {w:e}",
            stringify!($got),
            g.to_bits()
        );
    }};
}

const INF: f32 = f32::INFINITY;
const NAN: f32 = f32::NAN;
const MAX: f32 = f32::MAX;
const DEN: f32 = 1e-40; // subnormal

// ---------------------------------------------------------------- exp, exp2, ln

#[test]
fn exp_accuracy() {
    let xs = grid(-104.0, 89.0, 400_000)
        .chain(uniform(1, -104.0, 89.0, 100_000))
        .chain(uniform(2, -1.0, 1.0, 50_000))
        .chain(all_binades(1 << 14))
        .chain(random_bits(3, 50_000));
    let m = check("exp", math::exp, f64::exp, xs, 1.0e-7, 1.2 * SUB_ULP);
    assert!(m < 1.0e-7);
}

#[test]
fn exp_special_values() {
    assert_same!(math::exp(0.0), 1.0);
    assert_same!(math::exp(-0.0), 1.0);
    assert_same!(math::exp(INF), INF);
    assert_same!(math::exp(-INF), 0.0);
    assert_same!(math::exp(88.73), INF);
    assert_same!(math::exp(1e30), INF);
    assert_same!(math::exp(MAX), INF);
    assert_same!(math::exp(-104.0), 0.0);
    assert_same!(math::exp(-1e30), 0.0);
    assert_same!(math::exp(-MAX), 0.0);
    assert!(math::exp(NAN).is_nan());
    assert!(math::exp(-NAN).is_nan());
    // Largest finite and smallest (subnormal) results.
    assert!(math::exp(88.72).is_finite());
    let s = math::exp(-100.0); // 3.72e-44, subnormal: gradual underflow, not a flush
    assert!(s > 0.0 && (s as f64 - (-100.0f64).exp()).abs() <= SUB_ULP);
    // Subnormal inputs behave like 0.
    assert_same!(math::exp(DEN), 1.0);
    assert_same!(math::exp(-DEN), 1.0);
}

#[test]
fn exp2_accuracy_and_special_values() {
    let xs = grid(-151.0, 129.0, 300_000)
        .chain(uniform(4, -151.0, 129.0, 50_000))
        .chain(all_binades(1 << 15));
    let m = check("exp2", math::exp2, f64::exp2, xs, 1.2e-7, 1.2 * SUB_ULP);
    assert!(m < 1.2e-7);
    for k in -149..=127 {
        assert_same!(math::exp2(k as f32), (k as f64).exp2() as f32); // exact powers of two
    }
    assert_same!(math::exp2(128.0), INF);
    assert_same!(math::exp2(-150.0), 0.0);
    assert_same!(math::exp2(INF), INF);
    assert_same!(math::exp2(-INF), 0.0);
    assert!(math::exp2(NAN).is_nan());
}

#[test]
fn ln_accuracy() {
    // Every 4099th positive float from the smallest subnormal to MAX (log-spaced), all
    // subnormal binades, around 1, and random.
    let pos = (1..0x7f80_0000u32).step_by(4099).map(f32::from_bits);
    let xs = pos
        .chain((1..0x0080_0000u32).step_by(97).map(f32::from_bits))
        .chain(grid(0.5, 2.0, 200_000))
        .chain(uniform(5, 0.0, 1e-37, 20_000))
        .chain(random_bits(6, 50_000));
    let m = check("ln", math::ln, f64::ln, xs, 1.0e-7, 0.0);
    assert!(m < 1.0e-7);
}

#[test]
fn ln_special_values() {
    assert_same!(math::ln(1.0), 0.0);
    assert_same!(math::ln(0.0), -INF);
    assert_same!(math::ln(-0.0), -INF);
    assert_same!(math::ln(INF), INF);
    assert!(math::ln(-1.0).is_nan());
    assert!(math::ln(-DEN).is_nan());
    assert!(math::ln(-INF).is_nan());
    assert!(math::ln(NAN).is_nan());
    // Subnormals are exact-ish, not a flush: ln(2^-149) = -103.28
    let tiny = f32::from_bits(1);
    assert!((math::ln(tiny) as f64 - (tiny as f64).ln()).abs() < 1e-5);
    assert!((math::ln(MAX) as f64 - (MAX as f64).ln()).abs() < 1e-5);
}

// ---------------------------------------------------------------- tanh, erf, sigmoid

fn activation_inputs(seed: u64) -> impl Iterator<Item = f32> {
    grid(-30.0, 30.0, 300_000)
        .chain(uniform(seed, -12.0, 12.0, 100_000))
        .chain(grid(-1e3, 1e3, 10_000))
        .chain(all_binades(1 << 15))
        .chain(random_bits(seed + 1, 20_000))
}

#[test]
fn tanh_accuracy() {
    let m = check(
        "tanh",
        math::tanh,
        f64::tanh,
        activation_inputs(10),
        2.5e-7,
        0.0,
    );
    assert!(m < 2.5e-7);
}

#[test]
fn tanh_special_values() {
    for x in [9.011, 10.0, 20.0, 1e3, 3e38, INF] {
        assert_same!(math::tanh(x), 1.0);
        assert_same!(math::tanh(-x), -1.0);
    }
    assert_same!(math::tanh(0.0), 0.0);
    assert_same!(math::tanh(-0.0), -0.0);
    assert_same!(math::tanh(DEN), DEN);
    assert_same!(math::tanh(-DEN), -DEN);
    assert!(math::tanh(NAN).is_nan());
    for x in uniform(11, -10.0, 10.0, 10_000) {
        assert_same!(math::tanh(-x), -math::tanh(x)); // odd
        assert!(math::tanh(x).abs() <= 1.0);
    }
}

#[test]
fn erf_accuracy() {
    let xs = activation_inputs(20).chain(grid(-4.0, 4.0, 200_000));
    let m = check("erf", math::erf, erf64, xs, 2.0e-7, 1.2 * SUB_ULP);
    assert!(m < 2.0e-7);
}

#[test]
fn erf_special_values() {
    for x in [3.9193, 4.0, 10.0, 1e3, 3e38, INF] {
        assert_same!(math::erf(x), 1.0);
        assert_same!(math::erf(-x), -1.0);
    }
    assert_same!(math::erf(0.0), 0.0);
    assert_same!(math::erf(-0.0), -0.0);
    assert!(math::erf(NAN).is_nan());
    // erf(x) ≈ 2x/√π for subnormal x (rounded in the subnormal grid).
    assert!((math::erf(DEN) as f64 - 1e-40 * FRAC_2_SQRT_PI).abs() <= SUB_ULP);
    for x in uniform(21, -5.0, 5.0, 10_000) {
        assert_same!(math::erf(-x), -math::erf(x));
    }
}

#[test]
fn sigmoid_accuracy() {
    let xs = activation_inputs(30).chain(grid(-104.0, 17.0, 200_000));
    let m = check(
        "sigmoid",
        math::sigmoid,
        sigmoid64,
        xs,
        2.3e-7,
        1.2 * SUB_ULP,
    );
    assert!(m < 2.3e-7);
}

#[test]
fn sigmoid_special_values() {
    assert_same!(math::sigmoid(0.0), 0.5);
    assert_same!(math::sigmoid(-0.0), 0.5);
    for x in [16.64, 100.0, 1e3, 3e38, INF] {
        assert_same!(math::sigmoid(x), 1.0);
    }
    for x in [-103.98, -1e3, -3e38, -INF] {
        assert_same!(math::sigmoid(x), 0.0);
    }
    assert!(math::sigmoid(-90.0) > 0.0); // subnormal, not flushed
    assert!(math::sigmoid(NAN).is_nan());
    for x in random_bits(31, 10_000).filter(|x| !x.is_nan()) {
        let s = math::sigmoid(x);
        assert!((0.0..=1.0).contains(&s), "sigmoid({x:e}) = {s:e}");
    }
}

// ---------------------------------------------------------------- silu, gelu, gelu_tanh

#[test]
fn silu_accuracy() {
    let xs = activation_inputs(40).chain(grid(-104.0, 17.0, 100_000));
    // Results below -104 are flushed to -0 (true |silu| < 1e-41): the abs floor covers it.
    let m = check("silu", math::silu, silu64, xs, 2.7e-7, 1e-43);
    assert!(m < 2.7e-7);
}

#[test]
fn silu_special_values() {
    assert_same!(math::silu(0.0), 0.0);
    assert_same!(math::silu(INF), INF);
    assert_same!(math::silu(1e30), 1e30);
    for x in [-104.01, -200.0, -1e3, -3e38, -INF] {
        assert_same!(math::silu(x), -0.0);
    }
    assert!(math::silu(NAN).is_nan());
}

#[test]
fn gelu_accuracy() {
    let xs = activation_inputs(50).chain(grid(-13.2, 6.0, 200_000));
    // Normal results are within 1e-6 relative; subnormal ones (x in [-13.2, -13.146]) and the
    // flush to -0 below -13.2 are within 6e-39 absolute.
    let m = check("gelu", math::gelu, gelu64, xs, 5.0e-7, 6e-39);
    assert!(m < 5.0e-7);
}

#[test]
fn gelu_special_values() {
    assert_same!(math::gelu(0.0), 0.0);
    for x in [5.42, 13.0, 1e3, 3e38, INF] {
        assert_same!(math::gelu(x), x);
    }
    for x in [-13.21, -1e3, -3e38, -INF] {
        assert_same!(math::gelu(x), -0.0);
    }
    assert!(math::gelu(NAN).is_nan());
    // The left tail keeps relative accuracy (no 1 + erf cancellation): gelu(-10) = -7.6e-23.
    let g = math::gelu(-10.0) as f64;
    assert!((g / gelu64(-10.0) - 1.0).abs() < 5e-7, "{g:e}");
}

#[test]
fn gelu_tanh_accuracy() {
    let xs = activation_inputs(60).chain(grid(-11.0, 10.0, 200_000));
    let m = check("gelu_tanh", math::gelu_tanh, gelu_tanh64, xs, 3.0e-7, 1e-44);
    assert!(m < 3.0e-7);
}

#[test]
fn gelu_tanh_special_values() {
    assert_same!(math::gelu_tanh(0.0), 0.0);
    for x in [4.962, 10.0, 1e3, 1e13, 3e38, INF] {
        assert_same!(math::gelu_tanh(x), x);
    }
    for x in [-10.69, -200.0, -1e3, -1e13, -3e38, -INF] {
        assert_same!(math::gelu_tanh(x), -0.0);
    }
    assert!(math::gelu_tanh(NAN).is_nan());
}

// ---------------------------------------------------------------- sin, cos

/// The f32 nearest to k·π/2 for every k with |k·π/2| <= 1e4: the inputs whose results
/// cancel most in the argument reduction.
fn near_pio2_multiples() -> impl Iterator<Item = f32> {
    (-6366i32..=6366).filter(|&k| k != 0).flat_map(|k| {
        let c = (k as f64 * std::f64::consts::FRAC_PI_2) as f32;
        [
            f32::from_bits(c.to_bits() - 1),
            c,
            f32::from_bits(c.to_bits() + 1),
        ]
    })
}

fn trig_inputs(seed: u64) -> impl Iterator<Item = f32> {
    grid(-1e4, 1e4, 400_000)
        .chain(grid(-7.0, 7.0, 100_000))
        .chain(uniform(seed, -5.2e7, 5.2e7, 100_000))
        .chain(near_pio2_multiples())
        .chain((1..0x4c48_0000u32).step_by(1 << 13).map(f32::from_bits)) // up to 5.2e7
}

#[test]
fn sin_accuracy() {
    // Relative, even next to the zeros: the reduction is exact up to 5.3e7.
    let m = check(
        "sin",
        math::sin,
        f64::sin,
        trig_inputs(70),
        1.5e-7,
        1.2 * SUB_ULP,
    );
    assert!(m < 1.5e-7);
}

#[test]
fn cos_accuracy() {
    let m = check("cos", math::cos, f64::cos, trig_inputs(71), 1.5e-7, 0.0);
    assert!(m < 1.5e-7);
}

#[test]
fn sin_cos_large_arguments() {
    // Beyond 2^25·π/2 the reduction error grows like |x|·2^-54: absolute bounds.
    for x in uniform(72, 5.3e7, 1e9, 50_000) {
        for s in [1.0f32, -1.0] {
            let x = s * x;
            assert!(
                (math::sin(x) as f64 - (x as f64).sin()).abs() < 2e-7,
                "sin({x:e})"
            );
            assert!(
                (math::cos(x) as f64 - (x as f64).cos()).abs() < 2e-7,
                "cos({x:e})"
            );
        }
    }
    for x in uniform(73, 1e9, 1e12, 10_000) {
        assert!(
            (math::sin(x) as f64 - (x as f64).sin()).abs() < 1e-4,
            "sin({x:e})"
        );
    }
}

#[test]
fn sin_cos_special_values() {
    assert_eq!(math::sin(0.0), 0.0);
    assert_eq!(math::sin(-0.0), 0.0);
    assert_same!(math::cos(0.0), 1.0);
    assert_same!(math::cos(-0.0), 1.0);
    assert_same!(math::sin(DEN), DEN);
    assert_same!(math::cos(DEN), 1.0);
    for x in [INF, -INF, NAN, 1.2e15, -1.2e15, 3e38] {
        assert!(math::sin(x).is_nan(), "sin({x:e})");
        assert!(math::cos(x).is_nan(), "cos({x:e})");
    }
    for x in random_bits(74, 20_000).filter(|x| x.abs() < 1e15) {
        assert!(
            math::sin(x).abs() <= 1.0 && math::cos(x).abs() <= 1.0,
            "{x:e}"
        );
    }
}

// ---------------------------------------------------------------- pow, sqrt, rsqrt, relu, abs

#[test]
fn pow_accuracy() {
    let mut rng = StdRng::seed_from_u64(80);
    let (mut max_rel, mut n) = (0.0f64, 0);
    for _ in 0..200_000 {
        // x over all positive binades, y scaled so that x^y mostly stays in range.
        let x = f32::from_bits(rng.random_range(1..0x7f80_0000u32));
        let l = (x as f64).log2().abs().max(1e-3);
        let y = (rng.random_range(-1.0..1.0) * 160.0 / l) as f32;
        let (got, want) = (math::pow(x, y), (x as f64).powf(y as f64));
        let want32 = want as f32;
        if want32.is_infinite() || want32 == 0.0 {
            assert_eq!(got, want32, "pow({x:e}, {y:e})");
            continue;
        }
        let err = (got as f64 - want).abs();
        let ok = err <= 6.5e-8 * want.abs() || err <= 0.51 * SUB_ULP;
        assert!(ok, "pow({x:e}, {y:e}) = {got:e}, want {want:e}");
        if want.abs() >= f32::MIN_POSITIVE as f64 {
            max_rel = max_rel.max(err / want.abs());
            n += 1;
        }
    }
    println!("pow        {n} points, max rel error {max_rel:.3e}");
    // Negative bases with integer exponents, and small integer powers.
    for x in grid(-10.0, 10.0, 2_000) {
        for y in -12..=12 {
            let want = (x as f64).powi(y);
            let got = math::pow(x, y as f32);
            if want.abs() > f32::MAX as f64 || want == 0.0 {
                continue;
            }
            let err = (got as f64 - want).abs();
            assert!(
                err <= 6.5e-8 * want.abs(),
                "pow({x:e}, {y}) = {got:e}, want {want:e}"
            );
        }
    }
}

#[test]
fn pow_special_values_match_powf() {
    let vals = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2.0,
        -2.0,
        3.0,
        -3.0,
        2.5,
        -2.5,
        1e-30,
        -1e-30,
        1e30,
        -1e30,
        16_777_215.0,
        -16_777_215.0,
        16_777_216.0,
        1e-40,
        -1e-40,
        INF,
        -INF,
        NAN,
    ];
    for &x in &vals {
        for &y in &vals {
            let (got, want) = (math::pow(x, y), x.powf(y));
            let ok = same(got, want)
                || (want.is_finite()
                    && want != 0.0
                    && ((got as f64 - want as f64).abs() <= 1.2e-7 * (want as f64).abs()));
            assert!(ok, "pow({x:e}, {y:e}) = {got:e}, powf gives {want:e}");
        }
    }
}

#[test]
fn sqrt_rsqrt() {
    let xs = (1..0x7f80_0000u32).step_by(8191).map(f32::from_bits);
    check("sqrt", math::sqrt, f64::sqrt, xs.clone(), 6.0e-8, 0.0);
    let m = check("rsqrt", math::rsqrt, |x| 1.0 / x.sqrt(), xs, 1.2e-7, 0.0);
    assert!(m < 1.2e-7);
    assert_same!(math::rsqrt(0.0), INF);
    assert_same!(math::rsqrt(-0.0), -INF);
    assert_same!(math::rsqrt(INF), 0.0);
    assert!(math::rsqrt(-1.0).is_nan());
    assert!(math::rsqrt(NAN).is_nan());
    assert_same!(math::sqrt(-0.0), -0.0);
    assert!(math::sqrt(-1.0).is_nan());
    assert_same!(math::sqrt(INF), INF);
}

#[test]
fn relu_abs() {
    assert_same!(math::relu(2.5), 2.5);
    assert_same!(math::relu(-2.5), 0.0);
    assert_same!(math::relu(-0.0), 0.0);
    assert_same!(math::relu(INF), INF);
    assert_same!(math::relu(-INF), 0.0);
    assert!(math::relu(NAN).is_nan());
    assert_same!(math::abs(-2.5), 2.5);
    assert_same!(math::abs(-0.0), 0.0);
    assert_same!(math::abs(-INF), INF);
    assert!(math::abs(NAN).is_nan());
}

#[test]
fn nan_propagates_everywhere() {
    type Unary = (&'static str, fn(f32) -> f32);
    let unary: [Unary; 15] = [
        ("exp", math::exp),
        ("exp2", math::exp2),
        ("ln", math::ln),
        ("tanh", math::tanh),
        ("erf", math::erf),
        ("sigmoid", math::sigmoid),
        ("silu", math::silu),
        ("gelu", math::gelu),
        ("gelu_tanh", math::gelu_tanh),
        ("sin", math::sin),
        ("cos", math::cos),
        ("sqrt", math::sqrt),
        ("rsqrt", math::rsqrt),
        ("relu", math::relu),
        ("abs", math::abs),
    ];
    // Quiet and signalling payloads, both signs.
    for bits in [
        0x7fc0_0000u32,
        0xffc0_0000,
        0x7f80_0001,
        0xff80_0001,
        0x7fff_ffff,
    ] {
        let x = f32::from_bits(bits);
        for (name, f) in unary {
            assert!(f(x).is_nan(), "{name}({bits:#x}) is not NaN");
        }
        assert!(math::pow(x, 2.0).is_nan() && math::pow(2.0, x).is_nan());
    }
}
