//! `fuse`: partitions the live graph into passes over memory.
//!
//! Every value is computed inside the pass that consumes it (elementwise work is recomputed
//! rather than stored) unless it must be *materialized* into a buffer:
//! - a reduction whose result is consumed by a pass over a different domain;
//! - the operand of a layout op (`transpose`, `reshape`) that is not already in memory: layout
//!   ops on tensors in memory are free strided views.
//!
//! A pass is either elementwise over its output's shape, or a row pass over the input shape
//! `S` of its reductions along one axis: one workgroup (CPU: one task) per row runs the
//! reductions in order (phases) and then the elementwise tail, so softmax, layer norm and RMS
//! norm are one dispatch each. A pass may also be a matrix product over its output's shape:
//! the elementwise work after it (bias, activation, residual, scaling) is its epilogue, and
//! several products of the same left operand (`silu(x·W1) * (x·W3)`) share one pass. Matmul
//! operands are read from memory (views included) or computed elementwise from it as their
//! tiles load (a [`prologue`]); other computed operands are materialized.
//! Attention (see [`crate::attend`]) is one pass of its own: the scores, softmax and both
//! products never touch memory, and when its result is only read transposed from memory
//! (heads merged back before a reshape) it writes that transpose directly.

use crate::ast::{DType, Dim};
use crate::attend::{self, Attention};
use crate::dims::same_shape;
use crate::graph::{Graph, NodeId, Op};
use std::collections::BTreeSet;

/// Where a buffer comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufKind {
    /// The i-th tensor parameter.
    Input(usize),
    /// The i-th returned tensor.
    Output(usize),
    /// An intermediate between passes.
    Temp,
}

#[derive(Clone, Debug)]
pub struct Buffer {
    pub kind: BufKind,
    /// The node whose value the buffer holds.
    pub node: NodeId,
    pub shape: Vec<Dim>,
}

/// The loop nest of a pass.
#[derive(Clone, Debug, PartialEq)]
pub enum Domain {
    Elementwise(Vec<Dim>),
    /// Rows of `shape` along `axis`.
    Rows(Vec<Dim>, usize),
    /// Matrix products of output `shape` whose left operand is the given node.
    MatMul(Vec<Dim>, NodeId),
    /// A flash-attention pass storing the attention's `P · V` product.
    Attention(Box<Attention>),
    /// A row lookup storing the gather node of this shape.
    Gather(Vec<Dim>),
    /// A `causal(..)` outside an attention, storing the causal node of this shape.
    Causal(Vec<Dim>),
}

#[derive(Clone, Debug)]
pub struct Pass {
    pub domain: Domain,
    /// Buffers written by this pass (outputs and temps), by index into `Fused::buffers`.
    pub stores: Vec<usize>,
}

#[derive(Debug)]
pub struct Fused {
    pub buffers: Vec<Buffer>,
    pub passes: Vec<Pass>,
}

impl Fused {
    /// The buffer holding `node`'s value, if it lives in memory (inputs and temps).
    pub fn buffer_of(&self, node: NodeId) -> Option<usize> {
        self.buffers
            .iter()
            .position(|b| b.node == node && matches!(b.kind, BufKind::Input(_) | BufKind::Temp))
    }
}

/// The reduction key of a node: (input shape, axis).
fn red_key(g: &Graph, n: NodeId) -> Option<(Vec<Dim>, usize)> {
    match g.node(n).op {
        Op::Reduce(_, axis, x) => Some((g.node(x).shape.clone(), axis)),
        _ => None,
    }
}

/// Nodes computed inside the pass that stores `root`: its cone up to buffers, with the
/// buffers it reads (views included, so a view of a temp orders its pass after the temp's).
/// An attention's root reads only the attention's operands.
fn cone(g: &Graph, root: NodeId, temps: &BTreeSet<NodeId>, attn: &[Attention]) -> Vec<NodeId> {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root];
    while let Some(n) = stack.pop() {
        if !seen.insert(n) {
            continue;
        }
        if n != root && temps.contains(&n) {
            continue;
        }
        if let Some(a) = attn.iter().find(|a| a.root == n) {
            stack.extend(a.operands());
        } else if !matches!(g.node(n).op, Op::Input(_)) {
            stack.extend(g.node(n).operands());
        }
    }
    seen.into_iter().collect()
}

