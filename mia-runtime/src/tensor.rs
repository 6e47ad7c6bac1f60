//! Typed tensors: the dtype is in the type, the shape is known at run time, the data lives on a
//! [`Device`]. Tensors are immutable values; cloning one shares its memory.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use crate::device::Device;
use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::GpuBuffer;
use crate::pool::HostBuf;

/// The element type of a tensor, at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    I32,
    U32,
    Bool,
}

impl DType {
    /// The name used in WGSL and in messages (`"f32"`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A type a [`Tensor`] can hold. On the GPU every element is one 4-byte word (WGSL has no
/// 1-byte storage type, so `bool` is stored as a `u32` 0 or 1).
pub trait Element: Copy + Send + Sync + PartialEq + fmt::Debug + 'static {
    const DTYPE: DType;
    /// A value that stands out when read: what fresh CPU outputs are filled with, so an element
    /// a kernel forgot to write shows up in tests instead of looking like a plausible 0.
    const POISON: Self;
    /// Zero (`false`): what release builds hand out as fresh CPU outputs.
    const ZERO: Self;
    /// The element's 4-byte GPU representation.
    fn to_bits(self) -> u32;
    /// Inverse of [`Element::to_bits`]. For `bool`, any non-zero word is `true`.
    fn from_bits(b: u32) -> Self;

    /// The GPU bytes of `data`: borrowed for types whose host layout already is the GPU layout.
    #[doc(hidden)]
    fn gpu_bytes(data: &[Self]) -> Cow<'_, [u8]> {
        let mut bytes = Vec::with_capacity(data.len() * 4);
        for x in data {
            bytes.extend_from_slice(&x.to_bits().to_ne_bytes());
        }
        Cow::Owned(bytes)
    }
}

macro_rules! pod_element {
    ($t:ty, $dtype:ident, $poison:expr, $to:expr, $from:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dtype;
            const POISON: Self = $poison;
            const ZERO: Self = 0 as $t;
            #[inline]
            fn to_bits(self) -> u32 {
                $to(self)
            }
            #[inline]
            fn from_bits(b: u32) -> Self {
                $from(b)
            }
            fn gpu_bytes(data: &[Self]) -> Cow<'_, [u8]> {
                Cow::Borrowed(bytemuck::cast_slice(data))
            }
        }
    };
}

pod_element!(f32, F32, f32::NAN, f32::to_bits, f32::from_bits);
pod_element!(
    i32,
    I32,
    0xDEAD_BEEF_u32 as i32,
    |x: i32| x as u32,
    |b: u32| b as i32
);
pod_element!(u32, U32, 0xDEAD_BEEF, |x: u32| x, |b: u32| b);

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    /// `bool` has no spare bit pattern on the host; `true` is the less likely default.
    const POISON: Self = true;
    const ZERO: Self = false;
    #[inline]
    fn to_bits(self) -> u32 {
        self as u32
    }
    #[inline]
    fn from_bits(b: u32) -> Self {
        b != 0
    }
}

/// Anything that names a shape: `[4, 8]`, `&[4, 8]`, `&[usize]`, `Vec<usize>`, `&Vec<usize>`.
pub trait IntoShape {
    fn into_shape(self) -> Vec<usize>;
}

impl<const R: usize> IntoShape for [usize; R] {
    fn into_shape(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl<const R: usize> IntoShape for &[usize; R] {
    fn into_shape(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl IntoShape for &[usize] {
    fn into_shape(self) -> Vec<usize> {
        self.to_vec()
    }
}
impl IntoShape for Vec<usize> {
    fn into_shape(self) -> Vec<usize> {
        self
    }
}
impl IntoShape for &Vec<usize> {
    fn into_shape(self) -> Vec<usize> {
        self.clone()
    }
}

/// The number of elements of `shape`, or an error if it overflows `usize`.
pub(crate) fn shape_len(shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::ShapeOverflow {
            shape: shape.to_vec(),
        })
}

pub(crate) enum Storage<T: Element> {
    Cpu(Arc<HostBuf<T>>),
    #[cfg(feature = "gpu")]
    Gpu(GpuBuffer),
}

impl<T: Element> Clone for Storage<T> {
    fn clone(&self) -> Self {
        match self {
            Storage::Cpu(v) => Storage::Cpu(Arc::clone(v)),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => Storage::Gpu(b.clone()),
        }
    }
}

/// An n-dimensional array of `T` in row-major order on a [`Device`].
///
/// Cloning is cheap (the data is shared); tensors are never modified in place, so sharing is
/// unobservable. On a GPU, work that produces a tensor is queued; [`Tensor::to_vec`] waits for it.
///
/// ```
/// use mia_runtime::{Device, Tensor};
///
/// let dev = Device::auto();
/// let x = Tensor::from_vec(&dev, [2, 3], vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0])?;
/// assert_eq!(x.shape(), &[2, 3]);
/// assert_eq!(x.reshape([3, 2])?.to_vec()?, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
/// assert!(Tensor::from_vec(&dev, [2, 2], vec![0.0f32; 3]).is_err()); // 4 != 3
/// # Ok::<(), mia_runtime::Error>(())
/// ```
pub struct Tensor<T: Element> {
    shape: Vec<usize>,
    device: Device,
    storage: Storage<T>,
}

impl<T: Element> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        Tensor {
            shape: self.shape.clone(),
            device: self.device.clone(),
            storage: self.storage.clone(),
        }
    }
}

impl<T: Element> Tensor<T> {
    /// A tensor of `shape` holding `data` (row-major) on `device`. Errors if `data.len()` is not
    /// the product of `shape`, or if the tensor is too large for the device.
    pub fn from_vec(device: &Device, shape: impl IntoShape, data: Vec<T>) -> Result<Self> {
        let shape = shape.into_shape();
        check_len(&shape, data.len())?;
        #[cfg(feature = "gpu")]
        if device.is_gpu() {
            return Self::gpu_from_slice(device, shape, &data);
        }
        #[cfg(not(feature = "gpu"))]
        debug_assert!(
            device.is_cpu(),
            "without the `gpu` feature every device is the CPU"
        );
        Ok(Self::cpu_from_vec(shape, data))
    }

