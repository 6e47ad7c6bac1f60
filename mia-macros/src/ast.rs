//! `parse`: a `syn::ItemFn` into the kernel AST. Only the syntax is checked here; every
//! problem becomes a `syn::Error` spanning the offending tokens, and all of them are returned.

use proc_macro2::Span;
use quote::ToTokens;

/// A source range (first and last token), so errors underline a whole sub-expression.
#[derive(Clone, Copy, Debug)]
pub struct Sp(pub Span, pub Span);

impl Sp {
    pub fn of(t: &impl ToTokens) -> Sp {
        let mut it = t.to_token_stream().into_iter();
        let first = it.next().map(|t| t.span()).unwrap_or_else(Span::call_site);
        let last = it.last().map(|t| t.span()).unwrap_or(first);
        Sp(first, last)
    }
    pub fn error(self, msg: impl std::fmt::Display) -> syn::Error {
        syn::Error::new_spanned(self, msg)
    }
}

impl ToTokens for Sp {
    fn to_tokens(&self, out: &mut proc_macro2::TokenStream) {
        out.extend([
            proc_macro2::TokenTree::Ident(proc_macro2::Ident::new("a", self.0)),
            proc_macro2::TokenTree::Ident(proc_macro2::Ident::new("b", self.1)),
        ]);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    I32,
    U32,
    Bool,
}

impl DType {
    pub fn from_name(s: &str) -> Option<DType> {
        Some(match s {
            "f32" => DType::F32,
            "i32" => DType::I32,
            "u32" => DType::U32,
            "bool" => DType::Bool,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::Bool => "bool",
        }
    }
    pub fn is_float(self) -> bool {
        self == DType::F32
    }
    pub fn is_numeric(self) -> bool {
        self != DType::Bool
    }
}

/// A dimension as written in a signature or `reshape`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dim {
    Lit(u64),
    Sym(String),
    /// A braced expression; `Dim::Expr` operands are themselves dims.
    Expr(Box<Dim>, char, Box<Dim>),
}

impl Dim {
    pub fn is_one(&self) -> bool {
        *self == Dim::Lit(1)
    }
    pub fn symbols(&self, out: &mut Vec<String>) {
        match self {
            Dim::Lit(_) => {}
            Dim::Sym(s) => {
                if !out.contains(s) {
                    out.push(s.clone())
                }
            }
            Dim::Expr(a, _, b) => {
                a.symbols(out);
                b.symbols(out);
            }
        }
    }
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dim::Lit(n) => write!(f, "{n}"),
            Dim::Sym(s) => write!(f, "{s}"),
            Dim::Expr(a, op, b) => {
                let side = |d: &Dim| match d {
                    Dim::Expr(..) => format!("({d})"),
                    _ => d.to_string(),
                };
                write!(f, "{} {op} {}", side(a), side(b))
            }
        }
    }
}

/// Formats a shape the way users write it: `[N, D]`.
pub fn shape_text(dims: &[Dim]) -> String {
    let inner: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

#[derive(Clone, Debug)]
pub enum ParamTy {
    Tensor { dtype: DType, dims: Vec<Dim> },
    Scalar(DType),
}

#[derive(Clone, Debug)]
pub struct Param {
    pub name: syn::Ident,
    pub ty: ParamTy,
    pub sp: Sp,
}

#[derive(Clone, Debug)]
pub struct Output {
    pub dtype: DType,
    pub dims: Vec<Dim>,
    pub sp: Sp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Clone, Debug)]
pub enum Lit {
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Clone, Debug)]
pub enum ExprKind {
    Var(syn::Ident),
    Lit(Lit),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// A function or method call (`exp(x)`, `x.exp()`: the receiver comes first in `args`).
    Call {
        func: syn::Ident,
        /// `cast::<T>` type argument.
        ty: Option<(DType, Sp)>,
        args: Vec<Expr>,
    },
    /// `[N, 64]`, only as an argument of `reshape`.
    Dims(Vec<Dim>),
    Tuple(Vec<Expr>),
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub kind: ExprKind,
    pub sp: Sp,
}

#[derive(Clone, Debug)]
pub struct Let {
    pub name: syn::Ident,
    pub value: Expr,
    /// `let x: Tensor<f32, N, D> = ...;` declares (and so checks) the value's type.
    pub ty: Option<(ParamTy, Sp)>,
}

#[derive(Clone, Debug)]
pub struct Kernel {
    pub vis: syn::Visibility,
    pub name: syn::Ident,
    pub attrs: Vec<syn::Attribute>,
    pub params: Vec<Param>,
    pub outputs: Vec<Output>,
    /// True when the signature returns a tuple (even of one).
    pub tuple_return: bool,
    pub lets: Vec<Let>,
    pub tail: Expr,
}

