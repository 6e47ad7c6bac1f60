//! Where tensors live and kernels run: the CPU (rayon) or the process's GPU (wgpu).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "gpu")]
use std::sync::Arc;

use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::GpuContext;

/// What kind of device a [`Device`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Gpu,
}

/// The limits generated code must respect (a subset of the adapter's real limits). On the CPU
/// nothing needs splitting: sizes are what a `Vec` can hold and counts are `u32::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceLimits {
    /// Largest buffer one binding can see, in bytes (128 MiB on lavapipe, ~2 GiB on an H100).
    pub max_storage_binding_bytes: u64,
    /// Largest buffer that can be allocated, in bytes.
    pub max_buffer_bytes: u64,
    /// Workgroups per grid dimension (65,535 almost everywhere).
    pub max_workgroups_per_dim: u32,
    pub max_invocations_per_workgroup: u32,
    /// Workgroup-shared memory, in bytes.
    pub max_workgroup_storage_bytes: u32,
    /// Storage buffers one shader may bind (params included).
    pub max_storage_buffers_per_stage: u32,
    /// Alignment of a binding's offset into a buffer, in bytes (256 on most GPUs).
    pub min_storage_offset_alignment: u64,
    /// Matrix products may run on tensor cores (cooperative matrices: NVIDIA from Volta on,
    /// through Vulkan), with `MIA_TENSOR_CORES=1`. They split each f32 operand into two f16
    /// parts and sum three f16 products: f32 accuracy while operands lie in f16's normal
    /// range (6.1e-5 to 32768 in magnitude). A larger or non-finite operand makes its tile
    /// recompute exactly in f32; smaller ones keep an absolute error of about 3e-8 times the
    /// other operand per term, so a product of uniformly tiny operands (say 1e-6) loses
    /// relative accuracy. Hence opt-in.
    pub tensor_cores: bool,
}

impl DeviceLimits {
    const CPU: DeviceLimits = DeviceLimits {
        max_storage_binding_bytes: isize::MAX as u64,
        max_buffer_bytes: isize::MAX as u64,
        max_workgroups_per_dim: u32::MAX,
        max_invocations_per_workgroup: u32::MAX,
        max_workgroup_storage_bytes: u32::MAX,
        max_storage_buffers_per_stage: u32::MAX,
        min_storage_offset_alignment: 4,
        tensor_cores: false,
    };
}

#[derive(Clone)]
enum Inner {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(Arc<GpuContext>),
}

/// A device: the CPU, or the GPU. Cloning is cheap; two handles are equal when they name the
/// same device. There is at most one GPU context per process, shared by all handles.
#[derive(Clone)]
pub struct Device {
    inner: Inner,
}

const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Device>();
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Choice {
    Auto,
    Cpu,
    Gpu,
}

fn parse_choice(name: &str) -> Result<Choice> {
    match name.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(Choice::Auto),
        "cpu" => Ok(Choice::Cpu),
        "gpu" => Ok(Choice::Gpu),
        _ => Err(Error::UnknownDevice {
            name: name.to_string(),
        }),
    }
}

/// Prints a warning once per process (`auto()` may be called for every tensor).
fn warn_once(flag: &AtomicBool, msg: impl FnOnce() -> String) {
    if !flag.swap(true, Ordering::Relaxed) {
        eprintln!("mia: warning: {}", msg());
    }
}

impl Device {
    /// The CPU; kernels run on rayon's thread pool.
    pub fn cpu() -> Device {
        Device { inner: Inner::Cpu }
    }

    /// The GPU, opened on first use (this takes ~0.5 s the first time). Errors if there is no
    /// adapter on Vulkan, Metal or DX12 (or on the back ends named by `WGPU_BACKEND`); the
    /// error is cached, so asking again is cheap.
    pub fn gpu() -> Result<Device> {
        #[cfg(feature = "gpu")]
        {
            crate::gpu::context().map(Device::from_context)
        }
        #[cfg(not(feature = "gpu"))]
        {
            Err(Error::NoGpu {
                reason: "mia-runtime was built without its `gpu` feature".into(),
                backends: "none".into(),
            })
        }
    }

    /// A hardware GPU if there is one, else the CPU. The environment variable `MIA_DEVICE` (`cpu`,
    /// `gpu` or `auto`) overrides the choice; since this never fails, `MIA_DEVICE=gpu` without
    /// a GPU (or an unknown name) falls back to the CPU with a warning on stderr. Use
    /// [`Device::from_env`] to make that an error instead.
    pub fn auto() -> Device {
        static BAD_NAME: AtomicBool = AtomicBool::new(false);
        static NO_GPU: AtomicBool = AtomicBool::new(false);
        let value = std::env::var("MIA_DEVICE").unwrap_or_default();
        let choice = parse_choice(&value).unwrap_or_else(|e| {
            warn_once(&BAD_NAME, || {
                format!("MIA_DEVICE: {e}; choosing automatically")
            });
            Choice::Auto
        });
        match choice {
            Choice::Cpu => Device::cpu(),
            Choice::Auto => Device::best(),
            Choice::Gpu => Device::gpu().unwrap_or_else(|e| {
                warn_once(&NO_GPU, || format!("MIA_DEVICE=gpu: {e}; using the CPU"));
                Device::cpu()
            }),
        }
    }

