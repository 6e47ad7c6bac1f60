//! The runtime on its own: tensors, devices, the ABI that generated kernels call, and GPU
//! dispatch of hand-written WGSL. GPU tests run when a GPU is present (CI: lavapipe with
//! `WGPU_BACKEND=vulkan MIA_REQUIRE_GPU=1`, which turns a missing GPU into a failure).

use std::sync::atomic::{AtomicUsize, Ordering};

use mia_runtime::rt::{self, D};
use mia_runtime::{testing, DType, Device, DeviceKind, Error, SizeOrigin, Tensor};

// ---------------------------------------------------------------------------------------------
// Tensors

#[test]
#[allow(clippy::needless_borrows_for_generic_args)] // `&[2, 3]` is one of the forms under test
fn from_vec_rejects_wrong_length_for_every_shape_form() {
    let dev = Device::cpu();
    let data = || vec![1.0f32; 5];
    let shape_vec = vec![2usize, 3];
    let errors = [
        Tensor::from_vec(&dev, [2, 3], data()).unwrap_err(),
        Tensor::from_vec(&dev, &[2, 3], data()).unwrap_err(),
        Tensor::from_vec(&dev, &shape_vec[..], data()).unwrap_err(),
        Tensor::from_vec(&dev, shape_vec.clone(), data()).unwrap_err(),
        Tensor::from_vec(&dev, &shape_vec, data()).unwrap_err(),
    ];
    for e in errors {
        assert_eq!(
            e,
            Error::DataLen {
                shape: vec![2, 3],
                expected: 6,
                got: 5
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("[2, 3]") && msg.contains('6') && msg.contains('5'),
            "{msg}"
        );
    }
}

#[test]
fn shape_overflow_is_an_error() {
    let e = Tensor::<f32>::from_vec(&Device::cpu(), [usize::MAX, 2], vec![]).unwrap_err();
    assert!(matches!(e, Error::ShapeOverflow { .. }), "{e}");
    for dev in testing::devices() {
        let e = Tensor::full(&dev, [1 << 40, 1 << 40], 0u32).unwrap_err();
        assert!(matches!(e, Error::ShapeOverflow { .. }), "{e}");
    }
}

fn round_trip<T: mia_runtime::Element>(dev: &Device, shape: &[usize], data: Vec<T>) {
    let t = Tensor::from_vec(dev, shape, data.clone()).unwrap();
    assert_eq!(t.shape(), shape);
    assert_eq!(t.rank(), shape.len());
    assert_eq!(t.len(), data.len());
    assert_eq!(t.is_empty(), data.is_empty());
    assert_eq!(t.dtype(), T::DTYPE);
    assert_eq!(t.device(), dev);
    assert_eq!(t.to_vec().unwrap(), data);
    assert_eq!(t.clone().to_vec().unwrap(), data);
    let s = Tensor::from_slice(dev, shape, &data).unwrap();
    assert_eq!(s.to_vec().unwrap(), data);
}

#[test]
fn round_trips_on_every_device() {
    for dev in testing::devices() {
        round_trip(
            &dev,
            &[2, 3],
            vec![1.5f32, -2.0, 0.0, f32::INFINITY, 1e-30, 7.0],
        );
        round_trip(&dev, &[4], vec![i32::MIN, -1, 0, i32::MAX]);
        round_trip(&dev, &[2, 2], vec![0u32, 1, 0xDEAD_BEEF, u32::MAX]);
        round_trip(&dev, &[5], vec![true, false, false, true, true]);
        round_trip(&dev, &[], vec![42i32]);
        round_trip::<f32>(&dev, &[0], vec![]);
        round_trip::<bool>(&dev, &[3, 0, 2], vec![]);
        round_trip(&dev, &[1000, 33], (0..33_000u32).collect());

        // NaN payloads survive bit for bit.
        let nan = f32::from_bits(0x7fc0_1234);
        let t = Tensor::from_vec(&dev, [1], vec![nan]).unwrap();
        assert_eq!(t.to_vec().unwrap()[0].to_bits(), 0x7fc0_1234);

        let f = Tensor::full(&dev, [2, 2], -3i32).unwrap();
        assert_eq!(f.to_vec().unwrap(), vec![-3; 4]);
        let s = Tensor::scalar(&dev, 2.5f32).unwrap();
        assert_eq!((s.shape(), s.to_vec().unwrap()), (&[][..], vec![2.5]));
    }
}

#[test]
fn to_moves_between_devices() {
    let cpu = Device::cpu();
    let t = Tensor::from_vec(&cpu, [3], vec![1u32, 2, 3]).unwrap();
    let same = t.to(&cpu).unwrap();
    assert_eq!(same.to_vec().unwrap(), vec![1, 2, 3]);
    let Some(gpu) = testing::gpu() else { return };
    let g = t.to(&gpu).unwrap();
    assert!(g.device().is_gpu());
    assert_eq!(g.shape(), &[3]);
    let g2 = g.to(&gpu).unwrap();
    let back = g2.to(&cpu).unwrap();
    assert!(back.device().is_cpu());
    assert_eq!(back.to_vec().unwrap(), vec![1, 2, 3]);
    let empty = Tensor::<bool>::from_vec(&cpu, [0, 4], vec![]).unwrap();
    let e = empty.to(&gpu).unwrap().to(&cpu).unwrap();
    assert_eq!((e.shape(), e.len()), (&[0, 4][..], 0));
}

#[test]
fn reshape_is_a_view_with_the_same_element_count() {
    for dev in testing::devices() {
        let t = Tensor::from_vec(&dev, [2, 3], (0..6).collect::<Vec<i32>>()).unwrap();
        let r = t.reshape([3, 1, 2]).unwrap();
        assert_eq!(r.shape(), &[3, 1, 2]);
        assert_eq!(r.to_vec().unwrap(), (0..6).collect::<Vec<_>>());
        let e = t.reshape(vec![4, 2]).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("[2, 3]") && msg.contains("[4, 2]"), "{msg}");
        assert!(
            msg.contains("6 elements") && msg.contains("8 elements"),
            "{msg}"
        );
    }
}

