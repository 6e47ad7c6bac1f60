//! `emit_wgsl`: one compute shader per pass, reading the same IR as `emit_cpu`.
//!
//! Layout (shared with the generated wrapper through [`Layout`]): binding 0 is `P`, a
//! read-only `array<u32>` of parameters — `[groups, end, start, dims…, strides of each
//! access…, window base of each access…, scalar bits…]`; then the pass's read buffers, then
//! its written buffers (bound as windows when tensors exceed one binding: a split pass is
//! several dispatches over `start..end`). Elementwise passes
//! run one invocation per element; row passes one workgroup per row, with reductions in
//! workgroup memory. Workgroups may arrive on a 2-D grid (more than 65,535), so the shader
//! linearises `workgroup_id` and returns past `groups` (a uniform value, so barriers stay
//! in uniform control flow).

use crate::ast::DType;
use crate::graph::{BinOp, Const, RedOp, UnOp};
use crate::lower::{InstOp, PassIr, Stride};
use std::collections::BTreeSet;
use std::fmt::Write;

pub const WORKGROUP: u32 = 256;

/// Padding of each row of the staged A and B tiles, so a transposing store into one (A stored
/// row-major, or a B that is a transposed view such as a `[out, in]` weight) does not hit one
/// memory bank from every lane.
const PAD: u32 = 4;

/// A matmul tiling: each workgroup computes a `bm × bn` output tile in steps of `bk`, each
/// invocation a `tm × tn` block held in registers. With `ks > 1` the workgroup's invocations
/// form `ks` slices that split each staged `bk` step between them and sum their blocks
/// through workgroup memory at the end (split-K inside one workgroup: small `M × N` with long
/// `K` still fills the GPU, and the epilogue stays fused). With `db` the staged tiles are
/// double-buffered: one barrier per step instead of two, for twice the workgroup memory.
///
/// With `coop` the products run on tensor cores (cooperative matrices, 16 × 16 × 16 f16 with
/// f32 accumulation; adapters that have them, with subgroups of 32): each subgroup computes a
/// `tm × tn` block as 16 × 16 fragments, and f32 accuracy comes from splitting every operand
/// as `hi + lo / 2048` in f16 and summing three products (`hi·hi + (hi·lo + lo·hi) / 2048`).
/// Accurate to f32 for operands in f16's normal range (6.1e-5 to 32768 in magnitude); a tile
/// that stages a larger or non-finite one recomputes its outputs as f32 dot products, smaller
/// ones lose relative precision: the runtime runs these tiles only on request
/// (`MIA_TENSOR_CORES=1`, see `DeviceLimits::tensor_cores`).
///
/// With `v4` (tensor-core tilings only) the operands are read as vec4s, four floats along
/// their contiguous axis per load, which the runtime allows only where every vec4 lies in
/// one row of its view and starts at a multiple of 4 floats (`mia_runtime::rt::vec4_operands`:
/// A row-major, each B row-major or a transposed view); the operands' buffers are then bound
/// as `array<vec4<f32>>`, their other reads taking one component. Probe on an H200: 10–20%
/// faster than scalar loads at MiniLM's products.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tile {
    pub bm: u32,
    pub bn: u32,
    pub bk: u32,
    pub tm: u32,
    pub tn: u32,
    pub ks: u32,
    pub db: bool,
    pub coop: bool,
    pub v4: bool,
}

impl Tile {
    pub fn threads(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn) * self.ks * if self.coop { 32 } else { 1 }
    }
    /// Width of the register blocks' workgroup-memory reads: 4 (128-bit) when the blocks
    /// split into runs of four, else 1.
    pub fn width(&self) -> u32 {
        if !self.coop && self.tm.is_multiple_of(4) && self.tn.is_multiple_of(4) {
            4
        } else {
            1
        }
    }
    /// Workgroup memory, in bytes, of a pass with `products` products: the staged tiles,
    /// or the slices' partial blocks if those are larger (they reuse the same array).
    pub fn workgroup_bytes(&self, products: usize) -> u32 {
        let p = products as u32;
        if self.coop {
            // hi and lo halves of the staged tiles, then one f32 fragment per product and
            // subgroup for the epilogue, and the overflow flag (padded to 16 bytes).
            let (a, b) = self.coop_tiles();
            return 2 * 2 * (a + p * b) + 4 * (256 * p * (self.threads() / 32) + 4);
        }
        let staged = self.stage(products) * if self.db { 2 } else { 1 };
        let partial = (self.ks - 1) * p * self.bm * self.bn;
        staged.max(partial) * 4
    }
    /// Halves of one staged A tile (`bm` rows of `bk`, m-major) and of one B tile (`bk` rows
    /// of `bn`), rows padded by 16 bytes: unpadded, a fragment's 16 rows fall on a few memory
    /// banks (on an H200 the tiles then ran 2x slower).
    fn coop_tiles(&self) -> (u32, u32) {
        (
            self.bm * (self.bk + COOP_PAD),
            self.bk * (self.bn + COOP_PAD),
        )
    }
    /// Floats of one step's staged tiles (A, then each B).
    fn stage(&self, products: usize) -> u32 {
        self.bk * (self.bm + PAD) + products as u32 * self.bk * (self.bn + PAD)
    }
    pub fn name(&self) -> String {
        let split = if self.ks > 1 {
            format!("k{}", self.ks)
        } else {
            String::new()
        };
        let db = if self.db { "d" } else { "" };
        if self.coop {
            let v4 = if self.v4 { "4" } else { "" };
            return format!("{}x{}x{}/tc{v4}", self.bm, self.bn, self.bk);
        }
        format!(
            "{}x{}x{}/{}x{}{split}{db}",
            self.bm, self.bn, self.bk, self.tm, self.tn
        )
    }
}

/// Workgroup memory a compiled tiling may use: the first tiling stays within WebGPU's
/// guaranteed 16 KiB (it is the portable fallback); the others may use up to this, and the
/// runtime skips those over the adapter's limit.
pub const MAX_TILE_BYTES: u32 = 48 * 1024;

/// Row padding of the tensor-core tiles' staged halves (16 bytes).
const COOP_PAD: u32 = 8;

/// A tensor-core subgroup's 2 × 2 fragments of 16 × 16: index, then (row, column).
const FRAGS: [(usize, (u32, u32)); 4] = [(0, (0, 0)), (1, (0, 1)), (2, (1, 0)), (3, (1, 1))];

const fn tile(bm: u32, bn: u32, bk: u32, tm: u32, tn: u32, ks: u32, db: bool) -> Tile {
    Tile {
        bm,
        bn,
        bk,
        tm,
        tn,
        ks,
        db,
        coop: false,
        v4: false,
    }
}

/// A tensor-core tiling: `bm × bn` per workgroup, 32 × 32 per subgroup, steps of `bk`;
/// `v4`: vec4 operand loads.
const fn coop(bm: u32, bn: u32, bk: u32, v4: bool) -> Tile {
    Tile {
        bm,
        bn,
        bk,
        tm: 32,
        tn: 32,
        ks: 1,
        db: false,
        coop: true,
        v4,
    }
}

