//! Shared helpers for the op tests: seeded data, a small float64 n-d array used as the
//! reference (NumPy broadcasting, reductions keeping the axis, transpose, reshape), float64
//! special functions, and the comparison used everywhere:
//! - the relative norm ‖got − ref‖ / ‖ref‖ (float64) must be ≤ `tol`;
//! - every element whose reference is finite (in f32) must be finite: unwritten CPU elements are
//!   NaN (debug builds, tests included, poison CPU outputs); GPU outputs start at 0, which the
//!   norm catches;
//! - every element whose reference overflows f32 must be that same infinity;
//! - every element must be within `ELEM × tol × max(|ref|, rms(ref))` (a single bad element
//!   cannot hide in a long vector).
#![allow(dead_code)]

use mia_runtime::prelude::*;
use mia_runtime::{testing, Element};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Per-element slack relative to the norm tolerance.
pub const ELEM: f64 = 100.0;

/// Runs the tests of one file one at a time: concurrent GPU read-backs from several threads
/// can fail (see `ops::concurrent_readbacks_from_threads_succeed`), and lavapipe uses every
/// core anyway.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// CPU, then the GPU (required when `MIA_REQUIRE_GPU=1`).
pub fn devices() -> Vec<Device> {
    testing::devices()
}

pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

pub fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..=hi)).collect()
}

pub fn tensor<T: Element>(dev: &Device, shape: &[usize], data: &[T]) -> Tensor<T> {
    Tensor::from_slice(dev, shape, data).unwrap()
}

/// Reads a result back, checking its shape.
pub fn fetch<T: Element>(what: &str, t: Result<Tensor<T>, Error>, shape: &[usize]) -> Vec<T> {
    let t = t.unwrap_or_else(|e| panic!("{what}: kernel error: {e}"));
    assert_eq!(t.shape(), shape, "{what}: output shape");
    t.to_vec().unwrap()
}

/// A row-major float64 array: the reference implementation of every op under test.
#[derive(Clone, Debug)]
pub struct Arr {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1] * shape[k + 1];
    }
    s
}

