//! The wgpu context: one per process, opened lazily and shared by every GPU [`Device`] handle.
//!
//! - Back ends are chosen explicitly (Vulkan, Metal, DX12, or `WGPU_BACKEND`), never GL, so a
//!   machine without a GPU driver gets a clear `Err` rather than a silent software GL adapter.
//! - The device is opened with the adapter's real limits, not wgpu's conservative defaults.
//! - Dispatches are recorded into one shared command encoder, in one compute pass, and
//!   submitted together at the next read-back or [`Device::synchronize`], or earlier in
//!   growing batches ([`FIRST_SUBMIT`] passes, then twice as many, up to [`MAX_PENDING`]) so
//!   the GPU starts while the host records a long chain: a few submissions per batch, not one
//!   per pass. (One command buffer per pass would isolate errors better but measured ~1.5x
//!   the CPU cost per dispatch on lavapipe.)
//! - wgpu errors are caught with error scopes and returned as [`Error`]s, never panics. Pipeline
//!   and bind-group errors surface at the dispatch that caused them, naming the pass; the rest
//!   are checked by the runtime before recording (binding counts, aliasing, grid size), since an
//!   error inside the shared encoder would only surface at the flush and fail the whole batch.
//! - Pipelines are built once per (WGSL module, binding layout) and cached; so are bind groups,
//!   by what they bind. Passes' params share one buffer per submission (see `Pending`): per
//!   pass the host records a pass and, on a cache miss, makes a bind group, nothing more.
//! - Profiling is opt-in ([`Device::gpu_profile`]): while a scope is open each pass writes GPU
//!   timestamps at its start and end; otherwise passes carry no timestamp writes at all.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use crate::device::{Device, DeviceLimits};
use crate::error::{Error, Result};
use crate::rt::GpuPass;
use crate::tensor::{DType, Element};

/// Most passes recorded before they are submitted without waiting for a read-back, unless
/// `MIA_GPU_SUBMIT_EVERY` says otherwise (1 to 4096).
const MAX_PENDING: usize = 64;

/// Passes in the first submission after the host last waited for the GPU; each further one
/// holds twice as many, up to [`MAX_PENDING`]. The GPU starts on a long chain of passes (a
/// whole model) while the host still records the rest, for a few submissions (~0.1 ms each
/// on an H100) rather than one per pass. Measured on MiniLM at batch 32: one submission per
/// 64 passes 9.2 ms a call, one per 8 passes 7.6 ms.
const FIRST_SUBMIT: usize = 4;

fn submit_every() -> usize {
    std::env::var("MIA_GPU_SUBMIT_EVERY")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(MAX_PENDING, |n| n.clamp(1, 4096))
}

/// Back ends used unless `WGPU_BACKEND` says otherwise. GL is left out on purpose: with no
/// Vulkan driver wgpu would otherwise fall back to llvmpipe through EGL, a slow CPU "GPU"
/// without f16 or subgroups.
const DEFAULT_BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN
    .union(wgpu::Backends::METAL)
    .union(wgpu::Backends::DX12);

/// Optional features used when the adapter has them.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY);

/// (WGSL address, WGSL length, read-only buffers, buffers). Generated WGSL is a `&'static str`,
/// so its address identifies it; the length guards against two modules sharing a prefix.
type PipelineKey = (usize, usize, usize, usize);

struct Layout {
    bind_group: wgpu::BindGroupLayout,
    pipeline: wgpu::PipelineLayout,
}

#[derive(Default)]
struct Pending {
    /// The compute pass the batch's dispatches share (see [`GpuContext::one_pass`]), open on
    /// `encoder` until the flush; `None` while profiling, whose passes are one dispatch each.
    /// (Declared first: it must end before the encoder drops.)
    pass: Option<wgpu::ComputePass<'static>>,
    encoder: Option<wgpu::CommandEncoder>,
    passes: usize,
    /// Submissions made without waiting since the host last waited for the GPU.
    early: u32,
    /// The open profile scope, if any: passes recorded now get timestamp writes.
    profile: Option<ProfileScope>,
    /// The params of the passes recorded since the last submission, each at the offset its
    /// pass binds in `arena`; written with one `write_buffer` just before that submission.
    /// One shared buffer instead of one per pass saves ~3 µs a pass of buffer creation (and
    /// wgpu's tracking and freeing of it). Reusing it in every batch is safe: a write is
    /// ordered after the submissions made before it, whose passes read the previous params.
    params: Vec<u8>,
    arena: Option<wgpu::Buffer>,
    /// Bind groups made before, for reuse: a model called again binds the same pooled
    /// buffers at the same params offsets, and a hit saves creating one (~2–4 µs a pass on
    /// lavapipe). Entries naming a buffer the pool lets go are removed (see
    /// [`GpuContext::give`]), so the cache keeps no memory alive past the pool's limit.
    bind_groups: HashMap<BindKey, wgpu::BindGroup>,
}

/// What a pass's bind group binds: its layout (the address of the cached [`Layout`]), the
/// (offset, size) of its params in the current arena, and each buffer with its window
/// (`u64::MAX` for a whole buffer).
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    layout: usize,
    params: (u64, u64),
    buffers: Vec<(wgpu::Buffer, u64, u64)>,
}

/// Bind groups cached at most; past it the cache starts over (shapes that keep changing
/// would otherwise grow it without bound).
const BIND_GROUPS: usize = 4096;