/// The tilings compiled for every matmul pass; the runtime measures them per device and shape
/// bucket and keeps the fastest (autotune). On an H100: large (`4096³`: 128 × 128), wide
/// (`1024³`, MiniLM's `4096 × 384 × 1536`: double-buffered 128 × 128 and 128 × 64),
/// tall-and-narrow (`4096 × K × 384`: 64 × 64 with 4 × 4 blocks, also double-buffered or
/// split-K in two), small `M × N` with long `K` through in-workgroup split-K
/// (`128 × 384 × 1536`; the deeper one, over 16 KiB and 256 invocations, only where the
/// adapter allows: `128 × 1536 × 384`), and short-and-wide (GEMV). The double-buffered ones
/// exceed 16 KiB, so the first (the portable fallback) is not. Others measured on the H100
/// never won: 64 × 64 × 8 with 8 × 8 blocks, 128 × 128 × 16, 32 × 64 × 16, 8 × 12 blocks
/// (128 × 192: 10–20× slower, also after the epilogue fix), and on MiniLM's products at
/// batch 32 (after the epilogue fix),
/// 128 × 64 × 16 and 64 × 128 × 16 with 8 × 8 blocks (2x slower) and 64 × 64 × 16 with 8 × 4
/// blocks, alone or split-K in two (10-25% slower than 4 × 4).
///
/// The tensor-core tilings (only on adapters that have them, see [`Tile`]) come last; the
/// H200's fastest in `mia-runtime/examples/coop_probe.rs` was 128 × 128 over 16 subgroups
/// (1.3-1.5x the f32 tiles at MiniLM's batch-32 products). Their vec4-load forms, last, won
/// autotune on the H200 wherever the operands allow them (`4096 × 384 × 1536` 116.5 against
/// 130.6 µs, `4096 × 1536 × 384` 118.5 against 143.1, `4096³` 2.50 against 2.83 ms).
pub const TILES: [Tile; 15] = [
    tile(128, 128, 8, 8, 8, 1, false),
    tile(64, 64, 16, 4, 4, 1, false),
    tile(16, 32, 64, 4, 4, 8, false),
    tile(16, 32, 128, 4, 4, 16, false),
    tile(8, 64, 16, 1, 2, 1, false),
    tile(128, 128, 8, 8, 8, 1, true),
    tile(64, 64, 16, 4, 4, 1, true),
    tile(128, 64, 16, 8, 4, 1, true),
    tile(64, 64, 16, 4, 4, 2, true),
    coop(128, 128, 16, false),
    coop(128, 64, 16, false),
    coop(64, 64, 16, false),
    coop(128, 128, 16, true),
    coop(128, 64, 16, true),
    coop(64, 64, 16, true),
];

/// Where each value lives in a pass's bindings and parameter array.
pub struct Layout {
    /// Buffers bound read-only, then read-write, by index into the kernel's buffer list.
    pub reads: Vec<usize>,
    pub writes: Vec<usize>,
    pub rank: usize,
    pub accesses: usize,
    /// Matmul operands (A, then each B); their parameters follow the window bases:
    /// `K`, then `rank + 1` strides per operand.
    pub operands: usize,
}

impl Layout {
    pub fn of(ir: &PassIr) -> Layout {
        let mut reads = Vec::new();
        let mm_bufs = ir.mm.iter().flat_map(|m| m.operands());
        for l in ir.loads.iter().chain(mm_bufs) {
            if !reads.contains(&l.buf) {
                reads.push(l.buf);
            }
        }
        let writes = ir.stores.iter().map(|(a, _)| a.buf).collect();
        Layout {
            reads,
            writes,
            rank: ir.dims.len(),
            accesses: ir.loads.len() + ir.stores.len(),
            operands: ir.mm.as_ref().map_or(0, |m| m.operands().count()),
        }
    }
    /// The contraction length of a matmul pass.
    pub fn mm_k(&self) -> usize {
        3 + self.rank + self.accesses * (self.rank + 1)
    }
    /// Stride of matmul operand `o` (0 = A) along axis `k` (`rank` = the contraction axis).
    pub fn mm_stride(&self, o: usize, k: usize) -> usize {
        self.mm_k() + 1 + o * (self.rank + 1) + k
    }
    pub fn dim(&self, k: usize) -> usize {
        3 + k
    }
    pub fn stride(&self, a: usize, k: usize) -> usize {
        3 + self.rank + a * self.rank + k
    }
    /// The element offset of access `a`'s binding window.
    pub fn base(&self, a: usize) -> usize {
        3 + self.rank + self.accesses * self.rank + a
    }
    pub fn scalar(&self, s: usize) -> usize {
        let mm = if self.operands > 0 {
            1 + self.operands * (self.rank + 1)
        } else {
            0
        };
        3 + self.rank + self.accesses * (self.rank + 1) + mm + s
    }
    fn binding(&self, buf: usize, write: bool) -> usize {
        let pos = if write {
            self.reads.len() + self.writes.iter().position(|&b| b == buf).unwrap_or(0)
        } else {
            self.reads.iter().position(|&b| b == buf).unwrap_or(0)
        };
        1 + pos
    }
}

fn wgsl_type(dt: DType) -> &'static str {
    match dt {
        DType::F32 => "f32",
        DType::I32 => "i32",
        DType::U32 => "u32",
        DType::Bool => "bool",
    }
}

/// The element type a buffer of `dt` holds in memory (bool is stored as u32).
fn mem_type(dt: DType) -> &'static str {
    match dt {
        DType::Bool => "u32",
        d => wgsl_type(d),
    }
}

/// Whether an elementwise pass also gets a vec4 shader (four consecutive elements per
/// invocation, 128-bit loads and stores): every store, and every load that is not broadcast
/// along the inner axis, moves by 1 along it and by multiples of the inner size along outer
/// axes (so groups of four never straddle a row), and no buffer is read both ways. The wrapper uses it when the inner
/// size is a multiple of 4 at run time.
pub fn vec4_eligible(ir: &PassIr) -> bool {
    if ir.is_rows() || ir.mm.is_some() {
        return false;
    }
    let r = ir.dims.len();
    let inner = &ir.dims[r - 1];
    let accesses: Vec<&crate::lower::Access> = ir
        .loads
        .iter()
        .chain(ir.stores.iter().map(|(a, _)| a))
        .collect();
    let dense = |a: &crate::lower::Access| a.strides[r - 1].is_one();
    if !ir.stores.iter().all(|(a, _)| dense(a)) {
        return false;
    }
    accesses.iter().all(|a| {
        let inner_ok = a.strides[r - 1] == Stride::Zero || dense(a);
        let outer_ok = !dense(a)
            || a.strides[..r - 1].iter().all(|s| match s {
                Stride::Zero => true,
                Stride::Prod(p) => {
                    let mut rest = p.clone();
                    inner
                        .iter()
                        .all(|d| match rest.iter().position(|x| x == d) {
                            Some(i) => {
                                rest.remove(i);
                                true
                            }
                            None => d.is_one(),
                        })
                }
            });
        let consistent = accesses
            .iter()
            .all(|b| b.buf != a.buf || dense(b) == dense(a));
        inner_ok && outer_ok && consistent
    })
}

/// Whether a matmul pass may take `v4` tilings: none of its operands is computed by a
/// prologue (those are not loaded from a buffer). Elsewhere a `v4` tiling emits scalar loads.
pub fn v4_allowed(ir: &PassIr) -> bool {
    ir.mm
        .as_ref()
        .is_some_and(|mm| mm.pro.iter().all(Option::is_none))
}

/// Which shader of a pass to emit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Form {
    /// One element (or row) per invocation, portable.
    Scalar,
    /// Four elements per invocation (passes where [`vec4_eligible`] holds).
    Vec4,
    /// A row pass whose reductions combine within subgroups first (adapters with
    /// subgroups; passes where [`subgroup_eligible`] holds).
    Subgroups,
    /// The same passes with one subgroup per row, [`SG_ROWS`] rows per workgroup: for rows
    /// up to [`SG_ROW_LEN`] long, where a whole workgroup per row leaves most invocations
    /// idle and waits on barriers (MiniLM's rows of 384: ~20 µs a pass on an H200).
    SubgroupRows,
    /// A matmul pass's tiling.
    Tile(Tile),
}

/// Rows per workgroup of [`Form::SubgroupRows`] (each subgroup takes rows `lid / sgs`,
/// then every `WORKGROUP / sgs`-th, so any subgroup size works).
pub const SG_ROWS: u32 = 8;

/// The longest rows the runtime gives [`Form::SubgroupRows`]; longer ones keep a workgroup
/// per row.
pub const SG_ROW_LEN: usize = 1024;

/// The fewest rows the runtime gives [`Form::SubgroupRows`]: with few rows the GPU is mostly
/// idle and a workgroup per row finishes sooner. MiniLM's 17 row passes on an H200: batch 32
/// (4096 rows) 0.346 → 0.244 ms, batch 1 (128 rows) 0.137 → 0.193 ms.
pub const SG_ROWS_MIN: usize = 2048;

/// Row passes with reductions have subgroup forms: a workgroup's partial results combine
/// with one subgroup operation and two barriers instead of a tree of eight barriers, or
/// (short rows) each subgroup reduces a row of its own with no barrier at all.
pub fn subgroup_eligible(ir: &PassIr) -> bool {
    ir.is_rows() && !ir.phases.is_empty() && ir.mm.is_none()
}