/// The operand of a layout op is a view of memory when it is an input, a temp, or a chain of
/// views ending in one (transposes anywhere, reshapes only over contiguous memory).
fn needs_temp(g: &Graph, n: NodeId, contiguous: bool) -> Option<NodeId> {
    match g.node(n).op {
        Op::Input(_) => None,
        Op::Transpose(_, _, x) if !contiguous => needs_temp(g, x, false),
        Op::Reshape(x) => needs_temp(g, x, true),
        _ => Some(n),
    }
}

/// The tensor leaves of an elementwise expression computed inside a matrix product's tile
/// loads (its *prologue*: `matmul(relu(x) * s, w)`), or `None` when the operand is not one.
/// An operand is a prologue when it is computed by elementwise ops alone from f32 views of
/// memory (and scalars and constants), one of them as large as the operand (its main load).
/// An operand whose leaves would need a pass of their own is materialized whole instead: it is
/// then the epilogue of that pass, where it costs one evaluation per element rather than one
/// per tile load.
pub fn prologue(g: &Graph, n: NodeId) -> Option<Vec<NodeId>> {
    if !matches!(
        g.node(n).op,
        Op::Unary(..) | Op::Binary(..) | Op::Select(..) | Op::Cast(_)
    ) {
        return None;
    }
    let mut leaves = Vec::new();
    let mut stack = vec![n];
    let mut seen = BTreeSet::new();
    while let Some(x) = stack.pop() {
        if !seen.insert(x) {
            continue;
        }
        let node = g.node(x);
        match node.op {
            Op::Unary(..) | Op::Binary(..) | Op::Select(..) | Op::Cast(_) => {
                stack.extend(node.operands())
            }
            Op::Scalar(_) | Op::Const(_) => {}
            Op::Input(_) | Op::Transpose(..) | Op::Reshape(_)
                if node.dtype == DType::F32 && needs_temp(g, x, false).is_none() =>
            {
                leaves.push(x)
            }
            _ => return None,
        }
    }
    let full = &g.node(n).shape;
    leaves
        .iter()
        .any(|&l| same_shape(&g.node(l).shape, full))
        .then_some(leaves)
}

/// A matmul operand is read from memory: a view, a prologue, or else a temp.
fn operand_temp(g: &Graph, n: NodeId) -> Option<NodeId> {
    match prologue(g, n) {
        Some(_) => None,
        None => needs_temp(g, n, false),
    }
}

/// Values that layout ops, matmuls and attentions need in memory (see [`needs_temp`]); an
/// attention's product is stored by its own pass, so it is a temp when anything reads it.
fn layout_temps(g: &Graph, live: &[NodeId], attn: &[Attention]) -> BTreeSet<NodeId> {
    let inner: BTreeSet<NodeId> = attn.iter().flat_map(|a| a.inner.iter().copied()).collect();
    let mut temps: BTreeSet<NodeId> = live
        .iter()
        .filter(|n| !inner.contains(n) && !attn.iter().any(|a| a.root == **n))
        .flat_map(|&n| match g.node(n).op {
            Op::Transpose(_, _, x) => vec![needs_temp(g, x, false)],
            Op::Reshape(x) => vec![needs_temp(g, x, true)],
            Op::MatMul(a, b) => vec![operand_temp(g, a), operand_temp(g, b)],
            _ => vec![],
        })
        .flatten()
        .collect();
    let mut own = Vec::new();
    for a in attn {
        temps.extend(
            a.operands()
                .into_iter()
                .filter_map(|n| needs_temp(g, n, false)),
        );
        own.push(a.root);
    }
    for &n in live {
        match g.node(n).op {
            Op::Gather(t, i) => {
                temps.extend(
                    [needs_temp(g, t, true), needs_temp(g, i, true)]
                        .into_iter()
                        .flatten(),
                );
                own.push(n);
            }
            // Inside an attention, the attention's pass applies it.
            Op::Causal(x) if !inner.contains(&n) => {
                temps.extend(needs_temp(g, x, true));
                own.push(n);
            }
            _ => {}
        }
    }
    // A node with a pass of its own is stored, and read from memory by whatever uses it.
    for n in own {
        if live.iter().any(|&u| g.node(u).operands().contains(&n)) || !g.outputs.contains(&n) {
            temps.insert(n);
        }
    }
    temps
}

