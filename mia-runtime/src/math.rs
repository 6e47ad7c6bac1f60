//! Vectorizable `f32` math for the CPU kernels that `#[kernel]` generates.
//!
//! Why this module exists: `f32::exp`, `f32::tanh`, `f32::sin`, … are calls into libm. A call
//! is scalar and opaque, so LLVM cannot vectorize a loop that contains one: a fused
//! `gelu(x + b)` over 16M floats ran at 0.7 GB/s with `f32::tanh`, against 24–30 GB/s
//! (memory-bound) with a polynomial tanh under AVX2/FMA (`shared/notes/wgpu.md`, "CPU facts").
//! Single-thread cost here (AVX2, data in cache): exp 0.7 ns/element, tanh 0.8, sigmoid 1.0,
//! gelu 1.6, sin 1.1, against 2.6 for libm `expf` and 12 for libm `tanhf`; SSE2 about 2.3×.
//! Everything here is written so that a loop `for (o, x) in out.iter_mut().zip(inp) { *o =
//! exp(*x) }` compiles to straight-line SIMD with no calls:
//!
//! - every function is `#[inline(always)]` and branch-free: data-dependent choices are
//!   comparisons that LLVM turns into selects (blends), range limits are compare+select
//!   clamps (written so that NaN passes through, unlike `f32::min`/`max`);
//! - rounding uses the magic-number trick (`(x + 1.5·2^23) - 1.5·2^23`) and the integer is
//!   read from the sum's bits, so there is no `f32::round`/`floor` (libm on SSE2) and no
//!   saturating float→int conversion; `2^n` is built from bits;
//! - no `mul_add` (without FMA it is a libm call), no tables (they would need gathers), no
//!   integer `%`. Only `abs`, `sqrt`, bit casts, `+ - * /` and `f32`↔`f64` conversions, which
//!   map to single instructions on SSE2 and AVX2 alike. Rust never contracts `a * b + c`
//!   into an FMA, so both builds compute the same roundings.
//!
//! Accuracy is stated per function as the largest error measured against an `f64`
//! reference, over every f32 (or every 5th f32) of the range where the function is not
//! constant, plus every 17th f32 of the whole line; `tests/math_accuracy.rs` asserts
//! bounds just above those. 1 ulp of `f32` is 6e-8–1.2e-7 relative. Results that are
//! subnormal in exact arithmetic come out as correctly scaled subnormals (gradual
//! underflow; FTZ/DAZ are not assumed), except where a function says it flushes. Results
//! are bit-identical between SSE2 and AVX2/FMA builds (checked on 4M inputs per function),
//! except for the sign and payload of NaNs.

// Constants are written with the digits they were fitted or derived with; the compiler
// rounds them to the nearest f32/f64, which is the value intended.
#![allow(clippy::excessive_precision)]

/// 1.5·2^23: adding and subtracting it rounds an `f32` with |x| < 2^22 to the nearest
/// integer (ties to even), and the low mantissa bits of the sum hold that integer.
const MAGIC: f32 = 12_582_912.0;
/// 1.5·2^52, the same trick in `f64` for |x| < 2^51.
const MAGIC64: f64 = 6_755_399_441_055_744.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO (Cody–Waite): LN2_HI has 9 significant bits, so `n * LN2_HI` is
/// exact for |n| < 2^15 and `x - n * LN2_HI` is exact near the reduction point.
const LN2_HI: f32 = 0.693_359_375;
const LN2_LO: f32 = -2.121_944_400_546_905_827_68e-4;
const SIGN: u32 = 0x8000_0000;

/// Rounds `x` (|x| < 2^22, or NaN) to the nearest integer: (as `f32`, as `i32`).
#[inline(always)]
fn round_i(x: f32) -> (f32, i32) {
    let s = x + MAGIC;
    (
        s - MAGIC,
        (s.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32),
    )
}

/// 2^n for n in [-126, 127], from bits.
#[inline(always)]
fn pow2i(n: i32) -> f32 {
    f32::from_bits((n.wrapping_add(127) as u32) << 23)
}

/// `x` with the sign bit of `s`.
#[inline(always)]
fn with_sign_of(x: f32, s: f32) -> f32 {
    f32::from_bits((x.to_bits() & !SIGN) | (s.to_bits() & SIGN))
}