/// The shader of pass `ir` in `form`; `buf_types` gives each kernel buffer's dtype.
pub fn pass_shader(
    kernel: &str,
    p: usize,
    ir: &PassIr,
    buf_types: &[DType],
    scalar_types: &[DType],
    form: Form,
) -> String {
    let vec4 = form == Form::Vec4;
    let tile = match form {
        Form::Tile(t) => Some(t),
        _ => None,
    };
    let sg_rows = form == Form::SubgroupRows;
    let sg = form == Form::Subgroups || sg_rows;
    let lay = Layout::of(ir);
    let r = ir.dims.len();
    let vec_buf = |b: usize| {
        vec4 && ir
            .loads
            .iter()
            .chain(ir.stores.iter().map(|(a, _)| a))
            .any(|a| a.buf == b && a.strides[r - 1].is_one())
    };
    // A `v4` tiling's operand buffers, bound as vec4s.
    let v4_bufs: BTreeSet<usize> = match (tile, &ir.mm) {
        (Some(t), Some(mm)) if t.v4 && v4_allowed(ir) => std::iter::once(&mm.a)
            .chain(&mm.bs)
            .map(|a| a.buf)
            .collect(),
        _ => BTreeSet::new(),
    };
    let arr = |b: usize| {
        if vec_buf(b) || v4_bufs.contains(&b) {
            format!("vec4<{}>", mem_type(buf_types[b]))
        } else {
            mem_type(buf_types[b]).to_string()
        }
    };
    let mut s = String::new();
    // (naga 30 takes subgroup operations without WGSL's `enable subgroups;`, which it rejects.)
    let form = match form {
        Form::Tile(t) => format!(", tile {}", t.name()),
        Form::Vec4 => ", vec4 form".to_string(),
        Form::Subgroups => ", subgroup form".to_string(),
        Form::SubgroupRows => ", subgroup-rows form".to_string(),
        Form::Scalar => String::new(),
    };
    let _ = writeln!(
        s,
        "// mia kernel `{kernel}`, pass {p}{form}: generated; validated by naga at build time."
    );
    let _ = writeln!(s, "@group(0) @binding(0) var<storage, read> P: array<u32>;");
    for &b in &lay.reads {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read> B{b}: array<{}>;",
            lay.binding(b, false),
            arr(b)
        );
    }
    for &b in &lay.writes {
        let _ = writeln!(
            s,
            "@group(0) @binding({}) var<storage, read_write> B{b}: array<{}>;",
            lay.binding(b, true),
            arr(b)
        );
    }
    let mut e = Emitter {
        ir,
        lay: &lay,
        buf_types,
        scalar_types,
        vec: vec4,
        sg,
        sg_rows,
        mm_width: 1,
        coop_products: 0,
        v4_bufs,
        helpers: BTreeSet::new(),
        shared: BTreeSet::new(),
    };
    let body = match tile {
        Some(t) => e.matmul(t),
        None if ir.is_rows() => e.rows(),
        None => e.elementwise(),
    };
    for h in &e.helpers {
        s.push_str(&helper(h, vec4));
    }
    for dt in &e.shared {
        let _ = writeln!(s, "var<workgroup> red_{dt}: array<{dt}, {WORKGROUP}>;");
    }
    let threads = match tile {
        Some(t) if t.coop => {
            let nb = ir.mm.as_ref().map_or(0, |m| m.bs.len()) as u32;
            let (a, b) = t.coop_tiles();
            // (`enable` directives must come first; comments may precede them.)
            s.insert_str(0, "enable f16;\nenable wgpu_cooperative_matrix;\n");
            // The overflow flag (see `Tile`) is `CS`'s last float, after the fragments: a
            // workgroup variable of its own (a `u32` after these arrays) made the H200 return
            // wrong products, and every array here stays a multiple of 16 bytes.
            let frags = 256 * nb * (t.threads() / 32);
            let _ = writeln!(
                s,
                "var<workgroup> AH: array<f16, {a}>;\nvar<workgroup> AL: array<f16, {a}>;\nvar<workgroup> BH: array<f16, {}>;\nvar<workgroup> BL: array<f16, {}>;\nvar<workgroup> CS: array<f32, {}>;\nconst OVF = {frags}u;",
                nb * b,
                nb * b,
                frags + 4
            );
            t.threads()
        }
        Some(t) => {
            let nb = ir.mm.as_ref().map_or(0, |m| m.bs.len());
            let (w, len) = (t.width(), t.workgroup_bytes(nb) / 4);
            let ty = if w == 4 { "vec4<f32>" } else { "f32" };
            let _ = writeln!(s, "var<workgroup> S: array<{ty}, {}>;", len / w);
            t.threads()
        }
        None => WORKGROUP,
    };
    let sg_builtins = if sg {
        ", @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32"
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "@compute @workgroup_size({threads})\nfn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32{sg_builtins}) {{\n    let wid = wg.x + wg.y * nwg.x;\n    if (wid >= P[0]) {{ return; }}"
    );
    s.push_str(&body);
    s.push_str("}\n");
    s
}

struct Emitter<'a> {
    ir: &'a PassIr,
    lay: &'a Layout,
    buf_types: &'a [DType],
    scalar_types: &'a [DType],
    /// Four elements per invocation (elementwise passes only).
    vec: bool,
    /// Reductions combine within subgroups first (row passes only).
    sg: bool,
    /// One subgroup per row ([`Form::SubgroupRows`]).
    sg_rows: bool,
    /// A matmul pass's [`Tile::width`].
    mm_width: u32,
    /// A tensor-core matmul pass's number of products (its accumulators are in `CS`), else 0.
    coop_products: usize,
    /// Buffers bound as vec4s for a `v4` tiling's operand loads: their other reads take one
    /// component.
    v4_bufs: BTreeSet<usize>,
    helpers: BTreeSet<&'static str>,
    shared: BTreeSet<&'static str>,
}