    /// Like [`Tensor::from_vec`], copying from a slice.
    pub fn from_slice(device: &Device, shape: impl IntoShape, data: &[T]) -> Result<Self> {
        let shape = shape.into_shape();
        check_len(&shape, data.len())?;
        #[cfg(feature = "gpu")]
        if device.is_gpu() {
            return Self::gpu_from_slice(device, shape, data);
        }
        #[cfg(not(feature = "gpu"))]
        debug_assert!(
            device.is_cpu(),
            "without the `gpu` feature every device is the CPU"
        );
        Ok(Self::cpu_from_vec(shape, data.to_vec()))
    }

    /// A tensor of `shape` with every element equal to `value`.
    pub fn full(device: &Device, shape: impl IntoShape, value: T) -> Result<Self> {
        let shape = shape.into_shape();
        let len = shape_len(&shape)?;
        Self::from_vec(device, shape, vec![value; len])
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar(device: &Device, value: T) -> Result<Self> {
        Self::from_vec(device, [], vec![value])
    }

    /// The size of each dimension.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// The number of elements (the product of the shape; 1 for rank 0).
    pub fn len(&self) -> usize {
        // Checked when the tensor was made.
        self.shape.iter().product()
    }

    /// True when some dimension is 0.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The device the data lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        T::DTYPE
    }

    /// The data in row-major order on the host. On a GPU this submits all queued work and waits
    /// for it: it is the synchronization point.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        match &self.storage {
            Storage::Cpu(v) => Ok(v.to_vec()),
            #[cfg(feature = "gpu")]
            Storage::Gpu(b) => b.download::<T>(),
        }
    }

    /// This tensor on `device`: a cheap clone if it already lives there, else a copy.
    pub fn to(&self, device: &Device) -> Result<Self> {
        if &self.device == device {
            return Ok(self.clone());
        }
        match &self.storage {
            Storage::Cpu(v) => Self::from_slice(device, self.shape.clone(), v),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => Self::from_vec(device, self.shape.clone(), self.to_vec()?),
        }
    }

    /// The same data viewed with another shape of the same element count (no copy).
    pub fn reshape(&self, shape: impl IntoShape) -> Result<Self> {
        let to = shape.into_shape();
        let to_len = shape_len(&to)?;
        let from_len = self.len();
        if to_len != from_len {
            return Err(Error::Reshape {
                from: self.shape.clone(),
                from_len,
                to,
                to_len,
            });
        }
        Ok(Tensor {
            shape: to,
            device: self.device.clone(),
            storage: self.storage.clone(),
        })
    }

    /// The host data, if the tensor lives on the CPU.
    pub(crate) fn host(&self) -> Option<&[T]> {
        match &self.storage {
            Storage::Cpu(v) => Some(v),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => None,
        }
    }

    /// The packed copies of the host data (see [`crate::gemm::PackCache`]).
    pub(crate) fn packs(&self) -> Option<&crate::gemm::PackCache> {
        match &self.storage {
            Storage::Cpu(v) => Some(&v.1),
            #[cfg(feature = "gpu")]
            Storage::Gpu(_) => None,
        }
    }

    /// The GPU buffer, if the tensor lives on a GPU.
    #[cfg(feature = "gpu")]
    pub(crate) fn buffer(&self) -> Option<&GpuBuffer> {
        match &self.storage {
            Storage::Cpu(_) => None,
            Storage::Gpu(b) => Some(b),
        }
    }

    /// Wraps host data; the caller guarantees `data.len()` is the shape's product.
    pub(crate) fn cpu_from_vec(shape: Vec<usize>, data: Vec<T>) -> Self {
        debug_assert_eq!(shape_len(&shape).ok(), Some(data.len()));
        Tensor {
            shape,
            device: Device::cpu(),
            storage: Storage::Cpu(Arc::new(HostBuf(data, Default::default()))),
        }
    }

    /// Wraps a GPU buffer; the caller guarantees it holds the shape's product of `T`s.
    #[cfg(feature = "gpu")]
    pub(crate) fn from_buffer(shape: Vec<usize>, buf: GpuBuffer) -> Self {
        debug_assert_eq!(shape_len(&shape).ok(), Some(buf.len()));
        debug_assert_eq!(buf.dtype(), T::DTYPE);
        Tensor {
            shape,
            device: buf.device(),
            storage: Storage::Gpu(buf),
        }
    }

    #[cfg(feature = "gpu")]
    fn gpu_from_slice(device: &Device, shape: Vec<usize>, data: &[T]) -> Result<Self> {
        let buf = GpuBuffer::alloc_fresh::<T>(device, data.len())?;
        buf.upload(data)?;
        Ok(Self::from_buffer(shape, buf))
    }
}

fn check_len(shape: &[usize], got: usize) -> Result<()> {
    let expected = shape_len(shape)?;
    if expected != got {
        return Err(Error::DataLen {
            shape: shape.to_vec(),
            expected,
            got,
        });
    }
    Ok(())
}

impl<T: Element> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tensor")
            .field("shape", &self.shape)
            .field("dtype", &T::DTYPE)
            .field("device", &self.device)
            .finish()
    }
}
