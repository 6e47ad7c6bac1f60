//! The fusion contract (DESIGN.md), asserted on each kernel's `plan()`: elementwise and
//! broadcast bodies are one elementwise pass with no intermediates; softmax and the norms are
//! one row pass; reductions along two axes take more passes (and stay correct); `fusion =
//! false` splits every op and gives the same results; byte counts, DOT output and CSE.
mod common;

use common::*;
use mia_runtime::prelude::*;
use mia_runtime::PassKind;

#[kernel]
fn chain4(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    ((x + b) * 2.0 - 1.0).tanh()
}
#[kernel(fusion = false)]
fn chain4_unfused(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
    ((x + b) * 2.0 - 1.0).tanh()
}
#[kernel]
fn tuple_same_shape(
    x: Tensor<f32, N, D>,
    y: Tensor<f32, N, D>,
) -> (Tensor<f32, N, D>, Tensor<f32, N, D>, Tensor<bool, N, D>) {
    (x + y, relu(x - y) * 0.5, x > y)
}
#[kernel]
fn outer_plus(
    a: Tensor<f32, N, 1>,
    b: Tensor<f32, 1, D>,
    s: Tensor<f32>,
    alpha: f32,
) -> Tensor<f32, N, D> {
    a * b + s * alpha
}
#[kernel]
fn manual_softmax(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    let e = exp(x - x.max(-1));
    e / e.sum(-1)
}
#[kernel]
fn softmax_axis0(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, 0)
}
#[kernel]
fn two_axes(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    x - x.mean(-1) - x.mean(0)
}
#[kernel]
fn cse_repeated(x: Tensor<f32, N>) -> Tensor<f32, N> {
    exp(x) + exp(x)
}
#[kernel]
fn cse_let(x: Tensor<f32, N>) -> Tensor<f32, N> {
    let e = exp(x);
    e + e
}

/// (name, plan) of every elementwise/broadcast body under test.
fn elementwise_plans() -> Vec<(&'static str, &'static Plan)> {
    vec![
        ("bias_gelu", mia_kernels::bias_gelu::plan()),
        ("swiglu", mia_kernels::swiglu::plan()),
        ("gelu", mia_kernels::gelu::plan()),
        ("gelu_tanh", mia_kernels::gelu_tanh::plan()),
        ("silu", mia_kernels::silu::plan()),
        ("relu", mia_kernels::relu::plan()),
        ("sigmoid", mia_kernels::sigmoid::plan()),
        ("tanh", mia_kernels::tanh::plan()),
        ("chain4", chain4::plan()),
        ("tuple_same_shape", tuple_same_shape::plan()),
        ("outer_plus", outer_plus::plan()),
        ("cse_repeated", cse_repeated::plan()),
    ]
}

#[test]
fn elementwise_bodies_are_one_pass() {
    for (name, p) in elementwise_plans() {
        assert_eq!(p.passes(), 1, "{name}: {p}");
        assert_eq!(p.dispatches(), 1, "{name}: {p}");
        assert!(p.intermediates.is_empty(), "{name}: {p}");
        assert_eq!(p.passes[0].kind, PassKind::Elementwise, "{name}: {p:?}");
        assert_eq!(
            p.passes[0].ops, p.fused_ops,
            "{name}: the pass evaluates every op"
        );
        assert_eq!(p.passes[0].writes.len(), p.outputs.len(), "{name}: {p:?}");
    }
    assert_eq!(mia_kernels::bias_gelu::plan().fused_ops, 2); // add, gelu
    assert_eq!(chain4::plan().fused_ops, 4); // add, mul, sub, tanh
    assert_eq!(tuple_same_shape::plan().outputs.len(), 3);
}

#[test]
fn row_bodies_are_one_row_pass() {
    // (name, plan, axis, reductions)
    let cases: &[(&str, &Plan, usize, usize)] = &[
        ("softmax", mia_kernels::softmax::plan(), 1, 2),
        ("log_softmax", mia_kernels::log_softmax::plan(), 1, 2),
        ("layer_norm", mia_kernels::layer_norm::plan(), 1, 2),
        ("rms_norm", mia_kernels::rms_norm::plan(), 1, 1),
        ("add_layer_norm", mia_kernels::add_layer_norm::plan(), 1, 2),
        ("manual softmax", manual_softmax::plan(), 1, 2),
        ("softmax(x, 0)", softmax_axis0::plan(), 0, 2),
    ];
    for &(name, p, axis, reductions) in cases {
        assert_eq!(p.passes(), 1, "{name}: {p}");
        assert_eq!(p.dispatches(), 1, "{name}: {p}");
        assert!(p.intermediates.is_empty(), "{name}: {p}");
        assert!(
            matches!(p.passes[0].kind, PassKind::Rows { .. }),
            "{name}: {:?}",
            p.passes[0].kind
        );
        assert_eq!(
            p.passes[0].kind,
            PassKind::Rows { axis, reductions },
            "{name}"
        );
    }
}