/// `e^r - 1` for |r| <= ln2/2 (+ a little): `r + r²·P(r)`, Cephes `expf` coefficients.
/// Relative error below 1 ulp of the result; accurate as `expm1` near 0 too.
#[inline(always)]
fn expm1_poly(r: f32) -> f32 {
    let p = 1.987_569_150_0e-4;
    let p = p * r + 1.398_199_950_7e-3;
    let p = p * r + 8.333_451_907_3e-3;
    let p = p * r + 4.166_579_589_4e-2;
    let p = p * r + 1.666_666_545_9e-1;
    let p = p * r + 5.000_000_120_1e-1;
    p * (r * r) + r
}

/// `e^x`.
///
/// Measured (every f32 in [-104, 89]): max 0.99 ulp, relative error 8.2e-8 for normal
/// results; subnormal results (x < -87.34) within 0.75 subnormal ulp (1.05e-45).
/// `exp(x) = +inf` for x >= 88.72284 (and +inf), `+0` for x < -103.9721 (and -inf),
/// NaN → NaN. Inputs below -104 are replaced by 0 before the arithmetic and the 0 is selected
/// afterwards, so masked inputs (`-inf`, `-1e30`, common in softmax) never create subnormal
/// intermediates, which cost a microcode assist each on x86.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let (a, b) = exp_parts(x);
    a * b
}

/// `e^x = a·b` with both factors in the normal range (`b` a power of two, or 0 for
/// x < -104): `2^n` needs two factors for n in [-150, 128], and a caller can scale `a`
/// before the last product so that a subnormal result is rounded only once.
#[inline(always)]
fn exp_parts(x: f32) -> (f32, f32) {
    let xc = if x < -104.0 { 0.0 } else { x };
    let xc = if xc > 89.0 { 89.0 } else { xc };
    let (nf, n) = round_i(xc * LOG2E);
    let r = (xc - nf * LN2_HI) - nf * LN2_LO;
    let p = 1.0 + expm1_poly(r);
    let n1 = n >> 1;
    let b = if x < -104.0 {
        0.0
    } else {
        pow2i(n.wrapping_sub(n1))
    };
    (p * pow2i(n1), b)
}

/// `2^x`.
///
/// Measured (every f32 in [-151, 129]): max 1.15 ulp, relative error 9.7e-8 for normal
/// results; subnormal results (x < -126) within 0.8 subnormal ulp. Exact for integer x.
/// `+inf` for x >= 128, `+0` for x <= -150 (and -inf), NaN → NaN; same out-of-range handling
/// as [`exp`].
#[inline(always)]
pub fn exp2(x: f32) -> f32 {
    let xc = if x < -151.0 { 0.0 } else { x };
    let xc = if xc > 129.0 { 129.0 } else { xc };
    let (nf, n) = round_i(xc);
    // f is exact, |f| <= 0.5; (2^f - 1)/f: Chebyshev fit on [-0.5, 0.5], rel. error 1.2e-8.
    let f = xc - nf;
    let p = 1.545_316_294_51e-4;
    let p = p * f + 1.339_086_336_47e-3;
    let p = p * f + 9.618_082_557_28e-3;
    let p = p * f + 5.550_357_114_22e-2;
    let p = p * f + 2.402_265_076_06e-1;
    let p = p * f + 6.931_471_880_26e-1;
    let p = 1.0 + p * f;
    let n1 = n >> 1;
    let y = p * pow2i(n1) * pow2i(n.wrapping_sub(n1));
    if x < -151.0 {
        0.0
    } else {
        y
    }
}

