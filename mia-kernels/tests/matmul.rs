//! Matrix products on every device against a float64 reference (`common::Arr::matmul`):
//! plain, transposed operands (strided views), batched with broadcasting, GEMV (M = 1),
//! tall-skinny, tiny, odd and tile-straddling sizes, K up to 4096, empty products; fused
//! epilogues (bias, GELU, residual, scaling, two outputs, two products sharing A) and
//! products feeding reductions. Tolerance: ‖got − ref‖/‖ref‖ ≤ 1e-5 (f32, K ≤ 4096) on CPU
//! and GPU, with the per-element checks of `common::check` (outputs are poisoned in debug
//! builds, so unwritten elements fail).
mod common;

use common::*;
use mia_runtime::prelude::*;
use mia_runtime::PassKind;
use rand::Rng;

const TOL: f64 = 1e-5;

#[kernel]
fn mm_tn(a: Tensor<f32, K, M>, b: Tensor<f32, K, N>) -> Tensor<f32, M, N> {
    matmul(transpose(a, 0, 1), b)
}
#[kernel]
fn mm_heads(q: Tensor<f32, H, T, E>, k: Tensor<f32, H, S, E>) -> Tensor<f32, H, T, S> {
    matmul(q, transpose(k, -1, -2))
}
#[kernel]
fn mm_broadcast(a: Tensor<f32, B, 1, M, K>, b: Tensor<f32, H, K, N>) -> Tensor<f32, B, H, M, N> {
    matmul(a, b)
}
#[kernel]
fn mm_scaled(a: Tensor<f32, M, K>, b: Tensor<f32, K, N>, alpha: f32) -> Tensor<f32, M, N> {
    matmul(a, b) * alpha - 1.0
}
#[kernel]
fn mm_two_outputs(
    a: Tensor<f32, M, K>,
    b: Tensor<f32, K, N>,
) -> (Tensor<f32, M, N>, Tensor<f32, M, N>) {
    let y = matmul(a, b);
    (y, tanh(y))
}
#[kernel]
fn mm_softmax(a: Tensor<f32, M, K>, b: Tensor<f32, K, N>) -> Tensor<f32, M, N> {
    softmax(matmul(a, b), -1)
}
#[kernel]
fn mm_layer_norm(
    x: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
    bias: Tensor<f32, N>,
    r: Tensor<f32, M, N>,
    g: Tensor<f32, N>,
    beta: Tensor<f32, N>,
) -> Tensor<f32, M, N> {
    layer_norm(matmul(x, w) + bias + r, g, beta, 1e-5)
}
#[kernel]
fn mm_prologue(a: Tensor<f32, M, K>, b: Tensor<f32, K, N>) -> Tensor<f32, M, N> {
    matmul(relu(a), b)
}
#[kernel]
fn pro_both(a: Tensor<f32, M, K>, b: Tensor<f32, K, N>, s: f32) -> Tensor<f32, M, N> {
    matmul(a * s, gelu(b))
}
#[kernel]
fn pro_leaves(
    x: Tensor<f32, M, K>,
    bias: Tensor<f32, K>,
    r: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
) -> Tensor<f32, M, N> {
    matmul(x + bias + r, w)
}
#[kernel]
fn pro_transposed(a: Tensor<f32, K, M>, w: Tensor<f32, N, K>) -> Tensor<f32, M, N> {
    matmul(relu(transpose(a, 0, 1)), transpose(w, 0, 1) * 2.0)
}
#[kernel]
fn pro_batched(q: Tensor<f32, B, 1, M, K>, k: Tensor<f32, H, N, K>) -> Tensor<f32, B, H, M, N> {
    matmul(silu(q), transpose(k, -1, -2) - 0.5)
}
#[kernel]
fn pro_swiglu(
    x: Tensor<f32, M, K>,
    g: Tensor<f32, K>,
    w1: Tensor<f32, K, N>,
    w3: Tensor<f32, K, N>,
) -> Tensor<f32, M, N> {
    let h = x * g;
    silu(matmul(h, w1)) * matmul(h, w3)
}
#[kernel]
fn mm_chain(a: Tensor<f32, M, K>, b: Tensor<f32, K, N>, c: Tensor<f32, N, P>) -> Tensor<f32, M, P> {
    matmul(matmul(a, b), c)
}
#[kernel(fusion = false)]
fn linear_gelu_unfused(
    x: Tensor<f32, M, K>,
    w: Tensor<f32, K, N>,
    bias: Tensor<f32, N>,
) -> Tensor<f32, M, N> {
    gelu(matmul(x, w) + bias)
}

fn data(rng: &mut rand::rngs::StdRng, shape: &[usize]) -> Vec<f32> {
    uniform(rng, shape.iter().product(), -1.0, 1.0)
}

/// (M, K, N): tile multiples and not, GEMV, tall-skinny, tiny, a long K.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 37, 1),
    (1, 384, 1536),
    (1, 1000, 77),
    (2, 3, 5),
    (7, 13, 17),
    (64, 64, 64),
    (128, 8, 128),
    (129, 65, 130),
    (300, 5, 2),
    (3, 700, 300),
    (73, 257, 19),
    (16, 4096, 24),
];