/// Parses a kernel, collecting every syntax error.
pub fn parse(item: &syn::ItemFn) -> Result<Kernel, Vec<syn::Error>> {
    let mut errs = Vec::new();
    let sig = &item.sig;
    if let Some(t) = &sig.asyncness {
        errs.push(Sp::of(t).error("a kernel cannot be `async`"));
    }
    if let Some(t) = &sig.unsafety {
        errs.push(Sp::of(t).error("a kernel cannot be `unsafe`"));
    }
    if !sig.generics.params.is_empty() {
        errs.push(Sp::of(&sig.generics).error(
            "a kernel takes no generic parameters: shape symbols are written directly in `Tensor<f32, N, D>`",
        ));
    }
    let mut params = Vec::new();
    for arg in &sig.inputs {
        match arg {
            syn::FnArg::Receiver(r) => {
                errs.push(Sp::of(r).error("a kernel is a free function: it cannot take `self`"))
            }
            syn::FnArg::Typed(pt) => {
                let name = match &*pt.pat {
                    syn::Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                        pi.ident.clone()
                    }
                    other => {
                        errs.push(
                            Sp::of(other)
                                .error("a kernel parameter must be a plain name, like `x`"),
                        );
                        continue;
                    }
                };
                match parse_type(&pt.ty) {
                    Ok(ty) => params.push(Param {
                        name,
                        ty,
                        sp: Sp::of(&pt.ty),
                    }),
                    Err(e) => errs.push(e),
                }
            }
        }
    }
    if let Some(v) = &sig.variadic {
        errs.push(Sp::of(v).error("a kernel cannot be variadic"));
    }
    let mut outputs = Vec::new();
    let mut tuple_return = false;
    match &sig.output {
        syn::ReturnType::Default => errs.push(syn::Error::new(
            sig.ident.span(),
            "a kernel must return a tensor, like `-> Tensor<f32, N>`, or a tuple of tensors",
        )),
        syn::ReturnType::Type(_, ty) => {
            let tys: Vec<&syn::Type> = match &**ty {
                syn::Type::Tuple(t) => {
                    tuple_return = true;
                    t.elems.iter().collect()
                }
                t => vec![t],
            };
            if tys.is_empty() {
                errs.push(Sp::of(ty).error("a kernel must return at least one tensor"));
            }
            for t in tys {
                match parse_type(t) {
                    Ok(ParamTy::Tensor { dtype, dims }) => outputs.push(Output {
                        dtype,
                        dims,
                        sp: Sp::of(t),
                    }),
                    Ok(ParamTy::Scalar(_)) => {
                        errs.push(Sp::of(t).error(
                            "a kernel returns tensors: write `Tensor<f32>` for a single value",
                        ))
                    }
                    Err(e) => errs.push(e),
                }
            }
        }
    }

    let mut lets = Vec::new();
    let mut tail = None;
    let stmts = &item.block.stmts;
    for (i, stmt) in stmts.iter().enumerate() {
        let last = i + 1 == stmts.len();
        match stmt {
            syn::Stmt::Local(local) => {
                let plain = |p: &syn::Pat| match p {
                    syn::Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                        Some(pi.ident.clone())
                    }
                    _ => None,
                };
                let mut ty = None;
                let name = match &local.pat {
                    syn::Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
                        pi.ident.clone()
                    }
                    syn::Pat::Type(pt) if plain(&pt.pat).is_some() => {
                        match parse_type(&pt.ty) {
                            Ok(t) => ty = Some((t, Sp::of(&pt.ty))),
                            Err(e) => {
                                errs.push(e);
                                continue;
                            }
                        }
                        plain(&pt.pat).unwrap_or_else(|| pi_fallback(&pt.pat))
                    }
                    other => {
                        errs.push(Sp::of(other).error(
                            "only `let name = expr;` bindings are supported in a kernel",
                        ));
                        continue;
                    }
                };
                let Some(init) = &local.init else {
                    errs.push(Sp::of(local).error("a `let` in a kernel needs a value: `let y = ...;`"));
                    continue;
                };
                if let Some((_, d)) = &init.diverge {
                    errs.push(Sp::of(d).error("`let ... else` is not supported in a kernel"));
                    continue;
                }
                match parse_expr(&init.expr, &mut errs) {
                    Some(value) => lets.push(Let { name, value, ty }),
                    None => continue,
                }
                if last {
                    errs.push(Sp::of(local).error(
                        "a kernel body must end with the expression it returns, after its `let`s",
                    ));
                }
            }
            syn::Stmt::Expr(e, None) if last => tail = parse_expr(e, &mut errs),
            syn::Stmt::Expr(syn::Expr::Return(r), _) if last => match &r.expr {
                Some(e) => tail = parse_expr(e, &mut errs),
                None => errs.push(Sp::of(r).error("`return` needs the kernel's result")),
            },
            other => errs.push(Sp::of(other).error(
                "unsupported statement in a kernel body: only `let` bindings and a final expression are allowed",
            )),
        }
    }
    if stmts.is_empty() {
        errs.push(Sp::of(&item.block).error("a kernel body cannot be empty"));
    }
    match tail {
        Some(tail) if errs.is_empty() => Ok(Kernel {
            vis: item.vis.clone(),
            name: sig.ident.clone(),
            attrs: item.attrs.clone(),
            params,
            outputs,
            tuple_return,
            lets,
            tail,
        }),
        _ => {
            if errs.is_empty() {
                errs.push(Sp::of(&item.block).error("a kernel body must end with an expression"));
            }
            Err(errs)
        }
    }
}

