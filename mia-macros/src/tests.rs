//! Unit tests of the pipeline stages on `proc_macro2` tokens.

use crate::emit_wgsl::Form;
use crate::fuse::Domain;
use crate::{ast, check, emit_wgsl, expand, fuse, lower, validate};
use proc_macro2::TokenStream;
use quote::quote;

fn item(ts: TokenStream) -> syn::ItemFn {
    syn::parse2(ts).expect("test kernel parses as a function")
}

fn errors(ts: TokenStream) -> Vec<String> {
    let f = item(ts);
    match ast::parse(&f).and_then(|k| check::check(&k).map(|_| ())) {
        Ok(()) => vec![],
        Err(errs) => errs.iter().map(|e| e.to_string()).collect(),
    }
}

fn passes(ts: TokenStream) -> (fuse::Fused, Vec<lower::PassIr>) {
    let k = ast::parse(&item(ts)).expect("parses");
    let g = check::check(&k).expect("checks");
    let f = fuse::fuse(&g);
    let ir = lower::lower(&g, &f);
    (f, ir)
}

#[test]
fn parse_reads_signature_and_body() {
    let k = ast::parse(&item(quote! {
        pub fn k(x: Tensor<f32, N, {D / 2}>, a: f32) -> (Tensor<f32, N, {D / 2}>, Tensor<bool, N, 1>) {
            let y = x * a;
            (y, y.sum(-1) > 0.0)
        }
    }))
    .expect("parses");
    assert_eq!(k.params.len(), 2);
    assert_eq!(k.outputs.len(), 2);
    assert!(k.tuple_return);
    assert_eq!(k.lets.len(), 1);
    let ast::ParamTy::Tensor { dims, .. } = &k.params[0].ty else {
        panic!("tensor param")
    };
    assert_eq!(dims[1].to_string(), "D / 2");
}

#[test]
fn parse_collects_every_syntax_error() {
    let f = item(quote! {
        fn k(x: &Tensor<f32, N>, y: Tensor<f64, N>) {
            for i in 0..3 {}
            x
        }
    });
    let errs = ast::parse(&f).expect_err("three problems");
    assert_eq!(
        errs.len(),
        4,
        "{:?}",
        errs.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    );
}

#[test]
fn check_reports_shapes_and_dtypes_with_both_sides() {
    let e = errors(
        quote! { fn k(x: Tensor<f32, N, D>, y: Tensor<f32, M>) -> Tensor<f32, N, D> { x + y } },
    );
    assert_eq!(e.len(), 1);
    assert!(e[0].contains("[N, D]") && e[0].contains("[M]"), "{}", e[0]);
    let e =
        errors(quote! { fn k(x: Tensor<f32, N>, y: Tensor<i32, N>) -> Tensor<f32, N> { x + y } });
    assert!(e[0].contains("f32") && e[0].contains("i32"), "{}", e[0]);
    let e = errors(quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { x.sum(2) } });
    assert!(e[0].contains("axis 2 is out of range"), "{}", e[0]);
    let e = errors(quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { x.sum(-1) } });
    assert!(
        e[0].contains("[N, 1]") && e[0].contains("[N, D]"),
        "{}",
        e[0]
    );
}

#[test]
fn check_reports_independent_errors_together() {
    let e = errors(quote! {
        fn k(x: Tensor<f32, N>) -> Tensor<f32, N> {
            let a = frobnicate(x);
            let b = exp(x, x);
            let c = x.max(5);
            x
        }
    });
    assert_eq!(e.len(), 3, "{e:?}");
}

#[test]
fn literals_take_their_context_dtype() {
    assert!(errors(quote! { fn k(x: Tensor<i32, N>) -> Tensor<i32, N> { x * 2 + 1 } }).is_empty());
    assert!(!errors(quote! { fn k(x: Tensor<i32, N>) -> Tensor<i32, N> { x * 2.5 } }).is_empty());
    assert!(errors(quote! { fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { x * 2 } }).is_empty());
}

