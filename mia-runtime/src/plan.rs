//! What a kernel became: its passes over memory, dispatches, fused op count and the bytes it
//! must move. Generated as `static` data by `#[kernel]` (`my_kernel::plan()`), so tests and
//! benchmarks can assert on fusion instead of assuming it.

use std::fmt::Write as _;

/// One dimension of a tensor in a kernel signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A symbol bound at call time (`N`).
    Sym(&'static str),
    /// A literal size.
    Lit(usize),
    /// A braced expression over symbols (`{D / H}`), kept as written; evaluated by the kernel.
    Expr(&'static str),
}

/// A tensor the kernel reads or writes in device memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Io {
    pub name: &'static str,
    pub dtype: &'static str,
    /// Bytes per element in memory.
    pub elem_bytes: usize,
    pub dims: &'static [Dim],
}

/// The shape of one pass's loop nest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PassKind {
    /// One thread/lane per output element.
    Elementwise,
    /// One workgroup (CPU: one task) per row; reductions along `axis` run in phases inside it.
    Rows { axis: usize, reductions: usize },
    /// Tiles of `products` matrix products sharing their left operand, with the elementwise
    /// epilogue applied to each finished tile.
    MatMul { products: usize },
    /// Flash attention: `softmax(scale · Q·Kᵀ [+ mask]) · V` in tiles of query rows with an
    /// online softmax, so the scores never reach memory. `mask`: an additive mask tensor;
    /// `causal`: the scores are `causal(..)` (keys after the bottom-right-aligned diagonal
    /// are skipped).
    Attention { mask: bool, causal: bool },
    /// Row lookup (`gather`): each output row copies the table row its index names.
    Gather,
    /// `causal(x)` outside an attention: a copy with `-inf` above the diagonal.
    Causal,
}

/// One pass over memory = one dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pass {
    pub kind: PassKind,
    /// Primitive ops evaluated in this pass.
    pub ops: usize,
    /// Names of the tensors read (inputs or intermediates).
    pub reads: &'static [&'static str],
    /// Names of the tensors written (outputs or intermediates).
    pub writes: &'static [&'static str],
}

/// The fusion plan of one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    pub kernel: &'static str,
    pub passes: &'static [Pass],
    /// Primitive ops in the kernel after CSE and dead-code removal, before fusion.
    pub fused_ops: usize,
    /// Intermediate buffers between passes (0 when everything fused into one pass).
    pub intermediates: &'static [Io],
    /// Per intermediate: the pass that writes it and the last pass that reads it. It is
    /// allocated just before the first and freed after the second, so buffers of dead
    /// intermediates are reused (see [`Plan::peak_bytes`]).
    pub lifetimes: &'static [(usize, usize)],
    pub inputs: &'static [Io],
    pub outputs: &'static [Io],
}

impl Plan {
    /// Number of passes over memory.
    pub fn passes(&self) -> usize {
        self.passes.len()
    }

    /// Number of dispatches per call (one per pass, on CPU and GPU alike).
    pub fn dispatches(&self) -> usize {
        self.passes.len()
    }

    /// The least bytes a call must move: every input read once and every output written once,
    /// given the sizes bound to the kernel's symbols (`[("N", 4), ("D", 8)]`). `None` if a
    /// symbol is missing or a braced dimension cannot be evaluated.
    pub fn min_bytes(&self, sizes: &[(&str, usize)]) -> Option<u64> {
        let mut total = 0u64;
        for io in self.inputs.iter().chain(self.outputs) {
            total += io.elem_bytes as u64 * elements(io.dims, sizes)?;
        }
        Some(total)
    }

    /// Bytes of intermediates alive at once at the worst pass, given the symbol sizes.
    pub fn peak_bytes(&self, sizes: &[(&str, usize)]) -> Option<u64> {
        let mut peak = 0u64;
        for p in 0..self.passes.len() {
            let mut live = 0u64;
            for (io, &(d, u)) in self.intermediates.iter().zip(self.lifetimes) {
                if (d..=u).contains(&p) {
                    live += io.elem_bytes as u64 * elements(io.dims, sizes)?;
                }
            }
            peak = peak.max(live);
        }
        Some(peak)
    }

    /// Bytes of all intermediates together: what a plan without reuse would allocate.
    pub fn naive_bytes(&self, sizes: &[(&str, usize)]) -> Option<u64> {
        let mut total = 0u64;
        for io in self.intermediates {
            total += io.elem_bytes as u64 * elements(io.dims, sizes)?;
        }
        Some(total)
    }

    /// The bytes the plan actually moves: [`Plan::min_bytes`] plus each intermediate written
    /// and read back once.
    pub fn planned_bytes(&self, sizes: &[(&str, usize)]) -> Option<u64> {
        let mut total = self.min_bytes(sizes)?;
        for io in self.intermediates {
            total += 2 * io.elem_bytes as u64 * elements(io.dims, sizes)?;
        }
        Some(total)
    }

    /// The plan as a Graphviz DOT graph: tensors are boxes, passes are ellipses.
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph \"{}\" {{\n  rankdir=LR;", self.kernel);
        for io in self
            .inputs
            .iter()
            .chain(self.outputs)
            .chain(self.intermediates)
        {
            let _ = writeln!(
                s,
                "  \"{}\" [shape=box, label=\"{}: {}[{}]\"];",
                io.name,
                io.name,
                io.dtype,
                dims_text(io.dims)
            );
        }
        for (i, p) in self.passes.iter().enumerate() {
            let kind = match p.kind {
                PassKind::Elementwise => "elementwise".to_string(),
                PassKind::Rows { axis, reductions } => {
                    format!("rows along axis {axis}, {reductions} reductions")
                }
                PassKind::MatMul { products } => format!("matmul, {products} products"),
                PassKind::Gather => "gather".to_string(),
                PassKind::Causal => "causal mask".to_string(),
                PassKind::Attention { mask, causal } => format!(
                    "flash attention{}{}",
                    if mask { ", masked" } else { "" },
                    if causal { ", causal" } else { "" }
                ),
            };
            let _ = writeln!(
                s,
                "  pass{i} [shape=ellipse, label=\"pass {i}: {kind}\\n{} ops\"];",
                p.ops
            );
            for r in p.reads {
                let _ = writeln!(s, "  \"{r}\" -> pass{i};");
            }
            for w in p.writes {
                let _ = writeln!(s, "  pass{i} -> \"{w}\";");
            }
        }
        s.push_str("}\n");
        s
    }
}

impl std::fmt::Display for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} pass(es), {} dispatch(es), {} fused ops, {} intermediate buffer(s)",
            self.kernel,
            self.passes(),
            self.dispatches(),
            self.fused_ops,
            self.intermediates.len()
        )
    }
}

fn dims_text(dims: &[Dim]) -> String {
    dims.iter()
        .map(|d| match d {
            Dim::Sym(s) | Dim::Expr(s) => s.to_string(),
            Dim::Lit(n) => n.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn elements(dims: &[Dim], sizes: &[(&str, usize)]) -> Option<u64> {
    let lookup = |s: &str| sizes.iter().find(|(n, _)| *n == s).map(|(_, v)| *v as u64);
    dims.iter().try_fold(1u64, |acc, d| {
        let n = match d {
            Dim::Lit(n) => *n as u64,
            Dim::Sym(s) => lookup(s)?,
            Dim::Expr(e) => crate::rt::eval_dim_expr(e, &lookup)?,
        };
        acc.checked_mul(n)
    })
}