#[test]
fn matmul_matches_f64() {
    let _g = serial();
    let mut rng = rng(1);
    for dev in devices() {
        for &(m, k, n) in SHAPES {
            let (a, b) = (data(&mut rng, &[m, k]), data(&mut rng, &[k, n]));
            let want = Arr::new(&[m, k], &a).matmul(&Arr::new(&[k, n], &b));
            let what = format!("matmul {m}x{k}x{n}");
            let got = fetch(
                &what,
                mia_kernels::matmul(&tensor(&dev, &[m, k], &a), &tensor(&dev, &[k, n], &b)),
                &[m, n],
            );
            check(&what, &dev, &got, &want, TOL);
            // The same product with transposed storage of either side.
            let at = Arr::new(&[m, k], &a).transpose(0, 1);
            let bt = Arr::new(&[k, n], &b).transpose(0, 1);
            let at32: Vec<f32> = at.data.iter().map(|&v| v as f32).collect();
            let bt32: Vec<f32> = bt.data.iter().map(|&v| v as f32).collect();
            let got = fetch(
                &what,
                mm_tn(&tensor(&dev, &[k, m], &at32), &tensor(&dev, &[k, n], &b)),
                &[m, n],
            );
            check(&format!("{what} (A transposed)"), &dev, &got, &want, TOL);
            let got = fetch(
                &what,
                mia_kernels::matmul_nt(&tensor(&dev, &[m, k], &a), &tensor(&dev, &[n, k], &bt32)),
                &[m, n],
            );
            check(&format!("{what} (B transposed)"), &dev, &got, &want, TOL);
        }
    }
}

/// Every tiling the GPU can run, forced through `MIA_TILE` (autotune would keep one): ragged
/// sizes around every tile edge, M = 1, A or B transposed, two products sharing A with
/// an epilogue, and operands past f16's range (tensor-core tiles, which run with
/// `MIA_TENSOR_CORES=1` where the GPU has them, must recompute those tiles in f32).
#[test]
fn every_tiling_matches_f64() {
    let _g = serial();
    let mut rng = rng(9);
    for dev in devices().into_iter().filter(|d| d.is_gpu()) {
        // Tilings past the last one fall back to autotune: harmless, and robust to new tilings.
        for tiling in 0..20 {
            std::env::set_var("MIA_TILE", tiling.to_string());
            // (130, 68, 136): the vec4 tilings' loads, B as stored and transposed, ragged
            // along M, N and the last step of K.
            let shapes = [
                (1, 70, 130),
                (17, 200, 33),
                (129, 65, 130),
                (40, 300, 70),
                (130, 68, 136),
            ];
            for &(m, k, n) in &shapes {
                let (a, b) = (data(&mut rng, &[m, k]), data(&mut rng, &[k, n]));
                let want = Arr::new(&[m, k], &a).matmul(&Arr::new(&[k, n], &b));
                let what = format!("matmul {m}x{k}x{n}, tiling {tiling}");
                let (ta, tb) = (tensor(&dev, &[m, k], &a), tensor(&dev, &[k, n], &b));
                let got = fetch(&what, mia_kernels::matmul(&ta, &tb), &[m, n]);
                check(&what, &dev, &got, &want, TOL);
                let at = Arr::new(&[m, k], &a).transpose(0, 1);
                let at32: Vec<f32> = at.data.iter().map(|&v| v as f32).collect();
                let got = fetch(&what, mm_tn(&tensor(&dev, &[k, m], &at32), &tb), &[m, n]);
                check(&format!("{what} (A transposed)"), &dev, &got, &want, TOL);
                let bt = Arr::new(&[k, n], &b).transpose(0, 1);
                let bt32: Vec<f32> = bt.data.iter().map(|&v| v as f32).collect();
                let got = fetch(
                    &what,
                    mia_kernels::matmul_nt(&ta, &tensor(&dev, &[n, k], &bt32)),
                    &[m, n],
                );
                check(&format!("{what} (B transposed)"), &dev, &got, &want, TOL);
                let b3 = data(&mut rng, &[k, n]);
                let x3 = Arr::new(&[m, k], &a).matmul(&Arr::new(&[k, n], &b3));
                let want = want.map(silu).mul(&x3);
                let tb3 = tensor(&dev, &[k, n], &b3);
                let got = fetch(&what, mia_kernels::swiglu_gate(&ta, &tb, &tb3), &[m, n]);
                check(&format!("{what} (two products)"), &dev, &got, &want, TOL);
                let big: Vec<f32> = a.iter().map(|&v| v * 1e5).collect();
                let want = Arr::new(&[m, k], &big).matmul(&Arr::new(&[k, n], &b));
                let got = fetch(
                    &what,
                    mia_kernels::matmul(&tensor(&dev, &[m, k], &big), &tb),
                    &[m, n],
                );
                check(&format!("{what} (A up to 1e5)"), &dev, &got, &want, TOL);
            }
        }
        std::env::remove_var("MIA_TILE");
    }
}