#[test]
fn debug_shows_metadata_only() {
    let t = Tensor::from_vec(&Device::cpu(), [2, 1], vec![true, false]).unwrap();
    assert_eq!(
        format!("{t:?}"),
        "Tensor { shape: [2, 1], dtype: Bool, device: Device(cpu) }"
    );
    assert_eq!(DType::F32.to_string(), "f32");
    assert_eq!(DType::Bool.to_string(), "bool");
}

// ---------------------------------------------------------------------------------------------
// Devices

#[test]
fn devices_are_cheap_shared_handles() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Device>();
    send_sync::<Tensor<f32>>();

    let cpu = Device::cpu();
    assert_eq!(cpu, Device::cpu());
    assert_eq!(cpu.kind(), DeviceKind::Cpu);
    assert!(cpu.name().starts_with("cpu ("), "{}", cpu.name());
    assert_eq!(cpu.to_string(), "cpu");
    assert!(!cpu.has_f16() && !cpu.has_timestamps() && !cpu.has_subgroups());
    cpu.synchronize().unwrap();
    assert!(cpu.limits().max_buffer_bytes > 1 << 40);

    if let Some(gpu) = testing::gpu() {
        assert_eq!(gpu, Device::gpu().unwrap());
        assert_ne!(gpu, cpu);
        assert!(gpu.is_gpu());
        assert!(gpu.to_string().starts_with("gpu ("), "{gpu}");
        let l = gpu.limits();
        assert!(l.max_workgroups_per_dim >= 65_535, "{l:?}");
        assert!(l.max_storage_binding_bytes >= 128 << 20, "{l:?}");
        assert!(l.max_buffer_bytes >= l.max_storage_binding_bytes, "{l:?}");
        gpu.synchronize().unwrap();
    }
}

