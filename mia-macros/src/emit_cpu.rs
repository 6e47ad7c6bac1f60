//! `emit_cpu`: one Rust function per pass. Inner loops run over contiguous rows in chunks of
//! `LANES` elements held in fixed-size slices, so LLVM emits SIMD for them; reductions keep
//! `LANES` partial accumulators. Transcendental functions come from `mia_runtime::math`
//! (inlined, branch-free). Each pass is compiled twice — baseline and AVX2+FMA — and the
//! wrapper picks one at run time, so a default build gets AVX2 speed.

use crate::ast::DType;
use crate::graph::{BinOp, Const, RedOp, UnOp};
use crate::lower::{InstOp, Level, PassIr, Stride};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// Elements per chunk of an inner loop (two AVX2 registers of f32).
const LANES: usize = 16;

pub fn rust_type(dt: DType) -> TokenStream {
    match dt {
        DType::F32 => quote!(f32),
        DType::I32 => quote!(i32),
        DType::U32 => quote!(u32),
        DType::Bool => quote!(bool),
    }
}

/// How an access moves along the inner axis of a loop.
#[derive(Clone, Copy, PartialEq)]
enum Class {
    Zero,
    One,
    Other,
}

fn class(s: &Stride) -> Class {
    match s {
        Stride::Zero => Class::Zero,
        s if s.is_one() => Class::One,
        _ => Class::Other,
    }
}

/// Everything a pass function needs from its kernel.
pub struct PassSig<'a> {
    pub ir: &'a PassIr,
    /// dtype of each load, then each store.
    pub load_types: Vec<DType>,
    pub store_types: Vec<DType>,
    pub scalar_types: &'a [DType],
}

/// Names of the pass function's parameters, shared with the wrapper that calls it.
pub fn pass_fn_name(p: usize) -> syn::Ident {
    format_ident!("__mia_pass{}", p)
}