#[test]
fn random_shapes_match_f64() {
    let _g = serial();
    let mut r = rng(2);
    for dev in devices() {
        for _ in 0..12 {
            let (m, k, n) = (
                r.random_range(1..=150usize),
                r.random_range(1..=300usize),
                r.random_range(1..=150usize),
            );
            let (a, b) = (data(&mut r, &[m, k]), data(&mut r, &[k, n]));
            let want = Arr::new(&[m, k], &a).matmul(&Arr::new(&[k, n], &b));
            let what = format!("matmul {m}x{k}x{n}");
            let got = fetch(
                &what,
                mia_kernels::matmul(&tensor(&dev, &[m, k], &a), &tensor(&dev, &[k, n], &b)),
                &[m, n],
            );
            check(&what, &dev, &got, &want, TOL);
        }
    }
}

#[test]
fn batched_and_broadcast_products() {
    let _g = serial();
    let mut rng = rng(3);
    for dev in devices() {
        // [B, M, K] x [K, N]
        let (bs, m, k, n) = (3, 17, 33, 9);
        let (a, b) = (data(&mut rng, &[bs, m, k]), data(&mut rng, &[k, n]));
        let want = Arr::new(&[bs, m, k], &a).matmul(&Arr::new(&[k, n], &b));
        let got = fetch(
            "batched",
            mia_kernels::matmul_batched(&tensor(&dev, &[bs, m, k], &a), &tensor(&dev, &[k, n], &b)),
            &[bs, m, n],
        );
        check("[B,M,K]x[K,N]", &dev, &got, &want, TOL);
        // Attention scores: [H, T, E] x [H, S, E]ᵀ
        let (h, t, s, e) = (4, 19, 23, 16);
        let (q, kk) = (data(&mut rng, &[h, t, e]), data(&mut rng, &[h, s, e]));
        let want = Arr::new(&[h, t, e], &q).matmul(&Arr::new(&[h, s, e], &kk).transpose(-1, -2));
        let got = fetch(
            "heads",
            mm_heads(
                &tensor(&dev, &[h, t, e], &q),
                &tensor(&dev, &[h, s, e], &kk),
            ),
            &[h, t, s],
        );
        check("[H,T,E]x[H,E,S]", &dev, &got, &want, TOL);
        // [B, 1, M, K] x [H, K, N] -> [B, H, M, N]
        let (b2, h2, m2, k2, n2) = (2, 3, 5, 7, 6);
        let (a, b) = (
            data(&mut rng, &[b2, 1, m2, k2]),
            data(&mut rng, &[h2, k2, n2]),
        );
        let want = Arr::new(&[b2, 1, m2, k2], &a).matmul(&Arr::new(&[h2, k2, n2], &b));
        let got = fetch(
            "broadcast",
            mm_broadcast(
                &tensor(&dev, &[b2, 1, m2, k2], &a),
                &tensor(&dev, &[h2, k2, n2], &b),
            ),
            &[b2, h2, m2, n2],
        );
        check("[B,1,M,K]x[H,K,N]", &dev, &got, &want, TOL);
    }
}

