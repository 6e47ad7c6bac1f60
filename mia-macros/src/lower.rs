//! `lower`: each fused pass becomes a small loop IR that both back ends read: a domain
//! (dimensions as products of symbols), memory accesses with symbolic strides, an SSA list of
//! scalar instructions tagged by where they run (once, once per row, once per element), and
//! the reduction phases of a row pass.

use crate::ast::{DType, Dim};
use crate::dims::{is_broadcast, same_shape};
use crate::fuse::{Domain, Fused};
use crate::graph::{BinOp, Const, Graph, NodeId, Op, RedOp, UnOp};
use std::collections::HashMap;

/// A product of dimensions; empty means 1.
pub type Prod = Vec<Dim>;

/// The stride of an access along one domain axis.
#[derive(Clone, Debug, PartialEq)]
pub enum Stride {
    /// The access does not move along this axis (broadcast).
    Zero,
    Prod(Prod),
}

impl Stride {
    pub fn is_one(&self) -> bool {
        matches!(self, Stride::Prod(p) if p.is_empty())
    }
}

/// A read or write of a buffer, indexed from the domain's multi-index.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub buf: usize,
    pub strides: Vec<Stride>,
}

/// Where an instruction runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Once per call (constants, scalar parameters, the row length).
    Uniform,
    /// Once per row, after the given number of phases completed.
    Row(usize),
    /// Once per element, after the given number of phases completed.
    Elem(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub enum InstOp {
    Load(usize),
    Scalar(usize),
    Const(Const),
    Unary(UnOp, usize),
    Binary(BinOp, usize, usize),
    Select(usize, usize, usize),
    /// Converts from the operand's dtype to the instruction's.
    Cast(usize),
    /// The result of a reduction phase.
    Phase(usize),
    /// The row length as f32 (for means).
    AxisLen,
    /// The value of the pass's j-th matrix product at this element (see [`MatMulIr`]).
    Acc(usize),
    /// A prologue's load: `MatMulIr::extra[i]` at the operand element being loaded.
    Operand(usize),
}

#[derive(Clone, Debug)]
pub struct Inst {
    pub op: InstOp,
    pub dtype: DType,
    pub level: Level,
}

#[derive(Clone, Debug)]
pub struct Phase {
    pub op: RedOp,
    /// The element-level value reduced.
    pub value: usize,
    pub dtype: DType,
}

/// The products of a matmul pass. Its domain is the output `[batch.., M, N]`; operand
/// accesses have one more axis, the contraction `K`: A moves along (batch.., M, K) and each B
/// along (batch.., K, N), so transposed and broadcast operands are strides, never copies.
///
/// An operand may have a prologue (see [`crate::fuse::prologue`]): the instruction computing
/// its element from `extra` loads (`InstOp::Operand`), evaluated as tiles load. Its `a` or `bs`
/// entry is then its main load, which only says how it is laid out.
#[derive(Clone, Debug)]
pub struct MatMulIr {
    pub k: Prod,
    pub a: Access,
    pub bs: Vec<Access>,
    /// Loads read by prologues, strided like `a` and `bs`.
    pub extra: Vec<Access>,
    /// The prologue of A, then of each B, if any.
    pub pro: Vec<Option<usize>>,
}

impl MatMulIr {
    /// Every operand load in parameter order: A, each B, then the prologues' loads.
    pub fn operands(&self) -> impl Iterator<Item = &Access> {
        std::iter::once(&self.a).chain(&self.bs).chain(&self.extra)
    }
}

/// A flash-attention pass (see [`crate::attend`]). Its `dims` are the output
/// `[batch.., T, Ev]`; its loads are Q `[.., T, E]`, K `[.., S, E]`, V `[.., S, Ev]` and the
/// mask `[.., T, S]`, in that order, each with one stride per batch axis then its row and
/// column strides; its one store is the output, likewise.
#[derive(Clone, Debug)]
pub struct AttnIr {
    pub s: Prod,
    pub e: Prod,
    pub mask: bool,
    /// The scale's uniform factors: `(divides, graph node)`.
    pub scale: Vec<(bool, NodeId)>,
    /// Scores above the bottom-right-aligned diagonal are `-inf` (`causal(..)`).
    pub causal: bool,
}

/// A `causal(x)` pass outside an attention: `x` is `[.., T, S]`; its one load is `x` and its
/// one store the output, both contiguous.
#[derive(Clone, Debug)]
pub struct CausalIr {
    pub t: Prod,
    pub s: Prod,
}

#[derive(Clone, Debug)]
pub struct PassIr {
    /// Domain dimensions (collapsed where every access allows it).
    pub dims: Vec<Prod>,
    /// The reduction axis of a row pass.
    pub axis: Option<usize>,
    pub loads: Vec<Access>,
    /// (access, instruction stored).
    pub stores: Vec<(Access, usize)>,
    pub insts: Vec<Inst>,
    pub phases: Vec<Phase>,
    /// Primitive graph ops evaluated by this pass.
    pub ops: usize,
    /// Set for a matmul pass; the other fields describe its epilogue.
    pub mm: Option<MatMulIr>,
    /// Set for an attention pass.
    pub attn: Option<AttnIr>,
    /// Set for a gather pass: the table's row width. Its loads are the table `[rows, width]`
    /// and the indices, both contiguous; its store is the output.
    pub gather: Option<Prod>,
    /// Set for a causal pass.
    pub causal: Option<CausalIr>,
}

impl PassIr {
    /// Instructions `targets` depend on (themselves included) whose level passes `keep`, in order.
    pub fn needed(&self, targets: &[usize], keep: impl Fn(Level) -> bool) -> Vec<usize> {
        let mut need = vec![false; self.insts.len()];
        let mut stack: Vec<usize> = targets.to_vec();
        while let Some(i) = stack.pop() {
            if !std::mem::replace(&mut need[i], true) {
                stack.extend(self.operands(i));
            }
        }
        (0..self.insts.len())
            .filter(|&i| need[i] && keep(self.insts[i].level))
            .collect()
    }

    pub fn operands(&self, i: usize) -> Vec<usize> {
        match self.insts[i].op {
            InstOp::Unary(_, a) | InstOp::Cast(a) => vec![a],
            InstOp::Binary(_, a, b) => vec![a, b],
            InstOp::Select(c, a, b) => vec![c, a, b],
            _ => vec![],
        }
    }

    /// Attention and gather passes call the runtime's own kernels: nothing is generated for
    /// them but the call.
    pub fn is_library(&self) -> bool {
        self.attn.is_some() || self.gather.is_some() || self.causal.is_some()
    }

    pub fn is_rows(&self) -> bool {
        self.axis.is_some()
    }

    /// What a row pass computes when: both back ends emit exactly this order.
    pub fn row_schedule(&self) -> RowSchedule {
        let ax = self.axis.unwrap_or(0);
        let targets: Vec<usize> = self
            .stores
            .iter()
            .map(|(_, v)| *v)
            .chain(self.phases.iter().map(|p| p.value))
            .collect();
        let rows = self.needed(&targets, |l| matches!(l, Level::Row(_)));
        let elem = |t: &[usize]| self.needed(t, |l| matches!(l, Level::Elem(_)));
        let (per_row, per_elem): (Vec<usize>, Vec<usize>) =
            (0..self.stores.len()).partition(|&k| self.stores[k].0.strides[ax] == Stride::Zero);
        let elem_values: Vec<usize> = per_elem.iter().map(|&k| self.stores[k].1).collect();
        RowSchedule {
            uniform: self.needed(&targets, |l| l == Level::Uniform),
            row_stages: (0..=self.phases.len())
                .map(|s| {
                    rows.iter()
                        .copied()
                        .filter(|&i| self.insts[i].level == Level::Row(s))
                        .collect()
                })
                .collect(),
            phase_elems: self.phases.iter().map(|p| elem(&[p.value])).collect(),
            final_elems: elem(&elem_values),
            elem_stores: per_elem,
            row_stores: per_row,
        }
    }
}

/// The order of work in a row pass, per row: `row_stages[0]`; then for each phase `p` a loop
/// over the row computing `phase_elems[p]` and reducing, then `row_stages[p + 1]`; then a
/// loop computing `final_elems` and writing `elem_stores`; then writing `row_stores`.
pub struct RowSchedule {
    /// Computed once per call.
    pub uniform: Vec<usize>,
    pub row_stages: Vec<Vec<usize>>,
    pub phase_elems: Vec<Vec<usize>>,
    pub final_elems: Vec<usize>,
    /// Stores (indices into `stores`) written per element, and once per row.
    pub elem_stores: Vec<usize>,
    pub row_stores: Vec<usize>,
}

struct Lowerer<'a> {
    g: &'a Graph,
    f: &'a Fused,
    domain: Vec<Dim>,
    axis: Option<usize>,
    ir: PassIr,
    memo: HashMap<NodeId, usize>,
    stored: Vec<NodeId>,
    /// While lowering a prologue: whether it is A's (else a B's); loads become `Operand`s.
    prologue: Option<bool>,
}