#[test]
fn graph_dedups_common_subexpressions() {
    let k = |ts| {
        let k = ast::parse(&item(ts)).expect("parses");
        check::check(&k).expect("checks").op_count()
    };
    let a = k(quote! { fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { exp(x) + exp(x) } });
    let b = k(quote! { fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { let e = exp(x); e + e } });
    assert_eq!(a, 2);
    assert_eq!(a, b);
    // Dead code is not counted.
    let c = k(
        quote! { fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { let dead = sin(x) * 4.0; exp(x) + exp(x) } },
    );
    assert_eq!(c, 2);
}

#[test]
fn elementwise_bodies_fuse_into_one_flat_pass() {
    let (f, ir) = passes(quote! {
        fn k(x: Tensor<f32, N, D>, y: Tensor<f32, N, D>) -> (Tensor<f32, N, D>, Tensor<f32, N, D>) {
            let s = x + y;
            (gelu(s), s * 2.0)
        }
    });
    assert_eq!(f.passes.len(), 1);
    assert_eq!(ir[0].dims.len(), 1, "dense [N, D] collapses to one axis");
    assert!(emit_wgsl::vec4_eligible(&ir[0]));
    let (_, ir) = passes(
        quote! { fn k(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> { x + b } },
    );
    assert_eq!(ir[0].dims.len(), 2, "a broadcast row keeps two axes");
    assert!(emit_wgsl::vec4_eligible(&ir[0]));
}

#[test]
fn row_reductions_fuse_into_one_row_pass() {
    for body in [
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { softmax(x, -1) } },
        quote! { fn k(x: Tensor<f32, N, D>, g: Tensor<f32, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> { layer_norm(x, g, b, 1e-5) } },
        quote! { fn k(x: Tensor<f32, N, D>, g: Tensor<f32, D>) -> Tensor<f32, N, D> { rms_norm(x, g, 1e-6) } },
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, N, 1> { x.mean(-1) } },
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> { softmax(x, 0).sum(0) } },
    ] {
        let (f, ir) = passes(body);
        assert_eq!(f.passes.len(), 1);
        assert!(matches!(f.passes[0].domain, Domain::Rows(..)));
        assert!(ir[0].is_rows());
    }
}

#[test]
fn reductions_along_different_axes_materialize() {
    let (f, _) = passes(
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { x - x.sum(0) - x.sum(1) } },
    );
    assert_eq!(f.passes.len(), 2);
    assert_eq!(
        f.buffers
            .iter()
            .filter(|b| b.kind == fuse::BufKind::Temp)
            .count(),
        1
    );
}

#[test]
fn layout_ops_are_views_of_inputs() {
    let (f, ir) = passes(
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> { transpose(x, 0, 1) + 1.0 } },
    );
    assert_eq!(f.passes.len(), 1);
    assert!(
        !emit_wgsl::vec4_eligible(&ir[0]),
        "a transposed read is strided"
    );
    // A transpose of a computed value is materialized first.
    let (f, _) = passes(
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> { transpose(exp(x), 0, 1) } },
    );
    assert_eq!(f.passes.len(), 2);
    let (f, _) = passes(
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> { reshape(x, [D, N]) * 2.0 } },
    );
    assert_eq!(f.passes.len(), 1);
}