/// Bytes of the first params arena; it doubles when a batch's params do not fit.
const ARENA_BYTES: u64 = 64 << 10;

/// The label of debug builds' output-poisoning passes.
const POISON_LABEL: &str = "mia/poison";

/// Passes one profile scope can time: two timestamps each, within wgpu's query-set maximum.
const PROFILE_PASSES: u32 = wgpu::QUERY_SET_MAX_QUERIES / 2;

/// Where the passes of an open profile scope write their timestamps.
struct ProfileScope {
    query_set: wgpu::QuerySet,
    /// Passes recorded since the scope opened (those past [`PROFILE_PASSES`] are not timed).
    passes: u32,
}

/// The query set and buffers profiling reuses, made on the first profile scope.
struct Profiler {
    query_set: wgpu::QuerySet,
    /// Where the queries resolve to (GPU-only memory).
    resolved: wgpu::Buffer,
    /// A host-readable copy of `resolved`.
    read: wgpu::Buffer,
}

struct Pipeline {
    pipeline: wgpu::ComputePipeline,
    layout: Arc<Layout>,
}

pub(crate) struct GpuContext {
    device: wgpu::Device,
    queue: wgpu::Queue,
    name: String,
    /// A CPU-emulated adapter (lavapipe, SwiftShader, WARP): correct, but slower than mia's
    /// own CPU kernels, so `Device::auto` does not pick it.
    software: bool,
    /// Tensor-core tilings may run (see [`tensor_cores`]).
    tensor_cores: bool,
    limits: wgpu::Limits,
    features: wgpu::Features,
    layouts: Mutex<HashMap<(usize, usize), Arc<Layout>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<Pipeline>>>,
    /// Passes recorded but not yet submitted, in dispatch order. The lock is held across
    /// `queue.submit` so that submissions from several threads keep that order.
    pending: Mutex<Pending>,
    /// Buffers of dropped kernel outputs, for reuse (see `Pooled`).
    free: Mutex<Vec<wgpu::Buffer>>,
    /// Held for the whole of a profile scope, so scopes neither nest nor overlap.
    profiler: Mutex<Option<Arc<Profiler>>>,
    lost: Arc<OnceLock<String>>,
    /// Passes per submission (see [`MAX_PENDING`]).
    submit_every: usize,
    /// Dispatches of a batch share one compute pass (`MIA_GPU_ONE_PASS=0`: a pass each).
    /// wgpu puts the barriers a dispatch needs before it either way, but opens two command
    /// buffers per pass (the pass and one for its barriers).
    one_pass: bool,
}

static CONTEXT: OnceLock<Result<Arc<GpuContext>>> = OnceLock::new();

/// The process-wide context, opened on first use. A failure is cached too, so asking again is
/// cheap and gives the same error.
pub(crate) fn context() -> Result<Arc<GpuContext>> {
    CONTEXT
        .get_or_init(|| GpuContext::open().map(Arc::new))
        .clone()
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data valid even
/// if a panic unwinds through it (the maps and the list are only pushed to or drained).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn backend_names(b: wgpu::Backends) -> String {
    let names: Vec<&str> = [
        (wgpu::Backends::VULKAN, "Vulkan"),
        (wgpu::Backends::METAL, "Metal"),
        (wgpu::Backends::DX12, "DX12"),
        (wgpu::Backends::GL, "GL"),
        (wgpu::Backends::BROWSER_WEBGPU, "WebGPU"),
        (wgpu::Backends::NOOP, "noop"),
    ]
    .into_iter()
    .filter(|(flag, _)| b.contains(*flag))
    .map(|(_, name)| name)
    .collect();
    if names.is_empty() {
        "none (WGPU_BACKEND names no known back end)".to_string()
    } else {
        names.join(", ")
    }
}

fn backend_name(b: wgpu::Backend) -> &'static str {
    match b {
        wgpu::Backend::Vulkan => "Vulkan",
        wgpu::Backend::Metal => "Metal",
        wgpu::Backend::Dx12 => "DX12",
        wgpu::Backend::Gl => "GL",
        wgpu::Backend::BrowserWebGpu => "WebGPU",
        other => other.to_str(),
    }
}

/// Lays `groups` workgroups out on a grid of at most `max` per dimension: one row when it fits,
/// else `y` rows of `x` with `x * y - groups < y` (the shader skips ids past `groups`).
pub(crate) fn grid(groups: u64, max: u32) -> Option<(u32, u32)> {
    let max = u64::from(max.max(1));
    let y = groups.div_ceil(max);
    if y > max {
        return None;
    }
    let x = groups.div_ceil(y.max(1));
    Some((u32::try_from(x).ok()?, u32::try_from(y).ok()?))
}

/// Whether mia's tensor-core tilings may run here: `MIA_TENSOR_CORES=1` (opt-in, for their
/// accuracy limits; see `DeviceLimits::tensor_cores`), 16 × 16 × 16 f16 cooperative matrices
/// with f32 accumulation, f16 in shaders, and subgroups of exactly 32 (the tiles give each
/// subgroup a 32 × 32 block by `local_invocation_index / 32`).
fn tensor_cores(adapter: &wgpu::Adapter, info: &wgpu::AdapterInfo) -> bool {
    let needed = wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16;
    let config = adapter.cooperative_matrix_properties().iter().any(|p| {
        (p.m_size, p.n_size, p.k_size) == (16, 16, 16)
            && p.ab_type == wgpu::CooperativeScalarType::F16
            && p.cr_type == wgpu::CooperativeScalarType::F32
    });
    adapter.features().contains(needed)
        && config
        && (info.subgroup_min_size, info.subgroup_max_size) == (32, 32)
        && crate::rt::env_switch("MIA_TENSOR_CORES") == Some(true)
}