impl Emitter<'_> {
    /// Element `off` of buffer `buf`, one float of a vec4 where it is bound as vec4s for a
    /// `v4` tiling.
    fn elem(&self, buf: usize, off: &str) -> String {
        if self.v4_bufs.contains(&buf) {
            format!("B{buf}[({off}) / 4u][({off}) % 4u]")
        } else {
            format!("B{buf}[{off}]")
        }
    }

    /// The WGSL type of a value of `dt` in this pass.
    fn ty(&self, dt: DType) -> String {
        if self.vec {
            format!("vec4<{}>", wgsl_type(dt))
        } else {
            wgsl_type(dt).to_string()
        }
    }

    /// A per-call or per-row value used where per-element values are vectors.
    fn splat(&self, dt: DType, e: String) -> String {
        if self.vec {
            format!("{}({e})", self.ty(dt))
        } else {
            e
        }
    }

    fn bases(&self, axes: &[usize], out: &mut String) {
        let n = self.lay.accesses;
        let all: Vec<&Vec<Stride>> = self
            .ir
            .loads
            .iter()
            .map(|a| &a.strides)
            .chain(self.ir.stores.iter().map(|(a, _)| &a.strides))
            .collect();
        for (a, strides) in all.iter().enumerate().take(n) {
            let terms: Vec<String> = axes
                .iter()
                .filter(|&&k| strides[k] != Stride::Zero)
                .map(|&k| format!("i{k} * P[{}]", self.lay.stride(a, k)))
                .collect();
            let e = if terms.is_empty() {
                "0u".to_string()
            } else {
                terms.join(" + ")
            };
            let _ = writeln!(out, "    let b{a} = {e} - P[{}];", self.lay.base(a));
        }
    }

    fn unravel(&self, var: &str, axes: &[usize], out: &mut String) {
        let _ = writeln!(out, "    var rem = {var};");
        for (n, &k) in axes.iter().enumerate().rev() {
            if n == 0 {
                let _ = writeln!(out, "    let i{k} = rem;");
            } else {
                let d = self.lay.dim(k);
                let _ = writeln!(out, "    let i{k} = rem % P[{d}];\n    rem = rem / P[{d}];");
            }
        }
    }

    fn elementwise(&mut self) -> String {
        let mut s = String::new();
        let r = self.ir.dims.len();
        let per = if self.vec { "4u" } else { "1u" };
        let _ = writeln!(
            s,
            "    let e = P[2] + (wid * {WORKGROUP}u + lid) * {per};\n    if (e >= P[1]) {{ return; }}"
        );
        let axes: Vec<usize> = (0..r).collect();
        self.unravel("e", &axes, &mut s);
        self.bases(&axes, &mut s);
        let targets: Vec<usize> = self.ir.stores.iter().map(|(_, v)| *v).collect();
        let insts = self.ir.needed(&targets, |_| true);
        self.insts(&insts, None, &mut s);
        for (k, (_, v)) in self.ir.stores.iter().enumerate() {
            self.store(k, &format!("b{}", self.ir.loads.len() + k), *v, &mut s);
        }
        s
    }

    fn rows(&mut self) -> String {
        let ir = self.ir;
        let ax = ir.axis.unwrap_or(0);
        let r = ir.dims.len();
        let mut s = String::new();
        let outer: Vec<usize> = (0..r).filter(|&k| k != ax).collect();
        let _ = writeln!(
            s,
            "    let n = P[{}];\n    let axis_len = f32(n);",
            self.lay.dim(ax)
        );
        // Who walks a row: the workgroup, or (subgroup rows) the subgroup that owns it.
        let (first, step, leader) = if self.sg_rows {
            let _ = writeln!(
                s,
                "    for (var rr = lid / sgs; rr < {SG_ROWS}u; rr = rr + {WORKGROUP}u / sgs) {{\n    let row = P[2] + wid * {SG_ROWS}u + rr;\n    if (row < P[1]) {{"
            );
            ("sgi", "sgs".to_string(), "sgi")
        } else {
            let _ = writeln!(s, "    let row = P[2] + wid;");
            ("lid", format!("{WORKGROUP}u"), "lid")
        };
        if !outer.is_empty() {
            self.unravel("row", &outer, &mut s);
        }
        self.bases(&outer, &mut s);
        let sched = ir.row_schedule();
        self.insts(&sched.uniform, None, &mut s);
        self.insts(&sched.row_stages[0], None, &mut s);
        for (p, ph) in ir.phases.iter().enumerate() {
            let t = wgsl_type(ph.dtype);
            let insts = &sched.phase_elems[p];
            let _ = writeln!(s, "    var acc{p}: {t} = {};", red_init(ph.op, ph.dtype));
            let _ = writeln!(s, "    for (var j = {first}; j < n; j = j + {step}) {{");
            self.insts(insts, Some(ax), &mut s);
            let _ = writeln!(
                s,
                "    acc{p} = {};",
                combine(ph.op, &format!("acc{p}"), &format!("v{}", ph.value))
            );
            let _ = writeln!(s, "    }}");
            let op = subgroup_op(ph.op);
            if !self.sg_rows {
                // The workgroup's partial results meet in `red_{t}`.
                self.shared.insert(t);
            }
            if self.sg_rows {
                let _ = writeln!(s, "    let ph{p} = {op}(acc{p});");
            } else if self.sg {
                // Each subgroup's total, then every subgroup folds the totals lane by lane
                // (any subgroup size) and combines its lanes: the same value everywhere.
                let _ = writeln!(
                    s,
                    "    let sg{p} = {op}(acc{p});\n    if (sgi == 0u) {{ red_{t}[lid / sgs] = sg{p}; }}\n    workgroupBarrier();\n    var fold{p}: {t} = {};\n    for (var i = sgi; i < ({WORKGROUP}u + sgs - 1u) / sgs; i = i + sgs) {{ fold{p} = {}; }}\n    let ph{p} = {op}(fold{p});\n    workgroupBarrier();",
                    red_init(ph.op, ph.dtype),
                    combine(ph.op, &format!("fold{p}"), &format!("red_{t}[i]"))
                );
            } else {
                let _ = writeln!(
                    s,
                    "    red_{t}[lid] = acc{p};\n    workgroupBarrier();\n    for (var h = {}u; h > 0u; h = h >> 1u) {{\n        if (lid < h) {{ red_{t}[lid] = {}; }}\n        workgroupBarrier();\n    }}\n    let ph{p} = red_{t}[0];\n    workgroupBarrier();",
                    WORKGROUP / 2,
                    combine(ph.op, &format!("red_{t}[lid]"), &format!("red_{t}[lid + h]"))
                );
            }
            self.insts(&sched.row_stages[p + 1], None, &mut s);
        }
        if !sched.elem_stores.is_empty() {
            let _ = writeln!(s, "    for (var j = {first}; j < n; j = j + {step}) {{");
            self.insts(&sched.final_elems, Some(ax), &mut s);
            for &k in &sched.elem_stores {
                let a = ir.loads.len() + k;
                let off = format!("b{a} + j * P[{}]", self.lay.stride(a, ax));
                self.store(k, &off, ir.stores[k].1, &mut s);
            }
            let _ = writeln!(s, "    }}");
        }
        if !sched.row_stores.is_empty() {
            let _ = writeln!(s, "    if ({leader} == 0u) {{");
            for &k in &sched.row_stores {
                self.store(
                    k,
                    &format!("b{}", ir.loads.len() + k),
                    ir.stores[k].1,
                    &mut s,
                );
            }
            let _ = writeln!(s, "    }}");
        }
        if self.sg_rows {
            let _ = writeln!(s, "    }}\n    }}");
        }
        s
    }

    /// A matmul pass: tiles of A and B staged in workgroup memory `S` (A transposed, so a
    /// row block is contiguous), a `tm × tn` register block per invocation (runs of `width`
    /// rows and columns strided by the thread grid, so a block is read with 128-bit loads,
    /// neighbouring lanes read neighbouring words, and stores coalesce), then the epilogue per
    /// element of the block, in bounds only. The next step's tiles are loaded into registers
    /// while this step computes (global latency overlaps the arithmetic).
    fn matmul(&mut self, t: Tile) -> String {
        let ir = self.ir;
        let Some(mm) = &ir.mm else {
            return String::new();
        };
        let lay = self.lay;
        let r = ir.dims.len();
        let (mi, ni) = (r - 2, r - 1);
        let nb = mm.bs.len();
        let Tile {
            bm,
            bn,
            bk,
            tm,
            tn,
            ks,
            db,
            coop,
            v4,
        } = t;
        let v4 = v4 && v4_allowed(ir);
        let (threads, w) = (t.threads(), t.width());
        let pad = if coop { COOP_PAD } else { PAD };
        self.mm_width = w;
        self.coop_products = if coop { nb } else { 0 };
        let mut s = String::new();
        let (dm, dn, dk) = (lay.dim(mi), lay.dim(ni), lay.mm_k());
        let _ = writeln!(
            s,
            "    const BM = {bm}u;\n    const BMP = {}u;\n    const BN = {bn}u;\n    const BNP = {}u;\n    const BK = {bk}u;\n    const AKP = BK + {COOP_PAD}u;\n    const TM = {tm}u;\n    const TN = {tn}u;\n    const KS = {ks}u;\n    const W = {w}u;\n    const TXN = BN / TN;\n    const TYN = BM / TM;\n    const TPK = TXN * TYN;\n    const BOFF = BK * BMP;\n    const STAGE = {stage}u;\n    let M = P[{dm}];\n    let N = P[{dn}];\n    let K = P[{dk}];\n    let tiles_n = (N + BN - 1u) / BN;\n    let tiles_m = (M + BM - 1u) / BM;\n    let tn0 = (wid % tiles_n) * BN;\n    let tm0 = ((wid / tiles_n) % tiles_m) * BM;",
            bm + pad,
            bn + pad,
            stage = t.stage(nb)
        );
        let batch: Vec<usize> = (0..r - 2).collect();
        if !batch.is_empty() {
            self.unravel("wid / (tiles_n * tiles_m)", &batch, &mut s);
        }
        let base = |o: usize| -> String {
            let terms: Vec<String> = batch
                .iter()
                .map(|&k| format!("i{k} * P[{}]", lay.mm_stride(o, k)))
                .collect();
            if terms.is_empty() {
                "0u".into()
            } else {
                terms.join(" + ")
            }
        };
        let vty = if w == 4 { "vec4<f32>" } else { "f32" };
        // The slot of float `f` of `S` (a vec4 component when w = 4).
        let slot = |f: &str| {
            if w == 4 {
                format!("S[({f}) / 4u][({f}) % 4u]")
            } else {
                format!("S[{f}]")
            }
        };
        // Neighbouring lanes load neighbouring words: A along K and B along N, unless the
        // operand is stored the other way round (`at`/`bt`: a transposed view, e.g. a
        // `[out, in]` weight used as `transpose(w, 0, 1)`), where they go along M or K.
        let _ = writeln!(
            s,
            "    let ab = {};\n    let a_rs = P[{}];\n    let a_cs = P[{}];\n    let at = a_rs == 1u && a_cs != 1u;",
            base(0),
            lay.mm_stride(0, mi),
            lay.mm_stride(0, r)
        );
        // Per-invocation loads of one step (along the contiguous axis, see `at`/`bt`), of
        // vec4s with `v4`.
        let (q, pty) = if v4 { (4, "vec4<f32>") } else { (1, "f32") };
        let la = (bm * bk / q).div_ceil(threads);
        let lb = (bk * bn / q).div_ceil(threads);
        // Bounds on `e` where the invocations do not divide a tile evenly: the load's guard
        // prefix and the store's condition.
        let guard = |n: u32| match n % threads {
            0 => (String::new(), String::new()),
            _ => (format!("e < {n}u && "), format!("if (e < {n}u) ")),
        };
        let ((ga, sa), (gb, sb)) = (guard(bm * bk / q), guard(bk * bn / q));
        let _ = writeln!(s, "    var pa: array<{pty}, {la}>;");
        for j in 0..nb {
            let _ = writeln!(
                s,
                "    let bb{j} = {};\n    let b{j}_rs = P[{}];\n    let b{j}_cs = P[{}];\n    let bt{j} = b{j}_cs != 1u && b{j}_rs == 1u;\n    var pb{j}: array<{pty}, {lb}>;",
                base(1 + j),
                lay.mm_stride(1 + j, r),
                lay.mm_stride(1 + j, ni),
            );
            if !coop {
                let _ = writeln!(s, "    var acc{j}: array<{vty}, {}>;", tm * tn / w);
            }
            // A subgroup's 2 × 2 fragments: `c` sums hi·hi, `d` the two cross products.
            for (f, _) in coop.then_some(FRAGS).into_iter().flatten() {
                let _ = writeln!(
                    s,
                    "    var c{j}_{f} = coop_mat16x16<f32, C>();\n    var d{j}_{f} = coop_mat16x16<f32, C>();"
                );
            }
        }
        let (slice, l2) = if ks > 1 {
            ("lid / TPK", "lid % TPK")
        } else {
            ("0u", "lid")
        };
        if coop {
            // `CS[OVF]` flags an operand outside the split's range (see `Tile`), for the
            // exact fallback in the epilogue.
            let _ = writeln!(
                s,
                "    let sg = lid / 32u;\n    let qm = (sg / TXN) * 32u;\n    let qn = (sg % TXN) * 32u;\n    if (lid == 0u) {{ CS[OVF] = 0.0; }}\n    workgroupBarrier();"
            );
        } else {
            let _ = writeln!(
                s,
                "    let slice = {slice};\n    let l2 = {l2};\n    let tx = l2 % TXN;\n    let ty = l2 / TXN;"
            );
        }
        // Prologues (see `MatMulIr`): their loads' batch bases, then per operand the code that
        // sets `v` at (gm, gk) for A and (gk, gn) for B; out-of-range elements stay 0.
        let first = 1 + nb;
        for i in 0..mm.extra.len() {
            let _ = writeln!(s, "    let xb{i} = {};", base(first + i));
        }
        let pro: Vec<Option<String>> = mm
            .pro
            .iter()
            .map(|v| {
                v.map(|v| {
                    let mut c = String::new();
                    self.insts(&ir.needed(&[v], |_| true), None, &mut c);
                    c + &format!("    v = v{v};")
                })
            })
            .collect();
        let ab = mm.a.buf;
        // `v4`: A's vec4 `e` is row `e / (BK / 4)`, depth `4 · (e % (BK / 4))`; B's is depth
        // `e / (BN / 4)`, column `4 · (e % (BN / 4))`, or transposed (`bt`) column
        // `e / (BK / 4)`, depth `4 · (e % (BK / 4))`. The runtime allows `v4` only where every
        // vec4 is whole and aligned, so `gk < K` and `gn < N` bound all four floats.
        let load_v4 = |kb: &str| {
            let mut l = format!(
                "    for (var r = 0u; r < {la}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        let gm = tm0 + e / (BK / 4u);\n        let gk = {kb} + (e % (BK / 4u)) * 4u;\n        var v = vec4<f32>(0.0);\n        if ({ga}gm < M && gk < K) {{ v = B{ab}[(ab + gm * a_rs + gk) / 4u]; }}\n        pa[r] = v;\n    }}\n"
            );
            for (j, b) in mm.bs.iter().enumerate() {
                let buf = b.buf;
                let _ = writeln!(
                    l,
                    "    for (var r = 0u; r < {lb}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        let gk = {kb} + select(e / (BN / 4u), (e % (BK / 4u)) * 4u, bt{j});\n        let gn = tn0 + select((e % (BN / 4u)) * 4u, e / (BK / 4u), bt{j});\n        var v = vec4<f32>(0.0);\n        if ({gb}gk < K && gn < N) {{ v = B{buf}[(bb{j} + gk * b{j}_rs + gn * b{j}_cs) / 4u]; }}\n        pb{j}[r] = v;\n    }}"
                );
            }
            l
        };
        let load = |kb: &str| {
            if v4 {
                return load_v4(kb);
            }
            let mut l = format!(
                "    for (var r = 0u; r < {la}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        let gm = tm0 + select(e / BK, e % BM, at);\n        let gk = {kb} + select(e % BK, e / BM, at);\n        var v = 0.0;\n        if ({ga}gm < M && gk < K) {{ {} }}\n        pa[r] = v;\n    }}\n",
                pro[0].as_deref().unwrap_or(&format!("v = B{ab}[ab + gm * a_rs + gk * a_cs];"))
            );
            for (j, b) in mm.bs.iter().enumerate() {
                let buf = b.buf;
                let _ = writeln!(
                    l,
                    "    for (var r = 0u; r < {lb}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        let gk = {kb} + select(e / BN, e % BK, bt{j});\n        let gn = tn0 + select(e % BN, e / BK, bt{j});\n        var v = 0.0;\n        if ({gb}gk < K && gn < N) {{ {} }}\n        pb{j}[r] = v;\n    }}",
                    pro[1 + j].as_deref().unwrap_or(&format!("v = B{buf}[bb{j} + gk * b{j}_rs + gn * b{j}_cs];"))
                );
            }
            l
        };
        s.push_str(&load("0u"));
        // The half of S this step stages into (always the first without double-buffering),
        // in floats and in `W`-wide slots.
        let (half, halfw) = if db { ("sb + ", "sb / W + ") } else { ("", "") };
        let _ = writeln!(s, "    for (var k0 = 0u; k0 < K; k0 = k0 + BK) {{");
        if db {
            let _ = writeln!(s, "    let sb = ((k0 / BK) % 2u) * STAGE;");
        }
        if coop {
            // Each operand as f16 `hi` (its top 11 significant bits, masked off: NVIDIA's
            // compiler folds `v - f32(f16(v))` to zero) and `lo = (v - hi) * 2048`; A m-major.
            let split = |v: &str, arr: &str, at: &str| {
                format!(
                    "{{\n            let v = {v};\n            if (!(abs(v) < 32768.0)) {{ CS[OVF] = 1.0; }}\n            let hv = bitcast<f32>(bitcast<u32>(v) & 0xffffe000u);\n            let o = {at};\n            {arr}H[o] = f16(hv);\n            {arr}L[o] = f16((v - hv) * 2048.0);\n        }}"
                )
            };
            // Where float `u` of vec4 `e` goes (see `load_v4`), or scalar `e`.
            let (a_at, vu, v_loop) = if v4 {
                (
                    "(e / (BK / 4u)) * AKP + (e % (BK / 4u)) * 4u + u",
                    "[u]",
                    "for (var u = 0u; u < 4u; u = u + 1u) ",
                )
            } else {
                (
                    "select((e / BK) * AKP + e % BK, (e % BM) * AKP + e / BM, at)",
                    "",
                    "",
                )
            };
            let _ = writeln!(
                s,
                "    for (var r = 0u; r < {la}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        {sa}{v_loop}{}\n    }}",
                split(&format!("pa[r]{vu}"), "A", a_at)
            );
            let b_len = t.coop_tiles().1;
            for j in 0..nb {
                let at = if v4 {
                    format!(
                        "{}u + select((e / (BN / 4u)) * BNP + (e % (BN / 4u)) * 4u + u, ((e % (BK / 4u)) * 4u + u) * BNP + e / (BK / 4u), bt{j})",
                        j as u32 * b_len
                    )
                } else {
                    format!(
                        "{}u + select((e / BN) * BNP + e % BN, (e % BK) * BNP + e / BK, bt{j})",
                        j as u32 * b_len
                    )
                };
                let _ = writeln!(
                    s,
                    "    for (var r = 0u; r < {lb}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        {sb}{v_loop}{}\n    }}",
                    split(&format!("pb{j}[r]{vu}"), "B", &at)
                );
            }
        } else {
            let _ = writeln!(
                s,
                "    for (var r = 0u; r < {la}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        {}{{ {} = pa[r]; }}\n    }}",
                sa,
                slot(&format!(
                    "{half}select((e % BK) * BMP + e / BK, (e / BM) * BMP + e % BM, at)"
                ))
            );
            for j in 0..nb {
                let _ = writeln!(
                    s,
                    "    for (var r = 0u; r < {lb}u; r = r + 1u) {{\n        let e = lid + r * {threads}u;\n        {}{{ {} = pb{j}[r]; }}\n    }}",
                    sb,
                    slot(&format!(
                        "{half}BOFF + {}u + select((e / BN) * BNP + e % BN, (e % BK) * BNP + e / BK, bt{j})",
                        j as u32 * bk * (bn + PAD)
                    ))
                );
            }
        }
        let _ = writeln!(s, "    workgroupBarrier();");
        s.push_str(&load("k0 + BK"));
        if coop {
            // Per 16-deep slice: the subgroup's hi and lo fragments of A (2 along M) and of
            // each B (2 along N), then three products per output fragment.
            let _ = writeln!(s, "    for (var kk = 0u; kk < BK; kk = kk + 16u) {{");
            for a in 0..2 {
                for part in ["H", "L"] {
                    let _ = writeln!(
                        s,
                        "        let a{part}{a} = coopLoadT<coop_mat16x16<f16, A>>(&A{part}[(qm + {}u) * AKP + kk], {}u);",
                        16 * a,
                        bk + COOP_PAD
                    );
                }
            }
            // B's fragments, row-major. (Staging a transposed B n-major, its stores
            // contiguous, and reading column-major fragments was slower: MiniLM's products at
            // batch 32 on an H200 took 3.18 ms against 3.05.)
            let b_len = t.coop_tiles().1;
            for j in 0..nb {
                for b in 0..2 {
                    for part in ["H", "L"] {
                        let _ = writeln!(
                            s,
                            "        let b{part}{j}_{b} = coopLoadT<coop_mat16x16<f16, B>>(&B{part}[{}u + kk * BNP + qn + {}u], {}u);",
                            j as u32 * b_len,
                            16 * b,
                            bn + COOP_PAD
                        );
                    }
                }
                for (f, (a, b)) in FRAGS {
                    let _ = writeln!(
                        s,
                        "        c{j}_{f} = coopMultiplyAdd(aH{a}, bH{j}_{b}, c{j}_{f});\n        d{j}_{f} = coopMultiplyAdd(aH{a}, bL{j}_{b}, d{j}_{f});\n        d{j}_{f} = coopMultiplyAdd(aL{a}, bH{j}_{b}, d{j}_{f});"
                    );
                }
            }
        } else {
            let _ = writeln!(
                s,
                "    for (var q = 0u; q < BK / KS; q = q + 1u) {{\n        let kk = slice * (BK / KS) + q;\n        var ar: array<{vty}, {}>;\n        for (var i = 0u; i < TM / W; i = i + 1u) {{ ar[i] = S[{halfw}kk * (BMP / W) + i * TYN + ty]; }}",
                tm / w
            );
            let a_of = if w == 4 {
                "vec4<f32>(ar[i / 4u][i % 4u])"
            } else {
                "ar[i]"
            };
            for j in 0..nb {
                let off = j as u32 * bk * (bn + PAD);
                let _ = writeln!(
                    s,
                    "        var br{j}: array<{vty}, {}>;\n        for (var g = 0u; g < TN / W; g = g + 1u) {{ br{j}[g] = S[{halfw}(BOFF + {off}u + kk * BNP) / W + g * TXN + tx]; }}\n        for (var i = 0u; i < TM; i = i + 1u) {{\n            let a = {a_of};\n            for (var g = 0u; g < TN / W; g = g + 1u) {{ acc{j}[i * (TN / W) + g] = fma(a, br{j}[g], acc{j}[i * (TN / W) + g]); }}\n        }}",
                    tn / w
                );
            }
        }
        // Double-buffered, the next step stages into the other half: no barrier needed before
        // it, but one after the loop before the slices' partial blocks reuse S.
        if db {
            let _ = writeln!(s, "    }}\n    }}\n    workgroupBarrier();");
        } else {
            let _ = writeln!(s, "    }}\n    workgroupBarrier();\n    }}");
        }
        if ks > 1 {
            // Slices 1.. leave their blocks in S (lane-interleaved: conflict-free), slice 0
            // adds them up and runs the epilogue.
            let part = |sl: &str, j: usize| {
                format!("S[(({sl}) * {nb}u + {j}u) * TPK * (TM * TN / W) + q * TPK + l2]")
            };
            let _ = writeln!(s, "    if (slice > 0u) {{");
            for j in 0..nb {
                let _ = writeln!(
                    s,
                    "        for (var q = 0u; q < TM * TN / W; q = q + 1u) {{ {} = acc{j}[q]; }}",
                    part("slice - 1u", j)
                );
            }
            let _ = writeln!(s, "    }}\n    workgroupBarrier();\n    if (slice != 0u) {{ return; }}\n    for (var sl = 1u; sl < KS; sl = sl + 1u) {{");
            for j in 0..nb {
                let _ = writeln!(
                    s,
                    "        for (var q = 0u; q < TM * TN / W; q = q + 1u) {{ acc{j}[q] = acc{j}[q] + {}; }}",
                    part("sl - 1u", j)
                );
            }
            let _ = writeln!(s, "    }}");
        }
        // The epilogue, once per element of the register block. Any epilogue beyond storing
        // the accumulators is unrolled here: in a loop, a large body (a bias and GELU, 64
        // elements per invocation) is not unrolled by the driver, which then indexes the
        // accumulators dynamically and moves them out of registers (H100: linear + GELU at
        // 4096 x 1024 x 4096 17.3 ms in a loop, 1.10 ms unrolled). A plain store stays a
        // loop, which the driver unrolls itself (4096^3: 3.64 ms, against 3.96 ms unrolled
        // here).
        let mut body = String::new();
        let axes: Vec<usize> = (0..r).collect();
        self.bases(&axes, &mut body);
        let targets: Vec<usize> = ir.stores.iter().map(|(_, v)| *v).collect();
        let insts = ir.needed(&targets, |_| true);
        self.insts(&insts, None, &mut body);
        for (k, (_, v)) in ir.stores.iter().enumerate() {
            self.store(k, &format!("b{}", ir.loads.len() + k), *v, &mut body);
        }
        if coop {
            self.coop_epilogue(&pro, &body, &mut s);
            return s;
        }
        // Element (i, jj) of the block, in bounds only.
        let element = format!(
            "    let i{mi} = tm0 + (i / W) * (TYN * W) + ty * W + i % W;\n    let i{ni} = tn0 + (jj / W) * (TXN * W) + tx * W + jj % W;\n    if (i{mi} < M && i{ni} < N) {{\n{body}    }}\n"
        );
        if insts
            .iter()
            .all(|&i| matches!(ir.insts[i].op, InstOp::Acc(_)))
        {
            let _ = writeln!(
                s,
                "    for (var i = 0u; i < TM; i = i + 1u) {{\n    for (var jj = 0u; jj < TN; jj = jj + 1u) {{\n{element}    }}\n    }}"
            );
            return s;
        }
        for i in 0..tm {
            for jj in 0..tn {
                let _ = writeln!(
                    s,
                    "    {{\n    let i = {i}u;\n    let jj = {jj}u;\n{element}    }}"
                );
            }
        }
        s
    }

    /// A tensor-core pass's epilogue, fragment by fragment: each subgroup stores the
    /// fragment of every product in its slots of `CS` (f32), then its lanes run the epilogue
    /// `body` on the fragment's elements in bounds. Where an operand was outside the split's
    /// range (the flag `CS[OVF]`), the workgroup recomputes its elements as exact f32 dot
    /// products from the operands (`pro`: the prologue's code per operand), so overflow,
    /// infinities and NaN come out as an f32 product would.
    fn coop_epilogue(&self, pro: &[Option<String>], body: &str, s: &mut String) {
        let Some(mm) = &self.ir.mm else {
            return;
        };
        let r = self.ir.dims.len();
        let (mi, ni) = (r - 2, r - 1);
        let nb = mm.bs.len();
        let a_load = pro[0].clone().unwrap_or_else(|| {
            format!("v = {};", self.elem(mm.a.buf, "ab + gm * a_rs + gk * a_cs"))
        });
        let mut exact = String::new();
        for (j, b) in mm.bs.iter().enumerate() {
            let b_load = pro[1 + j].clone().unwrap_or_else(|| {
                format!(
                    "v = {};",
                    self.elem(b.buf, &format!("bb{j} + gk * b{j}_rs + gn * b{j}_cs"))
                )
            });
            let _ = write!(
                exact,
                "\n            {{\n            var dot = 0.0;\n            for (var gk = 0u; gk < K; gk = gk + 1u) {{\n                var v = 0.0;\n                {{ {a_load} }}\n                let x = v;\n                {{ {b_load} }}\n                dot = fma(x, v, dot);\n            }}\n            CS[(sg * {nb}u + {j}u) * 256u + e] = dot;\n            }}"
            );
        }
        // Read after the main loop's last barrier; the branch on it holds no barrier, so it
        // need not be uniform.
        let _ = writeln!(s, "    let ovf = CS[OVF] != 0.0;");
        for (f, (a, b)) in FRAGS {
            for j in 0..nb {
                let _ = writeln!(
                    s,
                    "    coopStoreT(c{j}_{f} + d{j}_{f} * (1.0 / 2048.0), &CS[(sg * {nb}u + {j}u) * 256u], 16u);"
                );
            }
            let _ = writeln!(
                s,
                "    workgroupBarrier();\n    for (var e = lid % 32u; e < 256u; e = e + 32u) {{\n    let i{mi} = tm0 + qm + {}u + e / 16u;\n    let i{ni} = tn0 + qn + {}u + e % 16u;\n    if (i{mi} < M && i{ni} < N) {{\n        let gm = i{mi};\n        let gn = i{ni};\n        if (ovf) {{{exact}\n        }}\n{body}    }}\n    }}\n    workgroupBarrier();",
                16 * a,
                16 * b
            );
        }
    }

    fn store(&self, k: usize, off: &str, v: usize, s: &mut String) {
        let buf = self.ir.stores[k].0.buf;
        let val = if self.buf_types[buf] == DType::Bool {
            format!(
                "select({}, {}, v{v})",
                self.splat(DType::U32, "0u".into()),
                self.splat(DType::U32, "1u".into())
            )
        } else {
            format!("v{v}")
        };
        let off = if self.vec {
            format!("({off}) / 4u")
        } else {
            off.to_string()
        };
        let _ = writeln!(s, "    B{buf}[{off}] = {val};");
    }

    /// `let v{i} = …;` for each instruction; inside a row loop, element loads index by `j`
    /// along `axis`.
    fn insts(&mut self, insts: &[usize], axis: Option<usize>, s: &mut String) {
        for &i in insts {
            let inst = &self.ir.insts[i];
            let dt = inst.dtype;
            let a = |k: usize| format!("v{k}");
            let e = match &inst.op {
                InstOp::Load(k) => {
                    let acc = &self.ir.loads[*k];
                    let off = match axis {
                        Some(ax) if acc.strides[ax] != Stride::Zero => {
                            format!("b{k} + j * P[{}]", self.lay.stride(*k, ax))
                        }
                        _ => format!("b{k}"),
                    };
                    let r = self.ir.dims.len();
                    let raw = if self.vec && acc.strides[r - 1].is_one() {
                        format!("B{}[({off}) / 4u]", acc.buf)
                    } else {
                        self.splat(
                            if dt == DType::Bool { DType::U32 } else { dt },
                            self.elem(acc.buf, &off),
                        )
                    };
                    if dt == DType::Bool {
                        format!("({raw} != {})", self.splat(DType::U32, "0u".into()))
                    } else {
                        raw
                    }
                }
                InstOp::Scalar(sc) => {
                    let p = format!("P[{}]", self.lay.scalar(*sc));
                    let v = match self.scalar_types.get(*sc).copied().unwrap_or(DType::F32) {
                        DType::F32 => format!("bitcast<f32>({p})"),
                        DType::I32 => format!("bitcast<i32>({p})"),
                        DType::U32 => p,
                        DType::Bool => format!("({p} != 0u)"),
                    };
                    self.splat(dt, v)
                }
                InstOp::Const(c) => self.splat(dt, const_expr(*c)),
                InstOp::Phase(p) => format!("ph{p}"),
                InstOp::AxisLen => "axis_len".to_string(),
                InstOp::Acc(j) if self.coop_products > 0 => {
                    format!("CS[(sg * {}u + {j}u) * 256u + e]", self.coop_products)
                }
                InstOp::Acc(j) if self.mm_width == 4 => {
                    format!("acc{j}[i * (TN / 4u) + jj / 4u][jj % 4u]")
                }
                InstOp::Acc(j) => format!("acc{j}[i * TN + jj]"),
                InstOp::Operand(x) => {
                    let Some(mm) = &self.ir.mm else {
                        return;
                    };
                    let o = 1 + mm.bs.len() + x;
                    let r = self.ir.dims.len();
                    let mut off = format!("xb{x}");
                    for (k, var) in [(r - 2, "gm"), (r - 1, "gn"), (r, "gk")] {
                        if mm.extra[*x].strides[k] != Stride::Zero {
                            let _ = write!(off, " + {var} * P[{}]", self.lay.mm_stride(o, k));
                        }
                    }
                    self.elem(mm.extra[*x].buf, &off)
                }
                InstOp::Unary(op, x) => self.unary(*op, dt, &a(*x)),
                InstOp::Binary(BinOp::Pow, x, y) => {
                    self.helpers.insert("mia_pow");
                    format!(
                        "mia_pow{}({}, {})",
                        if self.vec { "4" } else { "" },
                        a(*x),
                        a(*y)
                    )
                }
                InstOp::Binary(op, x, y) => binary(*op, &a(*x), &a(*y)),
                InstOp::Select(c, x, y) => format!("select({}, {}, {})", a(*y), a(*x), a(*c)),
                InstOp::Cast(x) => format!("{}({})", self.ty(dt), a(*x)),
            };
            let _ = writeln!(s, "    let v{i}: {} = {e};", self.ty(dt));
        }
    }

    fn unary(&mut self, op: UnOp, dt: DType, a: &str) -> String {
        let float = dt == DType::F32;
        let suffix = if self.vec { "4" } else { "" };
        let zero = self.splat(dt, if float { "0.0".into() } else { "0i".into() });
        let mut call = |name: &'static str| {
            self.helpers.insert(name);
            if name == "mia_gelu" || name == "mia_erf" {
                self.helpers.insert("mia_erfc");
            }
            if name == "mia_sin" || name == "mia_cos" {
                self.helpers.insert("mia_reduce");
            }
            format!("{name}{suffix}({a})")
        };
        match op {
            UnOp::Neg => format!("(-{a})"),
            UnOp::Abs if dt == DType::U32 => a.to_string(),
            UnOp::Abs => format!("abs({a})"),
            UnOp::Relu if float || dt == DType::I32 => format!("max({a}, {zero})"),
            UnOp::Relu => a.to_string(),
            UnOp::Exp => format!("exp({a})"),
            UnOp::Ln => format!("log({a})"),
            UnOp::Sqrt => format!("sqrt({a})"),
            UnOp::Rsqrt => format!("inverseSqrt({a})"),
            UnOp::Sin => call("mia_sin"),
            UnOp::Cos => call("mia_cos"),
            UnOp::Tanh => call("mia_tanh"),
            UnOp::Sigmoid => call("mia_sigmoid"),
            UnOp::Gelu => call("mia_gelu"),
            UnOp::GeluTanh => call("mia_gelu_tanh"),
            UnOp::Silu => call("mia_silu"),
        }
    }
}

