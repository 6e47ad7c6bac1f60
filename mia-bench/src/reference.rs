//! Float64 references every result is checked against before it is timed: plain loops, run in
//! parallel over rows so that checking a 16M-element case takes a fraction of a second.

use rayon::prelude::*;

pub use mia_runtime::testing::reference::gelu64;

use crate::cases::{arg, HostTensor, Res};

/// ‖got − want‖₂ / ‖want‖₂ in float64; infinite when `got` has a NaN or the lengths differ.
pub fn rel_error(got: &[f32], want: &[f64]) -> f64 {
    if got.len() != want.len() {
        return f64::INFINITY;
    }
    let (num, den) = got
        .par_iter()
        .zip(want)
        .map(|(&g, &w)| ((g as f64 - w).powi(2), w * w))
        .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    let e = (num / den.max(f64::MIN_POSITIVE)).sqrt();
    if e.is_nan() {
        f64::INFINITY
    } else {
        e
    }
}

/// Applies `row(x_row, out_row)` to each row of length `d` of `x`, in parallel.
fn rows(x: &[f32], d: usize, row: impl Fn(&[f32], &mut [f64]) + Sync) -> Vec<f64> {
    let mut out = vec![0.0f64; x.len()];
    if d > 0 {
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, x)| row(x, o));
    }
    out
}

/// The length of `x`'s last axis.
fn last_dim(x: &HostTensor) -> usize {
    x.shape.last().copied().unwrap_or(1)
}

/// `gelu(x + b)`, `b` broadcast over rows.
pub fn bias_gelu(t: &[HostTensor]) -> Res<Vec<f64>> {
    let (x, b) = (arg(t, 0)?, arg(t, 1)?);
    Ok(rows(&x.data, last_dim(x), |x, o| {
        for ((o, &x), &b) in o.iter_mut().zip(x).zip(&b.data) {
            *o = gelu64(x as f64 + b as f64);
        }
    }))
}

/// `relu(x·a + b)·c`.
pub fn chain4(t: &[HostTensor], c: f32) -> Res<Vec<f64>> {
    let (x, a, b) = (arg(t, 0)?, arg(t, 1)?, arg(t, 2)?);
    Ok(rows(&x.data, last_dim(x), |x, o| {
        for (((o, &x), &a), &b) in o.iter_mut().zip(x).zip(&a.data).zip(&b.data) {
            *o = (x as f64 * a as f64 + b as f64).max(0.0) * c as f64;
        }
    }))
}

/// Softmax over the last axis.
pub fn softmax(t: &[HostTensor]) -> Res<Vec<f64>> {
    let x = arg(t, 0)?;
    Ok(rows(&x.data, last_dim(x), |x, o| {
        let m = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let mut sum = 0.0;
        for (o, &v) in o.iter_mut().zip(x) {
            *o = (v as f64 - m).exp();
            sum += *o;
        }
        o.iter_mut().for_each(|o| *o /= sum);
    }))
}

/// Layer norm over the last axis (biased variance).
pub fn layer_norm(t: &[HostTensor], eps: f32) -> Res<Vec<f64>> {
    let (x, g, b) = (arg(t, 0)?, arg(t, 1)?, arg(t, 2)?);
    Ok(rows(&x.data, last_dim(x), |x, o| {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (((o, &v), &g), &b) in o.iter_mut().zip(x).zip(&g.data).zip(&b.data) {
            *o = (v as f64 - mean) * rstd * g as f64 + b as f64;
        }
    }))
}

/// RMS norm over the last axis.
pub fn rms_norm(t: &[HostTensor], eps: f32) -> Res<Vec<f64>> {
    let (x, g) = (arg(t, 0)?, arg(t, 1)?);
    Ok(rows(&x.data, last_dim(x), |x, o| {
        let ms = x.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / x.len() as f64;
        let r = 1.0 / (ms + eps as f64).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(x).zip(&g.data) {
            *o = v as f64 * r * g as f64;
        }
    }))
}

/// `a[M, K] · b[K, N]`, for matmul cases.
pub fn matmul(t: &[HostTensor]) -> Res<Vec<f64>> {
    let (a, b) = (arg(t, 0)?, arg(t, 1)?);
    let [m, k] = a.dims2()?;
    let [k2, n] = b.dims2()?;
    if k != k2 {
        return Err(format!("matmul reference: inner sizes differ ({k} vs {k2})").into());
    }
    let mut out = vec![0.0f64; m * n];
    if n == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        for p in 0..k {
            let av = a.data[i * k + p] as f64;
            for (o, &bv) in row.iter_mut().zip(&b.data[p * n..(p + 1) * n]) {
                *o += av * bv as f64;
            }
        }
    });
    Ok(out)
}

/// `gelu(x · w + b)` in float64.
pub fn linear_gelu(t: &[HostTensor]) -> Res<Vec<f64>> {
    let mut y = matmul(t)?;
    let b = arg(t, 2)?;
    let n = b.data.len();
    if n == 0 {
        return Ok(y);
    }
    y.par_chunks_mut(n).for_each(|row| {
        for (v, &bv) in row.iter_mut().zip(&b.data) {
            *v = mia_runtime::testing::reference::gelu64(*v + bv as f64);
        }
    });
    Ok(y)
}

/// `softmax(q·kᵀ/√d)·v` per head, in float64; q, k, v are `[H, S, D]`.
pub fn attention(t: &[HostTensor]) -> Res<Vec<f64>> {
    let (q, k, v) = (arg(t, 0)?, arg(t, 1)?, arg(t, 2)?);
    let [h, s, d] = match q.shape[..] {
        [h, s, d] => [h, s, d],
        _ => {
            return Err(format!(
                "attention reference: q has shape {:?}, not [H, S, D]",
                q.shape
            )
            .into())
        }
    };
    let scale = (1.0 / (d as f32).sqrt()) as f64;
    let mut out = vec![0.0f64; h * s * d];
    if d == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(d).enumerate().for_each(|(row, o)| {
        let (hh, i) = (row / s, row % s);
        let base = hh * s * d;
        let qi = &q.data[base + i * d..base + (i + 1) * d];
        let scores: Vec<f64> = (0..s)
            .map(|j| {
                let kj = &k.data[base + j * d..base + (j + 1) * d];
                qi.iter()
                    .zip(kj)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>()
                    * scale
            })
            .collect();
        let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|x| (x - mx).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (j, w) in e.iter().enumerate() {
            let vj = &v.data[base + j * d..base + (j + 1) * d];
            for (acc, &x) in o.iter_mut().zip(vj) {
                *acc += w / sum * x as f64;
            }
        }
    });
    Ok(out)
}