#[test]
fn fused_epilogues_match_f64() {
    let _g = serial();
    let mut rng = rng(4);
    for dev in devices() {
        for &(m, k, n) in &[(1, 64, 96), (37, 70, 129), (130, 128, 64)] {
            let (x, w) = (data(&mut rng, &[m, k]), data(&mut rng, &[k, n]));
            let (bias, res) = (data(&mut rng, &[n]), data(&mut rng, &[m, n]));
            let w3 = data(&mut rng, &[k, n]);
            let (tx, tw, tb, tr, tw3) = (
                tensor(&dev, &[m, k], &x),
                tensor(&dev, &[k, n], &w),
                tensor(&dev, &[n], &bias),
                tensor(&dev, &[m, n], &res),
                tensor(&dev, &[k, n], &w3),
            );
            let xw = Arr::new(&[m, k], &x).matmul(&Arr::new(&[k, n], &w));
            let lin = xw.add(&Arr::new(&[n], &bias));
            let what = |s: &str| format!("{s} {m}x{k}x{n}");
            let got = fetch("linear", mia_kernels::linear(&tx, &tw, &tb), &[m, n]);
            check(&what("linear"), &dev, &got, &lin, TOL);
            let want = lin.map(mia_runtime::testing::reference::gelu64);
            let got = fetch(
                "linear_gelu",
                mia_kernels::linear_gelu(&tx, &tw, &tb),
                &[m, n],
            );
            check(&what("linear_gelu"), &dev, &got, &want, TOL);
            let got = fetch("unfused", linear_gelu_unfused(&tx, &tw, &tb), &[m, n]);
            check(&what("linear_gelu, fusion off"), &dev, &got, &want, TOL);
            let want = lin.add(&Arr::new(&[m, n], &res));
            let got = fetch(
                "linear_residual",
                mia_kernels::linear_residual(&tx, &tw, &tb, &tr),
                &[m, n],
            );
            check(&what("linear_residual"), &dev, &got, &want, TOL);
            let want = xw.map(|v| v * 0.25 - 1.0);
            let got = fetch("scaled", mm_scaled(&tx, &tw, 0.25), &[m, n]);
            check(&what("scaled"), &dev, &got, &want, TOL);
            let (y, t) = mm_two_outputs(&tx, &tw).unwrap();
            check(
                &what("two outputs: y"),
                &dev,
                &y.to_vec().unwrap(),
                &xw,
                TOL,
            );
            check(
                &what("two outputs: tanh"),
                &dev,
                &t.to_vec().unwrap(),
                &xw.map(f64::tanh),
                TOL,
            );
            let x3 = Arr::new(&[m, k], &x).matmul(&Arr::new(&[k, n], &w3));
            let want = xw.map(silu).mul(&x3);
            let got = fetch(
                "swiglu_gate",
                mia_kernels::swiglu_gate(&tx, &tw, &tw3),
                &[m, n],
            );
            check(&what("swiglu_gate"), &dev, &got, &want, TOL);
            let want = xw.softmax(-1);
            let got = fetch("softmax", mm_softmax(&tx, &tw), &[m, n]);
            check(&what("softmax(matmul)"), &dev, &got, &want, TOL);
            let (g, beta) = (data(&mut rng, &[n]), data(&mut rng, &[n]));
            let want = lin.add(&Arr::new(&[m, n], &res)).layer_norm(
                &Arr::new(&[n], &g),
                &Arr::new(&[n], &beta),
                1e-5,
            );
            let got = fetch(
                "layer_norm",
                mm_layer_norm(
                    &tx,
                    &tw,
                    &tb,
                    &tr,
                    &tensor(&dev, &[n], &g),
                    &tensor(&dev, &[n], &beta),
                ),
                &[m, n],
            );
            check(&what("layer_norm(matmul + b + r)"), &dev, &got, &want, 2e-5);
            let want = Arr::new(&[m, k], &x)
                .map(|v| v.max(0.0))
                .matmul(&Arr::new(&[k, n], &w));
            let got = fetch("prologue", mm_prologue(&tx, &tw), &[m, n]);
            check(&what("matmul(relu(a), b)"), &dev, &got, &want, TOL);
            let c = data(&mut rng, &[n, 5]);
            let want = xw.matmul(&Arr::new(&[n, 5], &c));
            let got = fetch(
                "chain",
                mm_chain(&tx, &tw, &tensor(&dev, &[n, 5], &c)),
                &[m, 5],
            );
            check(&what("matmul(matmul)"), &dev, &got, &want, TOL);
        }
    }
}

/// Elementwise prologues (scaled, GELU'd, biased, residual, transposed, batched and broadcast
/// operands, on A and on B) computed as the tiles load: one dispatch each, on every shape
/// class (GEMV included, where a B prologue takes the packing path).
#[test]
fn prologues_match_f64() {
    let _g = serial();
    let mut rng = rng(9);
    for dev in devices() {
        // Each shape class of `SHAPES`, without its largest products (CI runs this on lavapipe).
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 37, 1),
            (1, 1000, 77),
            (2, 3, 5),
            (7, 13, 17),
            (129, 65, 130),
            (300, 5, 2),
            (73, 257, 19),
            (16, 1500, 24),
        ] {
            let what = |s: &str| format!("{s} {m}x{k}x{n}");
            let (x, w) = (data(&mut rng, &[m, k]), data(&mut rng, &[k, n]));
            let (ax, aw) = (Arr::new(&[m, k], &x), Arr::new(&[k, n], &w));
            let (tx, tw) = (tensor(&dev, &[m, k], &x), tensor(&dev, &[k, n], &w));
            let want = ax
                .map(|v| v * 0.75)
                .matmul(&aw.map(mia_runtime::testing::reference::gelu64));
            let got = fetch("pro_both", pro_both(&tx, &tw, 0.75), &[m, n]);
            check(&what("matmul(a * s, gelu(b))"), &dev, &got, &want, TOL);
            let (bias, r) = (data(&mut rng, &[k]), data(&mut rng, &[m, k]));
            let want = ax
                .add(&Arr::new(&[k], &bias))
                .add(&Arr::new(&[m, k], &r))
                .matmul(&aw);
            let got = fetch(
                "pro_leaves",
                pro_leaves(
                    &tx,
                    &tensor(&dev, &[k], &bias),
                    &tensor(&dev, &[m, k], &r),
                    &tw,
                ),
                &[m, n],
            );
            check(&what("matmul(x + bias + r, w)"), &dev, &got, &want, TOL);
            let want = ax.map(|v| v.max(0.0)).matmul(&aw.map(|v| v * 2.0));
            let f32s = |a: Arr| -> Vec<f32> { a.data.iter().map(|&v| v as f32).collect() };
            let (at, wt) = (f32s(ax.transpose(0, 1)), f32s(aw.transpose(0, 1)));
            let got = fetch(
                "pro_transposed",
                pro_transposed(&tensor(&dev, &[k, m], &at), &tensor(&dev, &[n, k], &wt)),
                &[m, n],
            );
            check(&what("matmul(relu(aᵀ), wᵀ * 2)"), &dev, &got, &want, TOL);
            let (g, w3) = (data(&mut rng, &[k]), data(&mut rng, &[k, n]));
            let h = ax.mul(&Arr::new(&[k], &g));
            let want = h
                .matmul(&aw)
                .map(silu)
                .mul(&h.matmul(&Arr::new(&[k, n], &w3)));
            let got = fetch(
                "pro_swiglu",
                pro_swiglu(
                    &tx,
                    &tensor(&dev, &[k], &g),
                    &tw,
                    &tensor(&dev, &[k, n], &w3),
                ),
                &[m, n],
            );
            check(&what("swiglu of x * g"), &dev, &got, &want, TOL);
        }
        for &(b, h, m, k, n) in &[(1, 1, 1, 1, 1), (2, 3, 5, 7, 9), (3, 2, 33, 64, 17)] {
            let (q, kk) = (data(&mut rng, &[b, 1, m, k]), data(&mut rng, &[h, n, k]));
            let want = Arr::new(&[b, 1, m, k], &q)
                .map(silu)
                .matmul(&Arr::new(&[h, n, k], &kk).transpose(-1, -2).map(|v| v - 0.5));
            let got = fetch(
                "pro_batched",
                pro_batched(
                    &tensor(&dev, &[b, 1, m, k], &q),
                    &tensor(&dev, &[h, n, k], &kk),
                ),
                &[b, h, m, n],
            );
            check(
                &format!("batched prologues {b}x{h}x{m}x{k}x{n}"),
                &dev,
                &got,
                &want,
                TOL,
            );
        }
    }
}