#[test]
fn device_names() {
    assert!(Device::from_name("cpu").unwrap().is_cpu());
    assert!(Device::from_name(" CPU ").unwrap().is_cpu());
    let auto = Device::from_name("auto").unwrap();
    // `auto` takes a hardware GPU, never a software one such as lavapipe.
    let hardware_gpu = Device::gpu().is_ok_and(|g| !g.is_software());
    assert_eq!(auto.is_gpu(), hardware_gpu);
    if std::env::var_os("MIA_DEVICE").is_none() {
        assert_eq!(Device::auto(), auto);
        assert_eq!(Device::from_env().unwrap(), auto);
    }
    let e = Device::from_name("tpu").unwrap_err();
    assert!(e.to_string().contains("`tpu`"), "{e}");
    match Device::gpu() {
        Ok(g) => assert_eq!(Device::from_name("gpu").unwrap(), g),
        Err(e) => assert_eq!(Device::from_name("gpu").unwrap_err(), e),
    }
}

#[test]
fn testing_devices_lists_cpu_first() {
    let devs = testing::devices();
    assert!(devs[0].is_cpu());
    assert!(devs.len() <= 2);
}

// ---------------------------------------------------------------------------------------------
// The ABI of generated code

const NAMES: &[&str] = &["N", "D"];

#[test]
fn dims_bind_symbols_and_literals() {
    let mut dims = rt::Dims::new("k", NAMES);
    dims.bind("x", &[4, 8], &[D::Sym(0), D::Sym(1)]).unwrap();
    dims.bind("b", &[8], &[D::Sym(1)]).unwrap();
    dims.bind("w", &[3, 8, 5], &[D::Lit(3), D::Sym(1), D::Expr])
        .unwrap();
    assert_eq!((dims.get(0), dims.get(1)), (4, 8));
}

#[test]
fn dims_bind_rank_error() {
    let mut dims = rt::Dims::new("k", NAMES);
    let e = dims.bind("x", &[8], &[D::Sym(0), D::Sym(1)]).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(
            e,
            Error::Rank {
                expected: 2,
                got: 1,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("kernel `k`") && msg.contains("argument `x`"),
        "{msg}"
    );
    assert!(msg.contains("rank 2") && msg.contains("[N, D]"), "{msg}");
    assert!(msg.contains("rank 1") && msg.contains("[8]"), "{msg}");
}

#[test]
fn dims_bind_symbol_conflict_names_both_arguments() {
    let mut dims = rt::Dims::new("k", NAMES);
    dims.bind("x", &[4, 8], &[D::Sym(0), D::Sym(1)]).unwrap();
    let e = dims.bind("b", &[7], &[D::Sym(1)]).unwrap_err();
    assert_eq!(
        e,
        Error::Size {
            kernel: "k",
            arg: "b",
            axis: 0,
            expected: 8,
            actual: 7,
            shape: Some(vec![7]),
            origin: SizeOrigin::Symbol {
                name: "D",
                bound_by: "x"
            },
        }
    );
    let msg = e.to_string();
    assert!(
        msg.contains("argument `b` has D = 7 on axis 0")
            && msg.contains("argument `x` bound D = 8"),
        "{msg}"
    );

    // Within one argument.
    let mut dims = rt::Dims::new("sq", NAMES);
    let msg = dims
        .bind("m", &[3, 4], &[D::Sym(0), D::Sym(0)])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("N = 4 on axis 1") && msg.contains("N = 3 on an earlier axis"),
        "{msg}"
    );
}