/// Whether `n` is computed by a pass of its own kind (attention, gather, causal), never fused.
/// (A causal inside an attention is never a root: only the attention's root is stored.)
fn own_pass(g: &Graph, n: NodeId, attn: &[Attention]) -> bool {
    matches!(g.node(n).op, Op::Gather(..) | Op::Causal(_))
        || attn.iter().any(|a| a.root == n || a.stored() == n)
}

/// An attention whose product is read only by a transpose that is stored anyway (a reshape
/// reads it, as when heads merge back: `reshape(transpose(ctx, 1, 2), [B, T, H·D])`) writes
/// that transpose itself through permuted strides, instead of storing the product for a copy
/// pass to transpose.
fn store_transposed(
    g: &Graph,
    live: &[NodeId],
    attn: &mut [Attention],
    temps: &mut BTreeSet<NodeId>,
) {
    for a in attn {
        let mut users = live
            .iter()
            .copied()
            .filter(|&u| g.node(u).operands().contains(&a.root));
        let (Some(t), None) = (users.next(), users.next()) else {
            continue;
        };
        if let Op::Transpose(i, j, _) = g.node(t).op {
            if temps.contains(&t) && !g.outputs.contains(&a.root) && !g.outputs.contains(&t) {
                temps.remove(&a.root);
                a.store = Some((t, i, j));
            }
        }
    }
}

/// Products sharing one matmul pass at most: each needs its own accumulators (registers) and
/// staged B tile (workgroup memory, which must stay within WebGPU's guaranteed 16 KiB).
pub const MAX_PRODUCTS: usize = 2;

/// Whether matmul node `n` is computed by a pass of domain `key`.
fn joins_matmul(g: &Graph, n: NodeId, key: &Domain) -> bool {
    match (&g.node(n).op, key) {
        (Op::MatMul(a, _), Domain::MatMul(s, ka)) => a == ka && same_shape(s, &g.node(n).shape),
        _ => false,
    }
}

