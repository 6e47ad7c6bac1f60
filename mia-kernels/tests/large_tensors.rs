//! Tensors larger than one GPU storage binding (lavapipe binds at most 128 MiB) and passes with
//! more workgroups than one grid dimension holds: the pass is split into binding windows and
//! launched on a 2-D grid. Compared element by element with the CPU result.

use mia_runtime::prelude::*;
use mia_runtime::testing;

#[kernel]
fn affine(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    x * 2.0 + b
}

#[kernel]
fn row_softmax(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, -1)
}

fn data(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

fn check_split(n: usize, d: usize) {
    let Some(gpu) = testing::gpu() else { return };
    let bytes = (n * d * 4) as u64;
    let limit = gpu.limits().max_storage_binding_bytes;
    if bytes <= limit {
        eprintln!("skipping: this GPU binds {limit} bytes, the test tensor is only {bytes}");
        return;
    }
    let xs = data(n * d);
    let bs = data(d);
    let cpu = Device::cpu();
    let want = affine(
        &Tensor::from_slice(&cpu, [n, d], &xs).unwrap(),
        &Tensor::from_slice(&cpu, [d], &bs).unwrap(),
    )
    .unwrap()
    .to_vec()
    .unwrap();
    let x = Tensor::from_slice(&gpu, [n, d], &xs).unwrap();
    let b = Tensor::from_slice(&gpu, [d], &bs).unwrap();
    let got = affine(&x, &b).unwrap().to_vec().unwrap();
    let bad = got.iter().zip(&want).position(|(g, w)| g != w);
    assert_eq!(bad, None, "first wrong element of affine on [{n}, {d}]");
    let got = row_softmax(&x).unwrap().to_vec().unwrap();
    for r in [0, n / 2, n - 1] {
        let row = &xs[r * d..(r + 1) * d];
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &v| a.max(v as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for j in [0, d / 3, d - 1] {
            let w = (row[j] as f64 - m).exp() / s;
            assert!(
                (got[r * d + j] as f64 - w).abs() <= 1e-6 * w.abs().max(1e-3),
                "softmax row {r} col {j}"
            );
        }
    }
}

#[test]
fn elementwise_and_rows_past_one_binding_vec4() {
    check_split(8200, 4096);
}

#[test]
fn elementwise_and_rows_past_one_binding_odd_rows_and_2d_grid() {
    check_split(8193, 4097);
}