/// Natural logarithm.
///
/// Measured (every 5th positive f32, subnormals included): max 0.82 ulp, relative error
/// 8.1e-8.
/// `ln(±0) = -inf`, `ln(+inf) = +inf`, `ln(x < 0) = NaN` (also `-inf`), NaN → NaN.
/// Subnormal inputs are scaled by 2^23 first, so they are as accurate as normal ones.
#[inline(always)]
pub fn ln(x: f32) -> f32 {
    let sub = x < f32::MIN_POSITIVE;
    let xs = if sub { x * 8_388_608.0 } else { x };
    let bits = xs.to_bits();
    let e = ((bits >> 23) as i32).wrapping_sub(if sub { 127 + 23 } else { 127 });
    // Mantissa in [1, 2), then folded to [sqrt(1/2), sqrt(2)) so that ln(m) is small.
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000);
    let big = m > std::f32::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { e.wrapping_add(1) } else { e };
    let e = e as f32;
    let f = m - 1.0; // exact (Sterbenz)
    let z = f * f;
    // ln(1+f) = f - f²/2 + f³·P(f), Cephes `logf` coefficients.
    let p = 7.037_683_629_2e-2;
    let p = p * f - 1.151_461_031_0e-1;
    let p = p * f + 1.167_699_874_0e-1;
    let p = p * f - 1.242_014_084_6e-1;
    let p = p * f + 1.424_932_278_7e-1;
    let p = p * f - 1.666_805_766_5e-1;
    let p = p * f + 2.000_071_476_5e-1;
    let p = p * f - 2.499_999_399_3e-1;
    let p = p * f + 3.333_333_117_4e-1;
    let y = f * z * p + e * LN2_LO - 0.5 * z;
    let y = (f + y) + e * LN2_HI;
    let y = if x == f32::INFINITY { x } else { y };
    let y = if x == 0.0 { f32::NEG_INFINITY } else { y };
    if x >= 0.0 {
        y
    } else {
        f32::NAN
    }
}

/// `e^u - 1` for u in [0, 20] or NaN (private: tanh's kernel).
#[inline(always)]
fn expm1_0_20(u: f32) -> f32 {
    let (nf, n) = round_i(u * LOG2E);
    let r = (u - nf * LN2_HI) - nf * LN2_LO;
    let s = pow2i(n);
    // 2^n·(e^r - 1) + (2^n - 1): for n = 0 this is the polynomial alone (no cancellation).
    s * expm1_poly(r) + (s - 1.0)
}

/// Hyperbolic tangent, as `sign(x)·m/(m + 2)` with `m = expm1(2|x|)`: one formula for all x,
/// accurate near 0 (no `1 - 2/(e^2x + 1)` cancellation).
///
/// Measured (every 5th f32 in [-10, 10], every 17th elsewhere): max 2.42 ulp, relative
/// error 1.8e-7. `tanh(±x) = ±1` exactly for |x| >= 9.0109 (|x| is clamped to 10 inside),
/// `tanh(±0) = ±0`, subnormal x gives x, NaN → NaN.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let a = if a > 10.0 { 10.0 } else { a };
    let m = expm1_0_20(a + a);
    with_sign_of(m / (m + 2.0), x)
}

/// `e^-(hi + lo)` for `hi + lo` in [0, 87.12] with `hi` exact: the split carries the low bits
/// of a square, so large arguments keep full relative accuracy.
#[inline(always)]
fn exp_neg_hilo(hi: f32, lo: f32) -> f32 {
    let (nf, n) = round_i(-(hi + lo) * LOG2E);
    let r = ((-hi - nf * LN2_HI) - nf * LN2_LO) - lo;
    (1.0 + expm1_poly(r)) * pow2i(n)
}

/// Splits `a >= 0` into a 12-significant-bit head, whose square is exact in `f32`.
#[inline(always)]
fn head12(a: f32) -> f32 {
    f32::from_bits(a.to_bits() & 0xffff_f000)
}

/// erf comes from its odd series fit below this `t` and from `1 - erfc` above it.
const ERF_SPLIT: f32 = 0.875;

/// erf(t) for `t` in [0, ERF_SPLIT]: `t·P(t²)`, Chebyshev fit of erf(t)/t, relative error
/// 9e-9.
#[inline(always)]
fn erf_small(t: f32) -> f32 {
    let u = t * t;
    let p = -6.214_585_361_98e-4;
    let p = p * u + 5.034_370_663_2e-3;
    let p = p * u - 2.679_294_777_78e-2;
    let p = p * u + 1.128_249_659_96e-1;
    let p = p * u - 3.761_255_450_66e-1;
    let p = p * u + 1.128_379_158_13;
    t * p
}

