//! Recognises attention in the primitive graph, so `fuse` can give it one flash-style pass:
//! `matmul(softmax(matmul(q, kᵀ) · scale + mask, -1), v)`, where the scale is any product of
//! uniform factors (scalar parameters, literals and arithmetic on them) and the mask is one
//! additive tensor that broadcasts to the scores. Softmax is already expanded into
//! `e = exp(x − max(x)); e / sum(e)`, so the pattern is matched on those primitives.
//!
//! `causal(..)` may wrap the whole scores (`softmax(causal(qkᵀ · scale + mask), -1)`), or the
//! product alone under a scale that is a positive constant and no mask
//! (`causal(qkᵀ) · 0.125`): both equal the runtime's causal attention exactly, since a
//! positive finite factor keeps `-inf` as `-inf`. Other placements (a scalar-parameter scale,
//! whose sign is unknown, or a mask added after `causal`, which could be `+inf`) are not
//! provably the same, so they stay unfused and `causal` runs as its own pass.
//!
//! A match needs every node between the two products (scores, max, exp, sum, probabilities)
//! to be used by the pattern alone: a kernel that also returns the probabilities keeps the
//! unfused passes, which compute them.

use crate::graph::{BinOp, Graph, NodeId, Op, RedOp, UnOp};
use std::collections::{BTreeSet, HashMap};

/// One recognised attention. Its pass stores `root` (the `P · V` product), or the transpose
/// of it named in `store`.
#[derive(Clone, Debug, PartialEq)]
pub struct Attention {
    pub root: NodeId,
    /// `[.., T, E]`.
    pub q: NodeId,
    /// `[.., E, S]` (usually a transposed view of K).
    pub kt: NodeId,
    /// `[.., S, Ev]`.
    pub v: NodeId,
    /// Additive mask broadcasting to `[.., T, S]`.
    pub mask: Option<NodeId>,
    /// Uniform factors of the scale: `(divides, node)`.
    pub scale: Vec<(bool, NodeId)>,
    /// Whether a `causal(..)` masks the scores (bottom-right aligned).
    pub causal: bool,
    /// Nodes the pass computes internally (never materialized).
    pub inner: BTreeSet<NodeId>,
    /// `transpose(root, i, j)`, when the pass stores that instead of `root` (set by `fuse`:
    /// heads merged back, `[B, H, T, D] -> [B, T, H, D]`, are written in place, no copy).
    pub store: Option<(NodeId, usize, usize)>,
}

impl Attention {
    /// The node whose buffer the pass writes.
    pub fn stored(&self) -> NodeId {
        self.store.map_or(self.root, |(t, _, _)| t)
    }

    /// The stored buffer's axis that holds axis `k` of the product.
    pub fn stored_axis(&self, k: usize) -> usize {
        match self.store {
            Some((_, i, j)) if k == i => j,
            Some((_, i, j)) if k == j => i,
            _ => k,
        }
    }

    /// The nodes the pass reads from memory.
    pub fn operands(&self) -> Vec<NodeId> {
        let mut v = vec![self.q, self.kt, self.v];
        v.extend(self.mask);
        v
    }
}

/// Whether `n` is the same value for every element: constants, scalar parameters and
/// arithmetic on them (what the generated code can evaluate once, on the host).
pub fn is_uniform(g: &Graph, n: NodeId) -> bool {
    let node = g.node(n);
    if !node.shape.is_empty() || node.dtype != crate::ast::DType::F32 {
        return false;
    }
    match node.op {
        Op::Const(_) | Op::Scalar(_) => true,
        Op::Unary(UnOp::Neg | UnOp::Sqrt | UnOp::Rsqrt | UnOp::Exp | UnOp::Ln | UnOp::Abs, a) => {
            is_uniform(g, a)
        }
        Op::Binary(BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div, a, b) => {
            is_uniform(g, a) && is_uniform(g, b)
        }
        _ => false,
    }
}

/// Every attention in the live graph.
pub fn find(g: &Graph) -> Vec<Attention> {
    let live = g.live();
    let mut users: HashMap<NodeId, usize> = HashMap::new();
    for &n in &live {
        for o in g.node(n).operands() {
            *users.entry(o).or_default() += 1;
        }
    }
    for &o in &g.outputs {
        *users.entry(o).or_default() += 1;
    }
    live.iter()
        .filter_map(|&n| matches(g, n, &|x| users.get(&x).copied().unwrap_or(0)))
        .collect()
}

