//! Splitting a GPU pass whose tensors exceed one storage binding.
//!
//! A device binds at most `max_storage_buffer_binding_size` bytes of a buffer at once (128 MiB
//! on lavapipe and many integrated GPUs), while buffers may be larger. A pass over such tensors
//! is dispatched in chunks of its iteration space (elements, or rows of a row pass); each chunk
//! binds, for every buffer, only the window of elements the chunk touches, and the shader
//! subtracts the window's start (`base`) from every offset it computes.

use crate::error::{Error, Result};

/// The iteration space and memory accesses of one pass, as generated code describes them.
pub struct PassShape<'a> {
    /// Domain dimensions.
    pub dims: &'a [usize],
    /// `Some(axis)` for a row pass (iterating rows; each row spans the axis).
    pub axis: Option<usize>,
    /// Per access (loads then stores): its strides along each domain axis.
    pub strides: &'a [&'a [usize]],
    /// Per access: which binding (index into `binding_lens`) it reads or writes.
    pub binding_of: &'a [usize],
    /// Per binding: its buffer's length in elements (4 bytes each).
    pub binding_lens: &'a [usize],
}

/// One dispatch of a split pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// First and one-past-last iteration index (element, or row) of this chunk.
    pub start: usize,
    pub end: usize,
    /// Per access: the element offset of its binding's window (subtracted by the shader).
    pub bases: Vec<usize>,
    /// Per binding: the window bound, as (byte offset, byte size).
    pub ranges: Vec<(u64, u64)>,
}

const ELEM: usize = 4;