impl Arr {
    pub fn new(shape: &[usize], data: &[f32]) -> Arr {
        Arr::f64(shape, data.iter().map(|&v| v as f64).collect())
    }
    pub fn f64(shape: &[usize], data: Vec<f64>) -> Arr {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        Arr {
            shape: shape.to_vec(),
            data,
        }
    }
    pub fn scalar(v: f64) -> Arr {
        Arr::f64(&[], vec![v])
    }
    pub fn map(&self, f: impl Fn(f64) -> f64) -> Arr {
        Arr::f64(&self.shape, self.data.iter().map(|&v| f(v)).collect())
    }
    /// NumPy broadcasting: trailing dims align, size-1 dims stretch.
    pub fn zip(&self, o: &Arr, f: impl Fn(f64, f64) -> f64) -> Arr {
        let r = self.shape.len().max(o.shape.len());
        let pad = |s: &[usize]| {
            let mut p = vec![1; r - s.len()];
            p.extend_from_slice(s);
            p
        };
        let (a, b) = (pad(&self.shape), pad(&o.shape));
        let shape: Vec<usize> = (0..r)
            .map(|k| match (a[k], b[k]) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                (x, y) => panic!("reference: cannot broadcast {x} with {y}"),
            })
            .collect();
        let (sa, sb, so) = (strides(&a), strides(&b), strides(&shape));
        let n: usize = shape.iter().product();
        let data = (0..n)
            .map(|i| {
                let (mut ia, mut ib) = (0, 0);
                for k in 0..r {
                    let c = (i / so[k]) % shape[k];
                    if a[k] != 1 {
                        ia += c * sa[k];
                    }
                    if b[k] != 1 {
                        ib += c * sb[k];
                    }
                }
                f(self.data[ia], o.data[ib])
            })
            .collect();
        Arr::f64(&shape, data)
    }
    /// Reduces along `axis` (negative from the end), keeping it as size 1.
    pub fn reduce(&self, axis: isize, init: f64, f: impl Fn(f64, f64) -> f64) -> Arr {
        let ax = self.axis(axis);
        let mut shape = self.shape.clone();
        let len = shape[ax];
        shape[ax] = 1;
        let (outer, inner) = (
            self.shape[..ax].iter().product::<usize>(),
            self.shape[ax + 1..].iter().product::<usize>(),
        );
        let mut data = vec![init; outer * inner];
        for o in 0..outer {
            for j in 0..len {
                for i in 0..inner {
                    let d = &mut data[o * inner + i];
                    *d = f(*d, self.data[(o * len + j) * inner + i]);
                }
            }
        }
        Arr::f64(&shape, data)
    }
    fn axis(&self, axis: isize) -> usize {
        if axis < 0 {
            (self.shape.len() as isize + axis) as usize
        } else {
            axis as usize
        }
    }
    pub fn sum(&self, axis: isize) -> Arr {
        self.reduce(axis, 0.0, |a, b| a + b)
    }
    pub fn max(&self, axis: isize) -> Arr {
        self.reduce(axis, f64::NEG_INFINITY, f64::max)
    }
    pub fn min(&self, axis: isize) -> Arr {
        self.reduce(axis, f64::INFINITY, f64::min)
    }
    pub fn mean(&self, axis: isize) -> Arr {
        let n = self.shape[self.axis(axis)] as f64;
        self.sum(axis).map(|v| v / n)
    }
    pub fn transpose(&self, i: isize, j: isize) -> Arr {
        let (i, j) = (self.axis(i), self.axis(j));
        let mut shape = self.shape.clone();
        shape.swap(i, j);
        let (si, so) = (strides(&self.shape), strides(&shape));
        let n = self.data.len();
        let data = (0..n)
            .map(|e| {
                let mut src = 0;
                for k in 0..shape.len() {
                    let c = (e / so[k]) % shape[k];
                    let kk = if k == i {
                        j
                    } else if k == j {
                        i
                    } else {
                        k
                    };
                    src += c * si[kk];
                }
                self.data[src]
            })
            .collect();
        Arr::f64(&shape, data)
    }
    pub fn reshape(&self, shape: &[usize]) -> Arr {
        Arr::f64(shape, self.data.clone())
    }
    pub fn add(&self, o: &Arr) -> Arr {
        self.zip(o, |a, b| a + b)
    }
    pub fn sub(&self, o: &Arr) -> Arr {
        self.zip(o, |a, b| a - b)
    }
    pub fn mul(&self, o: &Arr) -> Arr {
        self.zip(o, |a, b| a * b)
    }
    pub fn div(&self, o: &Arr) -> Arr {
        self.zip(o, |a, b| a / b)
    }
    pub fn exp(&self) -> Arr {
        self.map(f64::exp)
    }
    pub fn softmax(&self, axis: isize) -> Arr {
        let e = self.sub(&self.max(axis)).exp();
        e.div(&e.sum(axis))
    }
    pub fn log_softmax(&self, axis: isize) -> Arr {
        let s = self.sub(&self.max(axis));
        s.sub(&s.exp().sum(axis).map(f64::ln))
    }
    /// Layer norm over the last axis (biased variance, as PyTorch).
    pub fn layer_norm(&self, gamma: &Arr, beta: &Arr, eps: f64) -> Arr {
        let xc = self.sub(&self.mean(-1));
        let var = xc.mul(&xc).mean(-1);
        xc.div(&var.map(|v| (v + eps).sqrt())).mul(gamma).add(beta)
    }
    pub fn rms_norm(&self, gamma: &Arr, eps: f64) -> Arr {
        let ms = self.mul(self).mean(-1);
        self.div(&ms.map(|v| (v + eps).sqrt())).mul(gamma)
    }
    /// Matrix product over the last two axes, batch axes broadcast (NumPy's `matmul`).
    pub fn matmul(&self, o: &Arr) -> Arr {
        let (ra, rb) = (self.shape.len(), o.shape.len());
        let (m, k, n) = (self.shape[ra - 2], self.shape[ra - 1], o.shape[rb - 1]);
        assert_eq!(k, o.shape[rb - 2], "reference matmul: inner dimensions");
        // Broadcast both to the common batch shape by zipping their batch parts.
        let ba = Arr::f64(
            &self.shape[..ra - 2],
            vec![0.0; self.shape[..ra - 2].iter().product()],
        );
        let bb = Arr::f64(
            &o.shape[..rb - 2],
            vec![0.0; o.shape[..rb - 2].iter().product()],
        );
        let batch = ba.zip(&bb, |_, _| 0.0).shape;
        let nb: usize = batch.iter().product();
        let index = |shape: &[usize], bi: usize| -> usize {
            // Row-major batch index `bi` of `batch` mapped into `shape` (right-aligned, size-1
            // axes broadcast).
            let mut rem = bi;
            let mut idx = 0;
            let mut stride = 1;
            for t in (0..batch.len()).rev() {
                let c = rem % batch[t];
                rem /= batch[t];
                if let Some(s) = (t + shape.len()).checked_sub(batch.len()) {
                    if shape[s] != 1 {
                        idx += c * stride;
                    }
                    stride *= shape[s];
                }
            }
            idx
        };
        let mut data = vec![0.0; nb * m * n];
        for bi in 0..nb {
            let (ia, ib) = (
                index(&self.shape[..ra - 2], bi),
                index(&o.shape[..rb - 2], bi),
            );
            let (a, b) = (&self.data[ia * m * k..], &o.data[ib * k * n..]);
            for i in 0..m {
                for j in 0..n {
                    data[(bi * m + i) * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                }
            }
        }
        let mut shape = batch;
        shape.extend([m, n]);
        Arr::f64(&shape, data)
    }
    /// Broadcasts to `shape` (for outputs declared larger than the body's value).
    pub fn broadcast_to(&self, shape: &[usize]) -> Arr {
        Arr::f64(shape, vec![0.0; shape.iter().product()]).zip(self, |_, b| b)
    }
}

