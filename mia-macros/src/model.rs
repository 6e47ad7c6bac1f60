//! `graph!`: a whole model as one kernel. The model's structs name their weights (with
//! safetensors keys), sub-models and repeated layers; their `impl`s hold the forward code in the
//! kernel DSL plus three statements: `let mut`, reassignment (`x = ...;`) and `for` over a
//! repeated layer. The entry model's `forward` is flattened — every sub-model call inlined,
//! every loop unrolled, every weight a tensor parameter — into one kernel, which the usual
//! pipeline then checks, fuses and plans as a whole. A sub-model's parameters and result are
//! `let`s with declared types, so a call with the wrong shape is a compile error at the call.
//!
//! ```ignore
//! graph! {
//!     pub struct Mlp {
//!         up: Tensor<f32, 1536, 384> = "mlp.up.weight",
//!         blocks: [Block; 6] = "blocks.{i}",
//!     }
//!     struct Block { w: Tensor<f32, 384, 384> = "w" }
//!     impl Block {
//!         fn forward(&self, x: Tensor<f32, B, 384>) -> Tensor<f32, B, 384> {
//!             x + gelu(matmul(x, transpose(self.w, 0, 1)))
//!         }
//!     }
//!     impl Mlp {
//!         pub fn forward(&self, x: Tensor<f32, B, 384>) -> Tensor<f32, B, 384> {
//!             let mut h = x;
//!             for b in self.blocks { h = b.forward(h); }
//!             h
//!         }
//!     }
//! }
//! ```
//! generates `struct Mlp` with `load(&Device, &SafeTensors) -> Result<Mlp>`, `forward(&self,
//! x: &Tensor<f32>) -> Result<Tensor<f32>>`, `plan()` and `WEIGHTS` (key, shape).

use crate::ast::{self, Dim, ParamTy};
use crate::emit_cpu::rust_type;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use std::collections::HashMap;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;

/// One struct of the model.
struct ModelStruct {
    attrs: Vec<syn::Attribute>,
    vis: syn::Visibility,
    name: syn::Ident,
    fields: Vec<Field>,
}

enum FieldKind {
    /// A weight tensor: its declared type.
    Weight(syn::Type),
    /// A sub-model; its key is the prefix of the sub-model's keys.
    Sub(syn::Ident),
    /// `[Layer; N]`; its key has `{i}` where the layer number goes.
    Repeat(syn::Ident, usize),
}

struct Field {
    name: syn::Ident,
    kind: FieldKind,
    key: syn::LitStr,
}

struct Input {
    structs: Vec<ModelStruct>,
    impls: Vec<syn::ItemImpl>,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut structs = Vec::new();
        let mut impls = Vec::new();
        while !input.is_empty() {
            let attrs = input.call(syn::Attribute::parse_outer)?;
            if input.peek(syn::Token![impl]) {
                let mut i: syn::ItemImpl = input.parse()?;
                i.attrs = attrs;
                impls.push(i);
                continue;
            }
            let vis: syn::Visibility = input.parse()?;
            input.parse::<syn::Token![struct]>()?;
            let name: syn::Ident = input.parse()?;
            let body;
            syn::braced!(body in input);
            let mut fields = Vec::new();
            while !body.is_empty() {
                body.call(syn::Attribute::parse_outer)?;
                let fname: syn::Ident = body.parse()?;
                body.parse::<syn::Token![:]>()?;
                let ty: syn::Type = body.parse()?;
                body.parse::<syn::Token![=]>()?;
                let key: syn::LitStr = body.parse()?;
                fields.push(Field {
                    kind: field_kind(&ty)?,
                    name: fname,
                    key,
                });
                if !body.is_empty() {
                    body.parse::<syn::Token![,]>()?;
                }
            }
            structs.push(ModelStruct {
                attrs,
                vis,
                name,
                fields,
            });
        }
        Ok(Input { structs, impls })
    }
}