#[test]
fn every_emitted_shader_validates() {
    for body in [
        quote! { fn k(x: Tensor<f32, N, D>, b: Tensor<f32, D>, a: f32) -> Tensor<f32, N, D> { gelu_tanh(x + b) * a + tanh(x) } },
        quote! { fn k(x: Tensor<f32, N, D>) -> (Tensor<bool, N, D>, Tensor<i32, N, D>) { (x > 0.0, cast::<i32>(x)) } },
        quote! { fn k(x: Tensor<i32, N, D>) -> Tensor<i32, N, 1> { x.max(-1) } },
        quote! { fn k(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { select(x > 0.0, silu(x), sigmoid(x)) } },
    ] {
        let k = ast::parse(&item(body)).expect("parses");
        let g = check::check(&k).expect("checks");
        let f = fuse::fuse(&g);
        let buf_types: Vec<_> = f.buffers.iter().map(|b| g.node(b.node).dtype).collect();
        for (p, ir) in lower::lower(&g, &f).iter().enumerate() {
            for form in [
                Form::Scalar,
                Form::Vec4,
                Form::Subgroups,
                Form::SubgroupRows,
            ] {
                let sg = matches!(form, Form::Subgroups | Form::SubgroupRows);
                if (form == Form::Vec4 && !emit_wgsl::vec4_eligible(ir))
                    || (sg && !emit_wgsl::subgroup_eligible(ir))
                {
                    continue;
                }
                let src = emit_wgsl::pass_shader("k", p, ir, &buf_types, &[], form);
                validate::wgsl(&src).unwrap_or_else(|e| panic!("{e}\n{src}"));
            }
        }
    }
}

/// Every tiling, with one product and two sharing A, a batch axis and an epilogue, gives a
/// valid shader whose workgroup memory is what `Tile::workgroup_bytes` says.
#[test]
fn every_matmul_tiling_validates() {
    for body in [
        quote! { fn k(x: Tensor<f32, B, M, K>, w: Tensor<f32, K, N>, b: Tensor<f32, N>) -> Tensor<f32, B, M, N> { gelu(matmul(x, w) + b) } },
        quote! { fn k(x: Tensor<f32, M, K>, w1: Tensor<f32, K, N>, w3: Tensor<f32, K, N>) -> Tensor<f32, M, N> { silu(matmul(x, w1)) * matmul(x, w3) } },
        // The epilogue reads A's buffer, bound as vec4s by the `v4` tilings.
        quote! { fn k(x: Tensor<f32, M, K>, w: Tensor<f32, K, K>) -> Tensor<f32, M, K> { matmul(x, w) + x } },
        // A prologue: `v4` tilings keep scalar loads.
        quote! { fn k(x: Tensor<f32, M, K>, w: Tensor<f32, K, N>) -> Tensor<f32, M, N> { matmul(relu(x), w) } },
    ] {
        let k = ast::parse(&item(body)).expect("parses");
        let g = check::check(&k).expect("checks");
        let f = fuse::fuse(&g);
        let buf_types: Vec<_> = f.buffers.iter().map(|b| g.node(b.node).dtype).collect();
        let passes = lower::lower(&g, &f);
        let (p, ir) = passes
            .iter()
            .enumerate()
            .find(|(_, ir)| ir.mm.is_some())
            .expect("a matmul pass");
        let nb = ir.mm.as_ref().map_or(0, |m| m.bs.len());
        assert!(emit_wgsl::TILES[0].workgroup_bytes(nb) <= 16384);
        for t in emit_wgsl::TILES {
            let src = emit_wgsl::pass_shader("k", p, ir, &buf_types, &[], Form::Tile(t));
            validate::wgsl(&src).unwrap_or_else(|e| panic!("{}: {e}\n{src}", t.name()));
            // The staged array is as long as `workgroup_bytes` says (tensor cores: the
            // fragments and the overflow flag after the f16 halves).
            let len = if t.coop {
                256 * nb as u32 * t.threads() / 32 + 4
            } else {
                t.workgroup_bytes(nb) / 4 / t.width()
            };
            assert!(src.contains(&format!(", {len}>;")), "{}", t.name());
            let v4 = t.v4 && emit_wgsl::v4_allowed(ir);
            assert_eq!(src.contains("array<vec4<f32>>"), v4, "{}\n{src}", t.name());
            if std::env::var_os("MIA_DUMP_TILE").is_some() && v4 {
                eprintln!("{src}");
            }
        }
    }
}

#[test]
fn expansion_defines_function_and_plan_module() {
    let out = expand::kernel(
        quote!(),
        quote! {
            pub fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { x * 2.0 }
        },
    )
    .to_string();
    assert!(out.contains("pub fn k"));
    assert!(out.contains("pub mod k"));
    assert!(out.contains("fn plan"));
    assert!(!out.contains("compile_error"));
    let bad = expand::kernel(
        quote!(),
        quote! {
            pub fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { x + nope }
        },
    )
    .to_string();
    assert!(bad.contains("compile_error"));
    assert!(
        bad.contains("pub fn k"),
        "a stand-in keeps callers compiling"
    );
    let opt = expand::kernel(
        quote!(fusion = maybe),
        quote! {
            pub fn k(x: Tensor<f32, N>) -> Tensor<f32, N> { x }
        },
    )
    .to_string();
    assert!(opt.contains("compile_error"));
}

#[test]
fn reshape_of_a_rank0_input_validates() {
    let out = expand::kernel(
        quote!(),
        quote! {
            fn f(x: Tensor<f32>) -> Tensor<f32, 1, 1> { reshape(x, [1, 1]) }
        },
    )
    .to_string();
    assert!(!out.contains("compile_error"), "{out}");
}

#[test]
fn attention_is_one_flash_pass() {
    let (f, ir) = passes(quote! {
        fn k(q: Tensor<f32, B, H, T, E>, k: Tensor<f32, B, H, S, E>, v: Tensor<f32, B, H, S, E>, m: Tensor<f32, B, 1, 1, S>, s: f32) -> Tensor<f32, B, H, T, E> {
            matmul(softmax(matmul(q, transpose(k, -1, -2)) * s + m, -1), v)
        }
    });
    assert_eq!(f.passes.len(), 1, "{:?}", f.passes);
    let a = ir[0].attn.as_ref().expect("an attention pass");
    assert!(a.mask);
    assert_eq!(a.scale.len(), 1);
}

#[test]
fn attention_with_views_and_constant_scale() {
    // Heads split from [B, T, D] projections by reshape + transpose views.
    let (f, ir) = passes(quote! {
        fn k(x: Tensor<f32, B, T, 64>, w: Tensor<f32, 64, 64>, m: Tensor<f32, B, 1, 1, T>) -> Tensor<f32, B, T, 64> {
            let q = transpose(reshape(matmul(x, w), [B, T, 4, 16]), 1, 2);
            let ctx = matmul(softmax(matmul(q, transpose(q, -1, -2)) * 0.25 + m, -1), q);
            reshape(transpose(ctx, 1, 2), [B, T, 64])
        }
    });
    let kinds: Vec<String> = f
        .passes
        .iter()
        .map(|p| format!("{:?}", std::mem::discriminant(&p.domain)))
        .collect();
    assert!(
        ir.iter().any(|p| p.attn.is_some()),
        "{:?} {kinds:?}",
        f.passes
    );
}

#[test]
fn causal_attention_forms() {
    // (body, fused into one causal attention pass)
    let cases = [
        // Around the whole scores, with a parameter scale and a mask.
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2)) * s + m), -1), v) },
            true,
        ),
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2)) / s), -1), v) },
            true,
        ),
        // On the product under positive constant factors, no mask.
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2))) * 0.125, -1), v) },
            true,
        ),
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2)) * s) / sqrt(64.0), -1), v) },
            true,
        ),
        // Not provably the same: a scale of unknown sign, a negative one, a mask after it.
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2))) * s, -1), v) },
            false,
        ),
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2))) * -0.5, -1), v) },
            false,
        ),
        (
            quote! { matmul(softmax(causal(matmul(q, transpose(k, -1, -2))) + m, -1), v) },
            false,
        ),
        (
            quote! { matmul(softmax(causal(causal(matmul(q, transpose(k, -1, -2)))), -1), v) },
            false,
        ),
    ];
    for (body, fused) in cases {
        let text = body.to_string();
        let (f, ir) = passes(quote! {
            fn k(q: Tensor<f32, B, H, T, E>, k: Tensor<f32, B, H, S, E>, v: Tensor<f32, B, H, S, E>, m: Tensor<f32, B, 1, 1, S>, s: f32) -> Tensor<f32, B, H, T, E> {
                #body
            }
        });
        let attn = ir.iter().find_map(|p| p.attn.as_ref());
        if fused {
            assert_eq!(f.passes.len(), 1, "{text}: {:?}", f.passes);
            assert!(attn.is_some_and(|a| a.causal), "{text}");
        } else {
            assert!(attn.is_none_or(|a| !a.causal), "{text}");
            assert!(
                ir.iter().any(|p| p.causal.is_some()),
                "{text}: {:?}",
                f.passes
            );
        }
    }
}