pub fn lower(g: &Graph, f: &Fused) -> Vec<PassIr> {
    f.passes
        .iter()
        .map(|p| {
            let (domain, axis) = match &p.domain {
                Domain::Elementwise(s) | Domain::MatMul(s, _) => (s.clone(), None),
                Domain::Rows(s, a) => (s.clone(), Some(*a)),
                Domain::Attention(a) => (g.node(a.root).shape.clone(), None),
                Domain::Gather(s) | Domain::Causal(s) => (s.clone(), None),
            };
            let stored: Vec<NodeId> = p.stores.iter().map(|&b| f.buffers[b].node).collect();
            let mut l = Lowerer {
                g,
                f,
                domain: domain.clone(),
                axis,
                ir: PassIr {
                    dims: domain.iter().map(|d| vec![d.clone()]).collect(),
                    axis,
                    loads: vec![],
                    stores: vec![],
                    insts: vec![],
                    phases: vec![],
                    ops: 0,
                    mm: None,
                    attn: None,
                    gather: None,
                    causal: None,
                },
                memo: HashMap::new(),
                stored,
                prologue: None,
            };
            match &p.domain {
                Domain::Attention(a) => return l.attention(a, p.stores[0]),
                Domain::Gather(_) => return l.gather(p.stores[0]),
                Domain::Causal(_) => return l.causal(p.stores[0]),
                _ => {}
            }
            for &b in &p.stores {
                let v = l.node(f.buffers[b].node, true);
                let acc = l.access(
                    b,
                    &f.buffers[b].shape.clone(),
                    contiguous(&f.buffers[b].shape),
                );
                l.ir.stores.push((acc, v));
            }
            let mut ir = l.ir;
            if ir.axis.is_none() && ir.mm.is_none() {
                collapse(&mut ir);
                if ir.dims.is_empty() {
                    // A rank-0 result: one axis of length 1, written at offset 0.
                    ir.dims.push(vec![]);
                    for a in &mut ir.loads {
                        a.strides.push(Stride::Zero);
                    }
                    for (a, _) in &mut ir.stores {
                        a.strides.push(Stride::Prod(vec![]));
                    }
                }
            }
            ir
        })
        .collect()
}