fn field_kind(ty: &syn::Type) -> syn::Result<FieldKind> {
    match ty {
        syn::Type::Array(a) => {
            let syn::Type::Path(p) = &*a.elem else {
                return Err(syn::Error::new(a.elem.span(), "expected a sub-model name"));
            };
            let n = match &a.len {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Int(i),
                    ..
                }) => i.base10_parse::<usize>()?,
                other => {
                    return Err(syn::Error::new(
                        other.span(),
                        "the number of repeated layers must be an integer literal",
                    ))
                }
            };
            match p.path.get_ident() {
                Some(id) => Ok(FieldKind::Repeat(id.clone(), n)),
                None => Err(syn::Error::new(p.span(), "expected a sub-model name")),
            }
        }
        syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "Tensor") => {
            Ok(FieldKind::Weight(ty.clone()))
        }
        syn::Type::Path(p) => match p.path.get_ident() {
            Some(id) => Ok(FieldKind::Sub(id.clone())),
            None => Err(syn::Error::new(p.span(), "expected a tensor type or a sub-model name")),
        },
        other => Err(syn::Error::new(
            other.span(),
            "a model field is a weight `Tensor<f32, ...>`, a sub-model `Name`, or repeated layers `[Name; N]`",
        )),
    }
}

/// A weight of the flattened model: its kernel parameter, safetensors key and declared type.
struct Weight {
    ident: syn::Ident,
    key: String,
    ty: syn::Type,
    dtype: ast::DType,
    shape: Vec<usize>,
}

/// One instance of a model struct in the tree: where its weights' parameters and keys live.
#[derive(Clone)]
struct Instance {
    model: syn::Ident,
    /// Parameter-name prefix (`layers_3_`).
    path: String,
    /// Key prefix (`encoder.layer.3.`).
    key: String,
}

struct Flattener<'a> {
    structs: &'a [ModelStruct],
    /// Every method of every model struct: (struct, method).
    methods: &'a [(syn::Ident, syn::ImplItemFn)],
    weights: Vec<Weight>,
    stmts: Vec<syn::Stmt>,
    errs: Vec<syn::Error>,
    fresh: usize,
    /// Inlining depth, to report recursion instead of overflowing the stack.
    depth: usize,
}

/// Names in scope: local variables (renamed) and loop variables (instances).
#[derive(Clone, Default)]
struct Scope {
    vars: HashMap<String, syn::Ident>,
    instances: HashMap<String, Instance>,
}