#[test]
fn empty_products() {
    let _g = serial();
    for dev in devices() {
        // K = 0: the product is all zeros (then the epilogue).
        let got = fetch(
            "k=0",
            mia_kernels::linear(
                &tensor(&dev, &[3, 0], &[]),
                &tensor(&dev, &[0, 4], &[]),
                &tensor(&dev, &[4], &[1.0, 2.0, 3.0, 4.0]),
            ),
            &[3, 4],
        );
        assert_eq!(got, [1.0, 2.0, 3.0, 4.0].repeat(3), "{}", dev.name());
        let got = fetch(
            "m=0",
            mia_kernels::matmul(
                &tensor(&dev, &[0, 5], &[]),
                &tensor(&dev, &[5, 4], &[0.5; 20]),
            ),
            &[0, 4],
        );
        assert!(got.is_empty());
    }
}

#[test]
fn mismatched_sizes_are_errors() {
    let dev = Device::cpu();
    let e = mia_kernels::matmul(
        &tensor(&dev, &[2, 3], &[0.0; 6]),
        &tensor(&dev, &[4, 5], &[0.0; 20]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains('K') && e.contains('3') && e.contains('4'), "{e}");
}

#[test]
fn plans_are_one_dispatch() {
    let mm = |p: &Plan| {
        p.passes
            .iter()
            .filter(|x| matches!(x.kind, PassKind::MatMul { .. }))
            .count()
    };
    for (name, plan) in [
        ("matmul", mia_kernels::matmul::plan()),
        ("matmul_nt", mia_kernels::matmul_nt::plan()),
        ("linear", mia_kernels::linear::plan()),
        ("linear_gelu", mia_kernels::linear_gelu::plan()),
        ("linear_residual", mia_kernels::linear_residual::plan()),
        ("swiglu_gate", mia_kernels::swiglu_gate::plan()),
        ("mm_scaled", mm_scaled::plan()),
        ("mm_two_outputs", mm_two_outputs::plan()),
        ("mm_heads", mm_heads::plan()),
        ("mm_prologue", mm_prologue::plan()),
        ("pro_both", pro_both::plan()),
        ("pro_leaves", pro_leaves::plan()),
        ("pro_transposed", pro_transposed::plan()),
        ("pro_batched", pro_batched::plan()),
        ("pro_swiglu", pro_swiglu::plan()),
    ] {
        assert_eq!(plan.dispatches(), 1, "{name}:\n{plan}");
        assert_eq!(mm(plan), 1, "{name}:\n{plan}");
        assert!(plan.intermediates.is_empty(), "{name}:\n{plan}");
    }
    assert_eq!(
        mia_kernels::swiglu_gate::plan().passes[0].kind,
        PassKind::MatMul { products: 2 }
    );
    // A reduction over the product's rows is its own row pass; the product keeps the bias
    // and residual in its epilogue or the row pass recomputes them — two dispatches either way.
    assert_eq!(
        mm_layer_norm::plan().dispatches(),
        2,
        "{}",
        mm_layer_norm::plan()
    );
    assert_eq!(mm_softmax::plan().dispatches(), 2);
    assert_eq!(mm_chain::plan().dispatches(), 2);
    assert_eq!(linear_gelu_unfused::plan().dispatches(), 3);
}

#[test]
fn attention_matches_f64() {
    let _g = serial();
    let mut rng = rng(5);
    for dev in devices() {
        // Odd sizes, and several key blocks with a ragged last one (S = 300; E = 20 is not a
        // whole number of the CPU's 8 × 8 packing blocks).
        let shapes = [
            (1, 1, 1, 1),
            (2, 7, 9, 16),
            (3, 33, 65, 8),
            (2, 64, 64, 64),
            (2, 37, 300, 20),
        ];
        for &(h, t, s, e) in &shapes {
            let (q, k, v) = (
                data(&mut rng, &[h, t, e]),
                data(&mut rng, &[h, s, e]),
                data(&mut rng, &[h, s, e]),
            );
            let scale = 1.0 / (e as f64).sqrt();
            let scores = Arr::new(&[h, t, e], &q)
                .matmul(&Arr::new(&[h, s, e], &k).transpose(-1, -2))
                .map(|x| x * scale as f32 as f64);
            let want = scores.softmax(-1).matmul(&Arr::new(&[h, s, e], &v));
            let got = fetch(
                "attention",
                mia_kernels::attention(
                    &tensor(&dev, &[h, t, e], &q),
                    &tensor(&dev, &[h, s, e], &k),
                    &tensor(&dev, &[h, s, e], &v),
                    scale as f32,
                ),
                &[h, t, e],
            );
            check(
                &format!("attention {h}x{t}x{s}x{e}"),
                &dev,
                &got,
                &want,
                TOL,
            );
        }
        let p = Padded::new(&mut rng, 8);
        let want = p.scores.softmax(-1).matmul(&Arr::new(&p.ks, &p.v));
        let got = p.run(&dev, "attention_masked", mia_kernels::attention_masked);
        check("attention with padding mask", &dev, &got, &want, TOL);
    }
    // Recognised as flash attention: one dispatch, no scores in memory.
    for plan in [
        mia_kernels::attention::plan(),
        mia_kernels::attention_masked::plan(),
    ] {
        assert_eq!(plan.dispatches(), 1, "{plan}");
        assert!(plan.intermediates.is_empty(), "{plan}");
        assert!(
            matches!(plan.passes[0].kind, PassKind::Attention { .. }),
            "{plan}"
        );
    }
}

/// A padded batch for the masked attentions: two sentences of 8 keys, the second padded
/// after 5 (mask -1e4), 3 heads of 16, and `t` queries; `scores` is the float64
/// `SCALE · Q·Kᵀ + mask`.
struct Padded {
    qs: [usize; 4],
    ks: [usize; 4],
    mask_shape: [usize; 4],
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    mask: Vec<f32>,
    scores: Arr,
}

impl Padded {
    const SCALE: f32 = 0.25;

    fn new(rng: &mut rand::rngs::StdRng, t: usize) -> Padded {
        let (b, h, s, e) = (2, 3, 8, 16);
        let (qs, ks, mask_shape) = ([b, h, t, e], [b, h, s, e], [b, 1, 1, s]);
        let (q, k, v) = (data(rng, &qs), data(rng, &ks), data(rng, &ks));
        let mut mask = vec![0.0f32; b * s];
        for m in &mut mask[s + 5..] {
            *m = -1e4;
        }
        let scores = Arr::new(&qs, &q)
            .matmul(&Arr::new(&ks, &k).transpose(-1, -2))
            .map(|x| x * Self::SCALE as f64)
            .add(&Arr::new(&mask_shape, &mask));
        Padded {
            qs,
            ks,
            mask_shape,
            q,
            k,
            v,
            mask,
            scores,
        }
    }

    /// `kernel(q, k, v, mask, SCALE)` on `dev`, fetched.
    fn run(
        &self,
        dev: &Device,
        what: &str,
        kernel: impl Fn(
            &Tensor<f32>,
            &Tensor<f32>,
            &Tensor<f32>,
            &Tensor<f32>,
            f32,
        ) -> Result<Tensor<f32>, Error>,
    ) -> Vec<f32> {
        let out = kernel(
            &tensor(dev, &self.qs, &self.q),
            &tensor(dev, &self.ks, &self.k),
            &tensor(dev, &self.ks, &self.v),
            &tensor(dev, &self.mask_shape, &self.mask),
            Self::SCALE,
        );
        fetch(what, out, &self.qs)
    }
}

/// Float64 `causal(x)`: `-inf` where key `j > i + (S − T)` in every trailing `[T, S]` matrix.
fn causal_ref(x: &Arr) -> Arr {
    let r = x.shape.len();
    let (t, s) = (x.shape[r - 2], x.shape[r - 1]);
    let data = x
        .data
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let (i, j) = ((k / s) % t, k % s);
            if j + t > i + s {
                f64::NEG_INFINITY
            } else {
                v
            }
        })
        .collect();
    Arr::f64(&x.shape, data)
}