/// Compares `got` with `want` (see the module docs); panics naming the device and the element.
pub fn check(what: &str, dev: &Device, got: &[f32], want: &Arr, tol: f64) {
    check_abs(what, dev, got, want, tol, 0.0);
}

/// [`check`] with an absolute floor `atol`: each element may also be off by `atol`, and the
/// norm by `atol·√n` (for functions that are only absolutely accurate where tiny).
pub fn check_abs(what: &str, dev: &Device, got: &[f32], want: &Arr, tol: f64, atol: f64) {
    let w = &want.data;
    assert_eq!(got.len(), w.len(), "{what} on {dev:?}: length");
    let finite: Vec<usize> = (0..w.len())
        .filter(|&i| (w[i] as f32).is_finite())
        .collect();
    let rms = (finite.iter().map(|&i| w[i] * w[i]).sum::<f64>() / finite.len().max(1) as f64)
        .sqrt()
        .max(1e-30);
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&g, &r)) in got.iter().zip(w).enumerate() {
        let g64 = g as f64;
        if r.is_nan() {
            assert!(g.is_nan(), "{what} on {dev:?}: [{i}] = {g}, want NaN");
            continue;
        }
        let rf = r as f32;
        if rf.is_infinite() {
            // Overflow: the sign must match; within 0.1% of f32::MAX either is fine.
            if r.abs() < f32::MAX as f64 * 1.001 {
                continue;
            }
            assert_eq!(g, rf, "{what} on {dev:?}: [{i}] = {g}, want {r} (overflow)");
            continue;
        }
        assert!(
            g.is_finite() || r.abs() > f32::MAX as f64 * 0.999,
            "{what} on {dev:?}: [{i}] = {g} where the reference is finite ({r}); \
             NaN means unwritten or a NaN-producing formula"
        );
        let err = (g64 - r).abs();
        let bound = (ELEM * tol * r.abs().max(rms)).max(atol);
        assert!(
            err <= bound,
            "{what} on {dev:?}: [{i}] = {g}, want {r} (error {err:.3e}, element bound {bound:.3e})"
        );
        num += err * err;
        den += r * r;
    }
    let slack = atol * (w.len() as f64).sqrt();
    let rel = if den > 0.0 {
        ((num.sqrt() - slack).max(0.0)) / den.sqrt()
    } else {
        (num.sqrt() - slack).max(0.0)
    };
    if std::env::var_os("MIA_TEST_ERRORS").is_some() {
        eprintln!("error {what} on {dev:?}: {rel:.2e} (tol {tol:.0e})");
    }
    assert!(
        rel <= tol,
        "{what} on {dev:?}: relative error {rel:.3e} > {tol:.1e} ({} elements)",
        w.len()
    );
}

/// Exact comparison for integer and bool results.
pub fn check_exact<T: Element>(what: &str, dev: &Device, got: &[T], want: &[T]) {
    assert_eq!(got.len(), want.len(), "{what} on {dev:?}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
        panic!(
            "{what} on {dev:?}: [{i}] = {:?}, want {:?}",
            got[i], want[i]
        );
    }
}

// ---- float64 special functions --------------------------------------------------------------

#[allow(unused_imports)] // not every test file uses every reference
pub use mia_runtime::testing::reference::{erf64 as erf, erfc64 as erfc};

pub use mia_runtime::testing::reference::sigmoid64 as sigmoid;

#[allow(unused_imports)]
pub use mia_runtime::testing::reference::{gelu64 as gelu, gelu_tanh64 as gelu_tanh};

pub fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}
