use mia_runtime::prelude::*;
use mia_runtime::testing;

#[kernel]
fn scaled(x: Tensor<f32, N>, alpha: f32) -> (Tensor<f32, N>, Tensor<f32, N>) {
    (x * alpha, relu(x) + 1.0)
}

#[kernel]
fn col_sum(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> {
    x.sum(0)
}

#[kernel]
fn tr(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
    transpose(x, 0, 1) * 2.0
}

#[test]
fn smoke() {
    for dev in testing::devices() {
        let n = 37;
        let d = 1000;
        let data: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0)
            .collect();
        let x = Tensor::from_vec(&dev, [n, d], data.clone()).unwrap();
        let y = mia_kernels::softmax(&x).unwrap().to_vec().unwrap();
        for r in 0..n {
            let row = &data[r * d..(r + 1) * d];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            for j in 0..d {
                let want = (row[j] as f64 - m).exp() / s;
                assert!(
                    (y[r * d + j] as f64 - want).abs() < 1e-6,
                    "{dev:?} row {r} col {j}: {} vs {want}",
                    y[r * d + j]
                );
            }
        }
        let x1 = Tensor::from_vec(&dev, [n * d], data.clone()).unwrap();
        let (a, b) = scaled(&x1, 3.0).unwrap();
        let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
        for i in 0..n * d {
            assert_eq!(a[i], data[i] * 3.0);
            assert_eq!(b[i], data[i].max(0.0) + 1.0);
        }
        let cs = col_sum(&x).unwrap().to_vec().unwrap();
        for j in 0..d {
            let want: f64 = (0..n).map(|r| data[r * d + j] as f64).sum();
            assert!(
                (cs[j] as f64 - want).abs() < 1e-3,
                "{dev:?} col {j}: {} vs {want}",
                cs[j]
            );
        }
        let t = tr(&x).unwrap();
        assert_eq!(t.shape(), &[d, n]);
        let t = t.to_vec().unwrap();
        for r in 0..n {
            for j in 0..d {
                assert_eq!(t[j * n + r], data[r * d + j] * 2.0);
            }
        }
        eprintln!("{dev:?} ok; {}", mia_kernels::softmax::plan());
    }
}

#[kernel]
fn plus_one(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x + 1.0
}

/// Output buffers of dropped tensors are reused while passes that read them may still be
/// queued (GPU) or just finished (CPU): results must not change.
#[test]
fn reused_output_buffers_keep_results_right() {
    for dev in testing::devices() {
        let n = 300_000; // over the CPU pool's 1 MiB floor
        let x = Tensor::from_vec(&dev, [n], vec![0.0f32; n]).unwrap();
        let mut y = plus_one(&x).unwrap();
        for _ in 0..20 {
            let a = plus_one(&y).unwrap(); // reads y
            drop(y); // y's buffer is free while the pass reading it may be queued
            let b = plus_one(&a).unwrap(); // may be written into y's old buffer
            y = b;
            drop(a);
        }
        let v = y.to_vec().unwrap();
        assert!(v.iter().all(|&e| e == 41.0), "{dev:?}: {:?}", &v[..4]);
    }
}