impl PassShape<'_> {
    /// Iteration indices of the pass: elements, or rows.
    pub fn count(&self) -> usize {
        self.dims
            .iter()
            .enumerate()
            .filter(|(k, _)| Some(*k) != self.axis)
            .fold(1usize, |a, (_, &d)| a.saturating_mul(d))
    }

    /// Offsets of access `a` touched by iteration index `i` lie in `[lo, hi]` returned here.
    fn offsets_of(&self, a: usize, i: usize) -> (usize, usize) {
        let mut rem = i;
        let mut off = 0usize;
        for k in (0..self.dims.len()).rev() {
            if Some(k) == self.axis {
                continue;
            }
            let d = self.dims[k].max(1);
            off += (rem % d) * self.strides[a][k];
            rem /= d;
        }
        let span = match self.axis {
            Some(ax) => self.dims[ax].saturating_sub(1) * self.strides[a][ax],
            None => 0,
        };
        (off, off + span)
    }

    /// Whether access `a`'s offsets never decrease along the iteration order (row-major):
    /// then a contiguous range of iterations touches a contiguous window.
    fn monotone(&self, a: usize) -> bool {
        let mut later = 0usize; // the largest offset the faster axes can add
        for k in (0..self.dims.len()).rev() {
            if Some(k) == self.axis {
                continue;
            }
            let s = self.strides[a][k];
            // Stepping axis k must move past everything the faster axes reached; a broadcast
            // axis (stride 0) over a moving row starts the row over, so it is not monotone.
            if self.dims[k] > 1 && s < later {
                return false;
            }
            later = later.saturating_add(self.dims[k].saturating_sub(1).saturating_mul(s));
        }
        true
    }

    /// The windows one chunk needs, per binding, in elements: (start, end).
    fn windows(&self, start: usize, end: usize) -> Vec<(usize, usize)> {
        let mut win: Vec<Option<(usize, usize)>> = vec![None; self.binding_lens.len()];
        for a in 0..self.strides.len() {
            let b = self.binding_of[a];
            let (lo, hi) = if self.monotone(a) {
                (
                    self.offsets_of(a, start).0,
                    self.offsets_of(a, end - 1).1 + 1,
                )
            } else {
                (0, self.binding_lens[b])
            };
            win[b] = Some(match win[b] {
                Some((l, h)) => (l.min(lo), h.max(hi)),
                None => (lo, hi),
            });
        }
        win.into_iter().map(|w| w.unwrap_or((0, 0))).collect()
    }

    /// Splits the pass so that every binding window fits in `max_binding` bytes, with window
    /// starts aligned to `align` bytes and chunk sizes a multiple of `granule` iterations.
    /// One chunk covering everything (with whole-buffer bindings) when nothing is too large.
    pub fn chunks(
        &self,
        label: &str,
        max_binding: u64,
        align: u64,
        granule: usize,
    ) -> Result<Vec<Chunk>> {
        let count = self.count();
        let fits = |len: usize| (len * ELEM) as u64 <= max_binding;
        if self.binding_lens.iter().all(|&l| fits(l)) || count == 0 {
            return Ok(vec![Chunk {
                start: 0,
                end: count,
                bases: vec![0; self.strides.len()],
                ranges: self
                    .binding_lens
                    .iter()
                    .map(|&l| (0, (l.max(1) * ELEM) as u64))
                    .collect(),
            }]);
        }
        let align_elems = (align as usize / ELEM).max(1);
        let granule = granule.max(1);
        // Halve the chunk until every window fits (alignment slack included).
        let mut per = count.div_ceil(granule) * granule;
        loop {
            let mut out = Vec::new();
            let mut ok = true;
            let mut start = 0;
            while start < count {
                let end = (start + per).min(count);
                let win = self.windows(start, end);
                let mut ranges = Vec::new();
                let mut starts = Vec::new();
                for (b, &(lo, hi)) in win.iter().enumerate() {
                    let lo = lo / align_elems * align_elems;
                    let hi = hi.clamp(lo + 1, self.binding_lens[b].max(lo + 1));
                    if !fits(hi - lo) {
                        ok = false;
                    }
                    starts.push(lo);
                    ranges.push(((lo * ELEM) as u64, ((hi - lo) * ELEM) as u64));
                }
                let bases = self.binding_of.iter().map(|&b| starts[b]).collect();
                out.push(Chunk {
                    start,
                    end,
                    bases,
                    ranges,
                });
                start = end;
            }
            if ok {
                return Ok(out);
            }
            if per <= granule {
                let biggest = self.binding_lens.iter().copied().max().unwrap_or(0);
                return Err(Error::TooLarge {
                    what: format!(
                        "pass `{label}` reads a tensor in an order that cannot be split into windows (it has {biggest} elements)"
                    ),
                    bytes: (biggest * ELEM) as u64,
                    limit: max_binding,
                    limit_name: "max_storage_buffer_binding_size",
                });
            }
            per = (per / 2).div_ceil(granule) * granule;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_passes_are_one_chunk() {
        let s = PassShape {
            dims: &[4, 8],
            axis: None,
            strides: &[&[8, 1], &[0, 1], &[8, 1]],
            binding_of: &[0, 1, 2],
            binding_lens: &[32, 8, 32],
        };
        let c = s.chunks("k", 1 << 20, 256, 1).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].start, c[0].end), (0, 32));
    }

    #[test]
    fn large_elementwise_passes_split_into_aligned_windows() {
        // [1000, 1000] dense + a broadcast row, with a binding limit of 1 MB (250k elements).
        let s = PassShape {
            dims: &[1000, 1000],
            axis: None,
            strides: &[&[1000, 1], &[0, 1], &[1000, 1]],
            binding_of: &[0, 1, 2],
            binding_lens: &[1_000_000, 1000, 1_000_000],
        };
        let c = s.chunks("k", 1_000_000, 256, 256).unwrap();
        assert!(c.len() >= 4);
        let mut next = 0;
        for ch in &c {
            assert_eq!(ch.start, next);
            next = ch.end;
            for (b, &(off, size)) in ch.ranges.iter().enumerate() {
                assert_eq!(off % 256, 0);
                assert!(size <= 1_000_000);
                // The window holds every element the chunk touches.
                let base = ch.bases[b];
                assert_eq!(base * 4, off as usize);
                if b != 1 {
                    assert!(base <= ch.start && ch.end <= base + size as usize / 4);
                }
            }
        }
        assert_eq!(next, 1_000_000);
    }

    #[test]
    fn row_passes_split_by_rows() {
        let s = PassShape {
            dims: &[300, 1000],
            axis: Some(1),
            strides: &[&[1000, 1], &[1000, 1]],
            binding_of: &[0, 1],
            binding_lens: &[300_000, 300_000],
        };
        let c = s.chunks("k", 400_000, 256, 1).unwrap();
        assert!(c.len() >= 3);
        for ch in &c {
            let (lo, hi) = (ch.start * 1000, ch.end * 1000);
            assert!(ch.bases[0] <= lo && hi <= ch.bases[0] + ch.ranges[0].1 as usize / 4);
        }
    }

    #[test]
    fn broadcast_rows_bind_their_whole_buffer() {
        let s = PassShape {
            dims: &[1000, 1000],
            axis: None,
            strides: &[&[0, 1], &[1000, 1]],
            binding_of: &[0, 1],
            binding_lens: &[1000, 1_000_000],
        };
        for ch in s.chunks("k", 1_000_000, 256, 256).unwrap() {
            assert_eq!(
                ch.ranges[0],
                (0, 4000),
                "a chunk ending mid-row still needs the whole row"
            );
        }
    }

    #[test]
    fn transposed_reads_of_huge_tensors_are_an_error() {
        let s = PassShape {
            dims: &[1000, 1000],
            axis: None,
            strides: &[&[1, 1000], &[1000, 1]],
            binding_of: &[0, 1],
            binding_lens: &[1_000_000, 1_000_000],
        };
        assert!(matches!(
            s.chunks("k", 1_000_000, 256, 1),
            Err(Error::TooLarge { .. })
        ));
    }
}