/// Fused attention writes a fully masked row (T > S under `causal`) as zeros where the
/// formula gives NaN (see `mia_runtime`'s attention docs).
fn zero_nan(a: Arr) -> Arr {
    a.map(|x| if x.is_nan() { 0.0 } else { x })
}

// `causal` on the raw product under a positive constant scale: the same attention.
#[kernel]
fn attn_causal_prescaled(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
) -> Tensor<f32, H, T, E> {
    matmul(
        softmax(causal(matmul(q, transpose(k, -1, -2))) / 4.0, -1),
        v,
    )
}
// Under a scalar-parameter scale (sign unknown) it is not provably the same: unfused.
#[kernel]
fn attn_causal_param_prescaled(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
    scale: f32,
) -> Tensor<f32, H, T, E> {
    matmul(
        softmax(causal(matmul(q, transpose(k, -1, -2))) * scale, -1),
        v,
    )
}
#[kernel(fusion = false)]
fn attn_causal_unfused(
    q: Tensor<f32, H, T, E>,
    k: Tensor<f32, H, S, E>,
    v: Tensor<f32, H, S, E>,
    scale: f32,
) -> Tensor<f32, H, T, E> {
    matmul(
        softmax(causal(matmul(q, transpose(k, -1, -2)) * scale), -1),
        v,
    )
}
#[kernel]
fn causal_plain(x: Tensor<f32, B, T, S>) -> Tensor<f32, B, T, S> {
    causal(x)
}
#[kernel]
fn causal_softmax(x: Tensor<f32, T, S>, y: Tensor<f32, T, S>) -> Tensor<f32, T, S> {
    softmax(causal(x + y) * 2.0, -1)
}