/// Unreachable (the caller matched a plain name); a name that cannot collide otherwise.
fn pi_fallback(p: &syn::Pat) -> syn::Ident {
    syn::Ident::new("__mia_unnamed", Sp::of(p).0)
}

pub fn parse_type(ty: &syn::Type) -> syn::Result<ParamTy> {
    let bad = || {
        Sp::of(ty).error(format!(
            "unsupported type `{}` in a kernel signature: expected a tensor like `Tensor<f32, N, D>` or a scalar `f32`/`i32`/`u32`/`bool`",
            ty.to_token_stream()
        ))
    };
    let syn::Type::Path(tp) = ty else {
        if let syn::Type::Reference(r) = ty {
            return Err(Sp::of(r).error(
                "write kernel parameters by value (`x: Tensor<f32, N>`); callers pass `&x`",
            ));
        }
        return Err(bad());
    };
    if tp.qself.is_some() {
        return Err(bad());
    }
    let Some(seg) = tp.path.segments.last() else {
        return Err(bad());
    };
    let name = seg.ident.to_string();
    if let Some(dt) = DType::from_name(&name) {
        if seg.arguments.is_empty() && tp.path.segments.len() == 1 {
            return Ok(ParamTy::Scalar(dt));
        }
    }
    if name != "Tensor" {
        return Err(bad());
    }
    let syn::PathArguments::AngleBracketed(ab) = &seg.arguments else {
        return Err(Sp::of(ty).error("`Tensor` needs a dtype and dimensions: `Tensor<f32, N, D>`"));
    };
    let mut args = ab.args.iter();
    let dtype = match args.next() {
        Some(syn::GenericArgument::Type(syn::Type::Path(p)))
            if p.path
                .get_ident()
                .and_then(|i| DType::from_name(&i.to_string()))
                .is_some() =>
        {
            let id = p
                .path
                .get_ident()
                .map(|i| i.to_string())
                .unwrap_or_default();
            DType::from_name(&id).unwrap_or(DType::F32)
        }
        Some(other) => {
            return Err(Sp::of(other).error(format!(
                "unknown dtype `{}`: supported dtypes are f32, i32, u32 and bool",
                other.to_token_stream()
            )))
        }
        None => return Err(Sp::of(ty).error("`Tensor` needs a dtype: `Tensor<f32, N, D>`")),
    };
    let mut dims = Vec::new();
    for a in args {
        dims.push(parse_dim_arg(a)?);
    }
    Ok(ParamTy::Tensor { dtype, dims })
}

fn parse_dim_arg(a: &syn::GenericArgument) -> syn::Result<Dim> {
    match a {
        syn::GenericArgument::Type(syn::Type::Path(p)) if p.qself.is_none() => {
            match p.path.get_ident() {
                Some(id) => sym_dim(id),
                None => Err(Sp::of(a).error("a dimension is a symbol like `N`, a number, or `{N / 2}`")),
            }
        }
        syn::GenericArgument::Const(e) => parse_dim_expr(e),
        other => Err(Sp::of(other).error(format!(
            "`{}` is not a dimension: write a symbol like `N`, a number, or a braced expression `{{D / H}}`",
            other.to_token_stream()
        ))),
    }
}