#[test]
fn causal_outside_attention_is_a_pass() {
    let (f, ir) = passes(quote! {
        fn k(x: Tensor<f32, B, T, S>, y: Tensor<f32, B, T, S>) -> Tensor<f32, B, T, S> {
            softmax(causal(x + y), -1) * 2.0
        }
    });
    assert_eq!(f.passes.len(), 3, "{:?}", f.passes);
    assert!(matches!(f.passes[1].domain, Domain::Causal(_)));
    assert!(ir[1].causal.is_some() && ir[1].is_library());
    let e = errors(quote! { fn k(x: Tensor<f32, S>) -> Tensor<f32, S> { causal(x) } });
    assert!(e[0].contains("rank 2 or more"), "{e:?}");
    let e = errors(quote! { fn k(x: Tensor<i32, T, S>) -> Tensor<i32, T, S> { causal(x) } });
    assert!(e[0].contains("needs f32"), "{e:?}");
    let e = errors(quote! { fn k(x: Tensor<f32, T, S>) -> Tensor<f32, T, S> { causal(x, 1) } });
    assert!(e[0].contains("wrong number of arguments"), "{e:?}");
}

fn graph_errors(ts: TokenStream) -> Vec<String> {
    let out = crate::model::graph(ts).to_string();
    out.match_indices("compile_error")
        .map(|(i, _)| out[i..].chars().take(300).collect())
        .collect()
}