impl GpuContext {
    fn open() -> Result<Self> {
        let backends = wgpu::Backends::from_env().unwrap_or(DEFAULT_BACKENDS);
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        desc.flags = wgpu::InstanceFlags::from_build_config().with_env();
        let instance = wgpu::Instance::new(desc);
        let adapter = pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::HighPerformance,
            force_fallback_adapter: false,
            compatible_surface: None,
            apply_limit_buckets: false,
        }))
        .map_err(|e| Error::NoGpu {
            reason: e.to_string(),
            backends: backend_names(backends),
        })?;

        let info = adapter.get_info();
        let name = format!("{} ({})", info.name, backend_name(info.backend));
        let mut features = adapter.features() & WANTED_FEATURES;
        let tensor_cores = tensor_cores(&adapter, &info);
        if tensor_cores {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        }
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("mia"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: if tensor_cores {
                // SAFETY: wgpu 30's cooperative matrices are experimental; mia uses them only
                // in its tensor-core tilings, whose shaders naga validated at build time and
                // whose results the tests check against f64 on such a device.
                unsafe { wgpu::ExperimentalFeatures::enabled() }
            } else {
                wgpu::ExperimentalFeatures::disabled()
            },
            ..Default::default()
        }))
        .map_err(|e| Error::NoGpu {
            reason: format!("found adapter `{name}` but could not open it: {e}"),
            backends: backend_names(backends),
        })?;

        // wgpu's default handler panics; everything we can attribute is caught by error scopes,
        // so whatever is left is reported, not fatal.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| {
            eprintln!("mia: unhandled GPU error: {e}");
        }));
        let lost = Arc::new(OnceLock::new());
        let lost_cb = Arc::clone(&lost);
        device.set_device_lost_callback(move |reason, message| {
            let _ = lost_cb.set(format!("{reason:?}: {message}"));
        });

        Ok(GpuContext {
            device,
            queue,
            name,
            software: info.device_type == wgpu::DeviceType::Cpu,
            tensor_cores,
            limits,
            features,
            layouts: Mutex::default(),
            pipelines: Mutex::default(),
            pending: Mutex::default(),
            free: Mutex::default(),
            profiler: Mutex::default(),
            submit_every: submit_every(),
            one_pass: crate::rt::env_switch("MIA_GPU_ONE_PASS") != Some(false),
            lost,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn is_software(&self) -> bool {
        self.software
    }

    pub(crate) fn limits(&self) -> DeviceLimits {
        let l = &self.limits;
        DeviceLimits {
            max_storage_binding_bytes: l.max_storage_buffer_binding_size,
            max_buffer_bytes: l.max_buffer_size,
            max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
            max_invocations_per_workgroup: l.max_compute_invocations_per_workgroup,
            max_workgroup_storage_bytes: l.max_compute_workgroup_storage_size,
            max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
            min_storage_offset_alignment: l.min_storage_buffer_offset_alignment as u64,
            tensor_cores: self.tensor_cores,
        }
    }

    pub(crate) fn has(&self, f: wgpu::Features) -> bool {
        self.features.contains(f)
    }

    fn check_lost(&self) -> Result<()> {
        match self.lost.get() {
            Some(reason) => Err(Error::DeviceLost {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Runs `f` inside error scopes and returns the first error wgpu reported while it ran.
    /// Scopes are per thread, so errors of other threads' work never land here.
    fn scoped<R>(&self, context: impl FnOnce() -> String, f: impl FnOnce() -> R) -> Result<R> {
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let errors = [
            pollster::block_on(validation.pop()),
            pollster::block_on(oom.pop()),
            pollster::block_on(internal.pop()),
        ];
        match errors.into_iter().flatten().next() {
            None => Ok(r),
            Some(e) => {
                self.check_lost()?;
                Err(Error::Gpu {
                    context: context(),
                    message: e.to_string().trim_end().to_string(),
                })
            }
        }
    }

    /// Records `tail` after the pending passes and submits them all. Errors deferred by the
    /// encoder are raised here, so callers wrap this in [`GpuContext::scoped`].
    fn flush(&self, tail: impl FnOnce(&mut wgpu::CommandEncoder)) {
        let mut pending = lock(&self.pending);
        // The shared pass ends (is dropped) before the encoder records anything else.
        pending.pass = None;
        let mut encoder = pending.encoder.take().unwrap_or_else(|| self.new_encoder());
        tail(&mut encoder);
        pending.passes = 0;
        self.write_params(&mut pending);
        self.queue.submit([encoder.finish()]);
    }

    /// Queues the pending passes' params into the arena, before the submission that follows.
    fn write_params(&self, pending: &mut Pending) {
        if let (Some(arena), false) = (&pending.arena, pending.params.is_empty()) {
            self.queue.write_buffer(arena, 0, &pending.params);
        }
        pending.params.clear();
    }

    /// Places `params` in the arena after the pending passes' own and returns their offset.
    /// When they do not fit, the batch's params so far are queued into the full arena (its
    /// passes are submitted later, after that write) and a twice larger one takes over.
    fn push_params(&self, pending: &mut Pending, params: &[u32], label: &str) -> Result<u64> {
        let bytes: &[u8] = bytemuck::cast_slice(params);
        let align = u64::from(self.limits.min_storage_buffer_offset_alignment.max(4));
        let mut offset = (pending.params.len() as u64).next_multiple_of(align);
        let end = offset + bytes.len() as u64;
        let capacity = pending.arena.as_ref().map_or(0, wgpu::Buffer::size);
        if end > capacity {
            let size = (capacity * 2)
                .max(ARENA_BYTES)
                .min(self.limits.max_buffer_size)
                .max(bytes.len() as u64);
            let arena = self.scoped(
                || format!("allocating the params of pass `{label}`"),
                || {
                    self.write_params(pending);
                    self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("mia params"),
                        size,
                        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                },
            )?;
            pending.arena = Some(arena);
            // Cached bind groups name the old arena.
            pending.bind_groups.clear();
            offset = 0;
        }
        // `offset` is within the arena, whose size fits in memory.
        pending.params.resize(offset as usize, 0);
        pending.params.extend_from_slice(bytes);
        Ok(offset)
    }

    fn new_encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("mia batch"),
            })
    }

    fn wait(&self, what: &str) -> Result<()> {
        // The GPU is idle after this: the next chain of passes starts with a short submission.
        lock(&self.pending).early = 0;
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map(drop)
            .map_err(|e| Error::Gpu {
                context: what.to_string(),
                message: e.to_string(),
            })
    }

    /// Submits all pending work and waits for the GPU to finish it.
    pub(crate) fn synchronize(&self) -> Result<()> {
        self.check_lost()?;
        self.scoped(|| "submitting queued passes".into(), || self.flush(|_| {}))?;
        self.wait("waiting for the GPU")?;
        self.check_lost()
    }

    fn layout(&self, reads: usize, buffers: usize) -> Result<Arc<Layout>> {
        if let Some(l) = lock(&self.layouts).get(&(reads, buffers)) {
            return Ok(Arc::clone(l));
        }
        let entry = |binding: usize, read_only: bool| wgpu::BindGroupLayoutEntry {
            // `buffers` was checked against the device limit, which is a u32.
            binding: binding as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let entries: Vec<_> = (0..=buffers).map(|b| entry(b, b <= reads)).collect();
        let layout = self.scoped(
            || format!("creating a binding layout for {buffers} buffers"),
            || {
                let bind_group =
                    self.device
                        .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                            label: Some("mia"),
                            entries: &entries,
                        });
                let pipeline =
                    self.device
                        .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                            label: Some("mia"),
                            bind_group_layouts: &[Some(&bind_group)],
                            immediate_size: 0,
                        });
                Layout {
                    bind_group,
                    pipeline,
                }
            },
        )?;
        let mut layouts = lock(&self.layouts);
        Ok(Arc::clone(
            layouts
                .entry((reads, buffers))
                .or_insert_with(|| Arc::new(layout)),
        ))
    }

    fn pipeline(&self, pass: &GpuPass<'_>) -> Result<Arc<Pipeline>> {
        let key = (
            pass.wgsl.as_ptr() as usize,
            pass.wgsl.len(),
            pass.reads,
            pass.buffers.len(),
        );
        if let Some(p) = lock(&self.pipelines).get(&key) {
            return Ok(Arc::clone(p));
        }
        // Built outside the lock: compiling takes milliseconds to (cold) hundreds of them, and
        // other threads' cached dispatches should not wait. A rare duplicate build is harmless.
        let layout = self.layout(pass.reads, pass.buffers.len())?;
        // Bounds checks stay on unless the generator vouches for every index (`in_bounds`:
        // matmul tiles, whose global accesses are guarded explicitly and whose register and
        // workgroup arrays are indexed by constant-bound loops; the checks cost ~35% there).
        // Loop bounding is off because it blocks unrolling in the driver's compiler (~30x
        // slower tiled matmul) and every module was validated by naga when the kernel was
        // compiled, with loops bounded by construction.
        let checks = wgpu::ShaderRuntimeChecks {
            bounds_checks: !pass.in_bounds,
            force_loop_bounding: false,
            ..wgpu::ShaderRuntimeChecks::checked()
        };
        let pipeline = self.scoped(
            || format!("building the GPU pipeline of pass `{}`", pass.label),
            || {
                // SAFETY: the only unchecked property is loop termination; `GpuPass::wgsl` is
                // WGSL generated and validated by mia-macros, whose loops are all bounded.
                let module = unsafe {
                    self.device.create_shader_module_trusted(
                        wgpu::ShaderModuleDescriptor {
                            label: Some(pass.label),
                            source: wgpu::ShaderSource::Wgsl(Cow::Borrowed(pass.wgsl)),
                        },
                        checks,
                    )
                };
                self.device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(pass.label),
                        layout: Some(&layout.pipeline),
                        module: &module,
                        entry_point: None,
                        compilation_options: Default::default(),
                        cache: None,
                    })
            },
        )?;
        let pipeline = Arc::new(Pipeline { pipeline, layout });
        let mut pipelines = lock(&self.pipelines);
        Ok(Arc::clone(pipelines.entry(key).or_insert(pipeline)))
    }

    /// Runs `f` with a profile scope open, waits for the GPU, and returns the start and end of
    /// each pass recorded in the scope, in nanoseconds on the GPU's clock, in recording order
    /// (see [`Device::gpu_profile`]). The caller checked that the device has timestamp queries.
    pub(crate) fn profile<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<(T, Vec<(f64, f64)>)> {
        let busy = || Error::Gpu {
            context: "opening a GPU profile scope".into(),
            message: "another profile scope is open; scopes neither nest nor overlap".into(),
        };
        let mut slot = match self.profiler.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Err(busy()),
        };
        let profiler = match slot.as_ref() {
            Some(p) => Arc::clone(p),
            None => Arc::clone(slot.insert(Arc::new(self.new_profiler()?))),
        };
        self.check_lost()?;
        {
            let mut pending = lock(&self.pending);
            if pending.profile.is_some() {
                return Err(busy());
            }
            pending.profile = Some(ProfileScope {
                query_set: profiler.query_set.clone(),
                passes: 0,
            });
        }
        let out = f();
        // Closed whatever `f` returned, so later passes are not timed.
        let passes = lock(&self.pending)
            .profile
            .take()
            .map_or(0, |scope| scope.passes);
        let out = out?;
        if passes == 0 {
            self.synchronize()?;
            return Ok((out, Vec::new()));
        }
        if passes > PROFILE_PASSES {
            self.synchronize()?;
            return Err(Error::Gpu {
                context: "reading GPU timestamps".into(),
                message: format!(
                    "the profile scope recorded {passes} passes, but at most {PROFILE_PASSES} \
                     can be timed; profile less work at a time"
                ),
            });
        }
        let queries = 2 * passes;
        let bytes = u64::from(queries) * wgpu::QUERY_SIZE as u64;
        self.check_lost()?;
        self.scoped(
            || "resolving GPU timestamps".into(),
            || {
                self.flush(|encoder| {
                    encoder.resolve_query_set(
                        &profiler.query_set,
                        0..queries,
                        &profiler.resolved,
                        0,
                    );
                    encoder.copy_buffer_to_buffer(&profiler.resolved, 0, &profiler.read, 0, bytes);
                })
            },
        )?;
        self.map_for_reading(&profiler.read, bytes)?;
        let ticks: Vec<u64> = {
            let view = profiler
                .read
                .get_mapped_range(..bytes)
                .map_err(|e| Error::ReadBack {
                    reason: e.to_string(),
                })?;
            view.chunks_exact(8)
                .map(|w| u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]))
                .collect()
        };
        profiler.read.unmap();
        let period_ns = f64::from(self.queue.get_timestamp_period());
        let spans = ticks
            .chunks_exact(2)
            .map(|w| (w[0] as f64 * period_ns, w[1] as f64 * period_ns))
            .collect();
        Ok((out, spans))
    }

    fn new_profiler(&self) -> Result<Profiler> {
        let bytes = u64::from(2 * PROFILE_PASSES) * wgpu::QUERY_SIZE as u64;
        self.scoped(
            || "creating GPU timestamp queries".into(),
            || Profiler {
                query_set: self.device.create_query_set(&wgpu::QuerySetDescriptor {
                    label: Some("mia profile"),
                    ty: wgpu::QueryType::Timestamp,
                    count: 2 * PROFILE_PASSES,
                }),
                resolved: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("mia profile resolve"),
                    size: bytes,
                    usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    mapped_at_creation: false,
                }),
                read: self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("mia profile read-back"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }),
            },
        )
    }

    /// Maps the first `bytes` of a `MAP_READ` buffer whose copy was submitted, and waits until
    /// it is readable.
    fn map_for_reading(&self, buffer: &wgpu::Buffer, bytes: u64) -> Result<()> {
        let read_back = |reason: String| Error::ReadBack { reason };
        let (tx, rx) = mpsc::channel();
        buffer.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        // The wait covers the copy's submission, and mapping callbacks run inside a poll, but
        // possibly inside another thread's poll: keep waiting on the channel, polling again
        // now and then, until the callback arrives (or a minute has passed).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            self.wait("waiting for a read-back")?;
            self.check_lost()?;
            if let Ok(r) = rx.recv_timeout(Duration::from_millis(5)) {
                return r.map_err(|e| read_back(e.to_string()));
            }
        }
        Err(read_back(
            "the GPU never finished mapping the buffer".into(),
        ))
    }

    /// A new bind group for `pass`: its params at `offset` in the current arena, then its
    /// buffers (or their windows).
    fn bind_group(
        &self,
        pass: &GpuPass<'_>,
        layout: &Layout,
        pending: &Pending,
        offset: u64,
        params: &[u32],
    ) -> Result<wgpu::BindGroup> {
        self.scoped(
            || format!("binding the buffers of pass `{}`", pass.label),
            || {
                let mut entries = Vec::with_capacity(pass.buffers.len() + 1);
                if let Some(arena) = &pending.arena {
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: arena,
                            offset,
                            size: wgpu::BufferSize::new(4 * params.len() as u64),
                        }),
                    });
                }
                for (i, b) in pass.buffers.iter().enumerate() {
                    let resource = match pass.ranges.get(i) {
                        // A window of a buffer larger than one binding.
                        Some(&(offset, size)) => {
                            wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                buffer: &b.buffer,
                                offset,
                                size: wgpu::BufferSize::new(size),
                            })
                        }
                        None => b.buffer.as_entire_binding(),
                    };
                    entries.push(wgpu::BindGroupEntry {
                        binding: i as u32 + 1,
                        resource,
                    });
                }
                self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: Some(pass.label),
                    layout: &layout.bind_group,
                    entries: &entries,
                })
            },
        )
    }

    pub(crate) fn dispatch(self: &Arc<Self>, pass: &GpuPass<'_>) -> Result<()> {
        self.check_lost()?;
        let label = pass.label;
        if pass.reads > pass.buffers.len() {
            return Err(Error::Internal(format!(
                "pass `{label}` declares {} read-only buffers but binds only {}",
                pass.reads,
                pass.buffers.len()
            )));
        }
        if let Some(b) = pass.buffers.iter().find(|b| !Arc::ptr_eq(&b.ctx, self)) {
            return Err(Error::Internal(format!(
                "pass `{label}` binds a buffer of another GPU device ({})",
                b.ctx.name
            )));
        }
        // A read-write binding must be the only binding of its buffer in the pass (WebGPU's
        // usage rule); wgpu would only report it when the whole batch is submitted.
        for (i, w) in pass.buffers.iter().enumerate().skip(pass.reads) {
            let same = |j: &usize| *j != i && pass.buffers[*j].buffer.buffer == w.buffer.buffer;
            if let Some(j) = (0..pass.buffers.len()).find(same) {
                return Err(Error::Internal(format!(
                    "pass `{label}` binds one buffer as binding {} (read-write) and as binding \
                     {}; a pass cannot write a buffer it also reads through another binding",
                    i + 1,
                    j + 1
                )));
            }
        }
        let bindings = pass.buffers.len() + 1;
        let max_bindings = self.limits.max_storage_buffers_per_shader_stage as usize;
        if bindings > max_bindings {
            return Err(Error::Gpu {
                context: format!("pass `{label}`"),
                message: format!(
                    "it binds {bindings} storage buffers, but the device allows {max_bindings}"
                ),
            });
        }
        if pass.groups == 0 {
            return Ok(());
        }
        let max = self.limits.max_compute_workgroups_per_dimension;
        let (x, y) = grid(pass.groups, max).ok_or(Error::TooManyWorkgroups {
            label,
            groups: pass.groups,
            max,
        })?;
        let pipeline = self.pipeline(pass)?;

        let params: &[u32] = if pass.params.is_empty() {
            &[0]
        } else {
            pass.params
        };

        // Held from placing the params to recording the pass, so no other thread's flush
        // writes the arena in between.
        let mut guard = lock(&self.pending);
        let pending = &mut *guard;
        let offset = self.push_params(pending, params, label)?;
        let key = BindKey {
            layout: Arc::as_ptr(&pipeline.layout) as usize,
            params: (offset, 4 * params.len() as u64),
            buffers: (pass.buffers.iter().enumerate())
                .map(|(i, b)| {
                    let (at, size) = pass.ranges.get(i).copied().unwrap_or((0, u64::MAX));
                    (b.buffer.buffer.clone(), at, size)
                })
                .collect(),
        };
        let bind_group = match pending.bind_groups.get(&key) {
            Some(b) => b.clone(),
            None => {
                let made = self.bind_group(pass, &pipeline.layout, pending, offset, params);
                match made {
                    Ok(b) => {
                        if pending.bind_groups.len() >= BIND_GROUPS {
                            pending.bind_groups.clear();
                        }
                        pending.bind_groups.insert(key, b.clone());
                        b
                    }
                    Err(e) => {
                        // Nothing binds them: leave them out of the batch's params.
                        pending.params.truncate(offset as usize);
                        return Err(e);
                    }
                }
            }
        };

        {
            let Pending {
                encoder,
                pass,
                profile,
                ..
            } = &mut *pending;
            // Profiled dispatches get a pass each, for their timestamps; so does every dispatch
            // with `MIA_GPU_ONE_PASS=0`. Otherwise the batch's shared pass, opened here first.
            let shared = self.one_pass && profile.is_none();
            if !shared {
                *pass = None;
            }
            let open = match pass {
                Some(open) => open,
                None => {
                    let encoder = encoder.get_or_insert_with(|| self.new_encoder());
                    // Debug poisoning is not the kernel's work: it is left out of profiles.
                    let timed = profile.as_mut().filter(|_| label != POISON_LABEL);
                    let timestamp_writes = timed.and_then(|scope| {
                        let i = scope.passes;
                        scope.passes = scope.passes.saturating_add(1);
                        (i < PROFILE_PASSES).then_some(wgpu::ComputePassTimestampWrites {
                            query_set: &scope.query_set,
                            beginning_of_pass_write_index: Some(2 * i),
                            end_of_pass_write_index: Some(2 * i + 1),
                        })
                    });
                    let cpass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(if shared { "mia passes" } else { label }),
                        timestamp_writes,
                    });
                    pass.insert(cpass.forget_lifetime())
                }
            };
            open.set_pipeline(&pipeline.pipeline);
            open.set_bind_group(0, &bind_group, &[]);
            open.dispatch_workgroups(x, y, 1);
            if !shared {
                *pass = None;
            }
        }
        pending.passes += 1;
        let due = FIRST_SUBMIT
            .checked_shl(pending.early)
            .unwrap_or(usize::MAX)
            .min(self.submit_every);
        if pending.passes >= due {
            pending.early = pending.early.saturating_add(1);
            drop(guard);
            self.scoped(|| "submitting queued passes".into(), || self.flush(|_| {}))?;
        }
        Ok(())
    }
}

