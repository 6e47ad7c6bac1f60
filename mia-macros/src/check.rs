//! `check`: dtype and symbolic-shape inference over the AST, building the primitive-op graph
//! as it goes. Every error carries the span of the offending sub-expression; a failed
//! sub-expression becomes `Poison`, so one mistake is reported once and independent mistakes
//! are all reported.

use crate::ast::{self, shape_text, DType, Dim, Expr, ExprKind, Kernel, Lit, ParamTy, Sp};
use crate::dims;
use crate::graph::{BinOp, Const, Graph, NodeId, Op, RedOp, UnOp};
use std::collections::HashMap;

/// A checked value: a graph node, a literal that takes its dtype from context, or poison.
#[derive(Clone, Debug)]
enum Val {
    Node(NodeId),
    Lit(Lit),
    Poison,
}

struct Checker<'k> {
    k: &'k Kernel,
    g: Graph,
    env: HashMap<String, Val>,
    errs: Vec<syn::Error>,
    /// Symbols that some tensor argument binds as a whole dimension.
    bound: Vec<String>,
}

/// Type-checks the kernel and returns its graph, or every error found.
pub fn check(k: &Kernel) -> Result<Graph, Vec<syn::Error>> {
    let mut c = Checker {
        k,
        g: Graph::default(),
        env: HashMap::new(),
        errs: Vec::new(),
        bound: Vec::new(),
    };
    c.signature();
    for l in &k.lets {
        let mut v = c.expr(&l.value);
        if let Some((ty, sp)) = &l.ty {
            v = c.declared(v, ty, *sp, l);
        }
        c.env.insert(l.name.to_string(), v);
    }
    let tail = match &k.tail.kind {
        ExprKind::Tuple(items) => items.iter().map(|e| (c.expr(e), e.sp)).collect::<Vec<_>>(),
        _ => vec![(c.expr(&k.tail), k.tail.sp)],
    };
    c.outputs(tail);
    if c.errs.is_empty() {
        Ok(c.g)
    } else {
        Err(c.errs)
    }
}

const FUNCTIONS: &str =
    "exp ln sqrt rsqrt abs neg tanh sigmoid relu gelu gelu_tanh silu sin cos pow \
maximum minimum select cast sum max min mean softmax layer_norm rms_norm matmul transpose reshape \
gather causal";