#[test]
fn two_axis_reductions_take_more_passes_and_stay_correct() {
    let _serial = serial();
    let p = two_axes::plan();
    assert!(p.passes() > 1, "{p}");
    assert!(!p.intermediates.is_empty(), "{p}");
    assert!(p.planned_bytes(&[("N", 4), ("D", 8)]) > p.min_bytes(&[("N", 4), ("D", 8)]));
    let mut rng = rng(21);
    for dev in devices() {
        for shape in [[1, 1], [3, 17], [33, 257], [3, 12_345]] {
            let x = uniform(&mut rng, shape[0] * shape[1], -1.0, 1.0);
            let ax = Arr::new(&shape, &x);
            let got = fetch("two_axes", two_axes(&tensor(&dev, &shape, &x)), &shape);
            check(
                &format!("x - mean(-1) - mean(0) {shape:?}"),
                &dev,
                &got,
                &ax.sub(&ax.mean(-1)).sub(&ax.mean(0)),
                1e-5,
            );
        }
    }
}

#[test]
fn fusion_off_splits_every_op_with_the_same_results() {
    let _serial = serial();
    let (fused, unfused) = (chain4::plan(), chain4_unfused::plan());
    assert_eq!(fused.passes(), 1);
    assert!(unfused.passes() >= 4, "{unfused}");
    assert_eq!(unfused.dispatches(), unfused.passes());
    assert_eq!(unfused.fused_ops, fused.fused_ops);
    assert!(unfused.intermediates.len() >= 3, "{unfused:?}");
    assert_eq!(
        fused.min_bytes(&[("N", 3), ("D", 5)]),
        unfused.min_bytes(&[("N", 3), ("D", 5)])
    );
    let mut rng = rng(22);
    for dev in devices() {
        for [n, d] in [[1, 1], [3, 17], [40, 257], [2, 12_345]] {
            let x = uniform(&mut rng, n * d, -2.0, 2.0);
            let b = uniform(&mut rng, d, -1.0, 1.0);
            let (tx, tb) = (tensor(&dev, &[n, d], &x), tensor(&dev, &[d], &b));
            let a = fetch("fused", chain4(&tx, &tb), &[n, d]);
            let u = fetch("unfused", chain4_unfused(&tx, &tb), &[n, d]);
            let want = Arr::new(&[n, d], &x)
                .add(&Arr::new(&[d], &b))
                .map(|v| (v * 2.0 - 1.0).tanh());
            let tol = if dev.is_gpu() { 1e-5 } else { 1e-6 };
            check("fused chain", &dev, &a, &want, tol);
            check("unfused chain", &dev, &u, &want, tol);
            if dev.is_cpu() {
                assert_eq!(a, u, "CPU: fused and unfused chains round identically");
            }
        }
    }
}

#[test]
fn min_bytes_is_every_input_read_and_output_written_once() {
    let s = [("N", 4), ("D", 8)];
    // bias_gelu: x [4, 8] + b [8] read, out [4, 8] written, 4 bytes each.
    assert_eq!(
        mia_kernels::bias_gelu::plan().min_bytes(&s),
        Some((32 + 8 + 32) * 4)
    );
    // add_layer_norm: x, residual [4, 8]; gamma, beta [8]; out [4, 8]. eps is no tensor.
    assert_eq!(
        mia_kernels::add_layer_norm::plan().min_bytes(&s),
        Some((32 * 3 + 8 * 2) * 4)
    );
    // softmax: one read, one write.
    assert_eq!(mia_kernels::softmax::plan().min_bytes(&s), Some(64 * 4));
    // tuple_same_shape: 2 inputs, 3 outputs (bool is stored as 4 bytes).
    assert_eq!(tuple_same_shape::plan().min_bytes(&s), Some(5 * 32 * 4));
    // outer_plus: a [4, 1], b [1, 8], s [] (1 element), out [4, 8].
    assert_eq!(outer_plus::plan().min_bytes(&s), Some((4 + 8 + 1 + 32) * 4));
    // A missing symbol gives None.
    assert_eq!(mia_kernels::bias_gelu::plan().min_bytes(&[("N", 4)]), None);
    for (name, p) in elementwise_plans() {
        assert_eq!(
            p.planned_bytes(&s),
            p.min_bytes(&s),
            "{name}: fused plans move no extra bytes"
        );
    }
}