pub fn fuse(g: &Graph) -> Fused {
    let mut attn = attend::find(g);
    let live = g.live();
    let mut temps = layout_temps(g, &live, &attn);
    store_transposed(g, &live, &mut attn, &mut temps);
    loop {
        let mut changed = false;
        let roots: Vec<(NodeId, Vec<Dim>)> = g
            .outputs
            .iter()
            .map(|&o| (o, g.node(o).shape.clone()))
            .chain(temps.iter().map(|&t| (t, g.node(t).shape.clone())))
            .collect();
        for (root, shape) in roots {
            if own_pass(g, root, &attn) {
                continue;
            }
            let c = cone(g, root, &temps, &attn);
            let key = pass_key(g, &c, &shape);
            let mut products = 0;
            for &n in &c {
                let joins = match red_key(g, n) {
                    Some(k) => {
                        matches!(&key, Domain::Rows(s, a) if same_shape(s, &k.0) && *a == k.1)
                    }
                    None if matches!(g.node(n).op, Op::MatMul(..)) => {
                        products += 1;
                        joins_matmul(g, n, &key) && products <= MAX_PRODUCTS
                    }
                    None => true,
                };
                if !joins && n != root && temps.insert(n) {
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    plan(g, &temps, attn, true)
}

/// Fusion off: every op is its own pass (to measure what fusion buys).
pub fn fuse_none(g: &Graph) -> Fused {
    let live = g.live();
    let mut temps = layout_temps(g, &live, &[]);
    temps.extend(
        live.into_iter()
            .filter(|&n| g.node(n).is_compute() && !g.outputs.contains(&n)),
    );
    plan(g, &temps, Vec::new(), false)
}

/// The domain of the pass that stores `shape`, given the nodes it computes: a row pass when
/// it can join the (last) reduction it contains, else a matmul pass when it contains a product
/// of its own shape (the rest is the epilogue), else elementwise over `shape`.
fn pass_key(g: &Graph, cone: &[NodeId], shape: &[Dim]) -> Domain {
    for &n in cone.iter().rev() {
        if let Some((s, axis)) = red_key(g, n) {
            let mut row = s.clone();
            row[axis] = Dim::Lit(1);
            if same_shape(&s, shape) || same_shape(&row, shape) {
                return Domain::Rows(s, axis);
            }
        }
    }
    for &n in cone.iter().rev() {
        if let Op::MatMul(a, _) = g.node(n).op {
            if same_shape(&g.node(n).shape, shape) {
                return Domain::MatMul(shape.to_vec(), a);
            }
        }
    }
    Domain::Elementwise(shape.to_vec())
}

fn plan(g: &Graph, temps: &BTreeSet<NodeId>, attentions: Vec<Attention>, merge: bool) -> Fused {
    let mut buffers: Vec<Buffer> = Vec::new();
    for n in 0..g.nodes.len() {
        if let Op::Input(i) = g.node(n).op {
            buffers.push(Buffer {
                kind: BufKind::Input(i),
                node: n,
                shape: g.node(n).shape.clone(),
            });
        }
    }
    // Outputs are declared shapes; the body's value may be a broadcastable smaller shape.
    // (buffer, domain, level, the products it computes)
    let mut stores: Vec<(usize, Domain, usize, BTreeSet<NodeId>)> = Vec::new();
    let mut level_of = std::collections::HashMap::new();
    // Temps in topological (node id) order, then outputs.
    let mut sinks: Vec<(NodeId, BufKind, Vec<Dim>)> = temps
        .iter()
        .map(|&t| (t, BufKind::Temp, g.node(t).shape.clone()))
        .collect();
    for (i, &o) in g.outputs.iter().enumerate() {
        sinks.push((o, BufKind::Output(i), g.node(o).shape.clone()));
    }
    for (node, kind, shape) in sinks {
        let c = cone(g, node, temps, &attentions);
        let level = c
            .iter()
            .filter(|&&n| n != node && temps.contains(&n))
            .map(|n| level_of.get(n).copied().unwrap_or(0) + 1)
            .max()
            .unwrap_or(0);
        if kind == BufKind::Temp {
            level_of.insert(node, level);
        }
        let domain = match attentions.iter().find(|a| a.stored() == node) {
            Some(a) => Domain::Attention(Box::new(a.clone())),
            None if matches!(g.node(node).op, Op::Gather(..)) => Domain::Gather(shape.clone()),
            None if matches!(g.node(node).op, Op::Causal(_)) => Domain::Causal(shape.clone()),
            None => pass_key(g, &c, &shape),
        };
        buffers.push(Buffer { kind, node, shape });
        let products: BTreeSet<NodeId> = c
            .iter()
            .copied()
            .filter(|&n| matches!(g.node(n).op, Op::MatMul(..)))
            .collect();
        stores.push((buffers.len() - 1, domain, level, products));
    }
    // Stores of one level and domain share a pass, up to MAX_PRODUCTS products per pass.
    let mut passes: Vec<(usize, Pass, BTreeSet<NodeId>)> = Vec::new();
    for (buf, domain, level, products) in stores {
        match passes.iter_mut().find(|(l, p, pr)| {
            merge
                && *l == level
                && same_domain(&p.domain, &domain)
                && pr.union(&products).count() <= MAX_PRODUCTS
        }) {
            Some((_, p, pr)) => {
                p.stores.push(buf);
                pr.extend(products);
            }
            None => passes.push((
                level,
                Pass {
                    domain,
                    stores: vec![buf],
                },
                products,
            )),
        }
    }
    passes.sort_by_key(|(l, _, _)| *l);
    Fused {
        buffers,
        passes: passes.into_iter().map(|(_, p, _)| p).collect(),
    }
}

fn same_domain(a: &Domain, b: &Domain) -> bool {
    match (a, b) {
        (Domain::Elementwise(x), Domain::Elementwise(y)) => same_shape(x, y),
        (Domain::Rows(x, i), Domain::Rows(y, j)) => i == j && same_shape(x, y),
        (Domain::MatMul(x, a), Domain::MatMul(y, b)) => a == b && same_shape(x, y),
        _ => false,
    }
}
