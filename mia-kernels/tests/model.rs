//! `gather` and `graph!` against a float64 reference on every device: embedding lookup with
//! broadcast adds, a model with a sub-model and repeated layers whose weights come from a
//! safetensors file by key, the memory plan (dead intermediates' buffers reused), and the
//! run-time errors of both (an index out of range, a missing weight key).
mod common;

use common::*;
use mia_runtime::prelude::*;
use mia_runtime::weights::SafeTensors;

const TOL: f64 = 1e-5;

#[kernel]
fn embed(
    table: Tensor<f32, V, D>,
    ids: Tensor<i32, B, T>,
    pos: Tensor<f32, T, D>,
) -> Tensor<f32, B, T, D> {
    gather(table, ids) + pos
}

#[test]
fn gather_looks_up_rows() {
    let _g = serial();
    let mut rng = rng(11);
    for dev in devices() {
        for &(v, d, b, t) in &[(1, 1, 1, 1), (7, 5, 2, 3), (50, 33, 3, 17)] {
            let table = uniform(&mut rng, v * d, -1.0, 1.0);
            let pos = uniform(&mut rng, t * d, -1.0, 1.0);
            let ids: Vec<i32> = (0..b * t).map(|i| ((i * 7 + 3) % v) as i32).collect();
            let mut want = vec![0.0f64; b * t * d];
            for (r, &id) in ids.iter().enumerate() {
                for c in 0..d {
                    want[r * d + c] =
                        table[id as usize * d + c] as f64 + pos[(r % t) * d + c] as f64;
                }
            }
            let got = fetch(
                "embed",
                embed(
                    &tensor(&dev, &[v, d], &table),
                    &tensor(&dev, &[b, t], &ids),
                    &tensor(&dev, &[t, d], &pos),
                ),
                &[b, t, d],
            );
            check(
                &format!("embed {v}x{d} [{b},{t}]"),
                &dev,
                &got,
                &Arr::f64(&[b, t, d], want),
                TOL,
            );
        }
    }
    // On the CPU an index outside the table is an error naming the argument.
    let cpu = Device::cpu();
    let err = embed(
        &tensor(&cpu, &[4, 2], &[0.0; 8]),
        &tensor(&cpu, &[1, 2], &[1, 4]),
        &tensor(&cpu, &[2, 2], &[0.0; 4]),
    )
    .expect_err("id 4 of a 4-row table");
    assert!(
        err.to_string().contains("ids") && err.to_string().contains("4 rows"),
        "{err}"
    );
}

graph! {
    /// A residual MLP: an input projection, three repeated blocks and a head block.
    pub struct Mlp {
        up: Tensor<f32, 8, 4> = "up.weight",
        blocks: [Block; 3] = "blocks.{i}",
        head: Block = "head",
    }
    struct Block {
        w: Tensor<f32, 8, 8> = "dense.weight",
        b: Tensor<f32, 8> = "dense.bias",
    }
    impl Block {
        fn forward(&self, x: Tensor<f32, N, 8>) -> Tensor<f32, N, 8> {
            layer_norm(x + gelu(matmul(x, transpose(self.w, 0, 1)) + self.b), 1.0, 0.0, 1e-5)
        }
    }
    impl Mlp {
        pub fn forward(&self, x: Tensor<f32, N, 4>) -> Tensor<f32, N, 8> {
            let mut h = matmul(x, transpose(self.up, 0, 1));
            for block in self.blocks {
                h = block.forward(h);
            }
            self.head.forward(h)
        }
    }
}

fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn block_ref(x: &Arr, w: &Arr, b: &Arr) -> Arr {
    let y = x.matmul(&w.transpose(0, 1)).add(b).map(gelu);
    let one = Arr::scalar(1.0);
    let zero = Arr::scalar(0.0);
    x.add(&y).layer_norm(&one, &zero, 1e-5)
}

#[test]
fn graph_model_loads_weights_and_matches_f64() {
    let _g = serial();
    let mut rng = rng(12);
    let dir = std::env::temp_dir().join(format!("mia-graph-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mlp.safetensors");
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = vec![(
        "up.weight".into(),
        vec![8, 4],
        uniform(&mut rng, 32, -0.5, 0.5),
    )];
    for p in ["blocks.0.", "blocks.1.", "blocks.2.", "head."] {
        tensors.push((
            format!("{p}dense.weight"),
            vec![8, 8],
            uniform(&mut rng, 64, -0.5, 0.5),
        ));
        tensors.push((
            format!("{p}dense.bias"),
            vec![8],
            uniform(&mut rng, 8, -0.5, 0.5),
        ));
    }
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, d)| d.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, s, _), b)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                .unwrap();
            (k.clone(), v)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    let st = SafeTensors::open(&path).unwrap();
    let get = |k: &str| {
        let (_, s, d) = tensors.iter().find(|(n, _, _)| n == k).unwrap();
        Arr::new(s, d)
    };
    let n = 5;
    let x = uniform(&mut rng, n * 4, -1.0, 1.0);
    let mut want = Arr::new(&[n, 4], &x).matmul(&get("up.weight").transpose(0, 1));
    for p in ["blocks.0.", "blocks.1.", "blocks.2.", "head."] {
        want = block_ref(
            &want,
            &get(&format!("{p}dense.weight")),
            &get(&format!("{p}dense.bias")),
        );
    }
    for dev in devices() {
        let model = Mlp::load(&dev, &st).unwrap();
        let input = tensor(&dev, &[n, 4], &x);
        let got = fetch("mlp", model.forward(&input), &[n, 8]);
        check("graph! mlp", &dev, &got, &want, TOL);
        // Per-pass times: one per planned pass, in plan order (a GPU without timestamps: None).
        let (_, passes) = dev.profile_passes(|| model.forward(&input)).unwrap();
        if dev.is_cpu() || dev.has_timestamps() {
            let passes = passes.expect("per-pass times");
            assert_eq!(passes.len(), Mlp::plan().passes(), "{passes:?}");
        } else {
            assert!(passes.is_none());
        }
    }
    assert_eq!(Mlp::WEIGHTS.len(), 9);
    assert_eq!(Mlp::WEIGHTS[1], ("blocks.0.dense.weight", &[8usize, 8][..]));
    // Dead intermediates' buffers are reused: the peak is below the sum.
    let plan = Mlp::plan();
    let (peak, naive) = (
        plan.peak_bytes(&[("N", 64)]).unwrap(),
        plan.naive_bytes(&[("N", 64)]).unwrap(),
    );
    assert!(peak * 2 <= naive, "peak {peak} vs naive {naive}\n{plan}");
    // A file without a key the model needs: the error names the key.
    let other = dir.join("partial.safetensors");
    let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![8, 4], &bytes[0])
        .unwrap();
    safetensors::serialize_to_file(vec![("up.weight".to_string(), v)], None, &other).unwrap();
    let err = Mlp::load(&Device::cpu(), &SafeTensors::open(&other).unwrap())
        .err()
        .expect("missing keys");
    assert!(err.to_string().contains("blocks.0.dense.weight"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