impl Checker<'_> {
    fn signature(&mut self) {
        let (mut ti, mut si) = (0, 0);
        for p in &self.k.params {
            let v = match &p.ty {
                ParamTy::Tensor { dtype, dims } => {
                    for d in dims {
                        if let Dim::Sym(s) = d {
                            if !self.bound.contains(s) {
                                self.bound.push(s.clone());
                            }
                        }
                    }
                    ti += 1;
                    self.g.add(Op::Input(ti - 1), *dtype, dims.clone())
                }
                ParamTy::Scalar(dtype) => {
                    si += 1;
                    self.g.add(Op::Scalar(si - 1), *dtype, vec![])
                }
            };
            if self.env.insert(p.name.to_string(), Val::Node(v)).is_some() {
                self.errs.push(
                    ast::ident_sp(&p.name)
                        .error(format!("parameter `{}` is declared twice", p.name)),
                );
            }
        }
        if ti == 0 {
            self.errs.push(Sp(self.k.name.span(), self.k.name.span()).error(
                "a kernel needs at least one tensor parameter: it runs on the device its tensors live on",
            ));
        }
        let mut unbound = Vec::new();
        for p in &self.k.params {
            if let ParamTy::Tensor { dims, .. } = &p.ty {
                self.check_bound(dims, p.sp, &mut unbound);
            }
        }
        for o in &self.k.outputs {
            self.check_bound(&o.dims, o.sp, &mut unbound);
        }
    }

    /// `let x: T = value;`: the value must have type `T` exactly (a literal takes `T`'s dtype).
    fn declared(&mut self, v: Val, ty: &ParamTy, sp: Sp, l: &ast::Let) -> Val {
        let (dtype, dims) = match ty {
            ParamTy::Tensor { dtype, dims } => (*dtype, dims.clone()),
            ParamTy::Scalar(d) => (*d, vec![]),
        };
        let mut unbound = Vec::new();
        self.check_bound(&dims, sp, &mut unbound);
        let id = match v {
            Val::Poison => return Val::Poison,
            Val::Lit(lit) => match self.lit_node(&lit, dtype, l.value.sp) {
                Some(n) => n,
                None => return Val::Poison,
            },
            Val::Node(n) => n,
        };
        let node = self.g.node(id).clone();
        // `graph!` renames inlined variables `name__N`; messages use the name as written.
        let full = l.name.to_string();
        let name = full.split("__").next().unwrap_or(&full);
        if node.dtype != dtype {
            self.errs.push(l.value.sp.error(format!(
                "dtype mismatch: `{}` is declared {} but its value is {}",
                name,
                dtype.name(),
                node.dtype.name()
            )));
            return Val::Poison;
        }
        if !unbound.is_empty() {
            return Val::Poison;
        }
        if !dims::same_shape(&node.shape, &dims) {
            self.errs.push(l.value.sp.error(format!(
                "shape mismatch: `{}` is declared {} but its value has shape {}",
                name,
                shape_text(&dims),
                shape_text(&node.shape)
            )));
            return Val::Poison;
        }
        Val::Node(id)
    }

    fn check_bound(&mut self, dims: &[Dim], sp: Sp, reported: &mut Vec<String>) {
        let mut syms = Vec::new();
        for d in dims {
            d.symbols(&mut syms);
        }
        for s in syms {
            if !self.bound.contains(&s) && !reported.contains(&s) {
                reported.push(s.clone());
                self.errs.push(sp.error(format!(
                    "shape symbol `{s}` is never bound: it must be a whole dimension of some tensor parameter, \
                     so its size can be read from the arguments when the kernel is called"
                )));
            }
        }
    }

    fn outputs(&mut self, tail: Vec<(Val, Sp)>) {
        let k = self.k;
        let tuple_body = matches!(k.tail.kind, ExprKind::Tuple(_));
        if tail.len() == k.outputs.len() && k.tuple_return != tuple_body {
            self.errs.push(k.tail.sp.error(if k.tuple_return {
                "the signature returns a tuple but the body returns a single tensor: write `(x,)`"
            } else {
                "the body returns a tuple but the signature declares a single tensor: drop the parentheses, or declare a tuple"
            }));
            return;
        }
        if tail.len() != k.outputs.len() {
            if !k.outputs.is_empty() {
                self.errs.push(k.tail.sp.error(format!(
                    "the kernel declares {} output(s) but its body returns {}",
                    k.outputs.len(),
                    tail.len()
                )));
            }
            return;
        }
        for ((v, sp), out) in tail.into_iter().zip(&k.outputs) {
            let id = match v {
                Val::Poison => continue,
                Val::Lit(l) => match self.lit_node(&l, out.dtype, sp) {
                    Some(n) => n,
                    None => continue,
                },
                Val::Node(n) => n,
            };
            let node = self.g.node(id).clone();
            if node.dtype != out.dtype {
                self.errs.push(sp.error(format!(
                    "dtype mismatch: the body returns {} but the signature declares {}",
                    node.dtype.name(),
                    out.dtype.name()
                )));
                continue;
            }
            if !dims::same_shape(&node.shape, &out.dims) {
                self.errs.push(sp.error(format!(
                    "shape mismatch: the body returns shape {} but the signature declares {}",
                    shape_text(&node.shape),
                    shape_text(&out.dims)
                )));
                continue;
            }
            self.g.outputs.push(id);
        }
    }

    fn expr(&mut self, e: &Expr) -> Val {
        match &e.kind {
            ExprKind::Var(id) => {
                match self.env.get(&id.to_string()) {
                    Some(v) => v.clone(),
                    None => {
                        self.errs.push(e.sp.error(format!("unknown name `{id}`: not a parameter or a `let` binding of this kernel")));
                        Val::Poison
                    }
                }
            }
            ExprKind::Lit(l) => Val::Lit(l.clone()),
            ExprKind::Neg(a) => {
                let a = self.expr(a);
                match a {
                    Val::Lit(Lit::Int(i)) => match i.checked_neg() {
                        Some(v) => Val::Lit(Lit::Int(v)),
                        None => {
                            self.errs.push(e.sp.error("integer literal is too large"));
                            Val::Poison
                        }
                    },
                    Val::Lit(Lit::Float(f)) => Val::Lit(Lit::Float(-f)),
                    other => self.unary(UnOp::Neg, other, e.sp, "neg"),
                }
            }
            ExprKind::Binary(op, a, b) => {
                let (va, vb) = (self.expr(a), self.expr(b));
                let op = match op {
                    ast::BinOp::Add => BinOp::Add,
                    ast::BinOp::Sub => BinOp::Sub,
                    ast::BinOp::Mul => BinOp::Mul,
                    ast::BinOp::Div => BinOp::Div,
                    ast::BinOp::Lt => BinOp::Lt,
                    ast::BinOp::Le => BinOp::Le,
                    ast::BinOp::Gt => BinOp::Gt,
                    ast::BinOp::Ge => BinOp::Ge,
                    ast::BinOp::Eq => BinOp::Eq,
                    ast::BinOp::Ne => BinOp::Ne,
                };
                self.binary(op, (va, a.sp), (vb, b.sp), e.sp)
            }
            ExprKind::Call { func, ty, args } => self.call(func, *ty, args, e.sp),
            ExprKind::Dims(_) => {
                self.errs.push(e.sp.error(
                    "a list of dimensions is only allowed as the shape argument of `reshape`",
                ));
                Val::Poison
            }
            ExprKind::Tuple(_) => {
                self.errs.push(e.sp.error(
                    "tuples are only allowed as the final expression, to return several tensors",
                ));
                Val::Poison
            }
        }
    }

    /// Turns a literal into a constant node of `dtype`, or reports why it cannot be one.
    fn lit_node(&mut self, l: &Lit, dtype: DType, sp: Sp) -> Option<NodeId> {
        let c = match (l, dtype) {
            (Lit::Float(f), DType::F32) if f.is_finite() && (*f as f32).is_infinite() => {
                self.errs.push(sp.error(format!(
                    "literal {f} is too large for f32 (its largest value is {:e})",
                    f32::MAX
                )));
                return None;
            }
            (Lit::Float(f), DType::F32) => Const::f32(*f as f32),
            (Lit::Int(i), DType::F32) => Const::f32(*i as f32),
            (Lit::Int(i), DType::I32) if i32::try_from(*i).is_ok() => Const {
                dtype,
                bits: *i as i32 as u32,
            },
            (Lit::Int(i), DType::U32) if u32::try_from(*i).is_ok() => Const {
                dtype,
                bits: *i as u32,
            },
            (Lit::Bool(b), DType::Bool) => Const {
                dtype,
                bits: *b as u32,
            },
            (Lit::Int(i), DType::I32 | DType::U32) => {
                self.errs
                    .push(sp.error(format!("literal {i} does not fit in {}", dtype.name())));
                return None;
            }
            _ => {
                let what = match l {
                    Lit::Float(_) => "a float literal",
                    Lit::Int(_) => "an integer literal",
                    Lit::Bool(_) => "a bool literal",
                };
                self.errs.push(sp.error(format!(
                    "dtype mismatch: {what} cannot be used as {} here (use cast::<T>(..) to convert)",
                    dtype.name()
                )));
                return None;
            }
        };
        Some(self.g.add(Op::Const(c), dtype, vec![]))
    }

    /// A literal with no context: floats and integers become f32, bools bool.
    fn default_node(&mut self, v: Val, sp: Sp) -> Option<NodeId> {
        match v {
            Val::Node(n) => Some(n),
            Val::Lit(l) => {
                let dt = if matches!(l, Lit::Bool(_)) {
                    DType::Bool
                } else {
                    DType::F32
                };
                self.lit_node(&l, dt, sp)
            }
            Val::Poison => None,
        }
    }

    /// Brings values to one dtype: literals adopt the dtype of the first tensor operand.
    fn unify(&mut self, vals: Vec<(Val, Sp)>, sp: Sp, what: &str) -> Option<Vec<NodeId>> {
        if vals.iter().any(|(v, _)| matches!(v, Val::Poison)) {
            return None;
        }
        let dtype = vals.iter().find_map(|(v, _)| match v {
            Val::Node(n) => Some(self.g.node(*n).dtype),
            _ => None,
        });
        let mut out = Vec::new();
        let mut first: Option<(DType, Sp)> = None;
        for (v, vsp) in vals {
            let id = match (v, dtype) {
                (Val::Lit(l), Some(dt)) => self.lit_node(&l, dt, vsp)?,
                (v, _) => self.default_node(v, vsp)?,
            };
            let dt = self.g.node(id).dtype;
            match first {
                None => first = Some((dt, vsp)),
                Some((f, _)) if f != dt => {
                    self.errs.push(sp.error(format!(
                        "dtype mismatch in {what}: {} and {} (no implicit conversion; use cast::<{}>(..))",
                        f.name(),
                        dt.name(),
                        f.name()
                    )));
                    return None;
                }
                _ => {}
            }
            out.push(id);
        }
        Some(out)
    }

    fn broadcast_all(&mut self, ids: &[NodeId], sp: Sp) -> Option<Vec<Dim>> {
        let mut shape = self.g.node(ids[0]).shape.clone();
        for &id in &ids[1..] {
            let other = self.g.node(id).shape.clone();
            match dims::broadcast(&shape, &other) {
                Ok(s) => shape = s,
                Err((a, b)) => {
                    self.errs.push(sp.error(format!(
                        "shape mismatch: cannot broadcast {} with {} (dimension {a} vs {b}; dimensions must be equal or 1)",
                        shape_text(&shape),
                        shape_text(&other)
                    )));
                    return None;
                }
            }
        }
        Some(shape)
    }

    /// `a op b`; `asp`/`bsp` are the operands' spans, blamed for a literal that does not fit.
    fn binary(&mut self, op: BinOp, (a, asp): (Val, Sp), (b, bsp): (Val, Sp), sp: Sp) -> Val {
        if let (Val::Lit(x), Val::Lit(y)) = (&a, &b) {
            if let Some(v) = fold(op, x, y) {
                return Val::Lit(v);
            }
            if matches!((x, y), (Lit::Int(_), Lit::Int(_)))
                && matches!(op, BinOp::Add | BinOp::Sub | BinOp::Mul)
            {
                self.errs
                    .push(sp.error("integer literal arithmetic overflows"));
                return Val::Poison;
            }
        }
        let sym = match op {
            BinOp::Add => "`+`",
            BinOp::Sub => "`-`",
            BinOp::Mul => "`*`",
            BinOp::Div => "`/`",
            BinOp::Pow => "pow",
            BinOp::Max => "maximum",
            BinOp::Min => "minimum",
            _ => "a comparison",
        };
        let Some(ids) = self.unify(vec![(a, asp), (b, bsp)], sp, sym) else {
            return Val::Poison;
        };
        let dt = self.g.node(ids[0]).dtype;
        let ok = match op {
            BinOp::Eq | BinOp::Ne => true,
            BinOp::Pow => dt.is_float(),
            _ => dt.is_numeric(),
        };
        if !ok {
            self.errs
                .push(sp.error(format!("{sym} is not defined for {} tensors", dt.name())));
            return Val::Poison;
        }
        let Some(shape) = self.broadcast_all(&ids, sp) else {
            return Val::Poison;
        };
        let out_dt = if op.is_comparison() { DType::Bool } else { dt };
        Val::Node(self.g.add(Op::Binary(op, ids[0], ids[1]), out_dt, shape))
    }

    fn unary(&mut self, op: UnOp, a: Val, sp: Sp, name: &str) -> Val {
        let Some(id) = self.default_node(a, sp) else {
            return Val::Poison;
        };
        let n = self.g.node(id).clone();
        let float_only = !matches!(op, UnOp::Neg | UnOp::Abs | UnOp::Relu);
        if (float_only && !n.dtype.is_float())
            || !n.dtype.is_numeric()
            || (op == UnOp::Neg && n.dtype == DType::U32)
        {
            self.errs.push(sp.error(format!(
                "`{name}` is not defined for {} tensors{}",
                n.dtype.name(),
                if float_only && n.dtype.is_numeric() {
                    " (convert first: cast::<f32>(x))"
                } else {
                    ""
                }
            )));
            return Val::Poison;
        }
        Val::Node(self.g.add(Op::Unary(op, id), n.dtype, n.shape))
    }

    fn axis(&mut self, e: &Expr, rank: usize, shape: &[Dim]) -> Option<usize> {
        let v = match &e.kind {
            ExprKind::Lit(Lit::Int(i)) => Some(*i),
            ExprKind::Neg(inner) => match &inner.kind {
                ExprKind::Lit(Lit::Int(i)) => Some(-*i),
                _ => None,
            },
            _ => None,
        };
        let Some(v) = v else {
            self.errs
                .push(e.sp.error("an axis must be an integer literal, like `-1` or `0`"));
            return None;
        };
        let r = rank as i64;
        if rank == 0 {
            self.errs.push(e.sp.error(format!(
                "axis {v} is out of range: a rank-0 tensor (a single value) has no axes"
            )));
            return None;
        }
        if v < -r || v >= r {
            self.errs.push(e.sp.error(format!(
                "axis {v} is out of range for a tensor of rank {rank} (shape {}); valid axes are {}..={}",
                shape_text(shape),
                -r,
                r - 1
            )));
            return None;
        }
        Some(if v < 0 { (v + r) as usize } else { v as usize })
    }

    fn reduce(&mut self, op: RedOp, x: NodeId, axis: usize) -> NodeId {
        let n = self.g.node(x).clone();
        let mut shape = n.shape.clone();
        shape[axis] = Dim::Lit(1);
        self.g.add(Op::Reduce(op, axis, x), n.dtype, shape)
    }

    fn arity(
        &mut self,
        func: &syn::Ident,
        args: &[Expr],
        want: &[usize],
        sp: Sp,
        usage: &str,
    ) -> bool {
        if want.contains(&args.len()) {
            return true;
        }
        self.errs.push(sp.error(format!(
            "wrong number of arguments: `{func}` takes {} but {} were given (usage: `{usage}`)",
            want.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(" or "),
            args.len()
        )));
        false
    }

    fn call(&mut self, func: &syn::Ident, ty: Option<(DType, Sp)>, args: &[Expr], sp: Sp) -> Val {
        let name = func.to_string();
        let unary = match name.as_str() {
            "exp" => Some(UnOp::Exp),
            "ln" => Some(UnOp::Ln),
            "sqrt" => Some(UnOp::Sqrt),
            "rsqrt" => Some(UnOp::Rsqrt),
            "abs" => Some(UnOp::Abs),
            "neg" => Some(UnOp::Neg),
            "tanh" => Some(UnOp::Tanh),
            "sigmoid" => Some(UnOp::Sigmoid),
            "relu" => Some(UnOp::Relu),
            "gelu" => Some(UnOp::Gelu),
            "gelu_tanh" => Some(UnOp::GeluTanh),
            "silu" => Some(UnOp::Silu),
            "sin" => Some(UnOp::Sin),
            "cos" => Some(UnOp::Cos),
            _ => None,
        };
        if ty.is_some() && name != "cast" {
            self.errs
                .push(sp.error(format!("`{name}` takes no type argument")));
            return Val::Poison;
        }
        if let Some(op) = unary {
            if !self.arity(func, args, &[1], sp, &format!("{name}(x)")) {
                return Val::Poison;
            }
            let a = self.expr(&args[0]);
            return self.unary(op, a, sp, &name);
        }
        let binary = match name.as_str() {
            "pow" => Some(BinOp::Pow),
            "maximum" => Some(BinOp::Max),
            "minimum" => Some(BinOp::Min),
            _ => None,
        };
        if let Some(op) = binary {
            if !self.arity(func, args, &[2], sp, &format!("{name}(a, b)")) {
                return Val::Poison;
            }
            let (a, b) = (self.expr(&args[0]), self.expr(&args[1]));
            return self.binary(op, (a, args[0].sp), (b, args[1].sp), sp);
        }
        let red = match name.as_str() {
            "sum" => Some(RedOp::Sum),
            "max" => Some(RedOp::Max),
            "min" => Some(RedOp::Min),
            "mean" => Some(RedOp::Mean),
            _ => None,
        };
        if let Some(op) = red {
            if !self.arity(func, args, &[2], sp, &format!("x.{name}(axis)")) {
                return Val::Poison;
            }
            let v = self.expr(&args[0]);
            let Some(x) = self.default_node(v, args[0].sp) else {
                return Val::Poison;
            };
            let n = self.g.node(x).clone();
            let ok = match op {
                RedOp::Mean => n.dtype.is_float(),
                _ => n.dtype.is_numeric(),
            };
            if !ok {
                self.errs.push(sp.error(format!(
                    "`{name}` is not defined for {} tensors",
                    n.dtype.name()
                )));
                return Val::Poison;
            }
            let Some(axis) = self.axis(&args[1], n.shape.len(), &n.shape) else {
                return Val::Poison;
            };
            return Val::Node(self.reduce(op, x, axis));
        }
        match name.as_str() {
            "select" => {
                if !self.arity(func, args, &[3], sp, "select(cond, a, b)") {
                    return Val::Poison;
                }
                let c = self.expr(&args[0]);
                let (a, b) = (self.expr(&args[1]), self.expr(&args[2]));
                let Some(c) = self.default_node(c, args[0].sp) else {
                    return Val::Poison;
                };
                if self.g.node(c).dtype != DType::Bool {
                    self.errs.push(args[0].sp.error(format!(
                        "dtype mismatch: the condition of `select` must be bool, got {} (compare first, like `x > 0.0`)",
                        self.g.node(c).dtype.name()
                    )));
                    return Val::Poison;
                }
                let Some(ab) = self.unify(vec![(a, args[1].sp), (b, args[2].sp)], sp, "select")
                else {
                    return Val::Poison;
                };
                let Some(shape) = self.broadcast_all(&[c, ab[0], ab[1]], sp) else {
                    return Val::Poison;
                };
                let dt = self.g.node(ab[0]).dtype;
                Val::Node(self.g.add(Op::Select(c, ab[0], ab[1]), dt, shape))
            }
            "cast" => {
                if !self.arity(func, args, &[1], sp, "cast::<f32>(x)") {
                    return Val::Poison;
                }
                let Some((dt, _)) = ty else {
                    self.errs
                        .push(sp.error("`cast` needs a target dtype: `cast::<f32>(x)`"));
                    return Val::Poison;
                };
                let v = self.expr(&args[0]);
                let Some(x) = self.default_node(v, args[0].sp) else {
                    return Val::Poison;
                };
                let n = self.g.node(x).clone();
                if n.dtype == dt {
                    return Val::Node(x);
                }
                Val::Node(self.g.add(Op::Cast(x), dt, n.shape))
            }
            "softmax" => {
                if !self.arity(func, args, &[2], sp, "softmax(x, axis)") {
                    return Val::Poison;
                }
                let v = self.expr(&args[0]);
                let Some(x) = self.float_tensor(v, args[0].sp, "softmax") else {
                    return Val::Poison;
                };
                let shape = self.g.node(x).shape.clone();
                let Some(axis) = self.axis(&args[1], shape.len(), &shape) else {
                    return Val::Poison;
                };
                let m = self.reduce(RedOp::Max, x, axis);
                let d = self
                    .g
                    .add(Op::Binary(BinOp::Sub, x, m), DType::F32, shape.clone());
                let e = self
                    .g
                    .add(Op::Unary(UnOp::Exp, d), DType::F32, shape.clone());
                let s = self.reduce(RedOp::Sum, e, axis);
                Val::Node(self.g.add(Op::Binary(BinOp::Div, e, s), DType::F32, shape))
            }
            "layer_norm" | "rms_norm" => {
                let layer = name == "layer_norm";
                let usage = if layer {
                    "layer_norm(x, gamma, beta, eps)"
                } else {
                    "rms_norm(x, gamma, eps)"
                };
                if !self.arity(func, args, &[if layer { 4 } else { 3 }], sp, usage) {
                    return Val::Poison;
                }
                let vals: Vec<Val> = args.iter().map(|a| self.expr(a)).collect();
                let Some(x) = self.float_tensor(vals[0].clone(), args[0].sp, &name) else {
                    return Val::Poison;
                };
                let shape = self.g.node(x).shape.clone();
                if shape.is_empty() {
                    self.errs.push(
                        args[0]
                            .sp
                            .error(format!("`{name}` needs a tensor of rank 1 or more")),
                    );
                    return Val::Poison;
                }
                let axis = shape.len() - 1;
                let mut ids = vec![x];
                for (v, a) in vals[1..].iter().zip(&args[1..]) {
                    let id = match v {
                        Val::Lit(l) => self.lit_node(l, DType::F32, a.sp),
                        other => self.float_tensor(other.clone(), a.sp, &name),
                    };
                    let Some(id) = id else { return Val::Poison };
                    ids.push(id);
                }
                let eps = *ids.last().unwrap_or(&x);
                if !self.g.node(eps).shape.is_empty() {
                    self.errs.push(args[args.len() - 1].sp.error(format!(
                        "the `eps` of `{name}` must be a scalar (a literal or an f32 parameter)"
                    )));
                    return Val::Poison;
                }
                let f = DType::F32;
                let mut row = shape.clone();
                row[axis] = Dim::Lit(1);
                let (centered, var) = if layer {
                    let mu = self.reduce(RedOp::Mean, x, axis);
                    let xc = self.g.add(Op::Binary(BinOp::Sub, x, mu), f, shape.clone());
                    let sq = self.g.add(Op::Binary(BinOp::Mul, xc, xc), f, shape.clone());
                    (xc, self.reduce(RedOp::Mean, sq, axis))
                } else {
                    let sq = self.g.add(Op::Binary(BinOp::Mul, x, x), f, shape.clone());
                    (x, self.reduce(RedOp::Mean, sq, axis))
                };
                let ve = self.g.add(Op::Binary(BinOp::Add, var, eps), f, row.clone());
                let inv = self.g.add(Op::Unary(UnOp::Rsqrt, ve), f, row);
                let norm = self
                    .g
                    .add(Op::Binary(BinOp::Mul, centered, inv), f, shape.clone());
                let Some(s1) = self.broadcast_all(&[norm, ids[1]], args[1].sp) else {
                    return Val::Poison;
                };
                let mut y = self
                    .g
                    .add(Op::Binary(BinOp::Mul, norm, ids[1]), f, s1.clone());
                if layer {
                    let Some(s2) = self.broadcast_all(&[y, ids[2]], args[2].sp) else {
                        return Val::Poison;
                    };
                    y = self.g.add(Op::Binary(BinOp::Add, y, ids[2]), f, s2);
                }
                Val::Node(y)
            }
            "transpose" => {
                if !self.arity(func, args, &[3], sp, "transpose(x, i, j)") {
                    return Val::Poison;
                }
                let v = self.expr(&args[0]);
                let Some(x) = self.default_node(v, args[0].sp) else {
                    return Val::Poison;
                };
                let n = self.g.node(x).clone();
                let (Some(i), Some(j)) = (
                    self.axis(&args[1], n.shape.len(), &n.shape),
                    self.axis(&args[2], n.shape.len(), &n.shape),
                ) else {
                    return Val::Poison;
                };
                if i == j {
                    return Val::Node(x);
                }
                let mut shape = n.shape.clone();
                shape.swap(i, j);
                let (i, j) = (i.min(j), i.max(j));
                Val::Node(self.g.add(Op::Transpose(i, j, x), n.dtype, shape))
            }
            "reshape" => {
                if !self.arity(func, args, &[2], sp, "reshape(x, [N, D])") {
                    return Val::Poison;
                }
                let v = self.expr(&args[0]);
                let Some(x) = self.default_node(v, args[0].sp) else {
                    return Val::Poison;
                };
                let ExprKind::Dims(new) = &args[1].kind else {
                    self.errs.push(args[1].sp.error("the shape of `reshape` is written as a list of dimensions: `[N, 4, {D / 4}]`"));
                    return Val::Poison;
                };
                let mut unbound = Vec::new();
                self.check_bound(new, args[1].sp, &mut unbound);
                if !unbound.is_empty() {
                    return Val::Poison;
                }
                let n = self.g.node(x).clone();
                if !dims::same_count(&n.shape, new) {
                    self.errs.push(sp.error(format!(
                        "shape mismatch in reshape: {} and {} do not have the same number of elements",
                        shape_text(&n.shape),
                        shape_text(new)
                    )));
                    return Val::Poison;
                }
                if dims::same_shape(&n.shape, new) {
                    return Val::Node(x);
                }
                Val::Node(self.g.add(Op::Reshape(x), n.dtype, new.clone()))
            }
            "gather" => {
                if !self.arity(func, args, &[2], sp, "gather(table, ids)") {
                    return Val::Poison;
                }
                let (vt, vi) = (self.expr(&args[0]), self.expr(&args[1]));
                let (Some(t), Some(i)) = (
                    self.default_node(vt, args[0].sp),
                    self.default_node(vi, args[1].sp),
                ) else {
                    return Val::Poison;
                };
                let (tn, inode) = (self.g.node(t).clone(), self.g.node(i).clone());
                if tn.shape.len() != 2 {
                    self.errs.push(args[0].sp.error(format!(
                        "`gather` looks rows up in a table of rank 2 `[rows, width]`; this one has shape {}",
                        shape_text(&tn.shape)
                    )));
                    return Val::Poison;
                }
                if !matches!(inode.dtype, DType::I32 | DType::U32) {
                    self.errs.push(args[1].sp.error(format!(
                        "dtype mismatch: the indices of `gather` must be i32 or u32, got {}",
                        inode.dtype.name()
                    )));
                    return Val::Poison;
                }
                let mut shape = inode.shape.clone();
                shape.push(tn.shape[1].clone());
                Val::Node(self.g.add(Op::Gather(t, i), tn.dtype, shape))
            }
            "causal" => {
                if !self.arity(func, args, &[1], sp, "causal(scores)") {
                    return Val::Poison;
                }
                let v = self.expr(&args[0]);
                let Some(x) = self.float_tensor(v, args[0].sp, "causal") else {
                    return Val::Poison;
                };
                let shape = self.g.node(x).shape.clone();
                if shape.len() < 2 {
                    self.errs.push(args[0].sp.error(format!(
                        "`causal` masks a matrix of scores `[.., T, S]` (rank 2 or more); this one has shape {}",
                        shape_text(&shape)
                    )));
                    return Val::Poison;
                }
                Val::Node(self.g.add(Op::Causal(x), DType::F32, shape))
            }
            "matmul" => {
                if !self.arity(func, args, &[2], sp, "matmul(a, b)") {
                    return Val::Poison;
                }
                let (va, vb) = (self.expr(&args[0]), self.expr(&args[1]));
                let a = self.float_tensor(va, args[0].sp, "matmul");
                let b = self.float_tensor(vb, args[1].sp, "matmul");
                let (Some(a), Some(b)) = (a, b) else {
                    return Val::Poison;
                };
                match self.matmul_shape(a, b, (args[0].sp, args[1].sp), sp) {
                    Some(shape) => Val::Node(self.g.add(Op::MatMul(a, b), DType::F32, shape)),
                    None => Val::Poison,
                }
            }
            _ => {
                self.errs.push(Sp(func.span(), func.span()).error(format!(
                    "unknown function `{name}`; kernel functions are: {FUNCTIONS}"
                )));
                Val::Poison
            }
        }
    }

    /// `[.., M, K] x [.., K, N] -> [.., M, N]`: leading dimensions broadcast like NumPy's.
    fn matmul_shape(
        &mut self,
        a: NodeId,
        b: NodeId,
        (asp, bsp): (Sp, Sp),
        sp: Sp,
    ) -> Option<Vec<Dim>> {
        let (sa, sb) = (self.g.node(a).shape.clone(), self.g.node(b).shape.clone());
        for (s, esp, side) in [(&sa, asp, "left"), (&sb, bsp, "right")] {
            if s.len() < 2 {
                self.errs.push(esp.error(format!(
                    "`matmul` needs matrices (rank 2 or more) on both sides; the {side} operand has shape {}",
                    shape_text(s)
                )));
                return None;
            }
        }
        let (ra, rb) = (sa.len(), sb.len());
        if !dims::same_dim(&sa[ra - 1], &sb[rb - 2]) {
            self.errs.push(sp.error(format!(
                "matmul inner-dimension mismatch: {} x {} (the last dimension of the left operand, {}, must equal the second-to-last of the right, {})",
                shape_text(&sa),
                shape_text(&sb),
                sa[ra - 1],
                sb[rb - 2]
            )));
            return None;
        }
        let mut shape = match dims::broadcast(&sa[..ra - 2], &sb[..rb - 2]) {
            Ok(s) => s,
            Err((x, y)) => {
                self.errs.push(sp.error(format!(
                    "matmul batch dimensions do not broadcast: {} x {} (batch dimension {x} vs {y}; dimensions must be equal or 1)",
                    shape_text(&sa),
                    shape_text(&sb)
                )));
                return None;
            }
        };
        shape.push(sa[ra - 2].clone());
        shape.push(sb[rb - 1].clone());
        Some(shape)
    }

    fn float_tensor(&mut self, v: Val, sp: Sp, what: &str) -> Option<NodeId> {
        let id = self.default_node(v, sp)?;
        let dt = self.g.node(id).dtype;
        if dt != DType::F32 {
            self.errs.push(sp.error(format!(
                "dtype mismatch: `{what}` needs f32, got {}",
                dt.name()
            )));
            return None;
        }
        Some(id)
    }
}

/// Constant-folds an operation on two literals, keeping them context-typed.
fn fold(op: BinOp, a: &Lit, b: &Lit) -> Option<Lit> {
    match (a, b) {
        (Lit::Int(x), Lit::Int(y)) => Some(Lit::Int(match op {
            BinOp::Add => x.checked_add(*y)?,
            BinOp::Sub => x.checked_sub(*y)?,
            BinOp::Mul => x.checked_mul(*y)?,
            _ => return None,
        })),
        (Lit::Float(_) | Lit::Int(_), Lit::Float(_) | Lit::Int(_)) => {
            let f = |l: &Lit| match l {
                Lit::Int(i) => *i as f64,
                Lit::Float(f) => *f,
                Lit::Bool(_) => 0.0,
            };
            let (x, y) = (f(a), f(b));
            Some(Lit::Float(match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
                _ => return None,
            }))
        }
        _ => None,
    }
}