/// A GPU storage buffer of `len` 4-byte elements, tied to the device that made it.
///
/// Cloning shares the buffer. Zero-length buffers are backed by 4 bytes (wgpu cannot bind an
/// empty buffer) and remember their logical length.
#[derive(Clone)]
pub struct GpuBuffer {
    buffer: Arc<Pooled>,
    len: usize,
    dtype: DType,
    ctx: Arc<GpuContext>,
}

/// A wgpu buffer that returns to its context's pool when the last tensor using it drops.
///
/// Reuse is safe without waiting for the GPU: every pass is recorded into one queue after the
/// passes that read the buffer before, so the GPU runs them in that order. Only kernel outputs
/// come from the pool; uploads get fresh buffers, because `queue.write_buffer` runs before the
/// batch it is submitted with and could overwrite data a queued pass still reads.
struct Pooled {
    buffer: wgpu::Buffer,
    ctx: Arc<GpuContext>,
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.ctx.give(self.buffer.clone());
    }
}

impl std::ops::Deref for Pooled {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        &self.buffer
    }
}

/// Fills a buffer with one 32-bit pattern: `P = [groups, len, bits]`.
const POISON_FILL: &str = "@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> B: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = (wg.x + wg.y * nwg.x) * 256u + lid;
    if (i < P[1]) { B[i] = P[2]; }
}
";