/// erfc(t) = `e·r` for `t` in [0, 9.375] or NaN, given `t² = hi + lo` (`hi` exact):
/// `e = e^-t²` and `r = erfcx(t) = w·Q(w)`, `w = 2/(2 + t)`, Q a Chebyshev fit with relative
/// error 4.6e-9. Relatively accurate over the whole range (no `1 - erf`); returned as a
/// product so a caller can scale `r` first and round only once into a subnormal result.
#[inline(always)]
fn erfc_parts(t: f32, hi: f32, lo: f32) -> (f32, f32) {
    let w = 2.0 / (2.0 + t);
    let q = 3.085_994_394_22e-2;
    let q = q * w - 1.623_204_259_48e-1;
    let q = q * w + 3.078_558_546_91e-1;
    let q = q * w - 1.811_582_213_12e-1;
    let q = q * w - 1.235_554_929_18e-1;
    let q = q * w + 9.847_515_093_87e-2;
    let q = q * w + 2.866_880_378_85e-2;
    let q = q * w + 1.927_779_269_67e-1;
    let q = q * w + 2.439_390_843_12e-1;
    let q = q * w + 2.823_739_946_4e-1;
    let q = q * w + 2.820_833_826_61e-1;
    (exp_neg_hilo(hi, lo), w * q)
}

/// Error function.
///
/// Measured (every 5th f32 in [-4, 4], every 17th elsewhere): max 2.49 ulp, relative error
/// 1.8e-7; subnormal x within 1 subnormal ulp of 2x/√π. `erf(±x) = ±1` exactly for
/// |x| >= 3.9193, `erf(±0) = ±0`, NaN → NaN.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let t = x.abs();
    let t = if t > 4.0 { 4.0 } else { t }; // erf(4) rounds to 1
    let th = head12(t);
    let (e, r) = erfc_parts(t, th * th, (t - th) * (t + th));
    let y = if t < ERF_SPLIT {
        erf_small(t)
    } else {
        1.0 - e * r
    };
    with_sign_of(y, x)
}

/// Logistic sigmoid `1/(1 + e^-x)`, computed as `1/(1 + e)` (x >= 0) or `e/(1 + e)` (x < 0)
/// with `e = exp(-|x|)`: never overflows, and small results keep full relative accuracy.
///
/// Measured (every 5th f32 in [-104, 17], every 17th elsewhere): max 2.83 ulp, relative
/// error 2.0e-7 for normal results; subnormal results (x < -87.3) within 0.75 subnormal ulp.
/// `sigmoid(x) = 1` for x >= 16.636 and +inf, `+0` for x < -103.972 and -inf,
/// `sigmoid(±0) = 0.5`, NaN → NaN.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    let (a, b) = exp_parts(-x.abs());
    let s = 1.0 / (1.0 + a * b);
    if x < 0.0 {
        (s * a) * b
    } else {
        s
    }
}

/// SiLU / swish, `x·sigmoid(x)`.
///
/// Measured (every 5th f32 in [-104, 17], every 17th elsewhere): max 3.3 ulp, relative
/// error 2.4e-7 for normal results (x >= -92); subnormal results within 1.3 subnormal ulp
/// down to x = -104, below which they are flushed to `-0` (true |silu| < 7.1e-44).
/// `silu(x) = x` for x >= 16.636 and +inf, `silu(-inf) = -0`, NaN → NaN.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    let x = if x < -200.0 { -200.0 } else { x };
    let (a, b) = exp_parts(-x.abs());
    let s = 1.0 / (1.0 + a * b);
    if x < 0.0 {
        ((x * s) * a) * b
    } else {
        x * s
    }
}