/// Row-major strides of a contiguous tensor of `shape`.
fn contiguous(shape: &[Dim]) -> Vec<Prod> {
    (0..shape.len())
        .map(|k| {
            shape[k + 1..]
                .iter()
                .filter(|d| !matches!(d, Dim::Lit(1)))
                .cloned()
                .collect()
        })
        .collect()
}

impl Lowerer<'_> {
    fn push(&mut self, op: InstOp, dtype: DType, level: Level) -> usize {
        if let Some(i) = self
            .ir
            .insts
            .iter()
            .position(|x| x.op == op && x.dtype == dtype)
        {
            return i;
        }
        self.ir.insts.push(Inst { op, dtype, level });
        self.ir.insts.len() - 1
    }

    /// An instruction runs where its most frequent operand runs, after all their phases.
    fn level_of(&self, args: &[usize]) -> Level {
        let (mut elem, mut row, mut stage) = (false, false, 0);
        for &a in args {
            match self.ir.insts[a].level {
                Level::Uniform => {}
                Level::Row(s) => (row, stage) = (true, stage.max(s)),
                Level::Elem(s) => (elem, stage) = (true, stage.max(s)),
            }
        }
        if elem {
            Level::Elem(stage)
        } else if row {
            Level::Row(stage)
        } else {
            Level::Uniform
        }
    }

    /// An access of buffer `buf` seen through a view of shape `shape` with `strides`.
    fn access(&self, buf: usize, shape: &[Dim], strides: Vec<Prod>) -> Access {
        let r = self.domain.len();
        let strides = (0..r)
            .map(|k| {
                if is_broadcast(shape, &self.domain, k) || self.domain[k].is_one() {
                    Stride::Zero
                } else {
                    Stride::Prod(strides[k + shape.len() - r].clone())
                }
            })
            .collect();
        Access { buf, strides }
    }

    /// A view of memory for a layout node or a buffer: (buffer, view strides).
    fn view(&self, n: NodeId) -> Option<(usize, Vec<Prod>)> {
        if let Some(b) = self.f.buffer_of(n) {
            // A temp is computed (not loaded) by the pass that stores it; an input returned as
            // an output is copied.
            let input = matches!(self.f.buffers[b].kind, crate::fuse::BufKind::Input(_));
            if input || !self.stored.contains(&n) {
                return Some((b, contiguous(&self.g.node(n).shape)));
            }
        }
        match &self.g.node(n).op {
            Op::Transpose(i, j, x) => {
                let (b, mut s) = self.view(*x)?;
                s.swap(*i, *j);
                Some((b, s))
            }
            Op::Reshape(x) => {
                let (b, _) = self.view(*x)?;
                Some((b, contiguous(&self.g.node(n).shape)))
            }
            _ => None,
        }
    }

    fn load(&mut self, n: NodeId) -> Option<usize> {
        if let Some(left) = self.prologue {
            let acc = self.operand(n, left)?;
            let mm = self.ir.mm.as_mut()?;
            let i = match mm.extra.iter().position(|x| *x == acc) {
                Some(i) => i,
                None => {
                    mm.extra.push(acc);
                    mm.extra.len() - 1
                }
            };
            return Some(self.push(InstOp::Operand(i), DType::F32, Level::Elem(0)));
        }
        let (buf, strides) = self.view(n)?;
        let node = self.g.node(n);
        let acc = self.access(buf, &node.shape, strides);
        let level = match self.axis {
            Some(a) if acc.strides[a] == Stride::Zero => Level::Row(0),
            _ => Level::Elem(0),
        };
        let idx = match self
            .ir
            .loads
            .iter()
            .position(|l| l.buf == acc.buf && l.strides == acc.strides)
        {
            Some(i) => i,
            None => {
                self.ir.loads.push(acc);
                self.ir.loads.len() - 1
            }
        };
        Some(self.push(InstOp::Load(idx), node.dtype, level))
    }

    fn node(&mut self, n: NodeId, root: bool) -> usize {
        if let Some(&i) = self.memo.get(&n) {
            return i;
        }
        let node = self.g.node(n).clone();
        let is_temp_here = self.f.buffer_of(n).is_some() && !root;
        let i = if is_temp_here
            || matches!(node.op, Op::Input(_) | Op::Transpose(..) | Op::Reshape(_))
        {
            match self.load(n) {
                Some(i) => i,
                // Unreachable by construction (fuse materializes every layout operand); a
                // copy of the operand keeps the result correct even so.
                None => match node.operands().first() {
                    Some(&x) => self.node(x, false),
                    None => self.push(
                        InstOp::Const(Const {
                            dtype: node.dtype,
                            bits: 0,
                        }),
                        node.dtype,
                        Level::Uniform,
                    ),
                },
            }
        } else {
            if node.is_compute() {
                self.ir.ops += 1;
            }
            match node.op {
                Op::Scalar(s) => self.push(InstOp::Scalar(s), node.dtype, Level::Uniform),
                Op::Const(c) => self.push(InstOp::Const(c), node.dtype, Level::Uniform),
                Op::Unary(op, a) => {
                    let a = self.node(a, false);
                    let lv = self.level_of(&[a]);
                    self.push(InstOp::Unary(op, a), node.dtype, lv)
                }
                Op::Binary(op, a, b) => {
                    let (a, b) = (self.node(a, false), self.node(b, false));
                    let lv = self.level_of(&[a, b]);
                    self.push(InstOp::Binary(op, a, b), node.dtype, lv)
                }
                Op::Select(c, a, b) => {
                    let (c, a, b) = (
                        self.node(c, false),
                        self.node(a, false),
                        self.node(b, false),
                    );
                    let lv = self.level_of(&[c, a, b]);
                    self.push(InstOp::Select(c, a, b), node.dtype, lv)
                }
                Op::Cast(a) => {
                    let a = self.node(a, false);
                    let lv = self.level_of(&[a]);
                    self.push(InstOp::Cast(a), node.dtype, lv)
                }
                Op::Reduce(op, _, x) => {
                    let v = self.node(x, false);
                    let stage = match self.ir.insts[v].level {
                        Level::Uniform => 0,
                        Level::Row(s) | Level::Elem(s) => s,
                    };
                    // A value that is constant along the row still needs the element loop,
                    // so it is lifted to element level.
                    let v = match self.ir.insts[v].level {
                        Level::Elem(_) => v,
                        _ => self.lift(v, stage),
                    };
                    let p = self.ir.phases.len();
                    let sum_op = if op == RedOp::Mean { RedOp::Sum } else { op };
                    self.ir.phases.push(Phase {
                        op: sum_op,
                        value: v,
                        dtype: node.dtype,
                    });
                    let r = self.push(InstOp::Phase(p), node.dtype, Level::Row(p + 1));
                    if op == RedOp::Mean {
                        let len = self.push(InstOp::AxisLen, DType::F32, Level::Uniform);
                        self.push(
                            InstOp::Binary(BinOp::Div, r, len),
                            node.dtype,
                            Level::Row(p + 1),
                        )
                    } else {
                        r
                    }
                }
                Op::MatMul(a, b) => {
                    let j = self.matmul(a, b);
                    self.push(InstOp::Acc(j), node.dtype, Level::Elem(0))
                }
                // Loaded above (a gather is always stored by its own pass); kept total so no
                // input can make the compiler panic.
                Op::Input(_)
                | Op::Transpose(..)
                | Op::Reshape(_)
                | Op::Gather(..)
                | Op::Causal(_) => self.push(
                    InstOp::Const(Const {
                        dtype: node.dtype,
                        bits: 0,
                    }),
                    node.dtype,
                    Level::Uniform,
                ),
            }
        };
        self.memo.insert(n, i);
        i
    }

    /// Registers the product `a x b` with the pass; returns its accumulator index.
    fn matmul(&mut self, a: NodeId, b: NodeId) -> usize {
        if self.ir.mm.is_none() {
            let sa = &self.g.node(a).shape;
            self.ir.mm = Some(MatMulIr {
                k: vec![sa[sa.len() - 1].clone()],
                a: self.main_operand(a, true),
                bs: vec![],
                extra: vec![],
                pro: vec![None],
            });
            let pro = self.prologue_of(a, true);
            if let Some(mm) = self.ir.mm.as_mut() {
                mm.pro[0] = pro;
            }
        }
        let bacc = self.main_operand(b, false);
        let computed = self.view(b).is_none();
        let Some(mm) = self.ir.mm.as_mut() else {
            return 0;
        };
        if !computed {
            let same = |j: &usize| mm.pro[1 + j].is_none() && mm.bs[*j] == bacc;
            if let Some(j) = (0..mm.bs.len()).find(same) {
                return j;
            }
        }
        mm.bs.push(bacc);
        mm.pro.push(None);
        let j = mm.bs.len() - 1;
        let pro = if computed {
            self.prologue_of(b, false)
        } else {
            None
        };
        if let Some(mm) = self.ir.mm.as_mut() {
            mm.pro[1 + j] = pro;
        }
        j
    }

    /// A product's operand `n` seen from the output `[batch.., M, N]` plus the contraction
    /// axis: A moves along (M, K) and B along (K, N); batch axes align from the end, and
    /// broadcast axes (of the operand, or of a prologue's leaf) have stride 0.
    fn operand(&self, n: NodeId, left: bool) -> Option<Access> {
        self.view(n)?;
        let mut acc = self.batched(n, 2, 1);
        let inner = acc.strides.pop().unwrap_or(Stride::Zero);
        let outer = acc.strides.pop().unwrap_or(Stride::Zero);
        if left {
            acc.strides.extend([outer, Stride::Zero, inner]);
        } else {
            acc.strides.extend([Stride::Zero, inner, outer]);
        }
        Some(acc)
    }

    /// How operand `n` is laid out: its view, or its prologue's main load.
    fn main_operand(&self, n: NodeId, left: bool) -> Access {
        let full = &self.g.node(n).shape;
        let main = match self.view(n) {
            Some(_) => Some(n),
            None => crate::fuse::prologue(self.g, n).and_then(|ls| {
                ls.into_iter()
                    .find(|&l| same_shape(&self.g.node(l).shape, full))
            }),
        };
        // Always found: fuse materializes every other operand.
        main.and_then(|m| self.operand(m, left)).unwrap_or(Access {
            buf: 0,
            strides: vec![Stride::Zero; self.domain.len() + 1],
        })
    }

    /// The prologue of a computed operand (see [`MatMulIr`]): its instructions are lowered
    /// apart from the epilogue's, with loads at the operand's element.
    fn prologue_of(&mut self, n: NodeId, left: bool) -> Option<usize> {
        if self.view(n).is_some() {
            return None;
        }
        let memo = std::mem::take(&mut self.memo);
        self.prologue = Some(left);
        let v = self.node(n, false);
        self.prologue = None;
        self.memo = memo;
        Some(v)
    }

    /// An operand of a batched product seen from the output `[batch.., _, _]`: one stride per
    /// batch axis (aligned from the end, broadcast axes 0), then the strides of the operand's
    /// axes `rows` and `cols` counted from its end (1 = last); missing axes are broadcast.
    fn batched(&self, n: NodeId, rows: usize, cols: usize) -> Access {
        let (buf, st) = self.view(n).unwrap_or((0, vec![]));
        let shape = &self.g.node(n).shape;
        let nbo = self.domain.len() - 2;
        let at = |k: usize| match shape.len().checked_sub(k) {
            Some(i) if !shape[i].is_one() => st.get(i).cloned().map_or(Stride::Zero, Stride::Prod),
            _ => Stride::Zero,
        };
        let mut strides: Vec<Stride> = (0..nbo).map(|t| at(nbo - t + 2)).collect();
        strides.extend([at(rows), at(cols)]);
        Access { buf, strides }
    }

    /// Lowers a recognised attention (see [`AttnIr`]) whose output is buffer `out`.
    fn attention(mut self, a: &crate::attend::Attention, out: usize) -> PassIr {
        let kt = &self.g.node(a.kt).shape;
        let (s, e) = (kt[kt.len() - 1].clone(), kt[kt.len() - 2].clone());
        self.ir.loads = vec![
            self.batched(a.q, 2, 1),
            self.batched(a.kt, 1, 2),
            self.batched(a.v, 2, 1),
        ];
        if let Some(m) = a.mask {
            let acc = self.batched(m, 2, 1);
            self.ir.loads.push(acc);
        }
        // The product's axis k is the stored buffer's axis k, or its swap when the pass stores
        // a transpose of the product.
        let shape = self.g.node(a.root).shape.clone();
        let st = contiguous(&self.f.buffers[out].shape);
        let strides = (0..shape.len())
            .map(|k| match shape[k].is_one() {
                true => Stride::Zero,
                false => Stride::Prod(st[a.stored_axis(k)].clone()),
            })
            .collect();
        let v = self.push(InstOp::Const(Const::f32(0.0)), DType::F32, Level::Uniform);
        self.ir.stores.push((Access { buf: out, strides }, v));
        // Two products, the scale, the mask, and softmax's five primitives.
        self.ir.ops = a.inner.len() + 1;
        self.ir.attn = Some(AttnIr {
            s: vec![s],
            e: vec![e],
            mask: a.mask.is_some(),
            scale: a.scale.clone(),
            causal: a.causal,
        });
        self.ir
    }

    /// The accesses of a one-op pass that a runtime library function computes: each input as
    /// the view it is stored as, the output `out` contiguous (its value is the library's).
    fn library_io(&mut self, inputs: &[NodeId], out: usize) {
        for &n in inputs {
            let (buf, st) = self.view(n).unwrap_or((0, vec![]));
            let strides = st.into_iter().map(Stride::Prod).collect();
            self.ir.loads.push(Access { buf, strides });
        }
        let shape = self.f.buffers[out].shape.clone();
        let strides = contiguous(&shape).into_iter().map(Stride::Prod).collect();
        let v = self.push(InstOp::Const(Const::f32(0.0)), DType::F32, Level::Uniform);
        self.ir.stores.push((Access { buf: out, strides }, v));
        self.ir.ops = 1;
    }

    /// Lowers a gather (see [`PassIr::gather`]) whose output is buffer `out`.
    fn gather(mut self, out: usize) -> PassIr {
        let node = self.f.buffers[out].node;
        let Op::Gather(t, i) = self.g.node(node).op else {
            return self.ir;
        };
        self.library_io(&[t, i], out);
        let width = self.g.node(t).shape.get(1).cloned().unwrap_or(Dim::Lit(1));
        self.ir.gather = Some(vec![width]);
        self.ir
    }

    /// Lowers a `causal(x)` (see [`CausalIr`]) whose output is buffer `out`.
    fn causal(mut self, out: usize) -> PassIr {
        let node = self.f.buffers[out].node;
        let Op::Causal(x) = self.g.node(node).op else {
            return self.ir;
        };
        self.library_io(&[x], out);
        let shape = &self.f.buffers[out].shape;
        let r = shape.len();
        self.ir.causal = Some(CausalIr {
            t: vec![shape[r - 2].clone()],
            s: vec![shape[r - 1].clone()],
        });
        self.ir
    }

    /// Re-emits a row-level value as an element-level one (`x + 0` at element level).
    fn lift(&mut self, v: usize, stage: usize) -> usize {
        let dt = self.ir.insts[v].dtype;
        let zero = match dt {
            DType::F32 => Const::f32(0.0),
            _ => Const { dtype: dt, bits: 0 },
        };
        let z = self.push(InstOp::Const(zero), dt, Level::Uniform);
        self.ir.insts.push(Inst {
            op: InstOp::Binary(BinOp::Add, v, z),
            dtype: dt,
            level: Level::Elem(stage),
        });
        self.ir.insts.len() - 1
    }
}