impl<'a> Flattener<'a> {
    fn find_struct(&self, name: &syn::Ident) -> Option<&'a ModelStruct> {
        self.structs.iter().find(|s| s.name == *name)
    }

    /// Registers every weight under `inst` (depth first, in field order).
    fn collect(&mut self, inst: &Instance, depth: usize) {
        let Some(st) = self.find_struct(&inst.model) else {
            self.errs.push(syn::Error::new(
                inst.model.span(),
                format!(
                    "unknown sub-model `{}`: declare `struct {}` in this `graph!`",
                    inst.model, inst.model
                ),
            ));
            return;
        };
        if depth > 32 {
            self.errs.push(syn::Error::new(
                st.name.span(),
                "sub-models nest more than 32 deep (does a model contain itself?)",
            ));
            return;
        }
        for f in &st.fields {
            let key = f.key.value();
            match &f.kind {
                FieldKind::Weight(ty) => {
                    let ident = format_ident!("{}{}", inst.path, f.name);
                    match ast::parse_type(ty) {
                        Ok(ParamTy::Tensor { dtype, dims }) => {
                            let mut shape = Vec::new();
                            for d in &dims {
                                match d {
                                    Dim::Lit(n) => shape.push(*n as usize),
                                    _ => {
                                        self.errs.push(syn::Error::new(
                                            ty.span(),
                                            "a weight's shape must be literal sizes: it is checked against the weights file when the model loads",
                                        ));
                                        break;
                                    }
                                }
                            }
                            self.weights.push(Weight {
                                ident,
                                key: format!("{}{}", inst.key, key),
                                ty: ty.clone(),
                                dtype,
                                shape,
                            });
                        }
                        Ok(ParamTy::Scalar(_)) => self.errs.push(syn::Error::new(
                            ty.span(),
                            "a weight is a tensor: `Tensor<f32, 384>`",
                        )),
                        Err(e) => self.errs.push(e),
                    }
                }
                FieldKind::Sub(m) => {
                    let child = self.child(inst, f, m, None);
                    self.collect(&child, depth + 1);
                }
                FieldKind::Repeat(m, n) => {
                    if !key.contains("{i}") {
                        self.errs.push(syn::Error::new(
                            f.key.span(),
                            "the key of repeated layers needs `{i}` where the layer number goes, like \"encoder.layer.{i}\"",
                        ));
                        continue;
                    }
                    for i in 0..*n {
                        let child = self.child(inst, f, m, Some(i));
                        self.collect(&child, depth + 1);
                    }
                }
            }
        }
    }

    fn child(&self, inst: &Instance, f: &Field, model: &syn::Ident, i: Option<usize>) -> Instance {
        let key = f.key.value();
        let (path, key) = match i {
            Some(i) => (
                format!("{}{}_{i}_", inst.path, f.name),
                key.replace("{i}", &i.to_string()),
            ),
            None => (format!("{}{}_", inst.path, f.name), key),
        };
        let key = if key.is_empty() || key.ends_with('.') {
            format!("{}{key}", inst.key)
        } else {
            format!("{}{key}.", inst.key)
        };
        Instance {
            model: model.clone(),
            path,
            key,
        }
    }

    fn field(&self, inst: &Instance, name: &syn::Ident) -> Option<&'a Field> {
        self.find_struct(&inst.model)?
            .fields
            .iter()
            .find(|f| f.name == *name)
    }

    /// The sub-model instance an expression names: `self.sub`, `self.layers[2]`, or a loop
    /// variable.
    fn instance_of(&self, e: &syn::Expr, inst: &Instance, scope: &Scope) -> Option<Instance> {
        match e {
            syn::Expr::Path(p) => scope
                .instances
                .get(&p.path.get_ident()?.to_string())
                .cloned(),
            syn::Expr::Field(f) if is_self(&f.base) => {
                let syn::Member::Named(name) = &f.member else {
                    return None;
                };
                let field = self.field(inst, name)?;
                match &field.kind {
                    FieldKind::Sub(m) => Some(self.child(inst, field, m, None)),
                    _ => None,
                }
            }
            syn::Expr::Index(ix) => {
                let syn::Expr::Field(f) = &*ix.expr else {
                    return None;
                };
                let syn::Member::Named(name) = &f.member else {
                    return None;
                };
                let field = self.field(inst, name)?;
                let i = match &*ix.index {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(i),
                        ..
                    }) => i.base10_parse::<usize>().ok()?,
                    _ => return None,
                };
                match &field.kind {
                    FieldKind::Repeat(m, n) if is_self(&f.base) && i < *n => {
                        Some(self.child(inst, field, m, Some(i)))
                    }
                    _ => None,
                }
            }
            syn::Expr::Paren(p) => self.instance_of(&p.expr, inst, scope),
            syn::Expr::Reference(r) => self.instance_of(&r.expr, inst, scope),
            _ => None,
        }
    }

    fn fresh(&mut self, name: &syn::Ident) -> syn::Ident {
        self.fresh += 1;
        syn::Ident::new(&format!("{name}__{}", self.fresh), name.span())
    }

    /// Rewrites an expression of `inst`'s code into the flat kernel: locals renamed, weights
    /// made parameters, sub-model calls inlined (their statements pushed before).
    fn expr(&mut self, e: &syn::Expr, inst: &Instance, scope: &Scope) -> syn::Expr {
        match e {
            syn::Expr::Path(p) => {
                if let Some(id) = p.path.get_ident() {
                    if let Some(new) = scope.vars.get(&id.to_string()) {
                        let new = syn::Ident::new(&new.to_string(), id.span());
                        return syn::parse_quote!(#new);
                    }
                }
                e.clone()
            }
            syn::Expr::Field(f) if is_self(&f.base) => {
                let syn::Member::Named(name) = &f.member else {
                    self.errs
                        .push(syn::Error::new(f.span(), "expected a field name"));
                    return e.clone();
                };
                match self.field(inst, name).map(|f| &f.kind) {
                    Some(FieldKind::Weight(_)) => {
                        let id = syn::Ident::new(&format!("{}{}", inst.path, name), name.span());
                        syn::parse_quote!(#id)
                    }
                    Some(_) => {
                        self.errs.push(syn::Error::new(
                            f.span(),
                            format!("`self.{name}` is a sub-model: call it, like `self.{name}.forward(x)`"),
                        ));
                        e.clone()
                    }
                    None => {
                        self.errs.push(syn::Error::new(
                            name.span(),
                            format!("`{}` has no field `{name}`", inst.model),
                        ));
                        e.clone()
                    }
                }
            }
            syn::Expr::MethodCall(m) => {
                if let Some(callee) = self.instance_of(&m.receiver, inst, scope) {
                    let args: Vec<syn::Expr> =
                        m.args.iter().map(|a| self.expr(a, inst, scope)).collect();
                    return self.inline(&callee, &m.method, args, m.span());
                }
                let mut m = m.clone();
                m.receiver = Box::new(self.expr(&m.receiver, inst, scope));
                for a in m.args.iter_mut() {
                    *a = self.expr(a, inst, scope);
                }
                syn::Expr::MethodCall(m)
            }
            syn::Expr::Call(c) => {
                let mut c = c.clone();
                for a in c.args.iter_mut() {
                    *a = self.expr(a, inst, scope);
                }
                syn::Expr::Call(c)
            }
            syn::Expr::Binary(b) => {
                let mut b = b.clone();
                b.left = Box::new(self.expr(&b.left, inst, scope));
                b.right = Box::new(self.expr(&b.right, inst, scope));
                syn::Expr::Binary(b)
            }
            syn::Expr::Unary(u) => {
                let mut u = u.clone();
                u.expr = Box::new(self.expr(&u.expr, inst, scope));
                syn::Expr::Unary(u)
            }
            syn::Expr::Paren(p) => {
                let mut p = p.clone();
                p.expr = Box::new(self.expr(&p.expr, inst, scope));
                syn::Expr::Paren(p)
            }
            syn::Expr::Tuple(t) => {
                let mut t = t.clone();
                for a in t.elems.iter_mut() {
                    *a = self.expr(a, inst, scope);
                }
                syn::Expr::Tuple(t)
            }
            // Literals, dimension lists (`[B, T, 12, 32]`: symbols, not variables) and anything
            // the kernel parser will report.
            _ => e.clone(),
        }
    }

    /// Inlines `callee.method(args)`; returns the variable holding its result.
    fn inline(
        &mut self,
        callee: &Instance,
        method: &syn::Ident,
        args: Vec<syn::Expr>,
        span: Span,
    ) -> syn::Expr {
        let Some((_, f)) = self
            .methods
            .iter()
            .find(|(m, f)| *m == callee.model && f.sig.ident == *method)
        else {
            self.errs.push(syn::Error::new(
                method.span(),
                format!(
                    "`{}` has no method `{method}` in this `graph!`",
                    callee.model
                ),
            ));
            return syn::parse_quote!(__mia_error);
        };
        if self.depth > 32 {
            self.errs.push(syn::Error::new(
                span,
                "sub-model calls nest more than 32 deep",
            ));
            return syn::parse_quote!(__mia_error);
        }
        let params: Vec<&syn::PatType> = f
            .sig
            .inputs
            .iter()
            .filter_map(|a| match a {
                syn::FnArg::Typed(t) => Some(t),
                _ => None,
            })
            .collect();
        if params.len() != args.len() {
            self.errs.push(syn::Error::new(
                span,
                format!(
                    "`{}::{method}` takes {} argument(s) but {} were given",
                    callee.model,
                    params.len(),
                    args.len()
                ),
            ));
            return syn::parse_quote!(__mia_error);
        }
        let mut scope = Scope::default();
        for (p, a) in params.iter().zip(args) {
            let syn::Pat::Ident(pi) = &*p.pat else {
                self.errs.push(syn::Error::new(
                    p.pat.span(),
                    "a parameter must be a plain name",
                ));
                continue;
            };
            let new = self.fresh(&pi.ident);
            let ty = &p.ty;
            self.stmts.push(syn::parse_quote!(let #new: #ty = #a;));
            scope.vars.insert(pi.ident.to_string(), new);
        }
        self.depth += 1;
        let tail = self.block(&f.block.stmts, callee, &mut scope, true);
        self.depth -= 1;
        let out = self.fresh(&syn::Ident::new("out", method.span()));
        let tail = tail.unwrap_or_else(|| syn::parse_quote!(__mia_error));
        match &f.sig.output {
            syn::ReturnType::Type(_, ty) if !matches!(**ty, syn::Type::Tuple(_)) => {
                self.stmts.push(syn::parse_quote!(let #out: #ty = #tail;))
            }
            _ => self.stmts.push(syn::parse_quote!(let #out = #tail;)),
        }
        syn::parse_quote!(#out)
    }

    /// Flattens statements; returns the tail expression when `tail` is expected.
    fn block(
        &mut self,
        stmts: &[syn::Stmt],
        inst: &Instance,
        scope: &mut Scope,
        tail: bool,
    ) -> Option<syn::Expr> {
        for (i, s) in stmts.iter().enumerate() {
            let last = i + 1 == stmts.len();
            match s {
                syn::Stmt::Local(l) => {
                    let (pat, ty) = match &l.pat {
                        syn::Pat::Type(t) => (&*t.pat, Some(&t.ty)),
                        p => (p, None),
                    };
                    let (syn::Pat::Ident(pi), Some(init)) = (pat, &l.init) else {
                        self.errs.push(syn::Error::new(
                            l.span(),
                            "only `let name = expr;` (or `let mut`) is supported in a model",
                        ));
                        continue;
                    };
                    let v = self.expr(&init.expr, inst, scope);
                    let new = self.fresh(&pi.ident);
                    match ty {
                        Some(ty) => self.stmts.push(syn::parse_quote!(let #new: #ty = #v;)),
                        None => self.stmts.push(syn::parse_quote!(let #new = #v;)),
                    }
                    scope.vars.insert(pi.ident.to_string(), new);
                }
                syn::Stmt::Expr(syn::Expr::Assign(a), Some(_)) => {
                    let syn::Expr::Path(p) = &*a.left else {
                        self.errs.push(syn::Error::new(
                            a.left.span(),
                            "only a variable can be assigned: `x = ...;`",
                        ));
                        continue;
                    };
                    let Some(name) = p.path.get_ident() else {
                        continue;
                    };
                    if !scope.vars.contains_key(&name.to_string()) {
                        self.errs.push(syn::Error::new(
                            name.span(),
                            format!("unknown variable `{name}`: declare it first with `let mut {name} = ...;`"),
                        ));
                        continue;
                    }
                    let v = self.expr(&a.right, inst, scope);
                    let new = self.fresh(name);
                    self.stmts.push(syn::parse_quote!(let #new = #v;));
                    scope.vars.insert(name.to_string(), new);
                }
                syn::Stmt::Expr(syn::Expr::ForLoop(fl), _) => self.for_loop(fl, inst, scope),
                syn::Stmt::Expr(e, None) if last && tail => {
                    return Some(self.expr(e, inst, scope));
                }
                other => self.errs.push(syn::Error::new(
                    other.span(),
                    "unsupported statement in a model: use `let`, `x = ...;`, `for layer in self.layers { ... }` and a final expression",
                )),
            }
        }
        if tail {
            self.errs.push(syn::Error::new(
                Span::call_site(),
                "a model method must end with the expression it returns",
            ));
        }
        None
    }

    /// `for layer in self.layers { ... }`, unrolled.
    fn for_loop(&mut self, fl: &syn::ExprForLoop, inst: &Instance, scope: &mut Scope) {
        let syn::Pat::Ident(var) = &*fl.pat else {
            self.errs.push(syn::Error::new(
                fl.pat.span(),
                "the loop variable must be a plain name",
            ));
            return;
        };
        let mut seq = &*fl.expr;
        while let syn::Expr::Reference(r) = seq {
            seq = &r.expr;
        }
        let field = match seq {
            syn::Expr::Field(f) if is_self(&f.base) => match &f.member {
                syn::Member::Named(n) => self.field(inst, n),
                _ => None,
            },
            _ => None,
        };
        let Some((field, model, n)) = field.and_then(|f| match &f.kind {
            FieldKind::Repeat(m, n) => Some((f, m, *n)),
            _ => None,
        }) else {
            self.errs.push(syn::Error::new(
                fl.expr.span(),
                "a model loops only over repeated layers: `for layer in self.layers { ... }`",
            ));
            return;
        };
        for i in 0..n {
            let child = self.child(inst, field, model, Some(i));
            let mut inner = scope.clone();
            inner.instances.insert(var.ident.to_string(), child);
            self.block(&fl.body.stmts, inst, &mut inner, false);
            // Reassigned outer variables keep their new values; loop locals go out of scope.
            for (k, v) in inner.vars {
                if scope.vars.contains_key(&k) {
                    scope.vars.insert(k, v);
                }
            }
        }
    }
}

fn is_self(e: &syn::Expr) -> bool {
    matches!(e, syn::Expr::Path(p) if p.path.is_ident("self"))
}

/// Expands `graph! { ... }`.
pub fn graph(input: TokenStream) -> TokenStream {
    let input: Input = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    match build(&input) {
        Ok(ts) => ts,
        Err(errs) => {
            let mut out: TokenStream = errs.iter().map(|e| e.to_compile_error()).collect();
            // A stand-in struct so that users of the model see no cascade of errors.
            if let Some(s) = input.structs.first() {
                let (vis, name) = (&s.vis, &s.name);
                out.extend(quote!(#vis struct #name;));
            }
            out
        }
    }
}

fn build(input: &Input) -> Result<TokenStream, Vec<syn::Error>> {
    let Some(top) = input.structs.first() else {
        return Err(vec![syn::Error::new(
            Span::call_site(),
            "`graph!` needs a model: `pub struct Model { weight: Tensor<f32, 384> = \"key\", ... }` and `impl Model { pub fn forward(&self, ...) -> ... { ... } }`",
        )]);
    };
    let mut errs = Vec::new();
    let mut methods: Vec<(syn::Ident, syn::ImplItemFn)> = Vec::new();
    for i in &input.impls {
        let model = match &*i.self_ty {
            syn::Type::Path(p) => p.path.get_ident().cloned(),
            _ => None,
        };
        let Some(model) = model.filter(|m| input.structs.iter().any(|s| s.name == *m)) else {
            errs.push(syn::Error::new(
                i.self_ty.span(),
                "`impl` in `graph!` must be for a struct declared in it",
            ));
            continue;
        };
        for it in &i.items {
            match it {
                syn::ImplItem::Fn(f) => methods.push((model.clone(), f.clone())),
                other => errs.push(syn::Error::new(
                    other.span(),
                    "only methods are allowed in a model's `impl`",
                )),
            }
        }
    }
    let Some((_, fwd)) = methods
        .iter()
        .find(|(m, f)| *m == top.name && f.sig.ident == "forward")
    else {
        errs.push(syn::Error::new(
            top.name.span(),
            format!(
                "the model `{}` needs `impl {} {{ pub fn forward(&self, ...) -> ... }}`",
                top.name, top.name
            ),
        ));
        return Err(errs);
    };
    let mut fl = Flattener {
        structs: &input.structs,
        methods: &methods,
        weights: Vec::new(),
        stmts: Vec::new(),
        errs,
        fresh: 0,
        depth: 0,
    };
    let root = Instance {
        model: top.name.clone(),
        path: String::new(),
        key: String::new(),
    };
    fl.collect(&root, 0);
    let mut scope = Scope::default();
    let mut params: Vec<syn::FnArg> = Vec::new();
    let mut names = Vec::new();
    let mut outer = Vec::new();
    for arg in &fwd.sig.inputs {
        match arg {
            syn::FnArg::Receiver(_) => {}
            syn::FnArg::Typed(pt) => {
                let syn::Pat::Ident(pi) = &*pt.pat else {
                    fl.errs.push(syn::Error::new(
                        pt.pat.span(),
                        "a parameter must be a plain name",
                    ));
                    continue;
                };
                scope.vars.insert(pi.ident.to_string(), pi.ident.clone());
                names.push(pi.ident.clone());
                match ast::parse_type(&pt.ty) {
                    Ok(ty) => outer.push(crate::expand::param_tokens(&pi.ident, &ty)),
                    Err(e) => fl.errs.push(e),
                }
                params.push(arg.clone());
            }
        }
    }
    let tail = fl.block(&fwd.block.stmts, &root, &mut scope, true);
    if !fl.errs.is_empty() {
        return Err(fl.errs);
    }
    for w in &fl.weights {
        if names.contains(&w.ident) {
            return Err(vec![syn::Error::new(
                w.ident.span(),
                format!(
                    "the weight parameter `{}` has the name of an input of `forward`: rename one",
                    w.ident
                ),
            )]);
        }
        let (id, ty) = (&w.ident, &w.ty);
        params.push(syn::parse_quote!(#id: #ty));
    }
    let kname = format_ident!("{}_forward", top.name);
    let stmts = &fl.stmts;
    let output = &fwd.sig.output;
    let item: syn::ItemFn = syn::parse_quote! {
        #[doc(hidden)]
        fn #kname(#(#params),*) #output {
            #(#stmts)*
            #tail
        }
    };
    let kernel = crate::expand::compile(&item, &crate::expand::Options::default())?;
    let ret = match output {
        syn::ReturnType::Type(_, ty) => {
            let tys: Vec<&syn::Type> = match &**ty {
                syn::Type::Tuple(t) => t.elems.iter().collect(),
                t => vec![t],
            };
            let dts: Vec<ast::DType> = tys
                .iter()
                .filter_map(|t| match ast::parse_type(t) {
                    Ok(ParamTy::Tensor { dtype, .. }) => Some(dtype),
                    _ => None,
                })
                .collect();
            crate::expand::return_type(&dts, matches!(&**ty, syn::Type::Tuple(_)))
        }
        syn::ReturnType::Default => quote!(()),
    };
    let (attrs, vis, name) = (&top.attrs, &top.vis, &top.name);
    let fwd_attrs = &fwd.attrs;
    let fields: Vec<TokenStream> = fl
        .weights
        .iter()
        .map(|w| {
            let (id, t) = (&w.ident, rust_type(w.dtype));
            quote!(#id: ::mia_runtime::Tensor<#t>)
        })
        .collect();
    let loads: Vec<TokenStream> = fl
        .weights
        .iter()
        .map(|w| {
            let (id, t, key, shape) = (&w.ident, rust_type(w.dtype), &w.key, &w.shape);
            quote!(#id: weights.tensor::<#t>(dev, #key, &[#(#shape),*])?)
        })
        .collect();
    let table: Vec<TokenStream> = fl
        .weights
        .iter()
        .map(|w| {
            let (key, shape) = (&w.key, &w.shape);
            quote!((#key, &[#(#shape),*]))
        })
        .collect();
    let wids: Vec<&syn::Ident> = fl.weights.iter().map(|w| &w.ident).collect();
    Ok(quote! {
        #kernel

        #(#attrs)*
        #vis struct #name {
            #(#fields,)*
        }

        impl #name {
            /// Every weight's safetensors key and shape, in the order `forward` passes them.
            pub const WEIGHTS: &'static [(&'static str, &'static [usize])] = &[#(#table),*];

            /// Loads every weight by its key onto `dev`; a missing key or a wrong shape or dtype
            /// is an error naming the key.
            pub fn load(
                dev: &::mia_runtime::Device,
                weights: &::mia_runtime::weights::SafeTensors,
            ) -> ::mia_runtime::Result<Self> {
                ::core::result::Result::Ok(Self { #(#loads,)* })
            }

            #(#fwd_attrs)*
            pub fn forward(&self, #(#outer),*) -> ::mia_runtime::Result<#ret> {
                #kname(#(#names,)* #(&self.#wids),*)
            }

            /// The whole model's fusion plan: passes, dispatches and intermediate buffers.
            pub fn plan() -> &'static ::mia_runtime::Plan {
                #kname::plan()
            }
        }
    })
}
