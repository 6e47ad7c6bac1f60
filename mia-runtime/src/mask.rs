//! `causal(x)` outside an attention: `x` is `[.., T, S]` row-major; element `(i, j)` of each
//! `T × S` matrix becomes `-inf` where `j > i + (S − T)` (bottom-right aligned, as the
//! attention's causal flag), and is copied otherwise. Inside an attention pattern the flash
//! attention applies the mask itself and this pass does not run.

use crate::error::Result;

/// Elements at or below this many are masked on the calling thread.
const SERIAL: usize = 1 << 15;

/// Whether key `j` is hidden from query `i` in a `T × S` matrix.
#[inline]
fn hidden(i: usize, j: usize, t: usize, s: usize) -> bool {
    // j > i + S - T, without underflow when T > S.
    j + t > i + s
}

/// CPU causal mask: `x` and `out` hold the same number of `[T, S]` matrices.
pub fn causal_mask(x: &[f32], t: usize, s: usize, out: &mut [f32]) {
    if t == 0 || s == 0 {
        return;
    }
    let row = |(r, (o, x)): (usize, (&mut [f32], &[f32]))| {
        let i = r % t;
        for (j, (o, &x)) in o.iter_mut().zip(x).enumerate() {
            *o = if hidden(i, j, t, s) {
                f32::NEG_INFINITY
            } else {
                x
            };
        }
    };
    if out.len() <= SERIAL {
        out.chunks_mut(s).zip(x.chunks(s)).enumerate().for_each(row);
    } else {
        crate::team::fork_rows_mut(out, s, |r, o| {
            if let Some(x) = x.get(r * s..(r + 1) * s) {
                row((r, (o, x)))
            }
        });
    }
}

/// The GPU form: one invocation per element. Params: groups, total, T, S.
pub const CAUSAL_WGSL: &str = r#"// mia_runtime causal mask: out = x, -inf above the bottom-right-aligned diagonal
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if (wid >= P[0]) { return; }
    let k = wid * 256u + lid;
    if (k >= P[1]) { return; }
    let T = P[2];
    let S = P[3];
    let r = k / S;
    let j = k - r * S;
    let i = r % T;
    // j > i + S - T, in u32 without underflow (T + S is checked to fit on the host).
    if (j + T > i + S) {
        out[k] = bitcast<f32>(0xff800000u);
    } else {
        out[k] = x[k];
    }
}
"#;

/// Without the `gpu` feature no GPU buffer exists, so this is never called.
#[cfg(not(feature = "gpu"))]
pub fn gpu_causal_mask(
    _dev: &crate::Device,
    label: &'static str,
    _x: &crate::rt::GpuBuffer,
    _t: usize,
    _s: usize,
    _out: &crate::rt::GpuBuffer,
) -> Result<()> {
    Err(crate::error::Error::Internal(format!(
        "{label}: built without the `gpu` feature"
    )))
}

/// GPU causal mask of `x` into `out` (same length), on `x`'s device.
#[cfg(feature = "gpu")]
pub fn gpu_causal_mask(
    dev: &crate::Device,
    label: &'static str,
    x: &crate::rt::GpuBuffer,
    t: usize,
    s: usize,
    out: &crate::rt::GpuBuffer,
) -> Result<()> {
    let total = out.len();
    if t == 0 || s == 0 || total == 0 {
        return Ok(());
    }
    let lim = dev.limits();
    crate::rt::gpu_whole_bindings(label, &[x.len(), total], lim.max_storage_binding_bytes)?;
    let groups = total.div_ceil(256);
    let u = |v: usize| crate::rt::gpu_u32(label, v);
    // The shader adds T + S and indexes up to `total` in u32.
    u(t + s)?;
    dev.dispatch(&crate::rt::GpuPass {
        wgsl: CAUSAL_WGSL,
        label,
        buffers: &[x, out],
        ranges: &[],
        reads: 1,
        params: &[u(groups)?, u(total)?, u(t)?, u(s)?],
        groups: groups as u64,
        in_bounds: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_above_the_bottom_right_diagonal() {
        let x: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let mut out = vec![f32::NAN; 12];
        let n = f32::NEG_INFINITY;
        // T = 2, S = 3: row 0 sees keys 0..=1, row 1 sees all; two matrices.
        causal_mask(&x, 2, 3, &mut out);
        assert_eq!(out, [0., 1., n, 3., 4., 5., 6., 7., n, 9., 10., 11.]);
        // T = 3, S = 2: row 0 sees nothing, row 1 key 0, row 2 both.
        causal_mask(&x[..6], 3, 2, &mut out[..6]);
        assert_eq!(out[..6], [n, n, 2., n, 4., 5.]);
    }
}