/// Merges adjacent axes of an elementwise domain where every access moves over both as over
/// one (both broadcast, or stride[k] = stride[k+1] * dim[k+1]), and drops size-1 axes, so a
/// dense `[N, D]` pass becomes one flat loop.
fn collapse(ir: &mut PassIr) {
    let mut k = 0;
    while k < ir.dims.len() {
        let all = |f: &dyn Fn(&Access) -> bool| {
            ir.loads.iter().all(f) && ir.stores.iter().all(|(a, _)| f(a))
        };
        if ir.dims.len() > 1 && ir.dims[k].iter().all(|d| d.is_one()) {
            remove_axis(ir, k);
            continue;
        }
        if k + 1 < ir.dims.len() {
            let next = ir.dims[k + 1].clone();
            let mergeable = all(&|a: &Access| match (&a.strides[k], &a.strides[k + 1]) {
                (Stride::Zero, Stride::Zero) => true,
                (Stride::Prod(hi), Stride::Prod(lo)) => {
                    let mut want: Vec<Dim> = lo
                        .iter()
                        .chain(next.iter())
                        .filter(|d| !d.is_one())
                        .cloned()
                        .collect();
                    let mut have: Vec<Dim> = hi.iter().filter(|d| !d.is_one()).cloned().collect();
                    want.sort();
                    have.sort();
                    want == have
                }
                _ => false,
            });
            if mergeable {
                let lo_dims = ir.dims.remove(k + 1);
                ir.dims[k].extend(lo_dims);
                for a in ir
                    .loads
                    .iter_mut()
                    .chain(ir.stores.iter_mut().map(|(a, _)| a))
                {
                    let lo = a.strides.remove(k + 1);
                    a.strides[k] = lo;
                }
                continue;
            }
        }
        k += 1;
    }
}

fn remove_axis(ir: &mut PassIr, k: usize) {
    ir.dims.remove(k);
    for a in ir
        .loads
        .iter_mut()
        .chain(ir.stores.iter_mut().map(|(a, _)| a))
    {
        a.strides.remove(k);
    }
}