fn sym_dim(id: &syn::Ident) -> syn::Result<Dim> {
    let s = id.to_string();
    if s.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
        Ok(Dim::Sym(s))
    } else {
        Err(syn::Error::new(
            id.span(),
            format!(
                "dimension symbol `{s}` must start with an upper-case letter (like `N` or `D`)"
            ),
        ))
    }
}

/// Parses a dimension expression: literal, symbol, `+ - * / %`, parentheses, braces.
pub fn parse_dim_expr(e: &syn::Expr) -> syn::Result<Dim> {
    match e {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => i
            .base10_parse::<u64>()
            .map(Dim::Lit)
            .map_err(|_| Sp::of(i).error("a dimension must be a non-negative integer")),
        syn::Expr::Path(p) if p.qself.is_none() => match p.path.get_ident() {
            Some(id) => sym_dim(id),
            None => Err(Sp::of(p).error("a dimension symbol is a single name, like `N`")),
        },
        syn::Expr::Block(b) if b.block.stmts.len() == 1 => match &b.block.stmts[0] {
            syn::Stmt::Expr(inner, None) => parse_dim_expr(inner),
            s => Err(Sp::of(s).error("a braced dimension holds one expression, like `{D / H}`")),
        },
        syn::Expr::Paren(p) => parse_dim_expr(&p.expr),
        syn::Expr::Group(g) => parse_dim_expr(&g.expr),
        syn::Expr::Binary(b) => {
            let op = match b.op {
                syn::BinOp::Add(_) => '+',
                syn::BinOp::Sub(_) => '-',
                syn::BinOp::Mul(_) => '*',
                syn::BinOp::Div(_) => '/',
                syn::BinOp::Rem(_) => '%',
                _ => {
                    return Err(
                        Sp::of(&b.op).error("dimension arithmetic supports `+ - * / %` only")
                    )
                }
            };
            Ok(Dim::Expr(
                Box::new(parse_dim_expr(&b.left)?),
                op,
                Box::new(parse_dim_expr(&b.right)?),
            ))
        }
        other => Err(Sp::of(other).error(format!(
            "`{}` is not a dimension: write a symbol like `N`, a number, or arithmetic over them",
            other.to_token_stream()
        ))),
    }
}

fn parse_expr(e: &syn::Expr, errs: &mut Vec<syn::Error>) -> Option<Expr> {
    match expr(e) {
        Ok(x) => Some(x),
        Err(err) => {
            errs.push(err);
            None
        }
    }
}

fn unsupported(e: &impl ToTokens, what: &str) -> syn::Error {
    Sp::of(e).error(format!(
        "unsupported syntax in a kernel body: {what}. A kernel body holds tensor expressions: \
         operators, literals, parameters, `let` names and calls like `exp(x)` or `x.sum(-1)`"
    ))
}