/// GELU, exact form `0.5·x·(1 + erf(x/√2))`, computed as `x·Φ(x)` with
/// `Φ(x) = erfc(|x|/√2)/2` for x < 0: the left tail keeps full relative accuracy instead of
/// cancelling in `1 + erf` (`x²/2` is split exactly so `e^-x²/2` is accurate too).
///
/// Measured (every 5th f32 in [-13.2, 6], every 17th elsewhere): max 6.7 ulp, relative
/// error 4.7e-7 wherever the result is normal (x >= -13.146); subnormal results within 2
/// subnormal ulp down to x = -13.2, below which they are flushed to `-0` (true value above
/// -5.8e-39), as is -inf. `gelu(x) = x` for x >= 5.42 (Φ rounds to 1) and +inf, NaN → NaN.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    // Below -13.2 the result is flushed: compute on 0 instead, and above 6 (where Φ rounds
    // to 1) on 6, so that no intermediate is subnormal (`e·r/2` reached 4e-40 for |x| >= 13.2,
    // a microcode assist per element on x86: 10× slower GELU on a matmul's outputs of ±20).
    let xs = if x < -13.2 { 0.0 } else { x };
    let a = xs.abs();
    let a = if xs > 6.0 { 6.0 } else { a }; // x²/2 <= 87.12: e^-x²/2 stays normal
    let ah = head12(a);
    let hi = (ah * ah) * 0.5;
    let lo = ((a - ah) * (a + ah)) * 0.5;
    let (e, r) = erfc_parts(a * std::f32::consts::FRAC_1_SQRT_2, hi, lo);
    // Φ(x) = 1 - erfc/2 (x >= 0, no cancellation: erfc/2 <= 1/2) or erfc/2 (x < 0), where
    // x·(r/2) goes first so that a subnormal result is rounded once, at the last product.
    let y = if x < 0.0 {
        (xs * (0.5 * r)) * e
    } else {
        x * (1.0 - (0.5 * r) * e)
    };
    if x < -13.2 {
        -0.0
    } else {
        y
    }
}

/// [`exp_parts`] for `a <= 0` (or NaN) given in `f64` (for [`gelu_tanh`], whose exponent
/// comes from a cubic: its `f32` rounding error would be multiplied by |a|). Only the
/// reduction is `f64`; the polynomial is the `f32` one.
#[inline(always)]
fn exp_parts_f64(a: f64) -> (f32, f32) {
    let ac = if a < -104.0 { 0.0 } else { a };
    let s = ac * std::f64::consts::LOG2_E + MAGIC64;
    let n = (s.to_bits() as i64).wrapping_sub(MAGIC64.to_bits() as i64) as i32;
    let r = (ac - (s - MAGIC64) * std::f64::consts::LN_2) as f32;
    let p = 1.0 + expm1_poly(r);
    let n1 = n >> 1;
    let b = if a < -104.0 {
        0.0
    } else {
        pow2i(n.wrapping_sub(n1))
    };
    (p * pow2i(n1), b)
}

/// GELU, tanh approximation `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, computed as the
/// identical `x·sigmoid(v)`, `v = 2·√(2/π)·(x + 0.044715·x³)`, which does not cancel for
/// x < 0. `v` and the exp reduction are evaluated in `f64` (half-width lanes, a handful of
/// operations): in `f32` their rounding error, scaled by |v|, reached 1.4e-5 in the tail.
///
/// Measured (every 5th f32 in [-11, 9.5], every 17th elsewhere): relative error 2.4e-7 for
/// normal results (x >= -10.1); subnormal results within 7.3e-45, flushed to `-0` once
/// `e^v` would be below 2^-150 (x < -10.6813) and for -inf.
/// `gelu_tanh(x) = x` for x >= 4.962 and +inf, NaN → NaN. (Computing `v` in `f32` instead
/// is ~30% faster but has relative error 1e-6 at x = -3 and 1.4e-5 in the far tail.)
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    let x = if x < -200.0 { -200.0 } else { x };
    let xd = x as f64;
    // 2·√(2/π) and 2·√(2/π)·0.044715
    let v = xd * (1.595_769_121_605_730_7 + 0.071_354_816_272_600_25 * (xd * xd));
    let (a, b) = exp_parts_f64(-v.abs());
    let s = 1.0 / (1.0 + a * b);
    if v < 0.0 {
        ((x * s) * a) * b
    } else {
        x * s
    }
}

/// |x| limit of [`sin`]/[`cos`]; beyond it, NaN.
const TRIG_MAX: f32 = 1.125_899_9e15; // 2^50
const FRAC_2_PI_64: f64 = std::f64::consts::FRAC_2_PI;
/// π/2 = PIO2_1 + PIO2_2 + PIO2_3; the first two have 28 significant bits, so `n * PIO2_k`
/// is exact for |n| < 2^25.
const PIO2_1: f64 = 1.570_796_325_802_803;
const PIO2_2: f64 = 9.920_935_739_593_517e-10;
const PIO2_3: f64 = 5.721_188_726_109_832e-18;

