//! A small cache of large host buffers. A kernel returns fresh outputs; allocating tens of MiB
//! anew each call costs a page fault per 4 KiB page, which for an elementwise kernel is as much
//! time as the kernel itself. Dropped CPU tensors hand their buffers back here, and the next
//! output of the same dtype and length reuses one.

use crate::tensor::Element;
use std::any::{Any, TypeId};
use std::sync::Mutex;

/// Buffers below this size are cheap to allocate and are not cached.
const MIN_BYTES: usize = 1 << 20;
/// At most this many bytes are kept; the oldest buffers go first.
const MAX_BYTES: usize = 1 << 30;

struct Entry {
    ty: TypeId,
    len: usize,
    bytes: usize,
    buf: Box<dyn Any + Send>,
}

static POOL: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// A cached buffer of exactly `len` elements, with stale contents.
pub(crate) fn take<T: Element>(len: usize) -> Option<Vec<T>> {
    if len * size_of::<T>() < MIN_BYTES {
        return None;
    }
    let mut pool = POOL.lock().ok()?;
    let i = pool
        .iter()
        .rposition(|e| e.ty == TypeId::of::<T>() && e.len == len)?;
    pool.swap_remove(i)
        .buf
        .downcast::<Vec<T>>()
        .ok()
        .map(|b| *b)
}

/// Keeps `buf` for reuse if it is large enough to be worth it.
pub(crate) fn give<T: Element>(buf: Vec<T>) {
    let bytes = buf.len() * size_of::<T>();
    if !(MIN_BYTES..=MAX_BYTES).contains(&bytes) {
        return;
    }
    let Ok(mut pool) = POOL.lock() else { return };
    let mut total: usize = pool.iter().map(|e| e.bytes).sum::<usize>() + bytes;
    while total > MAX_BYTES && !pool.is_empty() {
        total -= pool.remove(0).bytes;
    }
    pool.push(Entry {
        ty: TypeId::of::<T>(),
        len: buf.len(),
        bytes,
        buf: Box::new(buf),
    });
}

/// A CPU tensor's data, and its copies packed as a product's B; returns the data to the pool
/// when the last tensor using it is dropped.
pub(crate) struct HostBuf<T: Element>(pub(crate) Vec<T>, pub(crate) crate::gemm::PackCache);

impl<T: Element> Drop for HostBuf<T> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

impl<T: Element> std::ops::Deref for HostBuf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.0
    }
}