/// WGSL helper functions, written once over a type `T` (f32, or vec4<f32> for vec4 passes,
/// whose helpers take the suffix `4`); constants are wrapped as `T(c)` so they splat.
fn helper(name: &str, vec: bool) -> String {
    let src = match name {
        // tanh: an odd series near 0 (driver tanh loses relative accuracy there), the builtin
        // beyond, clamped where it saturates so exp-based implementations never see inf/inf.
        "mia_tanh" => {
            "fn mia_tanh#(x: T) -> T {\n    let x2 = x * x;\n    let small = x * (T(1.0) + x2 * (T(-0.33333333) + x2 * (T(0.13333333) + x2 * T(-0.053968254))));\n    return select(tanh(clamp(x, T(-15.0), T(15.0))), small, abs(x) < T(0.125));\n}\n"
        }
        "mia_sigmoid" => "fn mia_sigmoid#(x: T) -> T { return T(1.0) / (T(1.0) + exp(-x)); }\n",
        // x - k·2π in three parts (k·C1 and k·C2 exact for |k| < 2^11, |x| up to ~1e4), so
        // drivers' sin/cos, accurate on [-π, π] only, stay accurate for large arguments.
        "mia_reduce" => {
            "fn mia_reduce#(x: T) -> T {\n    let k = round(x * T(0.15915494));\n    return ((x - k * T(6.28125)) - k * T(0.0019350052)) - k * T(3.0199160e-7);\n}\n"
        }
        "mia_sin" => "fn mia_sin#(x: T) -> T { return sin(mia_reduce#(x)); }\n",
        "mia_cos" => "fn mia_cos#(x: T) -> T { return cos(mia_reduce#(x)); }\n",
        "mia_silu" => "fn mia_silu#(x: T) -> T { return x / (T(1.0) + exp(-x)); }\n",
        // erfc with relative error < 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit), so
        // GELU's left tail, 0.5·x·erfc(-x/√2), keeps its relative accuracy.
        "mia_erfc" => {
            "fn mia_erfc#(x: T) -> T {\n    let z = abs(x);\n    let t = T(1.0) / (T(1.0) + T(0.5) * z);\n    let r = t * exp(-z * z - T(1.26551223) + t * (T(1.00002368) + t * (T(0.37409196) + t * (T(0.09678418) + t * (T(-0.18628806) + t * (T(0.27886807) + t * (T(-1.13520398) + t * (T(1.48851587) + t * (T(-0.82215223) + t * T(0.17087277))))))))));\n    return select(T(2.0) - r, r, x >= T(0.0));\n}\n"
        }
        // erf: Taylor series near 0 (relative accuracy), 1 - erfc beyond.
        "mia_erf" => {
            "fn mia_erf#(x: T) -> T {\n    let x2 = x * x;\n    let small = x * (T(1.1283791671) + x2 * (T(-0.3761263890) + x2 * (T(0.1128379167) + x2 * (T(-0.0268661706) + x2 * (T(0.0052239776) + x2 * T(-0.0008548327))))));\n    return select(T(1.0) - mia_erfc#(x), small, abs(x) < T(0.5));\n}\n"
        }
        "mia_gelu" => "fn mia_gelu#(x: T) -> T { return T(0.5) * x * mia_erfc#(x * T(-0.70710678118)); }\n",
        // 0.5·(1 + tanh(u)) = sigmoid(2u): no cancellation in the left tail.
        "mia_gelu_tanh" => {
            "fn mia_gelu_tanh#(x: T) -> T { return x / (T(1.0) + exp(T(-1.5957691216) * (x + T(0.044715) * x * x * x))); }\n"
        }
        // pow for a negative base with an integer exponent (WGSL's pow is exp2(y·log2(x))).
        "mia_pow" => {
            "fn mia_pow#(x: T, y: T) -> T {\n    let r = pow(abs(x), y);\n    let odd = abs(y - T(2.0) * floor(y * T(0.5))) == T(1.0);\n    let neg = select(select(T(bitcast<f32>(0x7fc00000u)), r, y == floor(y)), -r, odd);\n    return select(r, neg, x < T(0.0));\n}\n"
        }
        _ => "",
    };
    let (t, suffix) = if vec { ("vec4<f32>", "4") } else { ("f32", "") };
    src.replace("T(", &format!("{t}("))
        .replace(": T", &format!(": {t}"))
        .replace("-> T", &format!("-> {t}"))
        .replace('#', suffix)
}

