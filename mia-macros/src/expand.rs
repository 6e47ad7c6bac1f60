//! `expand`: runs the pipeline on one `#[kernel]` item and assembles what replaces it: the
//! callable function (shape binding, device dispatch, the CPU pass functions, the GPU passes)
//! and a module of the same name holding the plan and the WGSL.

use crate::ast::{self, DType, Dim, Kernel, ParamTy};
use crate::emit_cpu::{self, rust_type, PassSig};
use crate::emit_wgsl::{self, Form, Layout, WORKGROUP};
use crate::fuse::{self, BufKind, Fused};
use crate::graph::{BinOp, Graph, Op, UnOp};
use crate::lower::{self, PassIr, Stride};
use crate::{check, validate};
use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};

/// Options of `#[kernel(...)]`.
#[derive(Default)]
pub struct Options {
    /// `#[kernel(fusion = false)]`: every op its own pass (to measure what fusion buys).
    pub unfused: bool,
}

fn parse_options(attr: TokenStream) -> syn::Result<Options> {
    let mut o = Options::default();
    if attr.is_empty() {
        return Ok(o);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("fusion") {
            let v: syn::LitBool = meta.value()?.parse()?;
            o.unfused = !v.value;
            Ok(())
        } else {
            Err(meta.error("unknown kernel option; supported: `fusion = false`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(o)
}

pub fn kernel(attr: TokenStream, item: TokenStream) -> TokenStream {
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            let mut out = e.to_compile_error();
            out.extend(item);
            return out;
        }
    };
    let opts = match parse_options(attr) {
        Ok(o) => o,
        Err(e) => return errors_with_stub(vec![e], &func),
    };
    match compile(&func, &opts) {
        Ok(ts) => ts,
        Err(errs) => errors_with_stub(errs, &func),
    }
}

/// The compile errors, plus a stand-in with the generated signature (when the signature
/// itself is fine) so that callers and IDEs see the function and no further errors cascade.
fn errors_with_stub(errs: Vec<syn::Error>, func: &syn::ItemFn) -> TokenStream {
    let mut out: TokenStream = errs.iter().map(|e| e.to_compile_error()).collect();
    if let Ok(sig) = signature_only(func) {
        out.extend(quote! {
            #[allow(unused_variables, clippy::all)]
            #sig {
                ::core::unreachable!("this kernel failed to compile")
            }
        });
    }
    out
}

fn signature_only(func: &syn::ItemFn) -> Result<TokenStream, ()> {
    let attrs = &func.attrs;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let mut params = Vec::new();
    let mut names = Vec::new();
    for arg in &func.sig.inputs {
        let syn::FnArg::Typed(pt) = arg else {
            return Err(());
        };
        let syn::Pat::Ident(pi) = &*pt.pat else {
            return Err(());
        };
        let id = &pi.ident;
        // A stand-in with a duplicated parameter would add rustc's own error to ours.
        if names.contains(id) {
            return Err(());
        }
        names.push(id.clone());
        let ty = ast::parse_type(&pt.ty).map_err(|_| ())?;
        params.push(param_tokens(id, &ty));
    }
    let syn::ReturnType::Type(_, ty) = &func.sig.output else {
        return Err(());
    };
    let outs: Vec<&syn::Type> = match &**ty {
        syn::Type::Tuple(t) => t.elems.iter().collect(),
        t => vec![t],
    };
    let mut dts = Vec::new();
    for t in &outs {
        match ast::parse_type(t).map_err(|_| ())? {
            ParamTy::Tensor { dtype, .. } => dts.push(dtype),
            ParamTy::Scalar(_) => return Err(()),
        }
    }
    let ret = return_type(&dts, matches!(&**ty, syn::Type::Tuple(_)));
    Ok(quote!(#(#attrs)* #vis fn #name(#(#params),*) -> ::mia_runtime::Result<#ret>))
}

/// A parameter of the generated function: tensors by reference, scalars by value.
pub(crate) fn param_tokens(id: &syn::Ident, ty: &ParamTy) -> TokenStream {
    match ty {
        ParamTy::Tensor { dtype, .. } => {
            let t = rust_type(*dtype);
            quote!(#id: &::mia_runtime::Tensor<#t>)
        }
        ParamTy::Scalar(dt) => {
            let t = rust_type(*dt);
            quote!(#id: #t)
        }
    }
}

pub(crate) fn return_type(dts: &[DType], tuple: bool) -> TokenStream {
    let ts: Vec<TokenStream> = dts
        .iter()
        .map(|d| {
            let t = rust_type(*d);
            quote!(::mia_runtime::Tensor<#t>)
        })
        .collect();
    if tuple {
        quote!((#(#ts,)*))
    } else {
        quote!(#(#ts)*)
    }
}

/// The whole pipeline: parse → check → fuse → lower → emit → validate.
pub(crate) fn compile(func: &syn::ItemFn, opts: &Options) -> Result<TokenStream, Vec<syn::Error>> {
    let k = ast::parse(func)?;
    let g = check::check(&k)?;
    let fused = if opts.unfused {
        fuse::fuse_none(&g)
    } else {
        fuse::fuse(&g)
    };
    let passes = lower::lower(&g, &fused);
    let scalar_types: Vec<DType> = k
        .params
        .iter()
        .filter_map(|p| match p.ty {
            ParamTy::Scalar(d) => Some(d),
            _ => None,
        })
        .collect();
    let buf_types: Vec<DType> = fused.buffers.iter().map(|b| g.node(b.node).dtype).collect();
    let name = k.name.to_string();
    // Each pass's scalar shader (a matmul pass's first tiling), then the vec4 forms of the
    // passes that have one and the other tilings of matmul passes.
    let shader = |p: usize, ir: &PassIr, form: Form| {
        emit_wgsl::pass_shader(&name, p, ir, &buf_types, &scalar_types, form)
    };
    // An attention pass runs the runtime's flash-attention shader (validated by its tests).
    let mut shaders: Vec<String> = passes
        .iter()
        .enumerate()
        .map(|(p, ir)| match (&ir.attn, &ir.gather, &ir.causal) {
            (Some(_), _, _) => {
                format!("// {name}/pass{p}: mia_runtime's flash-attention shader\n")
            }
            (_, Some(_), _) => format!("// {name}/pass{p}: mia_runtime's gather shader\n"),
            (_, _, Some(_)) => format!("// {name}/pass{p}: mia_runtime's causal-mask shader\n"),
            _ => match ir.mm {
                Some(_) => shader(p, ir, Form::Tile(emit_wgsl::TILES[0])),
                None => shader(p, ir, Form::Scalar),
            },
        })
        .collect();
    // Per pass, the index in `shaders` of its `form`, for the passes `eligible` for it.
    let mut extra_form = |form: Form, eligible: fn(&PassIr) -> bool| -> Vec<Option<usize>> {
        passes
            .iter()
            .enumerate()
            .map(|(p, ir)| {
                (!ir.is_library() && eligible(ir)).then(|| {
                    shaders.push(shader(p, ir, form));
                    shaders.len() - 1
                })
            })
            .collect()
    };
    let vec4_forms = extra_form(Form::Vec4, emit_wgsl::vec4_eligible);
    let subgroup_forms = extra_form(Form::Subgroups, emit_wgsl::subgroup_eligible);
    let subgroup_row_forms = extra_form(Form::SubgroupRows, emit_wgsl::subgroup_eligible);
    let mut tile_forms = Vec::new();
    for (p, ir) in passes.iter().enumerate() {
        let mut forms = Vec::new();
        if let Some(mm) = &ir.mm {
            forms.push((p, emit_wgsl::TILES[0]));
            let fits = |t: &&emit_wgsl::Tile| {
                t.workgroup_bytes(mm.bs.len()) <= emit_wgsl::MAX_TILE_BYTES
                    && (!t.v4 || emit_wgsl::v4_allowed(ir))
            };
            for t in emit_wgsl::TILES[1..].iter().filter(fits) {
                shaders.push(shader(p, ir, Form::Tile(*t)));
                forms.push((shaders.len() - 1, *t));
            }
        }
        tile_forms.push(forms);
    }
    for src in &shaders {
        if let Err(msg) = validate::wgsl(src) {
            return Err(vec![syn::Error::new(
                k.name.span(),
                format!("internal error: mia generated invalid WGSL for kernel `{name}` (please report): {msg}\n{src}"),
            )]);
        }
    }
    Ok(Expander {
        k: &k,
        g: &g,
        f: &fused,
        passes: &passes,
        scalar_types,
        buf_types,
        vec4_forms,
        subgroup_forms,
        subgroup_row_forms,
        tile_forms,
    }
    .expand(&shaders))
}

struct Expander<'a> {
    k: &'a Kernel,
    g: &'a Graph,
    f: &'a Fused,
    passes: &'a [PassIr],
    scalar_types: Vec<DType>,
    buf_types: Vec<DType>,
    /// Index in `WGSL` of each pass's vec4 form, if it has one.
    vec4_forms: Vec<Option<usize>>,
    /// Index in `WGSL` of each row pass's subgroup form, if it has one.
    subgroup_forms: Vec<Option<usize>>,
    /// Index in `WGSL` of each row pass's subgroup-rows form (same passes).
    subgroup_row_forms: Vec<Option<usize>>,
    /// A matmul pass's tilings and their indices in `WGSL`.
    tile_forms: Vec<Vec<(usize, emit_wgsl::Tile)>>,
}

fn sym_ident(s: &str) -> syn::Ident {
    format_ident!("__sym_{}", s)
}

impl Expander<'_> {
    fn symbols(&self) -> Vec<String> {
        let mut syms = Vec::new();
        for p in &self.k.params {
            if let ParamTy::Tensor { dims, .. } = &p.ty {
                for d in dims {
                    if let Dim::Sym(s) = d {
                        if !syms.contains(s) {
                            syms.push(s.clone());
                        }
                    }
                }
            }
        }
        syms
    }

    /// Run-time value of a dimension, in a function returning `mia_runtime::Result`.
    fn dim(&self, d: &Dim) -> TokenStream {
        match d {
            Dim::Lit(n) => {
                let n = *n as usize;
                quote!(#n)
            }
            Dim::Sym(s) => sym_ident(s).to_token_stream(),
            Dim::Expr(a, op, b) => {
                let (ta, tb) = (self.dim(a), self.dim(b));
                let text = d.to_string();
                quote!(rt::dim_op(__K, #text, #ta, #op, #tb)?)
            }
        }
    }

    fn prod(&self, p: &[Dim]) -> TokenStream {
        let mut t = quote!(1usize);
        for d in p {
            let v = self.dim(d);
            t = quote!(#t.saturating_mul(#v));
        }
        t
    }

    fn buf_name(&self, b: usize) -> String {
        match self.f.buffers[b].kind {
            BufKind::Input(i) => self.tensor_params()[i].0.to_string(),
            BufKind::Output(i) => format!("out{i}"),
            BufKind::Temp => format!("t{b}"),
        }
    }

    fn tensor_params(&self) -> Vec<(syn::Ident, DType, Vec<Dim>)> {
        self.k
            .params
            .iter()
            .filter_map(|p| match &p.ty {
                ParamTy::Tensor { dtype, dims } => Some((p.name.clone(), *dtype, dims.clone())),
                _ => None,
            })
            .collect()
    }

    fn expand(&self, shaders: &[String]) -> TokenStream {
        let k = self.k;
        let name = &k.name;
        let name_str = name.to_string();
        let vis = &k.vis;
        let attrs = &k.attrs;
        let syms = self.symbols();
        let tparams = self.tensor_params();

        // Signature.
        let params: Vec<TokenStream> = k
            .params
            .iter()
            .map(|p| param_tokens(&p.name, &p.ty))
            .collect();
        let out_types: Vec<DType> = k.outputs.iter().map(|o| o.dtype).collect();
        let ret = return_type(&out_types, k.tuple_return);

        // Shape binding.
        let mut bind = TokenStream::new();
        for (id, _, dims) in &tparams {
            let pname = id.to_string();
            let spec: Vec<TokenStream> = dims
                .iter()
                .map(|d| match d {
                    Dim::Lit(n) => {
                        let n = *n as usize;
                        quote!(rt::D::Lit(#n))
                    }
                    Dim::Sym(s) => {
                        let i = syms.iter().position(|x| x == s).unwrap_or(0);
                        quote!(rt::D::Sym(#i))
                    }
                    Dim::Expr(..) => quote!(rt::D::Expr),
                })
                .collect();
            bind.extend(quote!(__dims.bind(#pname, #id.shape(), &[#(#spec),*])?;));
        }
        for (i, s) in syms.iter().enumerate() {
            let id = sym_ident(s);
            bind.extend(quote!(let #id: usize = __dims.get(#i);));
        }
        for (id, _, dims) in &tparams {
            let pname = id.to_string();
            for (axis, d) in dims.iter().enumerate() {
                if let Dim::Expr(..) = d {
                    let v = self.dim(d);
                    let text = d.to_string();
                    bind.extend(
                        quote!(rt::check_dim(__K, #pname, #axis, #text, #v, #id.shape()[#axis])?;),
                    );
                }
            }
        }
        let dev_args: Vec<TokenStream> = tparams
            .iter()
            .map(|(id, _, _)| {
                let s = id.to_string();
                quote!((#s, #id.device()))
            })
            .collect();

        // Buffers: shapes and lengths of outputs and temps.
        let mut shapes = TokenStream::new();
        for (b, buf) in self.f.buffers.iter().enumerate() {
            if matches!(buf.kind, BufKind::Input(_)) {
                continue;
            }
            let sh = format_ident!("__shape{}", b);
            let len = format_ident!("__len{}", b);
            let dims: Vec<TokenStream> = buf.shape.iter().map(|d| self.dim(d)).collect();
            shapes.extend(quote! {
                let #sh: ::std::vec::Vec<usize> = ::std::vec![#(#dims),*];
                let #len: usize = #sh.iter().fold(1usize, |a, &b| a.saturating_mul(b));
            });
        }

        let cpu_fns: Vec<TokenStream> = self
            .passes
            .iter()
            .enumerate()
            .filter(|(_, ir)| !ir.is_library())
            .map(|(p, ir)| emit_cpu::pass_fn(p, &self.sig(ir)))
            .collect();
        let cpu = self.cpu_body();
        let gpu = self.gpu_body(name);
        let plan = self.plan();
        let np = shaders.len();
        let sym_names = &syms;
        quote! {
            #(#attrs)*
            #[allow(non_snake_case, unused_variables, unused_mut, clippy::all)]
            #vis fn #name(#(#params),*) -> ::mia_runtime::Result<#ret> {
                use ::mia_runtime::rt;
                const __K: &str = #name_str;
                let mut __dims = rt::Dims::new(__K, &[#(#sym_names),*]);
                #bind
                let __dev = rt::same_device(__K, &[#(#dev_args),*])?;
                #shapes
                #(#cpu_fns)*
                if __dev.is_cpu() {
                    rt::on_pool(|| -> ::mia_runtime::Result<#ret> { #cpu })
                } else {
                    #gpu
                }
            }

            /// What the kernel of the same name became: its fusion plan and generated WGSL.
            #[allow(non_snake_case, dead_code)]
            #vis mod #name {
                /// The WGSL of each pass (then the vec4 forms of elementwise passes), validated by
                /// naga when the kernel was compiled.
                pub const WGSL: [&str; #np] = [#(#shaders),*];
                /// The fusion plan: passes, dispatches, fused ops, bytes moved.
                pub fn plan() -> &'static ::mia_runtime::Plan {
                    static PLAN: ::mia_runtime::Plan = #plan;
                    &PLAN
                }
            }
        }
    }

    fn sig<'b>(&'b self, ir: &'b PassIr) -> PassSig<'b> {
        PassSig {
            ir,
            load_types: ir.loads.iter().map(|a| self.buf_types[a.buf]).collect(),
            store_types: ir
                .stores
                .iter()
                .map(|(a, _)| self.buf_types[a.buf])
                .collect(),
            scalar_types: &self.scalar_types,
        }
    }

    fn scalar_idents(&self) -> Vec<syn::Ident> {
        self.k
            .params
            .iter()
            .filter(|p| matches!(p.ty, ParamTy::Scalar(_)))
            .map(|p| p.name.clone())
            .collect()
    }

    /// `let __d = [...]; let __st = [[...]; NA];` and the iteration count of pass `ir`.
    fn pass_dims(&self, ir: &PassIr) -> (TokenStream, TokenStream) {
        let dims: Vec<TokenStream> = ir.dims.iter().map(|p| self.prod(p)).collect();
        let strides = |accs: &mut dyn Iterator<Item = &lower::Access>| -> Vec<TokenStream> {
            accs.map(|a| {
                let s: Vec<TokenStream> = a
                    .strides
                    .iter()
                    .map(|s| match s {
                        Stride::Zero => quote!(0usize),
                        Stride::Prod(p) => self.prod(p),
                    })
                    .collect();
                quote!([#(#s),*])
            })
            .collect()
        };
        let mm = match &ir.mm {
            Some(m) => {
                let k = self.prod(&m.k);
                let st = strides(&mut m.operands());
                quote! {
                    let __mk: usize = #k;
                    let __mst = [#(#st),*];
                }
            }
            None => quote!(),
        };
        let strides = strides(&mut ir.loads.iter().chain(ir.stores.iter().map(|(a, _)| a)));
        let count = match ir.axis {
            None => quote!(__d.iter().fold(1usize, |a, &b| a.saturating_mul(b))),
            Some(ax) => {
                quote!(__d.iter().enumerate().filter(|(k, _)| *k != #ax).fold(1usize, |a, (_, &b)| a.saturating_mul(b)))
            }
        };
        (
            quote! {
                let __d = [#(#dims),*];
                let __st = [#(#strides),*];
                let __count: usize = #count;
                #mm
            },
            count,
        )
    }

    fn outputs_expr(&self, wrap: impl Fn(usize) -> TokenStream) -> TokenStream {
        let outs: Vec<TokenStream> = self
            .f
            .buffers
            .iter()
            .enumerate()
            .filter(|(_, b)| matches!(b.kind, BufKind::Output(_)))
            .map(|(b, _)| wrap(b))
            .collect();
        if self.k.tuple_return {
            quote!(::core::result::Result::Ok((#(#outs,)*)))
        } else {
            quote!(::core::result::Result::Ok(#(#outs)*))
        }
    }

    /// Binds every input buffer (`input(buffer, parameter)`) and allocates every output
    /// buffer (`alloc(buffer)`) before the first pass; temps come and go with [`Self::temps_at`].
    fn declare_buffers(
        &self,
        input: impl Fn(usize, &syn::Ident) -> TokenStream,
        alloc: impl Fn(usize) -> TokenStream,
    ) -> TokenStream {
        let tparams = self.tensor_params();
        let mut out = TokenStream::new();
        for (b, buf) in self.f.buffers.iter().enumerate() {
            match buf.kind {
                BufKind::Input(i) => out.extend(input(b, &tparams[i].0)),
                BufKind::Output(_) => out.extend(alloc(b)),
                BufKind::Temp => {}
            }
        }
        out
    }

    /// Before pass `p`: allocates the temps it writes first and frees those the previous pass
    /// read last (`life` from [`Self::lifetimes`]).
    fn temps_at(
        &self,
        life: &[Option<(usize, usize)>],
        p: usize,
        alloc: impl Fn(usize) -> TokenStream,
        free: impl Fn(usize) -> TokenStream,
    ) -> TokenStream {
        let mut out = TokenStream::new();
        for (b, l) in life.iter().enumerate() {
            match l {
                Some((d, _)) if *d == p => out.extend(alloc(b)),
                Some((_, u)) if *u + 1 == p => out.extend(free(b)),
                _ => {}
            }
        }
        out
    }

    /// A `&GpuBuffer` expression for buffer `b`: inputs are bound as references already,
    /// outputs and temps are owned.
    fn gpu_ref(&self, b: usize) -> TokenStream {
        let v = format_ident!("__gb{}", b);
        match self.f.buffers[b].kind {
            BufKind::Input(_) => quote!(#v),
            _ => quote!(&#v),
        }
    }

    fn cpu_body(&self) -> TokenStream {
        let alloc = |b: usize| {
            let (v, t, len) = (
                format_ident!("__cb{}", b),
                rust_type(self.buf_types[b]),
                format_ident!("__len{}", b),
            );
            quote!(let mut #v: ::std::vec::Vec<#t> = rt::cpu_alloc::<#t>(#len);)
        };
        let mut out = self.declare_buffers(
            |b, id| {
                let (v, t) = (format_ident!("__cb{}", b), rust_type(self.buf_types[b]));
                quote!(let #v: &[#t] = rt::cpu(#id)?;)
            },
            alloc,
        );
        let scalars = self.scalar_idents();
        let life = self.lifetimes();
        for (p, ir) in self.passes.iter().enumerate() {
            // Temps live from the pass that writes them to the last that reads them: freed
            // buffers go back to the pool, where the next temp of the same size finds them.
            out.extend(self.temps_at(&life, p, alloc, |b| {
                let v = format_ident!("__cb{}", b);
                quote!(rt::cpu_free(#v);)
            }));
            let (dims, _) = self.pass_dims(ir);
            let f = emit_cpu::pass_fn_name(p);
            let mut args = Vec::new();
            let mut lets = TokenStream::new();
            for (k, a) in ir.loads.iter().enumerate() {
                let l = format_ident!("__l{}", k);
                let v = format_ident!("__cb{}", a.buf);
                lets.extend(quote!(let #l = &#v[..];));
                args.push(quote!(#l));
            }
            for (k, (a, _)) in ir.stores.iter().enumerate() {
                let o = format_ident!("__o{}", k);
                let v = format_ident!("__cb{}", a.buf);
                lets.extend(quote!(let #o = rt::OutPtr(#v.as_mut_ptr());));
                args.push(quote!(#o));
            }
            for s in &scalars {
                args.push(quote!(#s));
            }
            let cost = match ir.axis {
                None => quote!(1usize),
                Some(ax) => {
                    let phases = ir.phases.len() + 1;
                    quote!(__d[#ax].saturating_mul(#phases))
                }
            };
            let call = match &ir.mm {
                Some(m) => {
                    let a = format_ident!("__cb{}", m.a.buf);
                    let cb = |x: &[lower::Access]| -> Vec<syn::Ident> {
                        x.iter().map(|b| format_ident!("__cb{}", b.buf)).collect()
                    };
                    let (bs, xs) = (cb(&m.bs), cb(&m.extra));
                    let tparams = self.tensor_params();
                    let packs = m.bs.iter().map(|b| match self.f.buffers[b.buf].kind {
                        BufKind::Input(i) => {
                            let id = &tparams[i].0;
                            quote!(rt::cpu_packs(#id))
                        }
                        _ => quote!(None),
                    });
                    quote!(#f(#(#args,)* &__d, &__st, &#a[..], [#(&#bs[..]),*], [#(#packs),*], [#(&#xs[..]),*], __mk, &__mst);)
                }
                None => quote! {
                    rt::parallel_for(__count, #cost, |__range| #f(#(#args,)* &__d, &__st, __range));
                },
            };
            let body = if let Some(at) = &ir.attn {
                self.attention(ir, at, &dims, None)
            } else if let Some(w) = &ir.gather {
                self.gather(ir, w, None)
            } else if let Some(c) = &ir.causal {
                self.causal(ir, c, None)
            } else {
                quote!({ #dims #lets #call })
            };
            // Timed only inside `Device::profile_passes`.
            out.extend(quote! {
                let __pt = rt::pass_clock();
                #body
                rt::pass_done(__pt);
            });
        }
        out.extend(self.outputs_expr(|b| {
            let v = format_ident!("__cb{}", b);
            let sh = format_ident!("__shape{}", b);
            quote!(rt::cpu_tensor(#sh, #v))
        }));
        out
    }

    fn gpu_body(&self, name: &syn::Ident) -> TokenStream {
        let alloc = |b: usize| {
            let (v, t, len) = (
                format_ident!("__gb{}", b),
                rust_type(self.buf_types[b]),
                format_ident!("__len{}", b),
            );
            quote!(let #v: rt::GpuBuffer = rt::GpuBuffer::alloc::<#t>(&__dev, #len)?;)
        };
        let mut out = self.declare_buffers(
            |b, id| {
                let v = format_ident!("__gb{}", b);
                quote!(let #v: &rt::GpuBuffer = rt::gpu_buffer(#id)?;)
            },
            alloc,
        );
        let scalars = self.scalar_idents();
        let life = self.lifetimes();
        for (p, ir) in self.passes.iter().enumerate() {
            // As on the CPU; a dropped buffer returns to the device's pool, and queued passes
            // run in order, so the next pass may reuse it at once.
            out.extend(self.temps_at(&life, p, alloc, |b| {
                let v = format_ident!("__gb{}", b);
                quote!(::core::mem::drop(#v);)
            }));
            let lay = Layout::of(ir);
            let (dims, _) = self.pass_dims(ir);
            let bufs: Vec<TokenStream> = lay
                .reads
                .iter()
                .chain(&lay.writes)
                .map(|&b| self.gpu_ref(b))
                .collect();
            let reads = lay.reads.len();
            let scalar_bits: Vec<TokenStream> = scalars
                .iter()
                .zip(&self.scalar_types)
                .map(|(s, dt)| match dt {
                    DType::F32 => quote!(#s.to_bits()),
                    _ => quote!(#s as u32),
                })
                .collect();
            let label = format!("{name}/pass{p}");
            if let Some(at) = &ir.attn {
                out.extend(self.attention(ir, at, &dims, Some(&label)));
                continue;
            }
            if let Some(w) = &ir.gather {
                out.extend(self.gather(ir, w, Some(&label)));
                continue;
            }
            if let Some(c) = &ir.causal {
                out.extend(self.causal(ir, c, Some(&label)));
                continue;
            }
            if ir.mm.is_some() {
                out.extend(self.gpu_matmul(name, p, ir, &dims, &bufs, reads, &scalar_bits));
                continue;
            }
            let last = ir.dims.len() - 1;
            // The vec4 form handles four consecutive elements of a row per invocation.
            // Row passes where the adapter has subgroups: many short rows one per subgroup,
            // `SG_ROWS` to a workgroup; else a workgroup each.
            let (sg_rows, sg_len) = (emit_wgsl::SG_ROWS as usize, emit_wgsl::SG_ROW_LEN);
            let sg_min = emit_wgsl::SG_ROWS_MIN;
            let ax = ir.axis.unwrap_or(0);
            let short =
                quote!(__d[#ax] <= #sg_len && __d.iter().product::<usize>() >= #sg_min * __d[#ax]);
            let (shader, per, rows) = match (
                self.vec4_forms[p],
                self.subgroup_forms[p],
                self.subgroup_row_forms[p],
            ) {
                (Some(v), _, _) => (
                    quote!(if __d[#last] % 4 == 0 { #v } else { #p }),
                    quote!(if __d[#last] % 4 == 0 { 4usize } else { 1usize }),
                    quote!(1usize),
                ),
                (None, Some(sg), Some(sgr)) => (
                    quote!(if !__dev.has_subgroups() { #p } else if #short { #sgr } else { #sg }),
                    quote!(1usize),
                    quote!(if __dev.has_subgroups() && #short { #sg_rows } else { 1usize }),
                ),
                _ => (quote!(#p), quote!(1usize), quote!(1usize)),
            };
            // Iterations per invocation group, and the granule a split pass is cut at.
            let (per_group, granule) = match ir.axis {
                None => (
                    quote!(#WORKGROUP as usize * #per),
                    quote!(4 * #WORKGROUP as usize),
                ),
                Some(_) => (rows, quote!(1usize)),
            };
            let axis = match ir.axis {
                Some(a) => quote!(::core::option::Option::Some(#a)),
                None => quote!(::core::option::Option::None),
            };
            let bindings: Vec<usize> = lay.reads.iter().chain(&lay.writes).copied().collect();
            let binding_of: Vec<usize> = ir
                .loads
                .iter()
                .chain(ir.stores.iter().map(|(a, _)| a))
                .map(|a| bindings.iter().position(|&b| b == a.buf).unwrap_or(0))
                .collect();
            let lens = self.buffer_lens(&bindings);
            let na = binding_of.len();
            let access_strides: Vec<TokenStream> = (0..na).map(|a| quote!(&__st[#a][..])).collect();
            out.extend(quote! {
                {
                    #dims
                    let __lim = __dev.limits();
                    let __strides: [&[usize]; #na] = [#(#access_strides),*];
                    let __shape = rt::PassShape {
                        dims: &__d,
                        axis: #axis,
                        strides: &__strides,
                        binding_of: &[#(#binding_of),*],
                        binding_lens: &[#(#lens),*],
                    };
                    // Usually one dispatch; several when a tensor exceeds one storage binding.
                    for __chunk in __shape.chunks(#label, __lim.max_storage_binding_bytes, __lim.min_storage_offset_alignment, #granule)? {
                        let __groups: usize = (__chunk.end - __chunk.start).div_ceil(#per_group);
                        let mut __params: ::std::vec::Vec<u32> = ::std::vec![
                            rt::gpu_u32(__K, __groups)?,
                            rt::gpu_u32(__K, __chunk.end)?,
                            rt::gpu_u32(__K, __chunk.start)?,
                        ];
                        for v in __d { __params.push(rt::gpu_u32(__K, v)?); }
                        for a in __st { for v in a { __params.push(rt::gpu_u32(__K, v)?); } }
                        for v in &__chunk.bases { __params.push(rt::gpu_u32(__K, *v)?); }
                        #(__params.push(#scalar_bits);)*
                        __dev.dispatch(&rt::GpuPass {
                            wgsl: #name::WGSL[#shader],
                            label: #label,
                            buffers: &[#(#bufs),*],
                            ranges: &__chunk.ranges,
                            reads: #reads,
                            params: &__params,
                            groups: __groups as u64,
                            in_bounds: false,
                        })?;
                    }
                }
            });
        }
        out.extend(self.outputs_expr(|b| {
            let v = format_ident!("__gb{}", b);
            let sh = format_ident!("__shape{}", b);
            quote!(rt::gpu_tensor(#sh, #v))
        }));
        out
    }

    /// Per buffer, for temps: the pass that writes it and the last pass that reads it.
    fn lifetimes(&self) -> Vec<Option<(usize, usize)>> {
        let lays: Vec<Layout> = self.passes.iter().map(Layout::of).collect();
        (0..self.f.buffers.len())
            .map(|b| {
                if self.f.buffers[b].kind != BufKind::Temp {
                    return None;
                }
                let def = lays.iter().position(|l| l.writes.contains(&b))?;
                let last = lays
                    .iter()
                    .rposition(|l| l.reads.contains(&b))
                    .unwrap_or(def);
                Some((def, last.max(def)))
            })
            .collect()
    }

    /// The element count of each of `bufs` at run time.
    fn buffer_lens(&self, bufs: &[usize]) -> Vec<TokenStream> {
        let tparams = self.tensor_params();
        bufs.iter()
            .map(|&b| match self.f.buffers[b].kind {
                BufKind::Input(i) => {
                    let id = &tparams[i].0;
                    quote!(#id.len())
                }
                _ => {
                    let len = format_ident!("__len{}", b);
                    quote!(#len)
                }
            })
            .collect()
    }

    /// A matmul pass: one dispatch with every buffer bound whole, with the tiling that
    /// autotune picks for this device and shape bucket.
    #[allow(clippy::too_many_arguments)]
    fn gpu_matmul(
        &self,
        name: &syn::Ident,
        p: usize,
        ir: &PassIr,
        dims: &TokenStream,
        bufs: &[TokenStream],
        reads: usize,
        scalar_bits: &[TokenStream],
    ) -> TokenStream {
        let lay = Layout::of(ir);
        let label = format!("{name}/pass{p}");
        let r = ir.dims.len();
        let (nbo, mi, ni) = (r - 2, r - 2, r - 1);
        let na = lay.accesses;
        let bindings: Vec<usize> = lay.reads.iter().chain(&lay.writes).copied().collect();
        let lens = self.buffer_lens(&bindings);
        let forms: Vec<usize> = self.tile_forms[p].iter().map(|f| f.0).collect();
        let tiles: Vec<emit_wgsl::Tile> = self.tile_forms[p].iter().map(|f| f.1).collect();
        // Tile sizes, workgroup bytes, invocations, tensor cores and vec4 loads: tilings over
        // the device's limits, on tensor cores it does not offer, or with vec4 loads the
        // operands do not allow, are not tried (the first fits WebGPU's defaults).
        let sizes: Vec<TokenStream> = tiles
            .iter()
            .map(|t| {
                let (bm, bn) = (t.bm as usize, t.bn as usize);
                let bytes = t.workgroup_bytes(ir.mm.as_ref().map_or(0, |m| m.bs.len()));
                let threads = t.threads();
                let (coop, v4) = (t.coop, t.v4);
                quote!((#bm, #bn, #bytes, #threads, #coop, #v4))
            })
            .collect();
        let names: Vec<String> = tiles.iter().map(|t| t.name()).collect();
        let ntiles = tiles.len();
        let rank = r;
        quote! {
            {
                #dims
                let __lim = __dev.limits();
                rt::gpu_whole_bindings(#label, &[#(#lens),*], __lim.max_storage_binding_bytes)?;
                let __batches: usize = __d[..#nbo].iter().fold(1usize, |a, &b| a.saturating_mul(b));
                let __tiles: [(usize, usize, u32, u32, bool, bool); #ntiles] = [#(#sizes),*];
                let __names: [&str; #ntiles] = [#(#names),*];
                let __v4ops: ::std::vec::Vec<&[usize]> = __mst.iter().map(|s| &s[..]).collect();
                let __v4 = rt::vec4_operands(#rank, (__d[#mi], __mk, __d[#ni]), &__v4ops);
                let __ok: ::std::vec::Vec<usize> = (0..#ntiles)
                    .filter(|&t| t == 0 || (__tiles[t].2 <= __lim.max_workgroup_storage_bytes && __tiles[t].3 <= __lim.max_invocations_per_workgroup && (!__tiles[t].4 || __lim.tensor_cores) && (!__tiles[t].5 || __v4)))
                    .collect();
                let __run = |__i: usize| -> ::mia_runtime::Result<()> {
                    let __t = __ok[__i];
                    let (__bm, __bn, _, _, _, _) = __tiles[__t];
                    let __groups = __batches
                        .saturating_mul(__d[#mi].div_ceil(__bm))
                        .saturating_mul(__d[#ni].div_ceil(__bn));
                    if __groups == 0 {
                        return Ok(());
                    }
                    let mut __params: ::std::vec::Vec<u32> = ::std::vec![rt::gpu_u32(__K, __groups)?, 0, 0];
                    for v in __d { __params.push(rt::gpu_u32(__K, v)?); }
                    for a in __st { for v in a { __params.push(rt::gpu_u32(__K, v)?); } }
                    __params.extend([0u32; #na]);
                    __params.push(rt::gpu_u32(__K, __mk)?);
                    for a in __mst { for v in a { __params.push(rt::gpu_u32(__K, v)?); } }
                    #(__params.push(#scalar_bits);)*
                    __dev.dispatch(&rt::GpuPass {
                        wgsl: #name::WGSL[[#(#forms),*][__t]],
                        label: #label,
                        buffers: &[#(#bufs),*],
                        ranges: &[],
                        reads: #reads,
                        params: &__params,
                        groups: __groups as u64,
                        in_bounds: true,
                    })
                };
                let __try: ::std::vec::Vec<&str> = __ok.iter().map(|&t| __names[t]).collect();
                let __t = rt::autotune(&__dev, #label, &[__batches, __d[#mi], __d[#ni], __mk], &__try, &__run)?;
                __run(__t)?;
            }
        }
    }

    /// An attention pass: one call of the runtime's flash attention on the CPU, or (with a
    /// `label`) one dispatch of its shader; operands are the pass's strided loads.
    fn attention(
        &self,
        ir: &PassIr,
        at: &lower::AttnIr,
        dims: &TokenStream,
        label: Option<&str>,
    ) -> TokenStream {
        let nb = ir.dims.len() - 2;
        let (s, e) = (self.prod(&at.s), self.prod(&at.e));
        let scale = at.scale.iter().fold(quote!(1.0f32), |acc, &(div, n)| {
            let f = self.uniform(n);
            if div {
                quote!((#acc / #f))
            } else {
                quote!((#acc * #f))
            }
        });
        let gpu = label.is_some();
        let causal = at.causal;
        let operand = |a: usize| {
            let acc = ir.loads.get(a).unwrap_or(&ir.stores[0].0);
            let (data, ty) = if gpu {
                let r = self.gpu_ref(acc.buf);
                (quote!(buf: #r), quote!(rt::GpuOperand))
            } else {
                let v = format_ident!("__cb{}", acc.buf);
                (quote!(pro: None, data: &#v[..]), quote!(rt::MatOperand))
            };
            quote!(#ty { #data, batch_strides: &__st[#a][..#nb], rs: __st[#a][#nb], cs: __st[#a][#nb + 1] })
        };
        let (q, k, v) = (operand(0), operand(1), operand(2));
        let mask = match at.mask {
            true => {
                let m = operand(3);
                quote!(::core::option::Option::Some(#m))
            }
            false => quote!(::core::option::Option::None),
        };
        let o = ir.loads.len();
        let d = quote! {
            rt::AttnDims { batch: &__d[..#nb], t: __d[#nb], s: #s, e: #e, ev: __d[#nb + 1] }
        };
        let call = match label {
            Some(label) => {
                let out = operand(o);
                quote!(rt::gpu_attention(&__dev, #label, #d, #q, #k, #v, #mask, __scale, #causal, #out)?;)
            }
            None => {
                let out = format_ident!("__cb{}", ir.stores[0].0.buf);
                quote! {
                    rt::attention(
                        #d,
                        rt::AttnArgs { q: #q, k: #k, v: #v, mask: #mask, scale: __scale, causal: #causal },
                        rt::AttnOut { data: &mut #out[..], batch_strides: &__st[#o][..#nb], rs: __st[#o][#nb], cs: __st[#o][#nb + 1] },
                    );
                }
            }
        };
        quote! {
            {
                #dims
                let __scale: f32 = #scale;
                #call
            }
        }
    }

    /// A gather pass: the runtime copies table rows (CPU), or dispatches its shader (GPU,
    /// with a `label`).
    fn gather(&self, ir: &PassIr, width: &[Dim], label: Option<&str>) -> TokenStream {
        let w = self.prod(width);
        let (t, i, o) = (ir.loads[0].buf, ir.loads[1].buf, ir.stores[0].0.buf);
        let arg = self.buf_name(i);
        let it = rust_type(self.buf_types[i]);
        match label {
            None => {
                let (t, i, o) = (
                    format_ident!("__cb{}", t),
                    format_ident!("__cb{}", i),
                    format_ident!("__cb{}", o),
                );
                quote!(rt::gather(__K, #arg, &#t[..], #w, &#i[..], &mut #o[..])?;)
            }
            Some(label) => {
                let (t, i, o) = (self.gpu_ref(t), self.gpu_ref(i), self.gpu_ref(o));
                quote!(rt::gpu_gather::<#it>(&__dev, #label, #t, #w, #i, #o)?;)
            }
        }
    }

    /// A causal pass outside an attention: the runtime masks a copy (CPU), or dispatches its
    /// shader (GPU, with a `label`).
    fn causal(&self, ir: &PassIr, c: &lower::CausalIr, label: Option<&str>) -> TokenStream {
        let (t, s) = (self.prod(&c.t), self.prod(&c.s));
        let (x, o) = (ir.loads[0].buf, ir.stores[0].0.buf);
        match label {
            None => {
                let (x, o) = (format_ident!("__cb{}", x), format_ident!("__cb{}", o));
                quote!(rt::causal_mask(&#x[..], #t, #s, &mut #o[..]);)
            }
            Some(label) => {
                let (x, o) = (self.gpu_ref(x), self.gpu_ref(o));
                quote!(rt::gpu_causal_mask(&__dev, #label, #x, #t, #s, #o)?;)
            }
        }
    }

    /// Host code for a uniform value (see [`crate::attend::is_uniform`]).
    fn uniform(&self, n: usize) -> TokenStream {
        let node = self.g.node(n);
        match node.op {
            Op::Const(c) => {
                let bits = c.bits;
                quote!(f32::from_bits(#bits))
            }
            Op::Scalar(i) => {
                let id = &self.scalar_idents()[i];
                quote!((#id as f32))
            }
            Op::Unary(op, a) => {
                let a = self.uniform(a);
                match op {
                    UnOp::Neg => quote!((-#a)),
                    UnOp::Sqrt => quote!(#a.sqrt()),
                    UnOp::Rsqrt => quote!((1.0f32 / #a.sqrt())),
                    UnOp::Exp => quote!(#a.exp()),
                    UnOp::Ln => quote!(#a.ln()),
                    _ => quote!(#a.abs()),
                }
            }
            Op::Binary(op, a, b) => {
                let (a, b) = (self.uniform(a), self.uniform(b));
                match op {
                    BinOp::Add => quote!((#a + #b)),
                    BinOp::Sub => quote!((#a - #b)),
                    BinOp::Div => quote!((#a / #b)),
                    _ => quote!((#a * #b)),
                }
            }
            _ => quote!(1.0f32),
        }
    }

    fn plan_dims(&self, dims: &[Dim]) -> TokenStream {
        let ds: Vec<TokenStream> = dims
            .iter()
            .map(|d| match d {
                Dim::Lit(n) => {
                    let n = *n as usize;
                    quote!(::mia_runtime::Dim::Lit(#n))
                }
                Dim::Sym(s) => quote!(::mia_runtime::Dim::Sym(#s)),
                Dim::Expr(..) => {
                    let t = d.to_string();
                    quote!(::mia_runtime::Dim::Expr(#t))
                }
            })
            .collect();
        quote!(&[#(#ds),*])
    }

    fn io(&self, b: usize) -> TokenStream {
        let name = self.buf_name(b);
        let dt = self.buf_types[b].name();
        let dims = self.plan_dims(&self.f.buffers[b].shape);
        quote!(::mia_runtime::Io { name: #name, dtype: #dt, elem_bytes: 4, dims: #dims })
    }

    fn plan(&self) -> TokenStream {
        let kernel = self.k.name.to_string();
        let pick = |f: &dyn Fn(&BufKind) -> bool| -> Vec<TokenStream> {
            self.f
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| f(&b.kind))
                .map(|(i, _)| self.io(i))
                .collect()
        };
        let inputs = pick(&|k| matches!(k, BufKind::Input(_)));
        let outputs = pick(&|k| matches!(k, BufKind::Output(_)));
        let temps = pick(&|k| matches!(k, BufKind::Temp));
        let lifetimes: Vec<TokenStream> = self
            .lifetimes()
            .into_iter()
            .flatten()
            .map(|(d, u)| quote!((#d, #u)))
            .collect();
        let passes: Vec<TokenStream> = self
            .passes
            .iter()
            .map(|ir| {
                let kind = match ir.axis {
                    None if ir.gather.is_some() => quote!(::mia_runtime::PassKind::Gather),
                    None if ir.causal.is_some() => quote!(::mia_runtime::PassKind::Causal),
                    None if ir.attn.is_some() => {
                        let mask = ir.attn.as_ref().is_some_and(|a| a.mask);
                        let causal = ir.attn.as_ref().is_some_and(|a| a.causal);
                        quote!(::mia_runtime::PassKind::Attention { mask: #mask, causal: #causal })
                    }
                    None if ir.mm.is_some() => {
                        let products = ir.mm.as_ref().map_or(0, |m| m.bs.len());
                        quote!(::mia_runtime::PassKind::MatMul { products: #products })
                    }
                    None => quote!(::mia_runtime::PassKind::Elementwise),
                    Some(axis) => {
                        let r = ir.phases.len();
                        quote!(::mia_runtime::PassKind::Rows { axis: #axis, reductions: #r })
                    }
                };
                let lay = Layout::of(ir);
                let reads: Vec<String> = lay.reads.iter().map(|&b| self.buf_name(b)).collect();
                let writes: Vec<String> = lay.writes.iter().map(|&b| self.buf_name(b)).collect();
                let ops = ir.ops;
                quote!(::mia_runtime::Pass { kind: #kind, ops: #ops, reads: &[#(#reads),*], writes: &[#(#writes),*] })
            })
            .collect();
        let fused_ops = self.g.op_count();
        quote! {
            ::mia_runtime::Plan {
                kernel: #kernel,
                passes: &[#(#passes),*],
                fused_ops: #fused_ops,
                intermediates: &[#(#temps),*],
                lifetimes: &[#(#lifetimes),*],
                inputs: &[#(#inputs),*],
                outputs: &[#(#outputs),*],
            }
        }
    }
}

/// [`kernel`], with any internal panic turned into a compile error: no input tokens may make
/// the macro panic.
pub fn kernel_guarded(attr: TokenStream, item: TokenStream) -> TokenStream {
    let fallback = item.clone();
    match std::panic::catch_unwind(move || kernel(attr, item)) {
        Ok(ts) => ts,
        Err(_) => {
            let mut out = quote!(::core::compile_error!("internal error in mia's #[kernel] (please report this kernel)"););
            out.extend(fallback);
            out
        }
    }
}
