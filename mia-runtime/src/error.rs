//! The one error type of the runtime. Every message names what went wrong in the user's terms
//! (kernel, argument, axis, both sizes), because most of these errors come from shapes that
//! were only known at run time.

use std::fmt;

use crate::tensor::DType;

/// Where the size an argument was checked against came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SizeOrigin {
    /// A symbol (`D`), bound earlier by argument `bound_by`.
    Symbol {
        name: &'static str,
        bound_by: &'static str,
    },
    /// A literal size in the kernel's signature.
    Literal,
    /// A braced expression in the kernel's signature (`{D / H}`).
    Expr { expr: &'static str },
}

/// Everything that can go wrong at run time. Nothing reachable from user input panics: it
/// returns one of these.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An argument has a different number of dimensions than the kernel declares.
    #[error(
        "kernel `{kernel}`: argument `{arg}` must have rank {expected} (declared shape \
         {declared}), but it has rank {got} (shape {shape:?})"
    )]
    Rank {
        kernel: &'static str,
        arg: &'static str,
        expected: usize,
        got: usize,
        /// The declared shape as written in the signature, e.g. `[N, D]`.
        declared: String,
        shape: Vec<usize>,
    },

    /// An argument's size on one axis disagrees with the kernel's declaration or with the size
    /// another argument already fixed.
    #[error("{}", size_message(kernel, arg, *axis, *expected, *actual, shape.as_deref(), origin))]
    Size {
        kernel: &'static str,
        arg: &'static str,
        axis: usize,
        expected: usize,
        actual: usize,
        /// The argument's full shape, when known.
        shape: Option<Vec<usize>>,
        origin: SizeOrigin,
    },

    /// Two tensor arguments of one call live on different devices.
    #[error(
        "kernel `{kernel}`: argument `{first}` is on {first_device} but argument `{second}` is \
         on {second_device}; move one with `.to(&device)` so that all arguments share a device"
    )]
    Devices {
        kernel: &'static str,
        first: &'static str,
        first_device: String,
        second: &'static str,
        second_device: String,
    },

    /// No GPU could be opened (no driver, no adapter on the allowed back ends, or the crate was
    /// built without the `gpu` feature).
    #[error(
        "no GPU available (back ends tried: {backends}): {reason}. Use `Device::cpu()`, or \
         `Device::auto()` to fall back to the CPU; set WGPU_BACKEND to try other back ends"
    )]
    NoGpu { reason: String, backends: String },

    /// A buffer would exceed one of the device's limits.
    #[error(
        "{what} needs {bytes} bytes, over the device's {limit_name} of {limit} bytes \
         (tensors this large must be split)"
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
        limit_name: &'static str,
    },

    /// A pass needs more workgroups than even a 2-D grid of the device can launch.
    #[error(
        "pass `{label}` needs {groups} workgroups, more than the {max}×{max} grid the device \
         can launch"
    )]
    TooManyWorkgroups {
        label: &'static str,
        groups: u64,
        max: u32,
    },

    /// Copying a GPU buffer back to the host failed.
    #[error("reading a tensor back from the GPU failed: {reason}")]
    ReadBack { reason: String },

    /// `Tensor::from_vec` got a different number of elements than its shape holds.
    #[error(
        "shape {shape:?} holds {expected} elements, but the data has {got}; the data length \
         must equal the product of the shape"
    )]
    DataLen {
        shape: Vec<usize>,
        expected: usize,
        got: usize,
    },

    /// The product of a shape does not fit in `usize`.
    #[error("shape {shape:?} has more elements than fit in a usize")]
    ShapeOverflow { shape: Vec<usize> },

    /// `reshape` to a shape with a different number of elements.
    #[error(
        "cannot reshape a tensor of shape {from:?} ({from_len} elements) to {to:?} \
         ({to_len} elements): the element counts differ"
    )]
    Reshape {
        from: Vec<usize>,
        from_len: usize,
        to: Vec<usize>,
        to_len: usize,
    },

    /// Evaluating a braced dimension (`{D / H}`) failed.
    #[error("kernel `{kernel}`: cannot evaluate dimension `{expr}`: {reason}")]
    DimArith {
        kernel: &'static str,
        expr: &'static str,
        reason: String,
    },

    /// `MIA_DEVICE` or `Device::from_name` got a name that is not a device.
    #[error("unknown device `{name}`: expected `cpu`, `gpu` or `auto`")]
    UnknownDevice { name: String },

    /// wgpu reported an error (validation, out of memory, …) for the named operation.
    #[error("GPU error in {context}: {message}")]
    Gpu { context: String, message: String },

    /// The GPU device was lost (driver reset, device removed). Not recoverable in this process.
    #[error("the GPU device was lost: {reason}")]
    DeviceLost { reason: String },

    /// A broken invariant between generated code and the runtime (a bug in mia, not in the
    /// caller's code).
    #[error("internal error in mia (please report it): {0}")]
    Internal(String),

    /// A size a GPU shader would index with 32 bits does not fit.
    #[error("kernel `{kernel}`: a size of {value} elements is past what GPU shaders index (u32)")]
    GpuIndex { kernel: &'static str, value: u64 },

    /// A row index of `gather` is outside its table.
    #[error(
        "kernel `{kernel}`: argument `{arg}` holds index {value} at position {position}, but the \
         table it indexes has {rows} rows (valid indices: 0..{rows})"
    )]
    Index {
        kernel: &'static str,
        arg: &'static str,
        position: usize,
        value: i64,
        rows: usize,
    },

    /// A weights file could not be opened, mapped, or parsed as safetensors.
    #[error("cannot read weights file {path}: {reason}")]
    WeightsFile { path: String, reason: String },

    /// A weight the model asks for is not in the file. `closest` lists the keys that share the
    /// most trailing (then leading) dot-separated parts with `key`: usually a renamed prefix
    /// or a typo.
    #[error("{}", missing_weight_message(path, key, closest, *count))]
    MissingWeight {
        path: String,
        key: String,
        closest: Vec<String>,
        /// How many tensors the file holds.
        count: usize,
    },

    /// A weight is stored with a dtype that cannot be read as the tensor's element type.
    #[error(
        "weight `{key}` in {path} is stored as {found}, which cannot be loaded as {expected}          (loadable: {loadable})"
    )]
    WeightDType {
        path: String,
        key: String,
        expected: DType,
        found: String,
        /// The stored dtypes that do convert to `expected`.
        loadable: &'static str,
    },

    /// A weight's stored shape differs from the shape the model expects.
    #[error("weight `{key}` in {path} has shape {found:?}, but the model expects {expected:?}")]
    WeightShape {
        path: String,
        key: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// A stored value does not fit the element type it is loaded as (an I64 past i32's range).
    #[error("weight `{key}` in {path}: element {index} = {value} does not fit in {expected}")]
    WeightValue {
        path: String,
        key: String,
        expected: DType,
        index: usize,
        value: i64,
    },
}

