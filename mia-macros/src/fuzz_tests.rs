//! Robustness fuzzing of `#[kernel]`: thousands of malformed and mutated token streams are fed
//! to the un-guarded entry point [`crate::expand::kernel`]; none may panic ("never an internal
//! panic, for any input tokens", DESIGN.md), and whenever the input is something rustc could
//! hand to an attribute macro (it parses as Rust items), the output must parse as Rust items
//! too, so a compile error never brings syntax errors along.
//!
//! Deterministic: a fixed-seed xorshift PRNG, no extra dependencies.

use crate::expand;
use proc_macro2::{Delimiter, Group, Ident, Punct, Spacing, Span, TokenStream, TokenTree};
use quote::quote;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Mutants generated per seed kernel.
const MUTANTS_PER_SEED: usize = 250;
/// Mutants per seed kernel that still parse as Rust items, and the tries to find them.
const VALID_MUTANTS_PER_SEED: usize = 250;
const VALID_MUTANT_TRIES: usize = 4000;
/// Random `attr` streams, each paired with a random seed kernel.
const ATTR_CASES: usize = 300;

/// xorshift64*: small, fast and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len())].clone()
    }
}

/// Valid kernels covering the DSL; every one must compile cleanly before it is mutated.
fn seeds() -> Vec<(TokenStream, TokenStream)> {
    vec![
        (
            quote!(),
            quote! {
                pub fn bias_gelu(x: Tensor<f32, N, D>, b: Tensor<f32, D>) -> Tensor<f32, N, D> {
                    gelu(x + b)
                }
            },
        ),
        (
            quote!(),
            quote! {
                pub fn softmax_rows(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
                    let e = exp(x - x.max(-1));
                    e / e.sum(-1)
                }
            },
        ),
        (
            quote!(),
            quote! {
                pub fn scaled(x: Tensor<f32, N>, alpha: f32) -> (Tensor<f32, N>, Tensor<f32, N>) {
                    (x * alpha, relu(x) + 1.0)
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn log_softmax(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> {
                    let s = x - x.max(-1);
                    s - ln(exp(s).sum(-1))
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn ln_res(x: Tensor<f32, N, D>, r: Tensor<f32, N, D>, g: Tensor<f32, D>, b: Tensor<f32, D>, eps: f32)
                    -> Tensor<f32, N, D>
                {
                    layer_norm(x + r, g, b, eps)
                }
            },
        ),
        (
            quote!(fusion = false),
            quote! {
                fn rms(x: Tensor<f32, N, D>, g: Tensor<f32, D>) -> Tensor<f32, N, D> {
                    rms_norm(x, g, 1e-5) * softmax(x, 1)
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn tr(x: Tensor<f32, N, D>) -> Tensor<f32, D, N> {
                    transpose(x, 0, -1) * 2.0
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn heads(x: Tensor<f32, T, D>, h: Tensor<f32, H>) -> Tensor<f32, H, T, {D / H}> {
                    let y = reshape(x, [T, H, {D / H}]);
                    transpose(y, 0, 1)
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn clamp_pos(x: Tensor<f32, N>, lo: f32) -> Tensor<f32, N> {
                    let keep = x >= lo;
                    select(keep, x, 0.0) + select(x != 0.0, 1.0, -1.0)
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn to_float(x: Tensor<i32, N, 4>) -> (Tensor<f32, N, 4>, Tensor<i32, N, 1>) {
                    (cast::<f32>(x) * 0.5, x.sum(-1))
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn iops(a: Tensor<i32, N>, b: Tensor<i32, N>, k: i32) -> Tensor<i32, N> {
                    maximum(a + b * 2, minimum(a, k)) - abs(-b)
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn scale0(s: Tensor<f32>, y: Tensor<f32, N>) -> (Tensor<f32, N>, Tensor<f32>) {
                    (y * s, s.exp())
                }
            },
        ),
        (
            quote!(),
            quote! {
                /// Method forms.
                pub(crate) fn methods(x: Tensor<f32, B, N, D>) -> Tensor<f32, B, N, 1> {
                    let y = x.abs().sqrt().tanh().sigmoid() + x.silu().gelu_tanh();
                    pow(y, 2.0).mean(-1) + x.min(2) - x.sin().cos().rsqrt().neg().max(-1)
                }
            },
        ),
        (
            quote!(),
            quote! {
                fn col_sum(x: Tensor<f32, N, D>) -> Tensor<f32, 1, D> {
                    x.sum(0)
                }
            },
        ),
        (
            quote!(fusion = true),
            quote! {
                fn flags(x: Tensor<u32, N>, y: Tensor<bool, N>) -> (Tensor<bool, N>, Tensor<u32, N>, Tensor<u32, 1, N>) {
                    let big = x > 3;
                    (big == y, x + 1, reshape(cast::<u32>(select(y, x, x * 2)), [1, N]) * 1)
                }
            },
        ),
    ]
}

/// A token tree we can edit in place.
#[derive(Clone)]
enum Tok {
    Leaf(TokenTree),
    Group(Delimiter, Vec<Tok>),
}

fn to_toks(ts: TokenStream) -> Vec<Tok> {
    ts.into_iter()
        .map(|t| match t {
            TokenTree::Group(g) => Tok::Group(g.delimiter(), to_toks(g.stream())),
            other => Tok::Leaf(other),
        })
        .collect()
}

fn to_stream(toks: &[Tok]) -> TokenStream {
    toks.iter()
        .map(|t| match t {
            Tok::Leaf(l) => l.clone(),
            Tok::Group(d, inner) => TokenTree::Group(Group::new(*d, to_stream(inner))),
        })
        .collect()
}

/// Every position in the tree, as the path of indices that leads to it.
fn positions(toks: &[Tok], prefix: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
    for (i, t) in toks.iter().enumerate() {
        prefix.push(i);
        out.push(prefix.clone());
        if let Tok::Group(_, inner) = t {
            positions(inner, prefix, out);
        }
        prefix.pop();
    }
}

/// The sequence holding the last index of `path`.
fn parent<'a>(toks: &'a mut Vec<Tok>, path: &[usize]) -> &'a mut Vec<Tok> {
    match path {
        [] | [_] => toks,
        [first, rest @ ..] => match &mut toks[*first] {
            Tok::Group(_, inner) => parent(inner, rest),
            Tok::Leaf(_) => unreachable!("positions only descend into groups"),
        },
    }
}

const IDENTS: &[&str] = &[
    "exp",
    "sum",
    "N",
    "D",
    "f32",
    "i32",
    "bool",
    "Tensor",
    "softmax",
    "reshape",
    "transpose",
    "select",
    "cast",
    "matmul",
    "causal",
    "x",
    "self",
    "mean",
    "u32",
    "f64",
    "fn",
    "let",
    "pub",
    "M",
    "n",
    "layer_norm",
    "max",
    "crate",
];
const LITERALS: &[&str] = &[
    "-1",
    "0",
    "99",
    "1e39",
    "-0.0",
    "\"str\"",
    "1.0f32",
    "4294967296",
    "-9223372036854775808",
    "'c'",
    "true",
    "1e-50",
    "0x10",
    "b\"x\"",
];
const PUNCTS: &[&str] = &[
    "-", "+", "*", "/", "%", ",", ";", ":", "::", "<", ">", "=", "==", "!", "&", "#", ".", "..",
    "->", "?", "'a", "$",
];

fn parse_ts(s: &str) -> TokenStream {
    s.parse()
        .unwrap_or_else(|e| panic!("bad fuzz token `{s}`: {e}"))
}

fn random_leaf(rng: &mut Rng) -> Vec<Tok> {
    let src = match rng.below(3) {
        0 => rng.pick(IDENTS),
        1 => rng.pick(LITERALS),
        _ => rng.pick(PUNCTS),
    };
    to_toks(parse_ts(src))
}

fn random_delim(rng: &mut Rng) -> Delimiter {
    rng.pick(&[
        Delimiter::Parenthesis,
        Delimiter::Bracket,
        Delimiter::Brace,
        Delimiter::None,
    ])
}

/// Applies one random mutation at a random position.
fn mutate(toks: &mut Vec<Tok>, rng: &mut Rng) {
    let mut all = Vec::new();
    positions(toks, &mut Vec::new(), &mut all);
    if all.is_empty() {
        toks.extend(random_leaf(rng));
        return;
    }
    let path = rng.pick(&all);
    let i = *path.last().unwrap_or(&0);
    let seq = parent(toks, &path);
    match rng.below(10) {
        // Delete a token (a whole group when it is one).
        0 => {
            seq.remove(i);
        }
        // Duplicate a token.
        1 => {
            let t = seq[i].clone();
            seq.insert(i, t);
        }
        // Swap adjacent tokens.
        2 => {
            if i + 1 < seq.len() {
                seq.swap(i, i + 1);
            } else if i > 0 {
                seq.swap(i - 1, i);
            }
        }
        // Replace an identifier (any token, half the time) with one from the pool.
        3 | 4 => {
            if matches!(seq[i], Tok::Leaf(TokenTree::Ident(_))) || rng.below(2) == 0 {
                let name = rng.pick(IDENTS);
                seq[i] = Tok::Leaf(TokenTree::Ident(Ident::new(name, Span::call_site())));
            }
        }
        // Replace a literal (any token, half the time) with one from the pool.
        5 => {
            if matches!(seq[i], Tok::Leaf(TokenTree::Literal(_))) || rng.below(2) == 0 {
                let lit = to_toks(parse_ts(rng.pick(LITERALS)));
                seq.splice(i..=i, lit);
            }
        }
        // Truncate the sequence (the whole stream or a group's contents).
        6 => seq.truncate(i),
        // Wrap a run of tokens in an extra group.
        7 => {
            let end = (i + 1 + rng.below(3)).min(seq.len());
            let inner: Vec<Tok> = seq.drain(i..end).collect();
            seq.insert(i, Tok::Group(random_delim(rng), inner));
        }
        // Insert a random token.
        8 => {
            let new = random_leaf(rng);
            seq.splice(i..i, new);
        }
        // Change a group's delimiter.
        _ => {
            if let Tok::Group(d, _) = &mut seq[i] {
                *d = random_delim(rng);
            } else {
                seq.insert(
                    i,
                    Tok::Leaf(TokenTree::Punct(Punct::new('-', Spacing::Alone))),
                );
            }
        }
    }
}

/// Mutations that often keep the item valid Rust: swap an identifier or a literal for one
/// from the pools, change an operator, or apply a general mutation now and then.
fn mutate_keeping_syntax(toks: &mut Vec<Tok>, rng: &mut Rng) {
    let mut all = Vec::new();
    positions(toks, &mut Vec::new(), &mut all);
    let leaves: Vec<Vec<usize>> = all
        .into_iter()
        .filter(|p| {
            let i = *p.last().unwrap_or(&0);
            matches!(parent(toks, p)[i], Tok::Leaf(_))
        })
        .collect();
    if leaves.is_empty() || rng.below(5) == 0 {
        mutate(toks, rng);
        return;
    }
    let path = rng.pick(&leaves);
    let i = *path.last().unwrap_or(&0);
    let seq = parent(toks, &path);
    let new = match &seq[i] {
        Tok::Leaf(TokenTree::Ident(_)) => {
            vec![Tok::Leaf(TokenTree::Ident(Ident::new(
                rng.pick(IDENTS),
                Span::call_site(),
            )))]
        }
        Tok::Leaf(TokenTree::Literal(_)) => to_toks(parse_ts(rng.pick(LITERALS))),
        Tok::Leaf(TokenTree::Punct(p)) if "+-*/<>".contains(p.as_char()) => {
            let c = rng.pick(&['+', '-', '*', '/', '<', '>', '%']);
            vec![Tok::Leaf(TokenTree::Punct(Punct::new(c, p.spacing())))]
        }
        _ => return mutate(toks, rng),
    };
    seq.splice(i..=i, new);
}

fn random_attr(rng: &mut Rng) -> TokenStream {
    const FIXED: &[&str] = &[
        "",
        "fusion = false",
        "fusion = true",
        "fusion",
        "fusion = 1",
        "fusion = \"false\"",
        "foo",
        "foo = bar",
        "fusion = false, fusion = true",
        "fusion = false,",
        "fusion(false)",
        "= =",
        ",",
        "fusion::x = false",
        "fusion = false foo",
        "fusion = -1",
        "fusion = false, = ,",
        "{ fusion = false }",
    ];
    if rng.below(2) == 0 {
        return parse_ts(rng.pick(FIXED));
    }
    let mut toks = to_toks(parse_ts(rng.pick(FIXED)));
    for _ in 0..1 + rng.below(4) {
        mutate(&mut toks, rng);
    }
    to_stream(&toks)
}

/// Corner cases that random mutation is unlikely to hit.
const EDGE_CASES: &[&str] = &[
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x + -(-9223372036854775807 - 1) }",
    "fn f(x: Tensor<i32, N>) -> Tensor<i32, N> { x * (9223372036854775807 + 1) }",
    "fn f(x: Tensor<i32, N>) -> Tensor<i32, N> { x * (3037000500 * 3037000500) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x * 1e400 - 1e39 * 1e39 }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x * (0.0 / 0.0) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x + (1 / 0) }",
    "fn f(x: Tensor<i32, N>) -> Tensor<i32, N> { x / 0 + x / (0 - 0) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x.sum(-9223372036854775807) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x.sum(9223372036854775807) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x.sum(-(-1)) }",
    "fn f(x: Tensor<f32>) -> Tensor<f32> { x.sum(0) + softmax(x, -1) + transpose(x, 0, 0) }",
    "fn f(x: Tensor<f32>) -> Tensor<f32> { layer_norm(x, x, x, 1e-5) + rms_norm(x, x, 0.1) }",
    "fn f(x: Tensor<f32>) -> Tensor<f32> { reshape(x, []) }",
    "fn f(x: Tensor<f32>) -> Tensor<f32, 1, 1> { reshape(x, [1, 1]) }",
    "fn f(x: Tensor<f32, 0>) -> Tensor<f32, 0> { x.sum(0) * 2.0 }",
    "fn f(x: Tensor<f32, 0, N>) -> Tensor<f32, 0, 1> { softmax(x, 1).max(1) }",
    "fn f(x: Tensor<f32, N, {N / 0}>) -> Tensor<f32, N, {N / 0}> { x + 1.0 }",
    "fn f(x: Tensor<f32, N, {0 / 0}>) -> Tensor<f32, N, 1> { x.sum(1) }",
    "fn f(x: Tensor<f32, N, {N % 0}>) -> Tensor<f32, N, {N % 0}> { reshape(x, [N, {N % 0}]) }",
    "fn f(x: Tensor<f32, 18446744073709551615, 18446744073709551615>) -> Tensor<f32, 1, 18446744073709551615> { x.sum(0) }",
    "fn f(x: Tensor<f32, 99999999999999999999999>) -> Tensor<f32, 1> { x.sum(0) }",
    "fn f(x: Tensor<f32, {18446744073709551615 * 18446744073709551615}>) -> Tensor<f32, 1> { x.sum(0) }",
    "fn f(x: Tensor<f32, {N - N}>, n: Tensor<f32, N>) -> Tensor<f32, {N - N}> { x * 2.0 }",
    "fn f(x: Tensor<f32, N, D>) -> Tensor<f32, {N * D}> { reshape(x, [{N * D}]) }",
    "fn f(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { reshape(reshape(x, [{N * D}]), [N, D]) }",
    "fn f(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { reshape(x, [N, {D + 0}]) }",
    "fn f(x: Tensor<f32, N, D>) -> Tensor<f32, N, D> { x + reshape(x, [{(N * D) / D}, D]) }",
    "fn f(x: Tensor<f32, A, B, C, D, E, F, G, H>) -> Tensor<f32, A, B, C, D, E, F, G, 1> { x.sum(-1) }",
    "fn f(x: Tensor<f32, A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q>) -> Tensor<f32, A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P, Q> { transpose(x, 0, 16) + x.sum(3) }",
    "fn f(x: Tensor<f32, N>) -> () { x }",
    "fn f(x: Tensor<f32, N>) -> (Tensor<f32, N>,) { (x,) }",
    "fn f(x: Tensor<f32, N>) -> (Tensor<f32, N>,) { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { (x,) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { () }",
    "fn f(x: Tensor<f32, N>) -> (Tensor<f32, N>, Tensor<f32, N>) { (x, (x, x)) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { 1.0 }",
    "fn f(x: Tensor<f32, N>) -> Tensor<bool, N> { true }",
    "fn f(x: Tensor<f32, N>) -> Tensor<i32, N> { -2147483649 }",
    "fn f(x: Tensor<u32, N>) -> Tensor<u32, N> { x + -1 }",
    "fn f(x: Tensor<u32, N>) -> Tensor<u32, N> { -x }",
    "fn f(x: Tensor<bool, N>) -> Tensor<bool, N> { -x }",
    "fn f(x: Tensor<bool, N>) -> Tensor<bool, N> { x == true }",
    "fn f(x: Tensor<f32, N>) -> Tensor<bool, N> { true == false }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { select(true, x, 1.0) + select(x > 0.0, 1, 2.5) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { select(true, 1.0, 2.0) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { cast::<f32>(1) + cast::<bool>(x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { cast::<f32, i32>(x) + cast::<>(x) + cast::<'a>(x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x.cast::<f32>() + x.exp::<f32>() }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { exp() + exp(x, x) + x.exp(x) + sum(x) + x.sum() }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { pow(x, 2) + pow(2, x) + pow(2.0, 3.0) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { maximum(1, 2) + x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { softmax(1.0, 0) + layer_norm(1.0, 1.0, 1.0, 1.0) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { layer_norm(x, x, x, x) + rms_norm(x, 1.0, x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { transpose(1.0, 0, 0) + reshape(1.0, [1]) + reshape(x, x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { reshape(x, [n]) + reshape(x, [M]) + reshape(x, [-1]) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { matmul(x, x) + attention(x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { causal(x) + causal() + causal(x, x) + causal(1.0) + x.causal() }",
    "fn f(x: Tensor<f32, 0, 0>) -> Tensor<f32, 0, 0> { causal(causal(x)) + matmul(softmax(causal(matmul(x, x)) * -1.0, -1), x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { [N] + (x, x) }",
    "fn f(x: Tensor<f32, N>, x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let x = x * 2.0; let x = x + x; x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let y = 1.0; let z = y * 2; x * z }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let y = undefined; y + x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { return x; }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { return; }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let y; x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let (a, b) = (x, x); a }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let y: Tensor<f32, N> = x; y }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { let Some(y) = x else { return x }; y }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { fn g() {} x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x; x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { ; x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { { x } }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { unsafe { x } }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x? }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { !x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { *x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x % x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x += 1.0 }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x..x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { 'a' }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { b'a' }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x * 1u8 + x * 1.5e3f64 }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x * 0x10 + x * 0b1 + x * 1_000 + x * 1e-50 }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x.0 + x.y }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { std::f32::consts::PI * x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { <f32>::exp(x) + f32::exp(x) + exp::<>(x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { (exp)(x) + x.exp }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { Fn(x) + exp(x)(x) }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { self }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { Self }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { r#x }",
    "fn f(r#x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(mut x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(ref x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(_: Tensor<f32, N>) -> Tensor<f32, N> { _ }",
    "fn f((a, b): (Tensor<f32, N>, Tensor<f32, N>)) -> Tensor<f32, N> { a }",
    "fn f(x: Tensor) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<N>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, n>) -> Tensor<f32, n> { x }",
    "fn f(x: Tensor<f32, _>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, 'a>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, N = 4>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, N: Copy>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, [N]>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, {N}>) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, {}>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, { let a = 1; a }>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, {-1}>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, {N << 1}>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, {1.5}>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, N::M>) -> Tensor<f32> { x }",
    "fn f(x: Tensor<f32, N>, y: Tensor<f32, {N / M}>) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N, M> { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, {N + M}> { x }",
    "fn f(x: mia::Tensor<f32, N>) -> ::mia_runtime::Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>, s: f64, t: u8, u: &f32, v: [f32; 4]) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>) -> impl Sized { x }",
    "fn f(x: Tensor<f32, N>) -> ! { x }",
    "fn f(x: Tensor<f32, N>) -> f32 { x }",
    "fn f(x: Tensor<f32, N>) -> (f32, Tensor<f32, N>) { (1.0, x) }",
    "fn f(s: f32) -> Tensor<f32> { s }",
    "fn f() -> Tensor<f32> { 1.0 }",
    "fn f(self) -> Tensor<f32> { 1.0 }",
    "fn f(&self, x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f<const N: usize>(x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> where N: Copy { x }",
    "async unsafe extern \"C\" fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "const fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "#[inline] #[doc = \"d\"] #[cfg(any())] pub(in crate) fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { #[allow(unused)] x }",
    "fn f(#[allow(unused)] x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { #[cfg(any())] let y = x; x }",
    "fn r#match(x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn __sym_N(x: Tensor<f32, N>) -> Tensor<f32, N> { x }",
    "fn rt(rt: Tensor<f32, N>, __K: Tensor<f32, N>, __dims: f32) -> Tensor<f32, N> { rt + __K * __dims }",
    "fn d(d: Tensor<f32, N>, st: Tensor<f32, N>, count: Tensor<f32, N>, out0: Tensor<f32, N>) -> Tensor<f32, N> { d + st + count + out0 }",
];

struct Failure {
    case: usize,
    attr: String,
    item: String,
    what: String,
}

/// How a case that did not fail ended.
#[derive(Clone, Copy)]
enum Outcome {
    /// The input is not Rust items, so rustc could never pass it to the macro.
    NotItems,
    /// Compile errors (plus the stub).
    Rejected,
    /// A full expansion.
    Expanded,
}

/// Runs one case; `Err` says what went wrong.
fn run_case(attr: TokenStream, item: TokenStream) -> Result<Outcome, String> {
    let (a, i) = (attr.clone(), item.clone());
    let out = match catch_unwind(AssertUnwindSafe(move || expand::kernel(a, i))) {
        Ok(out) => out,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(non-string panic payload)".into());
            return Err(format!("panicked: {msg}"));
        }
    };
    // rustc only hands an attribute macro an item that parses; for those, the output must
    // parse as items too (an error plus the stub, or the expansion).
    if syn::parse2::<syn::File>(item).is_err() {
        return Ok(Outcome::NotItems);
    }
    let text = out.to_string();
    let rejected = text.contains("compile_error");
    // An "internal error" is mia's own bug (e.g. invalid WGSL generated), never a user error.
    if let Some(at) = text.find("internal error") {
        let msg: String = text[at..].chars().take(300).collect();
        return Err(format!("reported an internal error: {msg}"));
    }
    if let Err(e) = syn::parse2::<syn::File>(out.clone()) {
        let kind = if rejected {
            "error output"
        } else {
            "expansion"
        };
        return Err(format!("{kind} does not parse as Rust items ({e}): {out}"));
    }
    Ok(if rejected {
        Outcome::Rejected
    } else {
        Outcome::Expanded
    })
}

#[test]
fn seeds_compile_cleanly() {
    for (attr, item) in seeds() {
        let out = expand::kernel(attr, item.clone());
        let text = out.to_string();
        assert!(
            !text.contains("compile_error"),
            "seed kernel was rejected:\n{item}\n=>\n{text}"
        );
        syn::parse2::<syn::File>(out).expect("expansion parses");
    }
}

#[test]
fn fuzz_kernel_never_panics() {
    let start = Instant::now();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut failures: Vec<Failure> = Vec::new();
    // Cases per outcome: not items, rejected, expanded.
    let mut counts = [0usize; 3];
    let mut check = |attr: TokenStream, item: TokenStream, failures: &mut Vec<Failure>| {
        let case = counts.iter().sum::<usize>() + failures.len() + 1;
        match run_case(attr.clone(), item.clone()) {
            Ok(o) => counts[o as usize] += 1,
            Err(what) => failures.push(Failure {
                case,
                attr: attr.to_string(),
                item: item.to_string(),
                what,
            }),
        }
    };
    let seeds = seeds();
    for (attr, item) in &seeds {
        let base = to_toks(item.clone());
        for _ in 0..MUTANTS_PER_SEED {
            let mut toks = base.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut toks, &mut rng);
            }
            check(attr.clone(), to_stream(&toks), &mut failures);
        }
        // Mutants that are still Rust items (what rustc can really hand the macro), by
        // rejection sampling: these get past `syn` and exercise `ast`, `check` and the rest.
        let mut kept = 0;
        for _ in 0..VALID_MUTANT_TRIES {
            if kept == VALID_MUTANTS_PER_SEED {
                break;
            }
            let mut toks = base.clone();
            for _ in 0..1 + rng.below(3) {
                mutate_keeping_syntax(&mut toks, &mut rng);
            }
            let ts = to_stream(&toks);
            if syn::parse2::<syn::File>(ts.clone()).is_ok() {
                kept += 1;
                check(attr.clone(), ts, &mut failures);
            }
        }
        // Every truncation point of the top-level stream and of the body.
        for n in 0..base.len() {
            check(attr.clone(), to_stream(&base[..n]), &mut failures);
        }
        if let Some(Tok::Group(d, body)) = base.last() {
            for n in 0..body.len() {
                let mut toks = base.clone();
                let last = toks.len() - 1;
                toks[last] = Tok::Group(*d, body[..n].to_vec());
                check(attr.clone(), to_stream(&toks), &mut failures);
            }
        }
        // The whole item wrapped in extra groups.
        for d in [
            Delimiter::Parenthesis,
            Delimiter::Bracket,
            Delimiter::Brace,
            Delimiter::None,
        ] {
            let wrapped = TokenTree::Group(Group::new(d, item.clone())).into();
            check(attr.clone(), wrapped, &mut failures);
        }
    }
    for _ in 0..ATTR_CASES {
        let (_, item) = rng.pick(&seeds);
        let attr = random_attr(&mut rng);
        check(attr, item, &mut failures);
    }
    // Streams that are not a function at all.
    for src in [
        "",
        "struct S;",
        "fn",
        "fn f() {}",
        "fn f(x: Tensor<f32, N>) -> Tensor<f32, N>",
        "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> {}",
        "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x; }",
        "fn f(x: Tensor<f32, N>) -> Tensor<f32, N> { x } fn g() {}",
        "impl S { fn f(&self) {} }",
        "const X: u8 = 1;",
    ] {
        check(TokenStream::new(), parse_ts(src), &mut failures);
    }
    // Hand-written corner cases: extreme literals, degenerate shapes and dimensions.
    for src in EDGE_CASES {
        check(TokenStream::new(), parse_ts(src), &mut failures);
    }
    let elapsed = start.elapsed();
    let [not_items, rejected, expanded] = counts;
    let cases = not_items + rejected + expanded + failures.len();
    eprintln!(
        "fuzzed #[kernel] with {cases} cases in {elapsed:.2?}: {expanded} expanded, {rejected} \
         rejected with errors, {not_items} not Rust items; {} failure(s)",
        failures.len()
    );
    if !failures.is_empty() {
        for f in failures.iter().take(50) {
            eprintln!(
                "--- case {}: {}\n    attr: {}\n    item: {}",
                f.case, f.what, f.attr, f.item
            );
        }
        panic!(
            "{} of {cases} fuzz cases failed (first 50 printed above)",
            failures.len()
        );
    }
}

/// Not a check: prints what each corner case becomes (its error messages, or "compiles"), to
/// review the diagnostics by eye: `cargo test -p mia-macros edge_case_diagnostics -- --ignored
/// --nocapture`.
#[test]
#[ignore]
fn edge_case_diagnostics() {
    for src in EDGE_CASES {
        eprintln!("=== {src}");
        let item = parse_ts(src);
        let out = match catch_unwind(AssertUnwindSafe(|| {
            expand::kernel(TokenStream::new(), item)
        })) {
            Ok(out) => out,
            Err(_) => {
                eprintln!("    PANIC");
                continue;
            }
        };
        let Ok(file) = syn::parse2::<syn::File>(out) else {
            eprintln!("    (output does not parse)");
            continue;
        };
        let mut errors = 0;
        for it in &file.items {
            if let syn::Item::Macro(m) = it {
                if m.mac
                    .path
                    .segments
                    .last()
                    .is_some_and(|s| s.ident == "compile_error")
                {
                    errors += 1;
                    match m.mac.parse_body::<syn::LitStr>() {
                        Ok(msg) => eprintln!("    error: {}", msg.value()),
                        Err(_) => eprintln!("    error: (unreadable)"),
                    }
                }
            }
        }
        if errors == 0 {
            eprintln!("    (compiles)");
        }
    }
}