#[test]
fn dims_bind_literal_and_expr_errors() {
    let mut dims = rt::Dims::new("k", NAMES);
    let msg = dims
        .bind("w", &[4, 3], &[D::Sym(0), D::Lit(8)])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("argument `w` has size 3 on axis 1") && msg.contains("declares size 8"),
        "{msg}"
    );
    rt::check_dim("k", "y", 1, "D / H", 4, 4).unwrap();
    let msg = rt::check_dim("k", "y", 1, "D / H", 4, 5)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("argument `y` has size 5 on axis 1") && msg.contains("`D / H` = 4"),
        "{msg}"
    );
    // A symbol index the kernel does not have is an internal error, not a panic.
    let e = dims.bind("z", &[1], &[D::Sym(9)]).unwrap_err();
    assert!(matches!(e, Error::Internal(_)), "{e:?}");
}

#[test]
fn dim_op_is_checked() {
    assert_eq!(rt::dim_op("k", "D / H", 12, '/', 4).unwrap(), 3);
    assert_eq!(rt::dim_op("k", "D + 1", 12, '+', 1).unwrap(), 13);
    assert_eq!(rt::dim_op("k", "D - 1", 12, '-', 1).unwrap(), 11);
    assert_eq!(rt::dim_op("k", "D * 2", 12, '*', 2).unwrap(), 24);
    assert_eq!(rt::dim_op("k", "D % 5", 12, '%', 5).unwrap(), 2);
    let cases = [
        (8, '/', 0, "division by zero"),
        (8, '%', 0, "division by zero"),
        (3, '-', 4, "negative"),
        (usize::MAX, '+', 1, "overflows"),
        (usize::MAX, '*', 2, "overflows"),
        (1, '^', 2, "unknown operator"),
    ];
    for (a, op, b, want) in cases {
        let e = rt::dim_op("k", "expr", a, op, b).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::DimArith { .. }), "{e:?}");
        assert!(msg.contains(want) && msg.contains("kernel `k`"), "{msg}");
    }
}

#[test]
fn eval_dim_expr_parses_braced_dimensions() {
    let lookup = |s: &str| match s {
        "D" => Some(64),
        "H" => Some(4),
        "A" => Some(2),
        "B_1" => Some(10),
        _ => None,
    };
    let eval = |e: &str| rt::eval_dim_expr(e, &lookup);
    assert_eq!(eval("D / H"), Some(16));
    assert_eq!(eval("(A + 1) * B_1"), Some(30));
    assert_eq!(eval("{D/H}"), Some(16));
    assert_eq!(eval("1 + 2 * 3 - 4 % 3"), Some(6));
    assert_eq!(eval("D - H - A"), Some(58));
    assert_eq!(eval("D / H / A"), Some(8));
    assert_eq!(eval("2usize * D"), Some(128));
    assert_eq!(eval("1_000"), Some(1000));
    assert_eq!(eval("  7  "), Some(7));
    for bad in [
        "",
        "D +",
        "-1",
        "D ^ 2",
        "X",
        "D / 0",
        "H - D",
        "(D",
        "D)",
        "2x",
        "D H",
        "18446744073709551616",
        "D * D * D * D * D * D * D * D * D * D * D",
    ] {
        assert_eq!(eval(bad), None, "{bad:?}");
    }
    let deep = format!("{}1{}", "(".repeat(10_000), ")".repeat(10_000));
    assert_eq!(eval(&deep), None);
    let ok = format!("{}1{}", "(".repeat(50), ")".repeat(50));
    assert_eq!(eval(&ok), Some(1));
}

#[test]
fn same_device_names_the_arguments() {
    let cpu = Device::cpu();
    assert_eq!(rt::same_device("k", &[]).unwrap(), cpu);
    assert_eq!(
        rt::same_device("k", &[("x", &cpu), ("b", &cpu)]).unwrap(),
        cpu
    );
    let Some(gpu) = testing::gpu() else { return };
    assert_eq!(
        rt::same_device("k", &[("x", &gpu), ("b", &gpu)]).unwrap(),
        gpu
    );
    let e = rt::same_device("k", &[("x", &cpu), ("y", &cpu), ("b", &gpu)]).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("kernel `k`")
            && msg.contains("argument `x` is on cpu")
            && msg.contains("argument `b` is on gpu"),
        "{msg}"
    );
    // The CPU and GPU paths refuse tensors of the other device instead of panicking.
    let t = Tensor::from_vec(&gpu, [1], vec![1.0f32]).unwrap();
    assert!(matches!(rt::cpu(&t), Err(Error::Internal(_))));
    #[cfg(feature = "gpu")]
    {
        let c = Tensor::from_vec(&cpu, [1], vec![1.0f32]).unwrap();
        assert!(matches!(rt::gpu_buffer(&c), Err(Error::Internal(_))));
    }
}