    /// The device named by `MIA_DEVICE` (unset means `auto`), strictly: an unknown name or
    /// `gpu` without a GPU is an error.
    pub fn from_env() -> Result<Device> {
        match std::env::var("MIA_DEVICE") {
            Ok(v) => Device::from_name(&v),
            Err(std::env::VarError::NotPresent) => Device::from_name("auto"),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::UnknownDevice {
                name: v.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The device called `name`: `cpu`, `gpu` or `auto` (case-insensitive; `auto` never fails).
    pub fn from_name(name: &str) -> Result<Device> {
        match parse_choice(name)? {
            Choice::Cpu => Ok(Device::cpu()),
            Choice::Gpu => Device::gpu(),
            Choice::Auto => Ok(Device::best()),
        }
    }

    /// A hardware GPU if there is one, else the CPU (a software GPU such as lavapipe is slower
    /// than mia's CPU kernels; ask for it with `Device::gpu()` or `MIA_DEVICE=gpu`).
    fn best() -> Device {
        match Device::gpu() {
            Ok(d) if !d.is_software() => d,
            _ => Device::cpu(),
        }
    }

    /// True for a CPU-emulated GPU adapter (lavapipe, SwiftShader, WARP).
    pub fn is_software(&self) -> bool {
        match &self.inner {
            Inner::Cpu => false,
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => ctx.is_software(),
        }
    }

    pub fn kind(&self) -> DeviceKind {
        match self.inner {
            Inner::Cpu => DeviceKind::Cpu,
            #[cfg(feature = "gpu")]
            Inner::Gpu(_) => DeviceKind::Gpu,
        }
    }

    pub fn is_cpu(&self) -> bool {
        self.kind() == DeviceKind::Cpu
    }

    pub fn is_gpu(&self) -> bool {
        self.kind() == DeviceKind::Gpu
    }

    /// A human-readable name: `"cpu (8 threads)"`, or the adapter and its back end, e.g.
    /// `"llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"`.
    pub fn name(&self) -> String {
        match &self.inner {
            Inner::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => ctx.name().to_string(),
        }
    }

    /// The limits kernels must fit in (see [`DeviceLimits`]).
    pub fn limits(&self) -> DeviceLimits {
        match &self.inner {
            Inner::Cpu => DeviceLimits::CPU,
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => ctx.limits(),
        }
    }

    /// True when GPU timestamp queries are available (for benchmarks).
    pub fn has_timestamps(&self) -> bool {
        #[cfg(feature = "gpu")]
        if let Inner::Gpu(ctx) = &self.inner {
            return ctx.has(wgpu::Features::TIMESTAMP_QUERY);
        }
        false
    }

    /// True when shaders may use `f16`.
    pub fn has_f16(&self) -> bool {
        #[cfg(feature = "gpu")]
        if let Inner::Gpu(ctx) = &self.inner {
            return ctx.has(wgpu::Features::SHADER_F16);
        }
        false
    }

    /// True when shaders may use subgroup operations (`MIA_SUBGROUPS=0` says no, to compare
    /// with the portable shaders).
    pub fn has_subgroups(&self) -> bool {
        #[cfg(feature = "gpu")]
        if let Inner::Gpu(ctx) = &self.inner {
            static OFF: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            let off = *OFF.get_or_init(|| crate::rt::env_switch("MIA_SUBGROUPS") == Some(false));
            return !off && ctx.has(wgpu::Features::SUBGROUP);
        }
        false
    }

    /// Waits until all work queued on this device has finished. GPU work is otherwise only
    /// submitted in batches and waited for at a read-back; CPU kernels are synchronous.
    pub fn synchronize(&self) -> Result<()> {
        match &self.inner {
            Inner::Cpu => Ok(()),
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => ctx.synchronize(),
        }
    }

    /// Runs `f`, waits until the device has finished the work it queued, and returns the GPU
    /// time of that work: from the start of the first compute pass recorded while `f` ran to
    /// the end of the last, read from GPU timestamps, so host-side costs (recording,
    /// submission, waiting) are left out. For benchmarks.
    ///
    /// The time is `None` on the CPU and on adapters without timestamp queries
    /// ([`Device::has_timestamps`]); time the call on the host then. Every pass recorded on
    /// this device while `f` runs is timed, from any thread; passes queued before are not.
    /// Scopes neither nest nor overlap (the second is an error), and one scope times at most
    /// 2048 passes. Outside a scope passes carry no timestamp writes: profiling costs nothing
    /// unless used.
    ///
    /// ```no_run
    /// # use mia_runtime::{Device, Tensor};
    /// let dev = Device::gpu()?;
    /// let x = Tensor::from_vec(&dev, [4], vec![1.0f32, 2.0, 3.0, 4.0])?;
    /// let (y, gpu_time) = dev.gpu_profile(|| x.reshape([2, 2]))?;
    /// # let _ = (y, gpu_time);
    /// # Ok::<(), mia_runtime::Error>(())
    /// ```
    pub fn gpu_profile<T>(
        &self,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Option<std::time::Duration>)> {
        match &self.inner {
            Inner::Cpu => f().map(|out| (out, None)),
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) if ctx.has(wgpu::Features::TIMESTAMP_QUERY) => {
                ctx.profile(f).map(|(out, spans)| {
                    let start = spans.iter().map(|s| s.0).fold(f64::INFINITY, f64::min);
                    let end = spans.iter().map(|s| s.1).fold(0.0, f64::max);
                    (out, Some(nanos(end - start)))
                })
            }
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => {
                let out = f()?;
                ctx.synchronize()?;
                Ok((out, None))
            }
        }
    }

    /// The time of each pass of the kernels `f` runs, in the order they ran (a kernel's passes
    /// follow its [`crate::Plan`]; a GPU pass dispatched in chunks counts once per chunk): for
    /// finding where the time of a whole model goes. On a GPU it is read from timestamps
    /// (gaps between passes left out; `None` where [`Device::gpu_profile`] gives `None`); on
    /// the CPU it is host time around each pass run on this thread.
    pub fn profile_passes<T>(
        &self,
        f: impl FnOnce() -> Result<T>,
    ) -> Result<(T, Option<Vec<std::time::Duration>>)> {
        match &self.inner {
            Inner::Cpu => {
                let (out, times) = crate::rt::cpu_profile(f);
                out.map(|o| (o, Some(times)))
            }
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) if ctx.has(wgpu::Features::TIMESTAMP_QUERY) => ctx
                .profile(f)
                .map(|(out, spans)| (out, Some(spans.iter().map(|s| nanos(s.1 - s.0)).collect()))),
            #[cfg(feature = "gpu")]
            Inner::Gpu(_) => self.gpu_profile(f).map(|(out, _)| (out, None)),
        }
    }

    /// Queues one compute pass (generated code only; see [`crate::rt`]). The WGSL must come from
    /// mia-macros: it is compiled without loop bounding, which is sound only for shaders whose
    /// loops terminate.
    #[doc(hidden)]
    pub fn dispatch(&self, pass: &crate::rt::GpuPass<'_>) -> Result<()> {
        match &self.inner {
            Inner::Cpu => Err(Error::Internal(format!(
                "pass `{}` was dispatched on the CPU device",
                pass.label
            ))),
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => ctx.dispatch(pass),
        }
    }

    #[cfg(feature = "gpu")]
    pub(crate) fn from_context(ctx: Arc<GpuContext>) -> Device {
        Device {
            inner: Inner::Gpu(ctx),
        }
    }

    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_context(&self) -> Option<&Arc<GpuContext>> {
        match &self.inner {
            Inner::Cpu => None,
            Inner::Gpu(ctx) => Some(ctx),
        }
    }
}

impl PartialEq for Device {
    fn eq(&self, other: &Device) -> bool {
        match (&self.inner, &other.inner) {
            (Inner::Cpu, Inner::Cpu) => true,
            #[cfg(feature = "gpu")]
            (Inner::Gpu(a), Inner::Gpu(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "gpu")]
            _ => false,
        }
    }
}

impl Eq for Device {}

impl fmt::Display for Device {
    /// `cpu`, or `gpu (<adapter name>)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.inner {
            Inner::Cpu => f.write_str("cpu"),
            #[cfg(feature = "gpu")]
            Inner::Gpu(ctx) => write!(f, "gpu ({})", ctx.name()),
        }
    }
}

impl fmt::Debug for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Device({self})")
    }
}

/// A duration from GPU nanoseconds (negative spans, from a clock that went backwards, are 0).
#[cfg(feature = "gpu")]
fn nanos(ns: f64) -> std::time::Duration {
    std::time::Duration::from_nanos(ns.max(0.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_choice("cpu").ok(), Some(Choice::Cpu));
        assert_eq!(parse_choice(" GPU ").ok(), Some(Choice::Gpu));
        assert_eq!(parse_choice("").ok(), Some(Choice::Auto));
        assert_eq!(parse_choice("Auto").ok(), Some(Choice::Auto));
        let e = parse_choice("tpu").unwrap_err().to_string();
        assert!(e.contains("`tpu`") && e.contains("cpu"), "{e}");
    }
}