/// Bytes of free buffers a context keeps for reuse.
const POOL_BYTES: u64 = 4 << 30;

impl GpuContext {
    /// Keeps a dropped buffer for reuse, within [`POOL_BYTES`] (oldest dropped first).
    /// Cached bind groups naming a buffer let go are dropped with it, so that it is freed.
    fn give(&self, buffer: wgpu::Buffer) {
        let mut gone = Vec::new();
        {
            let mut free = lock(&self.free);
            free.push(buffer);
            let mut total: u64 = free.iter().map(|b| b.size()).sum();
            while total > POOL_BYTES && !free.is_empty() {
                let b = free.remove(0);
                total -= b.size();
                gone.push(b);
            }
        }
        if !gone.is_empty() {
            // Never called with `pending` locked: no pooled buffer drops while it is held.
            lock(&self.pending)
                .bind_groups
                .retain(|k, _| !k.buffers.iter().any(|(b, ..)| gone.contains(b)));
        }
    }

    /// A free buffer of exactly `bytes`, if one was dropped.
    fn take(&self, bytes: u64) -> Option<wgpu::Buffer> {
        let mut free = self.free.lock().ok()?;
        let i = free.iter().rposition(|b| b.size() == bytes)?;
        Some(free.swap_remove(i))
    }
}