/// `x = n·π/2 + r`, |r| <= π/4: returns `(r, n mod 2^32)`. Done in `f64` (still vectorized,
/// at half the lanes) so the reduction is exact for |x| < 2^25·π/2.
#[inline(always)]
fn reduce_pio2(x: f32) -> (f32, u32) {
    let xs = if x.abs() < TRIG_MAX { x } else { 0.0 };
    let xd = xs as f64;
    let s = xd * FRAC_2_PI_64 + MAGIC64;
    let q = s.to_bits() as u32;
    let n = s - MAGIC64;
    let r = ((xd - n * PIO2_1) - n * PIO2_2) - n * PIO2_3;
    (r as f32, q)
}

/// sin (q even) or cos (q odd) of the quadrant `q`, on |r| <= π/4; Cephes `sinf`/`cosf`
/// polynomials.
#[inline(always)]
fn sin_quadrant(r: f32, q: u32) -> f32 {
    let z = r * r;
    let s = -1.951_529_589_1e-4;
    let s = s * z + 8.332_160_873_6e-3;
    let s = s * z - 1.666_665_461_1e-1;
    let s = s * z * r + r;
    let c = 2.443_315_711_809_948e-5;
    let c = c * z - 1.388_731_625_493_765e-3;
    let c = c * z + 4.166_664_568_298_827e-2;
    let c = c * z * z - 0.5 * z + 1.0;
    let v = if q & 1 == 0 { s } else { c };
    f32::from_bits(v.to_bits() ^ ((q & 2) << 30))
}

/// Sine.
///
/// Measured (every 5th f32 with |x| <= 5.3e7): max 1.56 ulp, relative error 1.21e-7, also
/// next to the zeros: the `f64` argument reduction is exact for |x| < 2^25·π/2 ≈ 5.27e7.
/// Beyond, its absolute error grows like |x|·2^-54: measured 1.1e-7 up to 1e9, 9.6e-7 up to
/// 1e10, 6.1e-5 up to 1e12, 6.2e-2 up to 2^50. NaN for |x| >= 2^50 (there consecutive f32
/// are 2^26 periods apart), ±inf and NaN. `sin(±0) = +0` (the zero's sign is not kept);
/// subnormal x gives x.
#[inline(always)]
pub fn sin(x: f32) -> f32 {
    let (r, q) = reduce_pio2(x);
    let y = sin_quadrant(r, q);
    if x.abs() < TRIG_MAX {
        y
    } else {
        f32::NAN
    }
}

/// Cosine. Accuracy and range as [`sin`]: max 1.56 ulp, relative error 1.2e-7 (every 5th f32
/// with |x| <= 5.3e7), absolute 1.2e-7 up to 1e9; NaN for |x| >= 2^50, ±inf and NaN.
#[inline(always)]
pub fn cos(x: f32) -> f32 {
    let (r, q) = reduce_pio2(x);
    let y = sin_quadrant(r, q.wrapping_add(1));
    if x.abs() < TRIG_MAX {
        y
    } else {
        f32::NAN
    }
}

/// log2(d) for `d >= 0`, `f64` (for [`pow`]): ±inf/NaN/0 handled; absolute error ~1e-15.
#[inline(always)]
fn log2_f64(d: f64) -> f64 {
    let bits = d.to_bits();
    // The biased exponent as f64 without an i64→f64 conversion (none before AVX-512).
    let e =
        f64::from_bits((bits >> 52) | 0x4330_0000_0000_0000) - (4_503_599_627_370_496.0 + 1023.0);
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let big = m > std::f64::consts::SQRT_2;
    let m = if big { m * 0.5 } else { m };
    let e = if big { e + 1.0 } else { e };
    // ln m = 2·atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: series to s^15 (error < 1e-13).
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let p = 1.0 / 15.0;
    let p = p * s2 + 1.0 / 13.0;
    let p = p * s2 + 1.0 / 11.0;
    let p = p * s2 + 1.0 / 9.0;
    let p = p * s2 + 1.0 / 7.0;
    let p = p * s2 + 1.0 / 5.0;
    let p = p * s2 + 1.0 / 3.0;
    let p = p * s2 + 1.0;
    let l = e + (2.0 * std::f64::consts::LOG2_E) * (s * p);
    let l = if d == 0.0 { f64::NEG_INFINITY } else { l };
    if d < f64::INFINITY {
        l
    } else {
        d
    }
}