#[test]
fn dot_names_every_input_and_output() {
    let mut plans = elementwise_plans();
    plans.extend([
        ("softmax", mia_kernels::softmax::plan()),
        ("add_layer_norm", mia_kernels::add_layer_norm::plan()),
        ("two_axes", two_axes::plan()),
        ("chain4_unfused", chain4_unfused::plan()),
    ]);
    for (name, p) in plans {
        let dot = p.to_dot();
        assert!(dot.starts_with("digraph"), "{name}: {dot}");
        for io in p.inputs.iter().chain(p.outputs).chain(p.intermediates) {
            assert!(
                dot.contains(&format!("\"{}\"", io.name)),
                "{name}: `{}` missing from\n{dot}",
                io.name
            );
        }
        assert_eq!(
            dot.matches("shape=ellipse").count(),
            p.passes(),
            "{name}: {dot}"
        );
    }
    let names: Vec<&str> = mia_kernels::add_layer_norm::plan()
        .inputs
        .iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["x", "residual", "gamma", "beta"]);
}

#[test]
fn cse_merges_repeated_subexpressions() {
    let _serial = serial();
    let (a, b) = (cse_repeated::plan(), cse_let::plan());
    assert_eq!(a.fused_ops, b.fused_ops, "{a} vs {b}");
    assert_eq!(a.fused_ops, 2, "exp once, add once: {a}");
    assert_eq!(a.passes(), 1);
    for dev in devices() {
        let x: Vec<f32> = (0..1000).map(|i| i as f32 / 100.0 - 5.0).collect();
        let t = tensor(&dev, &[1000], &x);
        let (ga, gb) = (
            fetch("cse a", cse_repeated(&t), &[1000]),
            fetch("cse b", cse_let(&t), &[1000]),
        );
        assert_eq!(ga, gb, "{dev:?}");
        let tol = if dev.is_gpu() { 1e-5 } else { 1e-6 };
        check(
            "2·exp(x)",
            &dev,
            &ga,
            &Arr::new(&[1000], &x).map(|v| 2.0 * v.exp()),
            tol,
        );
    }
}

#[kernel(fusion = false)]
fn softmax_unfused(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
    softmax(x, -1)
}
#[kernel(fusion = false)]
fn layer_norm_unfused(
    x: Tensor<f32, N, D>,
    g: Tensor<f32, D>,
    b: Tensor<f32, D>,
) -> Tensor<f32, N, D> {
    layer_norm(x, g, b, 1e-5)
}
#[kernel(fusion = false)]
fn transposes_unfused(
    x: Tensor<f32, N, D>,
) -> (Tensor<f32, N, D>, Tensor<f32, D, N>, Tensor<f32, N, D>) {
    let y = x.sum(-1) + x;
    (y, transpose(y, 0, 1), transpose(transpose(y, 0, 1), 0, 1))
}

#[test]
fn fusion_off_rows() {
    let _serial = serial();
    assert!(
        softmax_unfused::plan().passes() >= 5,
        "{}",
        softmax_unfused::plan()
    );
    assert!(
        layer_norm_unfused::plan().passes() >= 8,
        "{}",
        layer_norm_unfused::plan()
    );
    let mut rng = rng(23);
    for dev in devices() {
        let tol = if dev.is_gpu() { 2e-5 } else { 1e-5 };
        for [n, d] in [[1, 1], [3, 17], [40, 257], [2, 12_345]] {
            let x = uniform(&mut rng, n * d, -3.0, 3.0);
            let g = uniform(&mut rng, d, 0.5, 1.5);
            let b = uniform(&mut rng, d, -1.0, 1.0);
            let ax = Arr::new(&[n, d], &x);
            let tx = tensor(&dev, &[n, d], &x);
            let got = fetch("softmax unfused", softmax_unfused(&tx), &[n, d]);
            check("unfused softmax", &dev, &got, &ax.softmax(-1), tol);
            let got = fetch(
                "ln unfused",
                layer_norm_unfused(&tx, &tensor(&dev, &[d], &g), &tensor(&dev, &[d], &b)),
                &[n, d],
            );
            let want = ax.layer_norm(&Arr::new(&[d], &g), &Arr::new(&[d], &b), 1e-5);
            check("unfused layer_norm", &dev, &got, &want, tol);
        }
    }
}

#[test]
fn fusion_off_layouts() {
    let _serial = serial();
    let mut rng = rng(26);
    for dev in devices() {
        for [n, d] in [[2, 3], [40, 257]] {
            let x = uniform(&mut rng, n * d, -3.0, 3.0);
            let ax = Arr::new(&[n, d], &x);
            let y = ax.sum(-1).add(&ax);
            let (a, t, tt) = transposes_unfused(&tensor(&dev, &[n, d], &x)).unwrap();
            check("y", &dev, &a.to_vec().unwrap(), &y, 1e-5);
            check(
                "transpose(y)",
                &dev,
                &t.to_vec().unwrap(),
                &y.transpose(0, 1),
                1e-5,
            );
            check(
                "transpose(transpose(y))",
                &dev,
                &tt.to_vec().unwrap(),
                &y,
                1e-5,
            );
        }
    }
}