#[test]
fn graph_flattens_sub_models_and_layers() {
    let errs = graph_errors(quote! {
        pub struct Mlp {
            up: Tensor<f32, 8, 4> = "up.weight",
            blocks: [Block; 3] = "blocks.{i}",
            head: Block = "head",
        }
        struct Block { w: Tensor<f32, 8, 8> = "w", b: Tensor<f32, 8> = "b" }
        impl Block {
            fn forward(&self, x: Tensor<f32, N, 8>) -> Tensor<f32, N, 8> {
                let y = matmul(x, transpose(self.w, 0, 1)) + self.b;
                x + gelu(y)
            }
        }
        impl Mlp {
            pub fn forward(&self, x: Tensor<f32, N, 4>) -> Tensor<f32, N, 8> {
                let mut h = matmul(x, transpose(self.up, 0, 1));
                for b in self.blocks {
                    h = b.forward(h);
                }
                self.head.forward(h)
            }
        }
    });
    assert!(errs.is_empty(), "{errs:?}");
}

#[test]
fn graph_reports_a_call_with_the_wrong_shape() {
    let errs = graph_errors(quote! {
        pub struct M { w: Tensor<f32, 4, 4> = "w", inner: Inner = "inner" }
        struct Inner { v: Tensor<f32, 8> = "v" }
        impl Inner {
            fn forward(&self, x: Tensor<f32, N, 8>) -> Tensor<f32, N, 8> { x + self.v }
        }
        impl M {
            pub fn forward(&self, x: Tensor<f32, N, 4>) -> Tensor<f32, N, 8> {
                self.inner.forward(matmul(x, self.w))
            }
        }
    });
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("shape mismatch"), "{errs:?}");
}

#[test]
fn graph_reports_unknown_fields_and_bad_loops() {
    let errs = graph_errors(quote! {
        pub struct M { w: Tensor<f32, 4, 4> = "w" }
        impl M {
            pub fn forward(&self, x: Tensor<f32, N, 4>) -> Tensor<f32, N, 4> {
                let mut h = x;
                for l in self.w { h = h + 1.0; }
                matmul(h, self.missing)
            }
        }
    });
    assert_eq!(errs.len(), 2, "{errs:?}");
}