fn matches(g: &Graph, root: NodeId, users: &dyn Fn(NodeId) -> usize) -> Option<Attention> {
    let Op::MatMul(p, v) = g.node(root).op else {
        return None;
    };
    let last = g.node(p).shape.len().checked_sub(1)?;
    // p = e / sum(e), e = exp(x - max(x)), all along the last axis.
    let Op::Binary(BinOp::Div, e, sum) = g.node(p).op else {
        return None;
    };
    let Op::Reduce(RedOp::Sum, ax1, e2) = g.node(sum).op else {
        return None;
    };
    let Op::Unary(UnOp::Exp, d) = g.node(e).op else {
        return None;
    };
    let Op::Binary(BinOp::Sub, x, max) = g.node(d).op else {
        return None;
    };
    let Op::Reduce(RedOp::Max, ax2, x2) = g.node(max).op else {
        return None;
    };
    if e2 != e || x2 != x || ax1 != last || ax2 != last {
        return None;
    }
    let mut inner: BTreeSet<NodeId> = [p, sum, e, d, max, x].into();
    let mut s = Scores::default();
    let qk = s.parse(g, x, &mut inner)?;
    let Op::MatMul(q, kt) = g.node(qk).op else {
        return None;
    };
    // The scores keep the product's T and S (a mask may not stretch them).
    let (xs, qs) = (&g.node(x).shape, &g.node(qk).shape);
    if xs.len() < 2
        || qs.len() < 2
        || !crate::dims::same_shape(&xs[xs.len() - 2..], &qs[qs.len() - 2..])
    {
        return None;
    }
    // Each inner node is used exactly as the pattern uses it.
    let expected = |n: NodeId| match n {
        _ if n == x => 2,
        _ if n == e => 2,
        _ => 1,
    };
    if inner
        .iter()
        .any(|&n| users(n) != expected(n) || g.outputs.contains(&n))
    {
        return None;
    }
    Some(Attention {
        root,
        q,
        kt,
        v,
        mask: s.mask,
        scale: s.scale,
        causal: s.causal,
        inner,
        store: None,
    })
}

#[derive(Default)]
struct Scores {
    mask: Option<NodeId>,
    scale: Vec<(bool, NodeId)>,
    causal: bool,
}

/// The value of a uniform node built from literals alone (no scalar parameter).
fn constant(g: &Graph, n: NodeId) -> Option<f64> {
    let node = g.node(n);
    if !node.shape.is_empty() || node.dtype != crate::ast::DType::F32 {
        return None;
    }
    Some(match node.op {
        Op::Const(c) => f32::from_bits(c.bits) as f64,
        Op::Unary(op, a) => {
            let a = constant(g, a)?;
            match op {
                UnOp::Neg => -a,
                UnOp::Sqrt => a.sqrt(),
                UnOp::Rsqrt => 1.0 / a.sqrt(),
                UnOp::Exp => a.exp(),
                UnOp::Ln => a.ln(),
                UnOp::Abs => a.abs(),
                _ => return None,
            }
        }
        Op::Binary(op, a, b) => {
            let (a, b) = (constant(g, a)?, constant(g, b)?);
            match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// Whether `n` is a constant that is positive and finite in f32 (with a margin, so that the
/// f32 evaluation in the generated code cannot round it to 0 or overflow it to infinity).
fn positive_constant(g: &Graph, n: NodeId) -> bool {
    constant(g, n).is_some_and(|v| v.is_finite() && (1e-30..1e30).contains(&v))
}

impl Scores {
    /// Peels `+ mask`, `scale ·` and `/ scale` off `x` (outermost first) down to the `q · kᵀ`
    /// product; a mask inside a scale (`(qk + m) · s` scales the mask) does not match.
    fn parse(&mut self, g: &Graph, x: NodeId, inner: &mut BTreeSet<NodeId>) -> Option<NodeId> {
        inner.insert(x);
        match g.node(x).op {
            Op::MatMul(..) => Some(x),
            // Outermost, or under positive constant factors only (see the module docs).
            Op::Causal(a)
                if !self.causal
                    && self.mask.is_none()
                    && self.scale.iter().all(|&(_, u)| positive_constant(g, u)) =>
            {
                self.causal = true;
                self.parse(g, a, inner)
            }
            Op::Binary(BinOp::Mul, a, b) => {
                let (t, u) = if is_uniform(g, b) { (a, b) } else { (b, a) };
                if !is_uniform(g, u) {
                    return None;
                }
                self.scale.push((false, u));
                self.parse(g, t, inner)
            }
            Op::Binary(BinOp::Div, a, b) if is_uniform(g, b) => {
                self.scale.push((true, b));
                self.parse(g, a, inner)
            }
            Op::Binary(BinOp::Add, a, b) if self.mask.is_none() && self.scale.is_empty() => {
                // The mask is the side that is not the scores' chain (a tensor, not uniform).
                for (t, m) in [(a, b), (b, a)] {
                    if is_uniform(g, m) || g.node(m).shape.is_empty() {
                        continue;
                    }
                    if reaches_matmul(g, t) && !reaches_matmul(g, m) {
                        self.mask = Some(m);
                        return self.parse(g, t, inner);
                    }
                }
                None
            }
            _ => None,
        }
    }
}

/// Whether `n` is a matmul seen through scale and mask arithmetic.
fn reaches_matmul(g: &Graph, n: NodeId) -> bool {
    match g.node(n).op {
        Op::MatMul(..) => true,
        Op::Binary(BinOp::Mul | BinOp::Div | BinOp::Add, a, b) => {
            reaches_matmul(g, a) || reaches_matmul(g, b)
        }
        Op::Causal(a) => reaches_matmul(g, a),
        _ => false,
    }
}