/// 2^t in `f64` (for [`pow`]), for any t (clamped to ±200, beyond f32 range); relative error
/// ~1e-15.
#[inline(always)]
fn exp2_f64(t: f64) -> f64 {
    let t = if t < -200.0 { -200.0 } else { t };
    let t = if t > 200.0 { 200.0 } else { t };
    let sum = t + MAGIC64;
    let n = (sum.to_bits() as i64).wrapping_sub(MAGIC64.to_bits() as i64);
    // |f| <= ln2/2; e^f by its Taylor series to f^12 (truncation < 1e-15).
    let f = (t - (sum - MAGIC64)) * std::f64::consts::LN_2;
    let p = 1.0 / 479_001_600.0;
    let p = p * f + 1.0 / 39_916_800.0;
    let p = p * f + 1.0 / 3_628_800.0;
    let p = p * f + 1.0 / 362_880.0;
    let p = p * f + 1.0 / 40_320.0;
    let p = p * f + 1.0 / 5_040.0;
    let p = p * f + 1.0 / 720.0;
    let p = p * f + 1.0 / 120.0;
    let p = p * f + 1.0 / 24.0;
    let p = p * f + 1.0 / 6.0;
    let p = p * f + 0.5;
    let p = p * f + 1.0;
    let p = p * f + 1.0;
    p * f64::from_bits((n.wrapping_add(1023) as u64) << 52)
}

/// `x^y`, as `2^(y·log2|x|)` evaluated in `f64` (vectorized at half the lanes), so the
/// result is close to correctly rounded even where `y·ln x` is large.
///
/// Measured: max 0.5000 ulp (correctly rounded in 20M random (x, y), x over all positive
/// binades, `y·log2 x` in [-160, 160]).
/// Special values follow IEEE 754 / `f32::powf`: `pow(x, ±0) = 1` and `pow(1, y) = 1` for
/// any x, y (NaN included); `pow(-1, ±inf) = 1`; `pow(±0, y)` is ±0 or ±inf by the sign of y
/// (the sign kept only for odd integer y); negative x with integer y gives
/// `±|x|^y` by y's parity; negative finite x with non-integer y gives NaN; `pow(-inf, y)`
/// follows from `(-1)^y·inf^y` for integer y and `+inf^y` otherwise; `|x| < 1` or `> 1`
/// with `y = ±inf` gives 0 or inf accordingly; NaN otherwise propagates.
#[inline(always)]
pub fn pow(x: f32, y: f32) -> f32 {
    let ax = x.abs();
    let yd = y as f64;
    let mag = exp2_f64(yd * log2_f64(ax as f64)) as f32;
    // y integer? (also true for ±inf); parity from the rounded sum's low bit.
    let ys = yd + MAGIC64;
    let is_int = ys - MAGIC64 == yd;
    let odd = is_int && (ys.to_bits() & 1) == 1 && y.abs() < 16_777_216.0;
    let r = if odd && x.is_sign_negative() {
        -mag
    } else {
        mag
    };
    let r = if x < 0.0 && x > f32::NEG_INFINITY && !is_int {
        f32::NAN
    } else {
        r
    };
    let r = if ax == 1.0 && y.abs() == f32::INFINITY {
        1.0
    } else {
        r
    };
    if x == 1.0 || y == 0.0 {
        1.0
    } else {
        r
    }
}

/// Square root: `f32::sqrt` is one instruction (`sqrtps`), correctly rounded. NaN for x < 0.
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    x.sqrt()
}

/// `1/sqrt(x)`, as a division (not the 12-bit `rsqrtps` estimate): max 1.49 ulp, relative
/// error 8.9e-8.
/// `rsqrt(+0) = +inf`, `rsqrt(-0) = -inf`, `rsqrt(+inf) = 0`, NaN for x < 0.
#[inline(always)]
pub fn rsqrt(x: f32) -> f32 {
    1.0 / x.sqrt()
}

/// `max(x, 0)`, with NaN → NaN (unlike `f32::max(x, 0.0)`, which returns 0) and
/// `relu(-0) = +0`.
#[inline(always)]
pub fn relu(x: f32) -> f32 {
    if x <= 0.0 {
        0.0
    } else {
        x
    }
}

/// |x| (clears the sign bit).
#[inline(always)]
pub fn abs(x: f32) -> f32 {
    x.abs()
}