fn expr(e: &syn::Expr) -> syn::Result<Expr> {
    let sp = Sp::of(e);
    let kind = match e {
        syn::Expr::Paren(p) => return expr(&p.expr),
        syn::Expr::Group(g) => return expr(&g.expr),
        syn::Expr::Path(p) => match p.path.get_ident() {
            Some(id) if p.qself.is_none() => ExprKind::Var(id.clone()),
            _ => return Err(unsupported(p, "paths")),
        },
        syn::Expr::Lit(l) => ExprKind::Lit(match &l.lit {
            syn::Lit::Int(i) => {
                check_suffix(i.suffix(), i)?;
                Lit::Int(
                    i.base10_parse::<i64>()
                        .map_err(|_| Sp::of(i).error("integer literal is too large"))?,
                )
            }
            syn::Lit::Float(f) => {
                check_suffix(f.suffix(), f)?;
                Lit::Float(
                    f.base10_parse::<f64>()
                        .map_err(|_| Sp::of(f).error("bad float literal"))?,
                )
            }
            syn::Lit::Bool(b) => Lit::Bool(b.value),
            other => return Err(unsupported(other, "this kind of literal")),
        }),
        syn::Expr::Unary(u) => match u.op {
            syn::UnOp::Neg(_) => ExprKind::Neg(Box::new(expr(&u.expr)?)),
            _ => {
                return Err(unsupported(
                    &u.op,
                    "this unary operator (only `-` is supported)",
                ))
            }
        },
        syn::Expr::Binary(b) => {
            let op = match b.op {
                syn::BinOp::Add(_) => BinOp::Add,
                syn::BinOp::Sub(_) => BinOp::Sub,
                syn::BinOp::Mul(_) => BinOp::Mul,
                syn::BinOp::Div(_) => BinOp::Div,
                syn::BinOp::Lt(_) => BinOp::Lt,
                syn::BinOp::Le(_) => BinOp::Le,
                syn::BinOp::Gt(_) => BinOp::Gt,
                syn::BinOp::Ge(_) => BinOp::Ge,
                syn::BinOp::Eq(_) => BinOp::Eq,
                syn::BinOp::Ne(_) => BinOp::Ne,
                _ => {
                    return Err(unsupported(
                        &b.op,
                        &format!("the operator `{}`", b.op.to_token_stream()),
                    ))
                }
            };
            ExprKind::Binary(op, Box::new(expr(&b.left)?), Box::new(expr(&b.right)?))
        }
        syn::Expr::Call(c) => {
            let syn::Expr::Path(p) = &*c.func else {
                return Err(unsupported(&c.func, "calling a computed function"));
            };
            let Some(seg) = p.path.segments.last() else {
                return Err(unsupported(p, "this call"));
            };
            if p.path.segments.len() != 1 || p.qself.is_some() {
                return Err(unsupported(
                    p,
                    "paths in calls: call kernel functions by name, like `exp(x)`",
                ));
            }
            let ty = match &seg.arguments {
                syn::PathArguments::None => None,
                syn::PathArguments::AngleBracketed(ab) => Some(turbofish_dtype(ab)?),
                other => return Err(unsupported(other, "this call syntax")),
            };
            let args = c.args.iter().map(expr).collect::<syn::Result<Vec<_>>>()?;
            ExprKind::Call {
                func: seg.ident.clone(),
                ty,
                args,
            }
        }
        syn::Expr::MethodCall(m) => {
            let ty = match &m.turbofish {
                Some(ab) => Some(turbofish_dtype(ab)?),
                None => None,
            };
            let mut args = vec![expr(&m.receiver)?];
            for a in &m.args {
                args.push(expr(a)?);
            }
            ExprKind::Call {
                func: m.method.clone(),
                ty,
                args,
            }
        }
        syn::Expr::Array(a) => ExprKind::Dims(
            a.elems
                .iter()
                .map(parse_dim_expr)
                .collect::<syn::Result<Vec<_>>>()?,
        ),
        syn::Expr::Tuple(t) => {
            ExprKind::Tuple(t.elems.iter().map(expr).collect::<syn::Result<Vec<_>>>()?)
        }
        syn::Expr::If(_) => return Err(unsupported(e, "`if` (use `select(cond, a, b)`)")),
        syn::Expr::ForLoop(_) | syn::Expr::While(_) | syn::Expr::Loop(_) => {
            return Err(unsupported(
                e,
                "loops (kernels are whole-tensor expressions)",
            ))
        }
        syn::Expr::Index(_) => return Err(unsupported(e, "indexing")),
        syn::Expr::Field(_) => return Err(unsupported(e, "field access")),
        syn::Expr::Closure(_) => return Err(unsupported(e, "closures")),
        syn::Expr::Macro(_) => return Err(unsupported(e, "macros")),
        syn::Expr::Cast(_) => return Err(unsupported(e, "`as` casts (use `cast::<f32>(x)`)")),
        syn::Expr::Reference(_) => return Err(unsupported(e, "references")),
        syn::Expr::Assign(_) => return Err(unsupported(e, "assignment")),
        syn::Expr::Block(_) => return Err(unsupported(e, "blocks")),
        syn::Expr::Match(_) => return Err(unsupported(e, "`match`")),
        _ => return Err(unsupported(e, "this expression")),
    };
    Ok(Expr { kind, sp })
}

fn check_suffix(suffix: &str, t: &impl ToTokens) -> syn::Result<()> {
    if suffix.is_empty() {
        Ok(())
    } else {
        Err(Sp::of(t).error(format!(
            "literal suffix `{suffix}` is not allowed in a kernel: literals take the dtype of their context"
        )))
    }
}

fn turbofish_dtype(ab: &syn::AngleBracketedGenericArguments) -> syn::Result<(DType, Sp)> {
    let args: Vec<_> = ab.args.iter().collect();
    if let [syn::GenericArgument::Type(t)] = args.as_slice() {
        let name = t.to_token_stream().to_string();
        if let Some(d) = DType::from_name(&name) {
            return Ok((d, Sp::of(t)));
        }
        return Err(Sp::of(t).error(format!(
            "unknown dtype `{name}`: supported dtypes are f32, i32, u32 and bool"
        )));
    }
    Err(Sp::of(ab).error("expected one dtype, like `cast::<f32>(x)`"))
}

/// Span of an ident for errors.
pub fn ident_sp(id: &syn::Ident) -> Sp {
    Sp(id.span(), id.span())
}
