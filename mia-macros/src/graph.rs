//! `graph`: the DAG of primitive ops that `check` builds. Compound ops (softmax, layer norm,
//! GELU's callers, …) are already expanded into these, so fusion sees everything. Nodes are
//! hash-consed on insertion, which is the CSE: the same op on the same operands is one node.

use crate::ast::{DType, Dim};
use std::collections::HashMap;

pub type NodeId = usize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Exp,
    Ln,
    Sqrt,
    Rsqrt,
    Abs,
    Tanh,
    Sigmoid,
    Relu,
    Gelu,
    GeluTanh,
    Silu,
    Sin,
    Cos,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
    Max,
    Min,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl BinOp {
    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge | BinOp::Eq | BinOp::Ne
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RedOp {
    Sum,
    Max,
    Min,
    Mean,
}

/// A constant, stored as the bits of its dtype so nodes can be hashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Const {
    pub dtype: DType,
    pub bits: u32,
}

impl Const {
    pub fn f32(v: f32) -> Const {
        Const {
            dtype: DType::F32,
            bits: v.to_bits(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// The i-th kernel parameter that is a tensor.
    Input(usize),
    /// The i-th kernel parameter that is a scalar.
    Scalar(usize),
    Const(Const),
    Unary(UnOp, NodeId),
    Binary(BinOp, NodeId, NodeId),
    Select(NodeId, NodeId, NodeId),
    Cast(NodeId),
    /// Reduces along `axis`, keeping it as size 1.
    Reduce(RedOp, usize, NodeId),
    /// Swaps two axes (a strided view when its operand lives in memory).
    Transpose(usize, usize, NodeId),
    /// Reinterprets a contiguous operand with a new shape.
    Reshape(NodeId),
    /// Matrix product over the last two axes; leading axes are batch axes (broadcast).
    MatMul(NodeId, NodeId),
    /// Rows of a `[rows, width]` table picked by integer indices: `[ids.., width]`.
    Gather(NodeId, NodeId),
    /// `causal(x)` over the last two axes `[.., T, S]`: element `(i, j)` is `-inf` where
    /// `j > i + (S − T)` (bottom-right aligned), else `x`'s.
    Causal(NodeId),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Node {
    pub op: Op,
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl Node {
    pub fn operands(&self) -> Vec<NodeId> {
        match &self.op {
            Op::Input(_) | Op::Scalar(_) | Op::Const(_) => vec![],
            Op::Unary(_, a)
            | Op::Cast(a)
            | Op::Reduce(_, _, a)
            | Op::Transpose(_, _, a)
            | Op::Reshape(a)
            | Op::Causal(a) => {
                vec![*a]
            }
            Op::Binary(_, a, b) | Op::MatMul(a, b) | Op::Gather(a, b) => vec![*a, *b],
            Op::Select(c, a, b) => vec![*c, *a, *b],
        }
    }

    /// Leaves and layout ops are not arithmetic; everything else counts as one fused op.
    pub fn is_compute(&self) -> bool {
        !matches!(
            self.op,
            Op::Input(_) | Op::Scalar(_) | Op::Const(_) | Op::Transpose(..) | Op::Reshape(_)
        )
    }
}

/// The kernel as a DAG; `outputs` are the returned nodes in order.
#[derive(Default, Debug)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<NodeId>,
    dedup: HashMap<Node, NodeId>,
}

impl Graph {
    /// Adds a node, or returns the existing identical one (CSE).
    pub fn add(&mut self, op: Op, dtype: DType, shape: Vec<Dim>) -> NodeId {
        let node = Node { op, dtype, shape };
        if let Some(&id) = self.dedup.get(&node) {
            return id;
        }
        let id = self.nodes.len();
        self.nodes.push(node.clone());
        self.dedup.insert(node, id);
        id
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id]
    }

    /// Nodes reachable from the outputs, in topological order (dead code is dropped).
    pub fn live(&self) -> Vec<NodeId> {
        let mut seen = vec![false; self.nodes.len()];
        let mut stack: Vec<NodeId> = self.outputs.clone();
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut seen[n], true) {
                stack.extend(self.nodes[n].operands());
            }
        }
        // Node ids are already topological: operands are always added before their users.
        (0..self.nodes.len()).filter(|&i| seen[i]).collect()
    }

    /// Primitive compute ops among the live nodes.
    pub fn op_count(&self) -> usize {
        self.live()
            .into_iter()
            .filter(|&n| self.nodes[n].is_compute())
            .count()
    }
}