#[test]
fn causal_attention_matches_f64() {
    let _g = serial();
    let mut rng = rng(9);
    // (H, T, S, E): T = S, decoding (T = 1), a KV cache (T < S), odd sizes, several key
    // blocks, and T > S (the first T − S queries see no key).
    let shapes: &[(usize, usize, usize, usize)] = &[
        (1, 1, 1, 1),
        (2, 1, 9, 16),
        (2, 7, 9, 16),
        (3, 33, 65, 8),
        (2, 64, 64, 64),
        (1, 70, 150, 16),
        (2, 12, 5, 8),
    ];
    for dev in devices() {
        for &(h, t, s, e) in shapes {
            let (q, k, v) = (
                data(&mut rng, &[h, t, e]),
                data(&mut rng, &[h, s, e]),
                data(&mut rng, &[h, s, e]),
            );
            let (tq, tk, tv) = (
                tensor(&dev, &[h, t, e], &q),
                tensor(&dev, &[h, s, e], &k),
                tensor(&dev, &[h, s, e], &v),
            );
            let product =
                Arr::new(&[h, t, e], &q).matmul(&Arr::new(&[h, s, e], &k).transpose(-1, -2));
            let vv = Arr::new(&[h, s, e], &v);
            let scale = 1.0 / (e as f64).sqrt();
            let want = causal_ref(&product.map(|x| x * scale as f32 as f64))
                .softmax(-1)
                .matmul(&vv);
            let what = format!("{h}x{t}x{s}x{e}");
            let got = fetch(
                "attention_causal",
                mia_kernels::attention_causal(&tq, &tk, &tv, scale as f32),
                &[h, t, e],
            );
            check(
                &format!("attention_causal {what}"),
                &dev,
                &got,
                &zero_nan(want.clone()),
                TOL,
            );
            let want4 = causal_ref(&product)
                .map(|x| x / 4.0)
                .softmax(-1)
                .matmul(&vv);
            let got = fetch(
                "attn_causal_prescaled",
                attn_causal_prescaled(&tq, &tk, &tv),
                &[h, t, e],
            );
            check(
                &format!("causal before a constant scale {what}"),
                &dev,
                &got,
                &zero_nan(want4),
                TOL,
            );
            if t > s {
                // Unfused, a fully masked row is softmax's 0/0: NaN, as the formula says.
                continue;
            }
            let got = fetch(
                "attn_causal_param_prescaled",
                attn_causal_param_prescaled(&tq, &tk, &tv, scale as f32),
                &[h, t, e],
            );
            check(
                &format!("causal before a parameter scale {what}"),
                &dev,
                &got,
                &want,
                TOL,
            );
            let got = fetch(
                "attn_causal_unfused",
                attn_causal_unfused(&tq, &tk, &tv, scale as f32),
                &[h, t, e],
            );
            check(&format!("causal unfused {what}"), &dev, &got, &want, TOL);
        }
        // T = 6 queries (the last six of the 8 keys).
        let p = Padded::new(&mut rng, 6);
        let want = causal_ref(&p.scores)
            .softmax(-1)
            .matmul(&Arr::new(&p.ks, &p.v));
        let got = p.run(
            &dev,
            "attention_causal_masked",
            mia_kernels::attention_causal_masked,
        );
        check("causal attention with padding mask", &dev, &got, &want, TOL);
        // `causal` outside an attention: its own pass, -inf exactly where masked.
        for &(b, t, s) in &[(1, 1, 1), (2, 3, 7), (3, 9, 4), (1, 129, 300)] {
            let x = data(&mut rng, &[b, t, s]);
            let got = fetch(
                "causal_plain",
                causal_plain(&tensor(&dev, &[b, t, s], &x)),
                &[b, t, s],
            );
            let want = causal_ref(&Arr::new(&[b, t, s], &x));
            check(&format!("causal {b}x{t}x{s}"), &dev, &got, &want, 0.0);
        }
        for &(t, s) in &[(1, 1), (5, 5), (7, 33), (64, 300)] {
            let (x, y) = (data(&mut rng, &[t, s]), data(&mut rng, &[t, s]));
            let got = fetch(
                "causal_softmax",
                causal_softmax(&tensor(&dev, &[t, s], &x), &tensor(&dev, &[t, s], &y)),
                &[t, s],
            );
            let want = causal_ref(&Arr::new(&[t, s], &x).add(&Arr::new(&[t, s], &y)))
                .map(|v| v * 2.0)
                .softmax(-1);
            check(&format!("softmax(causal) {t}x{s}"), &dev, &got, &want, TOL);
        }
    }
    // The causal attentions are one flash-attention dispatch, with the causal flag.
    for (plan, mask) in [
        (mia_kernels::attention_causal::plan(), false),
        (mia_kernels::attention_causal_masked::plan(), true),
        (attn_causal_prescaled::plan(), false),
    ] {
        assert_eq!(plan.dispatches(), 1, "{plan}");
        assert!(plan.intermediates.is_empty(), "{plan}");
        assert_eq!(
            plan.passes[0].kind,
            PassKind::Attention { mask, causal: true },
            "{plan}"
        );
    }
    // Not provably equivalent (scale of unknown sign), or fusion off: `causal` is a pass.
    for plan in [
        attn_causal_param_prescaled::plan(),
        attn_causal_unfused::plan(),
    ] {
        assert!(plan.dispatches() > 1, "{plan}");
        assert!(
            plan.passes.iter().any(|p| p.kind == PassKind::Causal),
            "{plan}"
        );
    }
    assert_eq!(causal_plain::plan().passes[0].kind, PassKind::Causal);
    let p = causal_softmax::plan();
    assert_eq!(p.dispatches(), 3, "{p}");
}