impl GpuBuffer {
    /// A buffer for `len` elements of `T` on `dev`, for a kernel to write: a dropped buffer of
    /// the same size when there is one (stale contents), else a new one (zeros). Debug builds
    /// fill it with [`Element::POISON`], as [`crate::rt::cpu_alloc`] does. Errors, before
    /// allocating anything, if the size is over the device's buffer limit.
    pub fn alloc<T: Element>(dev: &Device, len: usize) -> Result<GpuBuffer> {
        Self::new::<T>(dev, len, true)
    }

    /// A new buffer that no queued pass can be using, for uploads.
    pub(crate) fn alloc_fresh<T: Element>(dev: &Device, len: usize) -> Result<GpuBuffer> {
        Self::new::<T>(dev, len, false)
    }

    fn new<T: Element>(dev: &Device, len: usize, reuse: bool) -> Result<GpuBuffer> {
        let Some(ctx) = dev.gpu_context() else {
            return Err(Error::Internal(
                "GpuBuffer::alloc called with the CPU device".into(),
            ));
        };
        ctx.check_lost()?;
        let what = || format!("a GPU buffer of {len} {} elements", T::DTYPE);
        let bytes = (len as u64).saturating_mul(4);
        // Buffers may exceed one binding: generated code binds windows of them.
        for (limit, limit_name) in [(ctx.limits.max_buffer_size, "max_buffer_size")] {
            if bytes > limit {
                return Err(Error::TooLarge {
                    what: what(),
                    bytes,
                    limit,
                    limit_name,
                });
            }
        }
        let recycled = if reuse { ctx.take(bytes.max(4)) } else { None };
        let buffer = match recycled {
            Some(b) => b,
            None => ctx.scoped(
                || format!("allocating {}", what()),
                || {
                    ctx.device.create_buffer(&wgpu::BufferDescriptor {
                        label: None,
                        size: bytes.max(4),
                        usage: wgpu::BufferUsages::STORAGE
                            | wgpu::BufferUsages::COPY_SRC
                            | wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    })
                },
            )?,
        };
        let out = GpuBuffer {
            buffer: Arc::new(Pooled {
                buffer,
                ctx: Arc::clone(ctx),
            }),
            len,
            dtype: T::DTYPE,
            ctx: Arc::clone(ctx),
        };
        // Debug builds (tests) poison kernel outputs, so an element a kernel forgot to write
        // shows up. The fill is a queued pass, ordered like any other use of a reused buffer
        // (buffers past one binding are left as they are).
        let bindable = bytes <= ctx.limits.max_storage_buffer_binding_size;
        if reuse && cfg!(debug_assertions) && len > 0 && bindable {
            let groups = len.div_ceil(256) as u64;
            dev.dispatch(&crate::rt::GpuPass {
                wgsl: POISON_FILL,
                label: POISON_LABEL,
                buffers: &[&out],
                ranges: &[],
                reads: 0,
                params: &[groups as u32, len as u32, T::POISON.to_bits()],
                groups,
                in_bounds: false,
            })?;
        }
        Ok(out)
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-element buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element type it was allocated for.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device that owns the buffer.
    pub fn device(&self) -> Device {
        Device::from_context(Arc::clone(&self.ctx))
    }

    /// Queues a copy of `data` into the buffer; it happens before any pass submitted later.
    pub(crate) fn upload<T: Element>(&self, data: &[T]) -> Result<()> {
        debug_assert_eq!(data.len(), self.len);
        if data.is_empty() {
            return Ok(());
        }
        self.ctx.check_lost()?;
        let bytes = T::gpu_bytes(data);
        self.ctx.scoped(
            || format!("uploading {} {} elements", self.len, T::DTYPE),
            || self.ctx.queue.write_buffer(&self.buffer, 0, &bytes),
        )
    }

    /// Submits all queued work, copies the buffer to host-visible memory and waits for it.
    pub(crate) fn download<T: Element>(&self) -> Result<Vec<T>> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let ctx = &self.ctx;
        ctx.check_lost()?;
        let bytes = self.len as u64 * 4;
        let read_back = |reason: String| Error::ReadBack { reason };
        let staging = ctx.scoped(
            || "copying a buffer for read-back".into(),
            || {
                let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("mia read-back"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                ctx.flush(|encoder| {
                    encoder.copy_buffer_to_buffer(&self.buffer, 0, &staging, 0, bytes)
                });
                staging
            },
        )?;
        ctx.map_for_reading(&staging, bytes)?;
        let out = {
            let view = staging
                .get_mapped_range(..)
                .map_err(|e| read_back(e.to_string()))?;
            view.chunks_exact(4)
                .map(|w| T::from_bits(u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
                .collect()
        };
        staging.unmap();
        Ok(out)
    }
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuBuffer")
            .field("len", &self.len)
            .field("dtype", &self.dtype)
            .field("device", &self.ctx.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::{grid, GpuBuffer};
    use crate::rt::GpuPass;

    /// `P = [n, v0, v1, ..]`: writes `B[i] = v_i` for `i < n` and `B[n] = arrayLength(&P)`, so a
    /// pass reads back its own params and the size they were bound with.
    const PARAMS_ECHO: &str = "@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read_write> B: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>) {
    let n = P[0];
    if (g.x < n) { B[g.x] = P[g.x + 1u]; }
    if (g.x == n) { B[n] = arrayLength(&P); }
}
";

    /// Passes of one batch get their own params although they share a buffer (one pass's are
    /// larger than the first arena, so the batch also moves to a larger one), and passes
    /// recorded again with the same buffers (cached bind groups) see their new params.
    #[test]
    fn params_arena_and_cached_bind_groups() {
        let Some(dev) = crate::testing::gpu() else {
            return;
        };
        let sizes = [1usize, 7, 300, 20_000, 5, 64, 0];
        let outs: Vec<GpuBuffer> = sizes
            .iter()
            .map(|&n| GpuBuffer::alloc::<u32>(&dev, n + 1).unwrap())
            .collect();
        let value = |round: u32, k: usize, i: u32| i * 31 + k as u32 + 1000 * round;
        for round in 0..3 {
            for (k, (&n, out)) in sizes.iter().zip(&outs).enumerate() {
                let params: Vec<u32> = std::iter::once(n as u32)
                    .chain((0..n as u32).map(|i| value(round, k, i)))
                    .collect();
                dev.dispatch(&GpuPass {
                    wgsl: PARAMS_ECHO,
                    label: "test/params_echo",
                    buffers: &[out],
                    ranges: &[],
                    reads: 0,
                    params: &params,
                    groups: (n as u64 + 1).div_ceil(64),
                    in_bounds: false,
                })
                .unwrap();
            }
            for (k, (&n, out)) in sizes.iter().zip(&outs).enumerate() {
                let got = out.download::<u32>().unwrap();
                let want: Vec<u32> = (0..n as u32)
                    .map(|i| value(round, k, i))
                    .chain([n as u32 + 1])
                    .collect();
                assert_eq!(got, want, "round {round}, pass {k} ({n} values)");
            }
        }
    }

    #[test]
    fn grid_layout() {
        assert_eq!(grid(1, 65535), Some((1, 1)));
        assert_eq!(grid(65535, 65535), Some((65535, 1)));
        assert_eq!(grid(65536, 65535), Some((32768, 2)));
        assert_eq!(grid(70_000, 65535), Some((35_000, 2)));
        assert_eq!(grid(65535 * 65535, 65535), Some((65535, 65535)));
        assert_eq!(grid(65535 * 65535 + 1, 65535), None);
        assert_eq!(grid(1_000_001, 1000), None);
        for g in [3u64, 1000, 1001, 123_457, 999_999, 1_000_000] {
            let (x, y) = grid(g, 1000).unwrap();
            let (x, y) = (u64::from(x), u64::from(y));
            assert!(x <= 1000 && y <= 1000 && x * y >= g && x * y - g < y, "{g}");
        }
    }
}
