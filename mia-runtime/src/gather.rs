//! Row lookup, `gather(table, ids)` (embedding tables): `out[i, :] = table[ids[i], :]`. It is a
//! pass of its own because the row an element reads depends on data. On the CPU an index out
//! of range is an error naming the argument; on the GPU (where checking would cost a read-back)
//! indices are clamped into the table.

use crate::error::{Error, Result};
use crate::tensor::Element;

/// An integer dtype that indexes rows.
pub trait RowIndex: Copy + Send + Sync {
    fn row(self) -> i64;
    /// Whether the WGSL reads it as `i32` (else `u32`).
    const SIGNED: bool;
}

impl RowIndex for i32 {
    fn row(self) -> i64 {
        self as i64
    }
    const SIGNED: bool = true;
}

impl RowIndex for u32 {
    fn row(self) -> i64 {
        self as i64
    }
    const SIGNED: bool = false;
}

/// Rows at or below this many elements are copied on the calling thread.
const SERIAL: usize = 1 << 15;

/// CPU gather: `table` is `[rows, width]` row-major, `out` is `[ids.len(), width]`.
pub fn gather<T: Element, I: RowIndex>(
    kernel: &'static str,
    arg: &'static str,
    table: &[T],
    width: usize,
    ids: &[I],
    out: &mut [T],
) -> Result<()> {
    if width == 0 {
        return Ok(());
    }
    let rows = table.len() / width;
    if let Some((pos, id)) = ids
        .iter()
        .enumerate()
        .find(|(_, i)| !(0..rows as i64).contains(&i.row()))
    {
        return Err(Error::Index {
            kernel,
            arg,
            position: pos,
            value: id.row(),
            rows,
        });
    }
    let copy = |(o, id): (&mut [T], &I)| {
        let r = id.row() as usize;
        o.copy_from_slice(&table[r * width..(r + 1) * width]);
    };
    if out.len() <= SERIAL {
        out.chunks_mut(width).zip(ids).for_each(copy);
    } else {
        crate::team::fork_rows_mut(out, width, |i, o| {
            if let Some(id) = ids.get(i) {
                copy((o, id))
            }
        });
    }
    Ok(())
}

/// The GPU form: one invocation per output element; elements move as 32-bit words, so one
/// shader serves every 4-byte dtype. Params: groups, total, width, rows, signed.
pub const GATHER_WGSL: &str = r#"// mia_runtime gather: out[i, :] = table[clamp(ids[i]), :]
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> ids: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= P[0]) { return; }
    let i = wid * 256u + lid;
    if (i >= P[1]) { return; }
    let w = P[2];
    let t = i / w;
    let c = i - t * w;
    var r = ids[t];
    if (P[4] == 1u) {
        r = u32(clamp(bitcast<i32>(r), 0, i32(P[3]) - 1));
    } else {
        r = min(r, P[3] - 1u);
    }
    out[i] = table[r * w + c];
}
"#;

/// Without the `gpu` feature no GPU buffer exists, so this is never called.
#[cfg(not(feature = "gpu"))]
pub fn gpu_gather<I: RowIndex>(
    _dev: &crate::Device,
    label: &'static str,
    _table: &crate::rt::GpuBuffer,
    _width: usize,
    _ids: &crate::rt::GpuBuffer,
    _out: &crate::rt::GpuBuffer,
) -> Result<()> {
    Err(Error::Internal(format!(
        "{label}: built without the `gpu` feature"
    )))
}

/// GPU gather into `out` (`[ids.len(), width]` elements), on `table`'s device.
#[cfg(feature = "gpu")]
pub fn gpu_gather<I: RowIndex>(
    dev: &crate::Device,
    label: &'static str,
    table: &crate::rt::GpuBuffer,
    width: usize,
    ids: &crate::rt::GpuBuffer,
    out: &crate::rt::GpuBuffer,
) -> Result<()> {
    let total = out.len();
    if width == 0 || total == 0 {
        return Ok(());
    }
    let rows = table.len() / width;
    if rows == 0 {
        return Err(Error::Index {
            kernel: label,
            arg: "table",
            position: 0,
            value: 0,
            rows,
        });
    }
    let lim = dev.limits();
    crate::rt::gpu_whole_bindings(
        label,
        &[table.len(), ids.len(), total],
        lim.max_storage_binding_bytes,
    )?;
    let groups = total.div_ceil(256);
    let u = |v: usize| crate::rt::gpu_u32(label, v);
    dev.dispatch(&crate::rt::GpuPass {
        wgsl: GATHER_WGSL,
        label,
        buffers: &[table, ids, out],
        ranges: &[],
        reads: 2,
        params: &[u(groups)?, u(total)?, u(width)?, u(rows)?, I::SIGNED as u32],
        groups: groups as u64,
        in_bounds: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_rows_and_rejects_bad_ids() {
        let table: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = vec![f32::NAN; 9];
        gather("k", "ids", &table, 3, &[3i32, 0, 2], &mut out).unwrap();
        assert_eq!(out, [9., 10., 11., 0., 1., 2., 6., 7., 8.]);
        let err = gather("k", "ids", &table, 3, &[1i32, 4], &mut out).unwrap_err();
        assert!(err.to_string().contains("ids"), "{err}");
        assert!(gather("k", "ids", &table, 3, &[-1i32], &mut out[..3]).is_err());
    }
}