/// Heads merged back after attention (`[B, 3, T, 5] -> [B, T, 15]`), then projected, as in a
/// transformer layer: the attention pass writes its output transposed, with no copy pass.
#[kernel]
fn attn_merge_heads(
    q: Tensor<f32, B, 3, T, 5>,
    k: Tensor<f32, B, 3, S, 5>,
    v: Tensor<f32, B, 3, S, 5>,
    w: Tensor<f32, 15, N>,
) -> Tensor<f32, B, T, N> {
    let ctx = matmul(softmax(matmul(q, transpose(k, -1, -2)) * 0.5, -1), v);
    matmul(reshape(transpose(ctx, 1, 2), [B, T, 15]), w)
}
/// The merged heads returned: the attention stores them transposed, one copy makes the
/// output (which is a reshape of them).
#[kernel]
fn attn_merged(
    q: Tensor<f32, B, 3, T, 5>,
    k: Tensor<f32, B, 3, S, 5>,
    v: Tensor<f32, B, 3, S, 5>,
) -> Tensor<f32, B, T, 15> {
    let ctx = matmul(softmax(matmul(q, transpose(k, -1, -2)) * 0.5, -1), v);
    reshape(transpose(ctx, 1, 2), [B, T, 15])
}

#[test]
fn attention_stores_merged_heads() {
    let _g = serial();
    let mut rng = rng(9);
    for dev in devices() {
        for &(b, t, s, n) in &[(1, 1, 1, 1), (2, 7, 9, 4), (3, 33, 17, 6), (1, 64, 130, 3)] {
            let (qs, ks) = ([b, 3, t, 5], [b, 3, s, 5]);
            let (q, k, v, w) = (
                data(&mut rng, &qs),
                data(&mut rng, &ks),
                data(&mut rng, &ks),
                data(&mut rng, &[15, n]),
            );
            let merged = Arr::new(&qs, &q)
                .matmul(&Arr::new(&ks, &k).transpose(-1, -2))
                .map(|x| x * 0.5)
                .softmax(-1)
                .matmul(&Arr::new(&ks, &v))
                .transpose(1, 2)
                .reshape(&[b, t, 15]);
            let want = merged.matmul(&Arr::new(&[15, n], &w));
            let (qt, kt, vt) = (
                tensor(&dev, &qs, &q),
                tensor(&dev, &ks, &k),
                tensor(&dev, &ks, &v),
            );
            let got = fetch(
                "attn_merge_heads",
                attn_merge_heads(&qt, &kt, &vt, &tensor(&dev, &[15, n], &w)),
                &[b, t, n],
            );
            check(
                &format!("heads merged, projected, {b}x{t}x{s}x{n}"),
                &dev,
                &got,
                &want,
                TOL,
            );
            let got = fetch("attn_merged", attn_merged(&qt, &kt, &vt), &[b, t, 15]);
            check(
                &format!("heads merged {b}x{t}x{s}"),
                &dev,
                &got,
                &merged,
                TOL,
            );
        }
    }
    // Attention, then the product reading the merged heads as a view: no copy pass.
    let p = attn_merge_heads::plan();
    assert_eq!(p.dispatches(), 2, "{p}");
    assert!(
        matches!(p.passes[0].kind, PassKind::Attention { .. }),
        "{p}"
    );
    assert!(matches!(p.passes[1].kind, PassKind::MatMul { .. }), "{p}");
    // Attention storing the transpose, then the output's copy (it was three passes).
    let p = attn_merged::plan();
    assert_eq!(p.dispatches(), 2, "{p}");
}