/// The pass function (plus its AVX2 twin and the dispatcher that picks one).
pub fn pass_fn(p: usize, sig: &PassSig) -> TokenStream {
    let ir = sig.ir;
    let r = ir.dims.len();
    let na = ir.loads.len() + ir.stores.len();
    let name = pass_fn_name(p);
    let body_name = format_ident!("__mia_pass{}_body", p);
    let avx_name = format_ident!("__mia_pass{}_avx2", p);
    let mut params = Vec::new();
    let mut args = Vec::new();
    for (k, dt) in sig.load_types.iter().enumerate() {
        let id = format_ident!("l{}", k);
        let t = rust_type(*dt);
        params.push(quote!(#id: &[#t]));
        args.push(quote!(#id));
    }
    for (k, dt) in sig.store_types.iter().enumerate() {
        let id = format_ident!("o{}", k);
        let t = rust_type(*dt);
        params.push(quote!(#id: ::mia_runtime::rt::OutPtr<#t>));
        args.push(quote!(#id));
    }
    for (k, dt) in sig.scalar_types.iter().enumerate() {
        let id = format_ident!("s{}", k);
        let t = rust_type(*dt);
        params.push(quote!(#id: #t));
        args.push(quote!(#id));
    }
    params.push(quote!(d: &[usize; #r]));
    params.push(quote!(st: &[[usize; #r]; #na]));
    args.extend([quote!(d), quote!(st)]);
    if ir.mm.is_some() {
        return matmul_fn(p, ir, params, args);
    }
    params.push(quote!(range: ::core::ops::Range<usize>));
    args.push(quote!(range));
    let body = if ir.is_rows() {
        rows_body(ir)
    } else {
        elementwise_body(ir)
    };
    dispatched(&name, &body_name, &avx_name, &params, &args, &body)
}

/// `name` runs `body`, compiled twice (baseline and AVX2+FMA) and picked at run time.
fn dispatched(
    name: &syn::Ident,
    body_name: &syn::Ident,
    avx_name: &syn::Ident,
    params: &[TokenStream],
    args: &[TokenStream],
    body: &TokenStream,
) -> TokenStream {
    quote! {
        #[inline(always)]
        #[allow(unused_variables, unused_mut, unused_unsafe, clippy::all)]
        fn #body_name(#(#params),*) {
            #body
        }
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        #[allow(clippy::all)]
        unsafe fn #avx_name(#(#params),*) {
            #body_name(#(#args),*)
        }
        #[allow(clippy::all)]
        fn #name(#(#params),*) {
            #[cfg(target_arch = "x86_64")]
            {
                if ::mia_runtime::rt::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above).
                    return unsafe { #avx_name(#(#args),*) };
                }
            }
            #body_name(#(#args),*)
        }
    }
}

/// A matmul pass: the runtime's engine computes the products tile by tile, reading operands
/// with a prologue through `{name}_pro{o}`, and calls the epilogue (`{name}_epi`) on each
/// finished row segment; both are dispatched on AVX2 like a pass. `mp[j]`: where B `j` keeps
/// its packed copies when it is a kernel input (a weight), `None` for an intermediate.
fn matmul_fn(
    p: usize,
    ir: &PassIr,
    mut params: Vec<TokenStream>,
    mut args: Vec<TokenStream>,
) -> TokenStream {
    let Some(mm) = &ir.mm else {
        return quote!();
    };
    let r = ir.dims.len();
    let nb = mm.bs.len();
    let nx = mm.extra.len();
    let na1 = 1 + nb + nx;
    let ms = r + 1;
    let name = pass_fn_name(p);
    let outer_params = params.clone();
    let outer_args = args.clone();
    let mut hooks = TokenStream::new();
    // `pro[o]`: the operand's prologue hook, if any.
    let mut pro = Vec::new();
    for (o, v) in mm.pro.iter().enumerate() {
        let Some(v) = *v else {
            pro.push(quote!(None));
            continue;
        };
        let f = format_ident!("__mia_pass{}_pro{}", p, o);
        let mut hp = params.clone();
        hp.extend([
            quote!(mx: &[&[f32]; #nx]),
            quote!(mst: &[[usize; #ms]; #na1]),
            quote!(bi: usize),
            quote!(at: usize),
            quote!(from: usize),
            quote!(out: &mut [f32]),
        ]);
        let mut ha = args.clone();
        ha.extend(["mx", "mst", "bi", "at", "from", "out"].map(|a| {
            let a = format_ident!("{}", a);
            quote!(#a)
        }));
        hooks.extend(dispatched(
            &f,
            &format_ident!("__mia_pass{}_pro{}_body", p, o),
            &format_ident!("__mia_pass{}_pro{}_avx2", p, o),
            &hp,
            &ha,
            &prologue_body(ir, v, o == 0),
        ));
        pro.push(quote!(Some(&|bi: usize, at: usize, from: usize, out: &mut [f32]| #f(#(#outer_args,)* &mx, mst, bi, at, from, out))));
    }
    params.extend([
        quote!(bi: usize),
        quote!(m: usize),
        quote!(n0: usize),
        quote!(acc: &[&[f32]; #nb]),
    ]);
    args.extend([quote!(bi), quote!(m), quote!(n0), quote!(acc)]);
    let epilogue = dispatched(
        &format_ident!("__mia_pass{}_epi", p),
        &format_ident!("__mia_pass{}_epi_body", p),
        &format_ident!("__mia_pass{}_epi_avx2", p),
        &params,
        &args,
        &epilogue_body(ir),
    );
    let epi_name = format_ident!("__mia_pass{}_epi", p);
    let nbo = r - 2;
    let ops: Vec<TokenStream> = (0..nb)
        .map(|j| {
            let s = 1 + j;
            let pro = &pro[s];
            quote!(::mia_runtime::rt::MatOperand { data: mb[#j], batch_strides: &mst[#s][..#nbo], rs: mst[#s][#r], cs: mst[#s][#nbo + 1], pro: #pro })
        })
        .collect();
    let pro_a = &pro[0];
    quote! {
        #epilogue
        #hooks
        #[allow(clippy::all)]
        fn #name(#(#outer_params,)* ma: &[f32], mb: [&[f32]; #nb], mp: [Option<&::mia_runtime::rt::PackCache>; #nb], mx: [&[f32]; #nx], mk: usize, mst: &[[usize; #ms]; #na1]) {
            ::mia_runtime::rt::matmul_packed::<#nb, _>(
                ::mia_runtime::rt::MatDims { batch: &d[..#nbo], m: d[#nbo], n: d[#nbo + 1], k: mk },
                ::mia_runtime::rt::MatOperand { data: ma, batch_strides: &mst[0][..#nbo], rs: mst[0][#nbo], cs: mst[0][#r], pro: #pro_a },
                [#(#ops),*],
                mp,
                |bi: usize, m: usize, n0: usize, acc: &[&[f32]; #nb]| #epi_name(#(#outer_args,)* bi, m, n0, acc),
            );
        }
    }
}

/// An operand's prologue over one run of its elements: batch `bi`, index `at` along its first
/// axis, `out.len()` elements from `from` along the other (A: row `at`, columns along the
/// depth; B: depth `at`, columns along N), as the runtime packs them.
fn prologue_body(ir: &PassIr, v: usize, left: bool) -> TokenStream {
    let Some(mm) = &ir.mm else {
        return quote!();
    };
    let r = ir.dims.len();
    let nbo = r - 2;
    let (fixed, run) = if left { (nbo, r) } else { (r, nbo + 1) };
    let first = 1 + mm.bs.len();
    let batch: Vec<usize> = (0..nbo).collect();
    let unr = if batch.is_empty() {
        quote!()
    } else {
        unravel(&batch)
    };
    let mut bases = TokenStream::new();
    for i in 0..mm.extra.len() {
        let a = first + i;
        let (x, sx) = (format_ident!("x{}", i), format_ident!("sx{}", i));
        let terms = batch.iter().map(|&k| {
            let ik = format_ident!("i{}", k);
            quote!(#ik * mst[#a][#k])
        });
        bases.extend(quote! {
            let #x: usize = at * mst[#a][#fixed] #(+ #terms)*;
            let #sx: usize = mst[#a][#run];
        });
    }
    let uniform = emit_insts(ir, &ir.needed(&[v], |l| l == Level::Uniform), &|_| quote!());
    let load = |src: Src| match src {
        Src::Operand(i) => {
            let (x, sx) = (format_ident!("x{}", i), format_ident!("sx{}", i));
            quote!(mx[#i][#x + e * #sx])
        }
        _ => quote!(),
    };
    let elem = emit_insts(ir, &ir.needed(&[v], |l| l != Level::Uniform), &load);
    let val = value(v);
    quote! {
        #uniform
        let r = bi;
        #unr
        #bases
        for (j, o) in out.iter_mut().enumerate() {
            let e = from + j;
            #elem
            *o = #val;
        }
    }
}

/// The epilogue of a matmul pass over one output row segment: batch `bi`, row `m`, columns
/// `n0..n0 + acc[0].len()`.
fn epilogue_body(ir: &PassIr) -> TokenStream {
    let r = ir.dims.len();
    let ax = r - 1;
    let batch: Vec<usize> = (0..r - 2).collect();
    let unr = if batch.is_empty() {
        quote!()
    } else {
        unravel(&batch)
    };
    let im = format_ident!("i{}", r - 2);
    let outer: Vec<usize> = (0..ax).collect();
    let bases = bases(ir, &outer);
    let (uniform, seg) = store_segment(ir, ax);
    quote! {
        #uniform
        let r = bi;
        #unr
        let #im = m;
        #bases
        let j0 = n0;
        let len = acc[0].len();
        #seg
    }
}

/// Access index `a` covers loads then stores.
fn base_ident(a: usize) -> syn::Ident {
    format_ident!("b{}", a)
}

/// `let b{a} = Σ i_k * st[a][k]` over the outer axes `axes`.
fn bases(ir: &PassIr, axes: &[usize]) -> TokenStream {
    let all = ir.loads.iter().chain(ir.stores.iter().map(|(a, _)| a));
    let mut out = TokenStream::new();
    for (a, acc) in all.enumerate() {
        let terms: Vec<TokenStream> = axes
            .iter()
            .filter(|&&k| acc.strides[k] != Stride::Zero)
            .map(|&k| {
                let i = format_ident!("i{}", k);
                quote!(#i * st[#a][#k])
            })
            .collect();
        let b = base_ident(a);
        if terms.is_empty() {
            out.extend(quote!(let #b: usize = 0;));
        } else {
            out.extend(quote!(let #b: usize = #(#terms)+*;));
        }
    }
    out
}

/// Unravels `r` into `i_k` over `axes` (row-major, last fastest).
fn unravel(axes: &[usize]) -> TokenStream {
    let mut out = quote!(let mut rem = r;);
    for (n, &k) in axes.iter().enumerate().rev() {
        let i = format_ident!("i{}", k);
        if n == 0 {
            out.extend(quote!(let #i = rem;));
        } else {
            out.extend(quote!(let #i = rem % d[#k]; rem /= d[#k];));
        }
    }
    out
}

/// The per-call values, and the loop over a row segment writing every store, of a pass that
/// stores elementwise.
fn store_segment(ir: &PassIr, ax: usize) -> (TokenStream, TokenStream) {
    let targets: Vec<usize> = ir.stores.iter().map(|(_, v)| *v).collect();
    let insts = ir.needed(&targets, |l| l != Level::Uniform);
    let uniform = emit_insts(
        ir,
        &ir.needed(&targets, |l| l == Level::Uniform),
        &|_| quote!(),
    );
    (uniform, segment(ir, ax, &insts, &Tail::Stores))
}

fn elementwise_body(ir: &PassIr) -> TokenStream {
    let r = ir.dims.len();
    let ax = r - 1;
    let outer: Vec<usize> = (0..ax).collect();
    let unr = unravel(&outer);
    let bases = bases(ir, &outer);
    let (uniform, seg) = store_segment(ir, ax);
    quote! {
        #uniform
        let n = d[#ax];
        let mut e = range.start;
        while e < range.end {
            let r = e / n;
            let j0 = e - r * n;
            let len = ::core::cmp::min(n - j0, range.end - e);
            #unr
            #bases
            #seg
            e += len;
        }
    }
}

fn rows_body(ir: &PassIr) -> TokenStream {
    let ax = ir.axis.unwrap_or(0);
    let r = ir.dims.len();
    let outer: Vec<usize> = (0..r).filter(|&k| k != ax).collect();
    let unr = if outer.is_empty() {
        quote!()
    } else {
        unravel(&outer)
    };
    let bases = bases(ir, &outer);
    let sched = ir.row_schedule();
    let uniform = emit_insts(ir, &sched.uniform, &|_| quote!());
    let row_load = |src: Src| {
        let Src::Load(k) = src else {
            return quote!();
        };
        let l = format_ident!("l{}", k);
        let b = base_ident(k);
        quote!(#l[#b])
    };
    let mut body = TokenStream::new();
    body.extend(emit_insts(ir, &sched.row_stages[0], &row_load));
    for (p, insts) in sched.phase_elems.iter().enumerate() {
        body.extend(segment(ir, ax, insts, &Tail::Reduce(p)));
        body.extend(emit_insts(ir, &sched.row_stages[p + 1], &row_load));
    }
    if !sched.elem_stores.is_empty() {
        body.extend(segment(ir, ax, &sched.final_elems, &Tail::Stores));
    }
    for &k in &sched.row_stores {
        let o = format_ident!("o{}", k);
        let b = base_ident(ir.loads.len() + k);
        let val = value(ir.stores[k].1);
        body.extend(quote! {
            // SAFETY: each row writes its own element of the output.
            unsafe { *#o.0.add(#b) = #val; }
        });
    }
    quote! {
        let n = d[#ax];
        let axis_len = n as f32;
        #uniform
        let j0 = 0usize;
        let len = n;
        for r in range {
            #unr
            #bases
            #body
        }
    }
}

enum Tail {
    /// Write every element store of the pass.
    Stores,
    /// Accumulate phase `p`.
    Reduce(usize),
}

fn value(i: usize) -> TokenStream {
    let v = format_ident!("v{}", i);
    quote!(#v)
}

/// The inner loop over `len` elements starting at `j0` along axis `ax`, in chunks of LANES.
fn segment(ir: &PassIr, ax: usize, insts: &[usize], tail: &Tail) -> TokenStream {
    let nl = ir.loads.len();
    let mut pre = TokenStream::new();
    let mut chunk = TokenStream::new();
    // Which loads are used by these instructions.
    let used: Vec<usize> = insts
        .iter()
        .filter_map(|&i| match ir.insts[i].op {
            InstOp::Load(k) => Some(k),
            _ => None,
        })
        .collect();
    for &k in &used {
        let l = format_ident!("l{}", k);
        let b = base_ident(k);
        match class(&ir.loads[k].strides[ax]) {
            Class::One => {
                let rl = format_ident!("r_l{}", k);
                let cl = format_ident!("c_l{}", k);
                pre.extend(quote!(let #rl = &#l[#b + j0..#b + j0 + len];));
                chunk.extend(quote!(let #cl = &#rl[j..j + #LANES];));
            }
            Class::Zero => {
                let z = format_ident!("z_l{}", k);
                pre.extend(quote!(let #z = #l[#b];));
            }
            Class::Other => {}
        }
    }
    for &i in insts {
        if let InstOp::Acc(k) = ir.insts[i].op {
            let r = format_ident!("r_acc{}", k);
            let c = format_ident!("c_acc{}", k);
            pre.extend(quote!(let #r = &acc[#k][..len];));
            chunk.extend(quote!(let #c = &#r[j..j + #LANES];));
        }
    }
    let stores: Vec<usize> = match tail {
        Tail::Stores => (0..ir.stores.len())
            .filter(|&k| ir.stores[k].0.strides[ax] != Stride::Zero)
            .collect(),
        Tail::Reduce(_) => vec![],
    };
    for &k in &stores {
        if class(&ir.stores[k].0.strides[ax]) == Class::One {
            let o = format_ident!("o{}", k);
            let ro = format_ident!("r_o{}", k);
            let co = format_ident!("c_o{}", k);
            let b = base_ident(nl + k);
            pre.extend(quote! {
                // SAFETY: rows (and segments of rows) are disjoint between tasks.
                let #ro = unsafe { ::core::slice::from_raw_parts_mut(#o.0.add(#b + j0), len) };
            });
            chunk.extend(quote!(let #co = &mut #ro[j..j + #LANES];));
        }
    }
    let load_expr = |lane: bool| {
        move |src: Src| -> TokenStream {
            let k = match src {
                Src::Load(k) => k,
                Src::Acc(k) => {
                    let r = format_ident!("r_acc{}", k);
                    let c = format_ident!("c_acc{}", k);
                    return if lane { quote!(#c[l]) } else { quote!(#r[j]) };
                }
                Src::Operand(_) => return quote!(),
            };
            let l = format_ident!("l{}", k);
            let b = base_ident(k);
            let idx = if lane { quote!(j + l) } else { quote!(j) };
            match class(&ir.loads[k].strides[ax]) {
                Class::One if lane => {
                    let cl = format_ident!("c_l{}", k);
                    quote!(#cl[l])
                }
                Class::One => {
                    let rl = format_ident!("r_l{}", k);
                    quote!(#rl[j])
                }
                Class::Zero => {
                    let z = format_ident!("z_l{}", k);
                    quote!(#z)
                }
                Class::Other => quote!(#l[#b + (j0 + #idx) * st[#k][#ax]]),
            }
        }
    };
    let body_lane = emit_insts(ir, insts, &load_expr(true));
    let body_tail = emit_insts(ir, insts, &load_expr(false));
    let finish = |lane: bool| -> TokenStream {
        match tail {
            Tail::Stores => {
                let mut out = TokenStream::new();
                for &k in &stores {
                    let v = value(ir.stores[k].1);
                    let o = format_ident!("o{}", k);
                    let b = base_ident(nl + k);
                    let a = nl + k;
                    out.extend(match (class(&ir.stores[k].0.strides[ax]), lane) {
                        (Class::One, true) => {
                            let co = format_ident!("c_o{}", k);
                            quote!(#co[l] = #v;)
                        }
                        (Class::One, false) => {
                            let ro = format_ident!("r_o{}", k);
                            quote!(#ro[j] = #v;)
                        }
                        (_, true) => quote! {
                            // SAFETY: in bounds and disjoint between tasks by construction.
                            unsafe { *#o.0.add(#b + (j0 + j + l) * st[#a][#ax]) = #v; }
                        },
                        (_, false) => quote! {
                            // SAFETY: as above.
                            unsafe { *#o.0.add(#b + (j0 + j) * st[#a][#ax]) = #v; }
                        },
                    });
                }
                out
            }
            Tail::Reduce(p) => {
                let ph = &ir.phases[*p];
                let v = value(ph.value);
                let acc = format_ident!("acc{}", p);
                let comb = |a: TokenStream| combine(ph.op, ph.dtype, a, v.clone());
                if lane {
                    let c = comb(quote!(#acc[l]));
                    quote!(#acc[l] = #c;)
                } else {
                    let a = format_ident!("ph{}", p);
                    let c = comb(quote!(#a));
                    quote!(#a = #c;)
                }
            }
        }
    };
    let (fin_lane, fin_tail) = (finish(true), finish(false));
    let (before, after) = match tail {
        Tail::Stores => (quote!(), quote!()),
        Tail::Reduce(p) => {
            let ph = &ir.phases[*p];
            let init = red_init(ph.op, ph.dtype);
            let acc = format_ident!("acc{}", p);
            let a = format_ident!("ph{}", p);
            let t = rust_type(ph.dtype);
            let c = combine(ph.op, ph.dtype, quote!(#a), quote!(#acc[l]));
            (
                quote!(let mut #acc: [#t; #LANES] = [#init; #LANES];),
                quote! {
                    let mut #a: #t = #init;
                    for l in 0..#LANES { #a = #c; }
                },
            )
        }
    };
    let tail_loop = match tail {
        Tail::Stores => quote! {
            while j < len {
                #body_tail
                #fin_tail
                j += 1;
            }
        },
        Tail::Reduce(_) => quote! {
            #after
            while j < len {
                #body_tail
                #fin_tail
                j += 1;
            }
        },
    };
    let main = quote! {
        #pre
        #before
        let mut j = 0usize;
        while j + #LANES <= len {
            #chunk
            for l in 0..#LANES {
                #body_lane
                #fin_lane
            }
            j += #LANES;
        }
        #tail_loop
    };
    match tail {
        Tail::Stores => quote!({ #main }),
        Tail::Reduce(p) => {
            let a = format_ident!("ph{}", p);
            let t = rust_type(ir.phases[*p].dtype);
            quote!(let #a: #t = { #main #a };)
        }
    }
}

fn red_init(op: RedOp, dt: DType) -> TokenStream {
    match (op, dt) {
        (RedOp::Sum | RedOp::Mean, DType::F32) => quote!(0.0f32),
        (RedOp::Sum | RedOp::Mean, _) => quote!(0),
        (RedOp::Max, DType::F32) => quote!(f32::NEG_INFINITY),
        (RedOp::Min, DType::F32) => quote!(f32::INFINITY),
        (RedOp::Max, DType::I32) => quote!(i32::MIN),
        (RedOp::Min, DType::I32) => quote!(i32::MAX),
        (RedOp::Max, _) => quote!(u32::MIN),
        (RedOp::Min, _) => quote!(u32::MAX),
    }
}

fn combine(op: RedOp, dt: DType, a: TokenStream, v: TokenStream) -> TokenStream {
    match (op, dt) {
        (RedOp::Sum | RedOp::Mean, DType::F32) => quote!(#a + #v),
        (RedOp::Sum | RedOp::Mean, _) => quote!(#a.wrapping_add(#v)),
        (RedOp::Max, _) => quote!(#a.max(#v)),
        (RedOp::Min, _) => quote!(#a.min(#v)),
    }
}

/// What an instruction reads from memory.
#[derive(Clone, Copy)]
enum Src {
    Load(usize),
    /// The j-th product's accumulator.
    Acc(usize),
    /// A prologue's load (see [`prologue_fn`]).
    Operand(usize),
}

/// `let v{i}: T = ...;` for each instruction, reading memory through `load`.
fn emit_insts(ir: &PassIr, insts: &[usize], load: &dyn Fn(Src) -> TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    for &i in insts {
        let inst = &ir.insts[i];
        let v = format_ident!("v{}", i);
        let t = rust_type(inst.dtype);
        let arg = |k: usize| {
            let a = format_ident!("v{}", k);
            quote!(#a)
        };
        let dt = inst.dtype;
        let e = match &inst.op {
            InstOp::Load(k) => load(Src::Load(*k)),
            InstOp::Acc(j) => load(Src::Acc(*j)),
            InstOp::Operand(i) => load(Src::Operand(*i)),
            InstOp::Scalar(s) => {
                let s = format_ident!("s{}", s);
                quote!(#s)
            }
            InstOp::Const(c) => const_expr(*c),
            InstOp::Phase(p) => {
                let p = format_ident!("ph{}", p);
                quote!(#p)
            }
            InstOp::AxisLen => quote!(axis_len),
            InstOp::Unary(op, a) => unary(*op, dt, arg(*a)),
            InstOp::Binary(op, a, b) => binary(*op, ir.insts[*a].dtype, arg(*a), arg(*b)),
            InstOp::Select(c, a, b) => {
                let (c, a, b) = (arg(*c), arg(*a), arg(*b));
                quote!(if #c { #a } else { #b })
            }
            InstOp::Cast(a) => cast(ir.insts[*a].dtype, dt, arg(*a)),
        };
        out.extend(quote!(let #v: #t = #e;));
    }
    out
}

fn const_expr(c: Const) -> TokenStream {
    match c.dtype {
        DType::F32 => {
            let v = f32::from_bits(c.bits);
            if v.is_finite() {
                quote!(#v)
            } else {
                let b = c.bits;
                quote!(f32::from_bits(#b))
            }
        }
        DType::I32 => {
            let v = c.bits as i32;
            quote!(#v)
        }
        DType::U32 => {
            let v = c.bits;
            quote!(#v)
        }
        DType::Bool => {
            let v = c.bits != 0;
            quote!(#v)
        }
    }
}

fn unary(op: UnOp, dt: DType, a: TokenStream) -> TokenStream {
    let m = quote!(::mia_runtime::math);
    let float = dt == DType::F32;
    match op {
        UnOp::Neg if float => quote!(-#a),
        UnOp::Neg => quote!(#a.wrapping_neg()),
        UnOp::Abs if float => quote!(#a.abs()),
        UnOp::Abs if dt == DType::I32 => quote!(#a.wrapping_abs()),
        UnOp::Abs => quote!(#a),
        UnOp::Relu if float => quote!(#a.max(0.0)),
        UnOp::Relu if dt == DType::I32 => quote!(#a.max(0)),
        UnOp::Relu => quote!(#a),
        UnOp::Exp => quote!(#m::exp(#a)),
        UnOp::Ln => quote!(#m::ln(#a)),
        UnOp::Sqrt => quote!(#a.sqrt()),
        UnOp::Rsqrt => quote!(#m::rsqrt(#a)),
        UnOp::Tanh => quote!(#m::tanh(#a)),
        UnOp::Sigmoid => quote!(#m::sigmoid(#a)),
        UnOp::Gelu => quote!(#m::gelu(#a)),
        UnOp::GeluTanh => quote!(#m::gelu_tanh(#a)),
        UnOp::Silu => quote!(#m::silu(#a)),
        UnOp::Sin => quote!(#m::sin(#a)),
        UnOp::Cos => quote!(#m::cos(#a)),
    }
}

fn binary(op: BinOp, dt: DType, a: TokenStream, b: TokenStream) -> TokenStream {
    let float = dt == DType::F32;
    match op {
        BinOp::Add if float => quote!(#a + #b),
        BinOp::Sub if float => quote!(#a - #b),
        BinOp::Mul if float => quote!(#a * #b),
        BinOp::Div if float => quote!(#a / #b),
        BinOp::Add => quote!(#a.wrapping_add(#b)),
        BinOp::Sub => quote!(#a.wrapping_sub(#b)),
        BinOp::Mul => quote!(#a.wrapping_mul(#b)),
        // Integer division by zero gives the dividend, as WGSL defines it.
        BinOp::Div => quote!(if #b == 0 { #a } else { #a.wrapping_div(#b) }),
        BinOp::Pow => quote!(::mia_runtime::math::pow(#a, #b)),
        BinOp::Max => quote!(#a.max(#b)),
        BinOp::Min => quote!(#a.min(#b)),
        BinOp::Lt => quote!(#a < #b),
        BinOp::Le => quote!(#a <= #b),
        BinOp::Gt => quote!(#a > #b),
        BinOp::Ge => quote!(#a >= #b),
        BinOp::Eq => quote!(#a == #b),
        BinOp::Ne => quote!(#a != #b),
    }
}

fn cast(from: DType, to: DType, a: TokenStream) -> TokenStream {
    let t = rust_type(to);
    match (from, to) {
        (DType::Bool, DType::F32) => quote!(#a as u8 as f32),
        (DType::Bool, _) => quote!(#a as #t),
        (DType::F32, DType::Bool) => quote!(#a != 0.0),
        (_, DType::Bool) => quote!(#a != 0),
        _ => quote!(#a as #t),
    }
}