fn red_init(op: RedOp, dt: DType) -> String {
    match (op, dt) {
        (RedOp::Sum | RedOp::Mean, DType::F32) => "0.0".into(),
        (RedOp::Sum | RedOp::Mean, DType::I32) => "0i".into(),
        (RedOp::Sum | RedOp::Mean, _) => "0u".into(),
        (RedOp::Max, DType::F32) => "bitcast<f32>(0xff800000u)".into(),
        (RedOp::Min, DType::F32) => "bitcast<f32>(0x7f800000u)".into(),
        (RedOp::Max, DType::I32) => "i32(-2147483647 - 1)".into(),
        (RedOp::Min, DType::I32) => "2147483647i".into(),
        (RedOp::Max, _) => "0u".into(),
        (RedOp::Min, _) => "4294967295u".into(),
    }
}

/// The subgroup operation of a reduction.
fn subgroup_op(op: RedOp) -> &'static str {
    match op {
        RedOp::Sum | RedOp::Mean => "subgroupAdd",
        RedOp::Max => "subgroupMax",
        RedOp::Min => "subgroupMin",
    }
}

fn combine(op: RedOp, a: &str, v: &str) -> String {
    match op {
        RedOp::Sum | RedOp::Mean => format!("{a} + {v}"),
        RedOp::Max => format!("max({a}, {v})"),
        RedOp::Min => format!("min({a}, {v})"),
    }
}

fn const_expr(c: Const) -> String {
    match c.dtype {
        DType::F32 => {
            let v = f32::from_bits(c.bits);
            if v.is_finite() {
                format!("({v:?}f)")
            } else {
                format!("bitcast<f32>({}u)", c.bits)
            }
        }
        DType::I32 => format!("bitcast<i32>({}u)", c.bits),
        DType::U32 => format!("{}u", c.bits),
        DType::Bool => (c.bits != 0).to_string(),
    }
}

fn binary(op: BinOp, a: &str, b: &str) -> String {
    let sym = match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "*",
        BinOp::Div => "/",
        BinOp::Lt => "<",
        BinOp::Le => "<=",
        BinOp::Gt => ">",
        BinOp::Ge => ">=",
        BinOp::Eq => "==",
        BinOp::Ne => "!=",
        // Emitted through the `mia_pow` helper, which handles negative bases.
        BinOp::Pow => return format!("mia_pow({a}, {b})"),
        BinOp::Max => return format!("max({a}, {b})"),
        BinOp::Min => return format!("min({a}, {b})"),
    };
    format!("({a} {sym} {b})")
}