#[test]
fn cpu_outputs_are_poisoned_and_wrapped() {
    // Debug builds poison new outputs; release builds leave them as the allocator gives them.
    let (f, u) = (rt::cpu_alloc::<f32>(3), rt::cpu_alloc::<u32>(2));
    assert_eq!((f.len(), u.len()), (3, 2));
    if cfg!(debug_assertions) {
        assert!(f.iter().all(|x| x.is_nan()));
        assert_eq!(u, vec![0xDEAD_BEEF; 2]);
    }
    let t = rt::cpu_tensor(vec![2], vec![1i32, 2]);
    assert_eq!(rt::cpu(&t).unwrap(), &[1, 2]);
    assert!(t.device().is_cpu());
}

#[test]
fn parallel_for_covers_the_range_exactly_once() {
    for (n, cost) in [
        (0, 1),
        (1, 1),
        (10, 1),
        (1000, 1),
        (100_000, 1),
        (7, 1 << 20),
        (12_345, 3),
    ] {
        let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let calls = AtomicUsize::new(0);
        rt::parallel_for(n, cost, |r| {
            calls.fetch_add(1, Ordering::Relaxed);
            assert!(!r.is_empty() && r.end <= n, "{r:?}");
            for i in r {
                hits[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(
            hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
            "n = {n}"
        );
        assert_eq!(calls.load(Ordering::Relaxed) == 0, n == 0);
        if n * cost < rt::PARALLEL_THRESHOLD {
            assert!(calls.load(Ordering::Relaxed) <= 1, "n = {n}");
        }
    }
    // Writes through OutPtr from parallel ranges.
    let n = 200_000;
    let mut out = rt::cpu_alloc::<u32>(n);
    let ptr = rt::OutPtr(out.as_mut_ptr());
    rt::parallel_for(n, 1, move |r| {
        let ptr = ptr;
        for i in r {
            // SAFETY: ranges are disjoint and within `0..n`.
            unsafe { *ptr.0.add(i) = i as u32 * 3 };
        }
    });
    assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 * 3));
}

#[test]
fn avx2_fma_detection_is_stable() {
    let first = rt::has_avx2_fma();
    assert_eq!(first, rt::has_avx2_fma());
    #[cfg(target_arch = "x86_64")]
    assert_eq!(
        first,
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    );
}

// ---------------------------------------------------------------------------------------------
// GPU dispatch of hand-written WGSL, following the binding and 2-D grid rules of `rt`.

#[cfg(feature = "gpu")]
mod gpu_dispatch {
    use super::*;

    const WG: u64 = 8;

    /// y[i] = x[i] * 2; params = [len, groups].
    const DOUBLE: &str = r#"
@group(0) @binding(0) var<storage, read> params: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(8)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let wid = wg.x + wg.y * nwg.x;
    if wid >= params[1] { return; }
    let i = wid * 8u + li;
    if i < params[0] { y[i] = x[i] * 2.0; }
}
"#;

    /// Runs DOUBLE on `x`, returning a new tensor (as generated code would).
    fn double(x: &Tensor<f32>) -> mia_runtime::Result<Tensor<f32>> {
        let dev = rt::same_device("double", &[("x", x.device())])?;
        let n = x.len();
        let out = rt::GpuBuffer::alloc::<f32>(&dev, n)?;
        let groups = (n as u64).div_ceil(WG);
        dev.dispatch(&rt::GpuPass {
            ranges: &[],
            wgsl: DOUBLE,
            label: "double/pass0",
            buffers: &[rt::gpu_buffer(x)?, &out],
            reads: 1,
            params: &[n as u32, groups as u32],
            groups,
            in_bounds: false,
        })?;
        Ok(rt::gpu_tensor(x.shape().to_vec(), out))
    }

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i % 1000) as f32 - 500.0).collect()
    }

    #[test]
    fn gpu_dispatch_hand_written_wgsl() {
        let Some(gpu) = testing::gpu() else { return };
        for n in [1, 7, 8, 1000, 4099] {
            let x = Tensor::from_vec(&gpu, [n], ramp(n)).unwrap();
            let y = double(&x).unwrap();
            let want: Vec<f32> = ramp(n).iter().map(|v| v * 2.0).collect();
            assert_eq!(y.to_vec().unwrap(), want, "n = {n}");
        }
        // Zero elements: zero workgroups, no dispatch, and a 4-byte backing buffer.
        let x = Tensor::<f32>::from_vec(&gpu, [0, 5], vec![]).unwrap();
        let y = double(&x).unwrap();
        assert_eq!((y.shape(), y.to_vec().unwrap()), (&[0, 5][..], vec![]));
    }

    #[test]
    fn gpu_dispatch_past_65535_workgroups_uses_a_2d_grid() {
        let Some(gpu) = testing::gpu() else { return };
        let max = u64::from(gpu.limits().max_workgroups_per_dim);
        let groups = max + 4_465; // 70,000 on every adapter we know
        let n = (groups * WG) as usize;
        let x = Tensor::from_vec(&gpu, [n], ramp(n)).unwrap();
        let y = double(&x).unwrap().to_vec().unwrap();
        let bad = ramp(n).iter().zip(&y).position(|(a, b)| a * 2.0 != *b);
        assert_eq!(bad, None, "first wrong element");
    }

    #[test]
    fn gpu_batches_dispatches_until_read_back() {
        let Some(gpu) = testing::gpu() else { return };
        let n = 10_000;
        let x = Tensor::from_vec(&gpu, [100, 100], ramp(n)).unwrap();
        // 70 chained passes: more than the 64 that trigger an early submission.
        let mut y = x.clone();
        let mut kept = Vec::new();
        for i in 0..70 {
            y = double(&y).unwrap();
            if i % 10 == 0 {
                kept.push((i + 1, y.clone()));
            }
        }
        let scale = 2f32.powi(70);
        let want: Vec<f32> = ramp(n).iter().map(|v| v * scale).collect();
        assert_eq!(y.to_vec().unwrap(), want);
        for (k, t) in kept {
            let s = 2f32.powi(k);
            assert_eq!(
                t.to_vec().unwrap()[..3],
                [-500.0 * s, -499.0 * s, -498.0 * s]
            );
        }
        gpu.synchronize().unwrap();
    }

    #[test]
    fn gpu_dispatch_from_four_threads() {
        let Some(gpu) = testing::gpu() else { return };
        std::thread::scope(|s| {
            for t in 0..4 {
                let gpu = gpu.clone();
                s.spawn(move || {
                    for round in 0..5 {
                        let n = 1000 + 37 * t + round;
                        let data: Vec<f32> = (0..n).map(|i| (i + t) as f32).collect();
                        let x = Tensor::from_vec(&gpu, [n], data.clone()).unwrap();
                        let y = double(&double(&x).unwrap()).unwrap();
                        let want: Vec<f32> = data.iter().map(|v| v * 4.0).collect();
                        assert_eq!(y.to_vec().unwrap(), want, "thread {t} round {round}");
                    }
                });
            }
        });
    }

    #[test]
    fn gpu_buffer_over_the_buffer_limit_is_an_error() {
        let Some(gpu) = testing::gpu() else { return };
        let limits = gpu.limits();
        // The check happens before anything is allocated. (Buffers past one *binding* are
        // fine: kernels bind windows of them; see large_tensors.rs in mia-kernels.)
        let len = (limits.max_buffer_bytes / 4 + 1) as usize;
        let e = rt::GpuBuffer::alloc::<f32>(&gpu, len).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
        assert!(msg.contains(&(len as u64 * 4).to_string()), "{msg}");
        assert!(msg.contains("max_buffer_size"), "{msg}");
        let e = rt::GpuBuffer::alloc::<u32>(&gpu, usize::MAX).unwrap_err();
        assert!(matches!(e, Error::TooLarge { .. }), "{e:?}");
        // The length check of from_vec also comes before any allocation.
        let e = Tensor::from_vec(&gpu, [3], vec![1.0f32]).unwrap_err();
        assert!(matches!(e, Error::DataLen { .. }), "{e:?}");
    }

    #[test]
    fn gpu_invalid_wgsl_is_an_error_not_a_panic() {
        let Some(gpu) = testing::gpu() else { return };
        const BROKEN: &str =
            "@compute @workgroup_size(8) fn main() { let x: f32 = undefined_thing; }";
        let out = rt::GpuBuffer::alloc::<f32>(&gpu, 8).unwrap();
        let pass = rt::GpuPass {
            ranges: &[],
            wgsl: BROKEN,
            label: "broken/pass0",
            buffers: &[&out],
            reads: 0,
            params: &[],
            groups: 1,
            in_bounds: false,
        };
        let e = gpu.dispatch(&pass).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Gpu { .. }), "{e:?}");
        assert!(msg.contains("broken/pass0"), "{msg}");
        // Not cached: the same failure again, and the device still works afterwards.
        assert!(gpu.dispatch(&pass).is_err());
        let x = Tensor::from_vec(&gpu, [3], vec![1.0f32, 2.0, 3.0]).unwrap();
        assert_eq!(double(&x).unwrap().to_vec().unwrap(), vec![2.0, 4.0, 6.0]);
    }

    #[test]
    fn gpu_bad_passes_are_errors() {
        let Some(gpu) = testing::gpu() else { return };
        let x = Tensor::from_vec(&gpu, [8], vec![1.0f32; 8]).unwrap();
        let xb = rt::gpu_buffer(&x).unwrap();
        fn pass<'a>(buffers: &'a [&'a rt::GpuBuffer], reads: usize) -> rt::GpuPass<'a> {
            rt::GpuPass {
                ranges: &[],
                wgsl: DOUBLE,
                label: "double/bad",
                buffers,
                reads,
                params: &[8, 1],
                groups: 1,
                in_bounds: false,
            }
        }
        // The same buffer bound read-only and read-write in one pass.
        let e = gpu.dispatch(&pass(&[xb, xb], 1)).unwrap_err();
        assert!(e.to_string().contains("double/bad"), "{e}");
        // More read-only buffers than buffers.
        let e = gpu.dispatch(&pass(&[xb, xb], 3)).unwrap_err();
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
        // Too many workgroups even for a 2-D grid.
        let max = u64::from(gpu.limits().max_workgroups_per_dim);
        let out = rt::GpuBuffer::alloc::<f32>(&gpu, 8).unwrap();
        let buffers = [xb, &out];
        let mut p = pass(&buffers, 1);
        p.groups = max * max + 1;
        let e = gpu.dispatch(&p).unwrap_err();
        assert!(matches!(e, Error::TooManyWorkgroups { .. }), "{e:?}");
        // Dispatching on the CPU device.
        let e = Device::cpu().dispatch(&pass(&buffers, 1)).unwrap_err();
        assert!(matches!(e, Error::Internal(_)), "{e:?}");
        // None of this broke the device.
        assert_eq!(double(&x).unwrap().to_vec().unwrap(), vec![2.0; 8]);
    }
}