fn missing_weight_message(path: &str, key: &str, closest: &[String], count: usize) -> String {
    let mut msg = format!("weights file {path} has no tensor `{key}` (it holds {count} tensors)");
    if !closest.is_empty() {
        let names: Vec<String> = closest.iter().map(|k| format!("`{k}`")).collect();
        msg.push_str("; closest keys: ");
        msg.push_str(&names.join(", "));
    }
    msg
}

/// `Result` with the runtime's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn size_message(
    kernel: &str,
    arg: &str,
    axis: usize,
    expected: usize,
    actual: usize,
    shape: Option<&[usize]>,
    origin: &SizeOrigin,
) -> String {
    let shape = match shape {
        Some(s) => format!(" (shape {s:?})"),
        None => String::new(),
    };
    match origin {
        SizeOrigin::Symbol { name, bound_by } if *bound_by == arg => format!(
            "kernel `{kernel}`: argument `{arg}` has {name} = {actual} on axis {axis}{shape}, \
             but {name} = {expected} on an earlier axis of the same argument"
        ),
        SizeOrigin::Symbol { name, bound_by } => format!(
            "kernel `{kernel}`: argument `{arg}` has {name} = {actual} on axis {axis}{shape}, \
             but argument `{bound_by}` bound {name} = {expected}"
        ),
        SizeOrigin::Literal => format!(
            "kernel `{kernel}`: argument `{arg}` has size {actual} on axis {axis}{shape}, but \
             the kernel declares size {expected} there"
        ),
        SizeOrigin::Expr { expr } => format!(
            "kernel `{kernel}`: argument `{arg}` has size {actual} on axis {axis}{shape}, but \
             the kernel declares `{expr}` = {expected} there"
        ),
    }
}

impl fmt::Display for SizeOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeOrigin::Symbol { name, bound_by } => {
                write!(f, "symbol {name} bound by argument `{bound_by}`")
            }
            SizeOrigin::Literal => f.write_str("a literal size"),
            SizeOrigin::Expr { expr } => write!(f, "the expression `{expr}`"),
        }
    }
}
