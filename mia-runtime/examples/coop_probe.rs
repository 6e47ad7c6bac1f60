//! Probe: f32 matrix products on tensor cores through wgpu's experimental cooperative
//! matrices, for deciding whether mia's matmul tiles should use them. Not part of any kernel.
//!
//! Each operand is split into f16 parts, `v = hi + lo / 2048`, and the product accumulates in
//! f32 as `hi·hi + (hi·lo + lo·hi) / 2048` (three products; one product is plain f16).
//! Each configuration is checked against float64 on sampled rows and timed as 50 back-to-back
//! dispatches (median of 5, after 0.3 s of warm-up).
//!
//! Measured on an H200 (Vulkan, driver 580.159.04, 2026-12-04;
//! `bench/results/h200-2026-12-04/coop_probe.log`, and `probe-fixed.log` for mia's f32 and
//! tensor-core tiles beside these in one run):
//! - `hi` must be split off by masking mantissa bits: NVIDIA's compiler folds
//!   `v - f32(f16(v))` to zero, leaving an f16-accurate result (rel. error 2.8e-4; with the
//!   mask 6.2e-7 at `K` = 384, 5.0e-6 at `K` = 4096, as f32 accumulation).
//! - Unstaged (scalar loads, unpadded rows), 64 × 64 tiles: 1.8–3.3× slower than the f32 tiles
//!   (316.6 µs at `4096 × 384 × 1536`), with one product barely faster than three: the
//!   staging bounds it. Padding the rows by 16 bytes (16 × 16 loads of unpadded 32- or
//!   64-element rows hit one bank from several rows) and vec4 loads fix that.
//! - Staged, 128 × 128 per workgroup of 16 subgroups of 32 × 32, 16-deep steps, three
//!   products: 118.7, 124.2, 37.6 µs and 3.54 ms at `4096 × 384 × 1536`, `4096 × 1536 × 384`,
//!   `4096 × 384 × 384` and `4096³`, against 193.5, 189.4, 58.6 µs and 3.54 ms for mia's
//!   fastest f32 tile of each, f32-accurate. mia's own tensor-core tiles (scalar loads):
//!   134.6, 146.3, 47.7 µs and 3.03 ms.
//! - The module must be built without loop bounding (`create_shader_module_trusted`): with
//!   it, 2.4x slower. Configurations over the 48 KiB of workgroup memory hung pipeline
//!   creation instead of failing, so they are skipped.
//! - A `u32` workgroup variable declared after the f16 and f32 arrays (mia's first overflow
//!   flag) makes the products wrong (rel. error 1.35, `probe-bisect.log`): mia's tiles keep
//!   every workgroup array a multiple of 16 bytes.
//!
//! Run on a machine with cooperative matrices (lavapipe has none):
//! `cargo run --release -p mia-runtime --example coop_probe`.
use std::error::Error;
use std::time::Instant;
use wgpu::util::DeviceExt;

/// A workgroup of `sgm × sgn` subgroups of 32, each computing `wm × wn` 16 × 16 blocks, over
/// steps of `bk`, with `terms` f16 products per step (1 or 3). `vec4`: vec4 loads (needs `K`
/// and `N` multiples of 4), else scalar; `pad`: staged rows padded by 8 halves (16 bytes: the
/// subgroups' 16 × 16 loads stop hitting one bank from several rows); `sub`: each subgroup's
/// blocks written out through its own 16 × 16 scratch, else the whole output tile staged.
/// "Staged" below means all three.
#[derive(Clone, Copy, Debug)]
struct Config {
    wm: u32,
    wn: u32,
    sgm: u32,
    sgn: u32,
    bk: u32,
    terms: u32,
    vec4: bool,
    pad: bool,
    sub: bool,
}

impl Config {
    fn bm(&self) -> u32 {
        16 * self.wm * self.sgm
    }
    fn bn(&self) -> u32 {
        16 * self.wn * self.sgn
    }
    fn pad(&self) -> u32 {
        if self.pad {
            8
        } else {
            0
        }
    }
    /// Halves in one staged A tile (`bm` rows of `bk`) and one B tile (`bk` rows of `bn`).
    fn tiles(&self) -> (u32, u32) {
        (
            self.bm() * (self.bk + self.pad()),
            self.bk * (self.bn() + self.pad()),
        )
    }
    /// Output floats staged: the whole tile, or one 16 × 16 block per subgroup.
    fn out_floats(&self) -> u32 {
        if self.sub {
            256 * self.sgm * self.sgn
        } else {
            self.bm() * self.bn()
        }
    }
    /// Staged hi and lo tiles of A and B (f16), plus the staged output (f32).
    fn workgroup_bytes(&self) -> u32 {
        let (a, b) = self.tiles();
        2 * 2 * (a + b) + 4 * self.out_floats()
    }

    fn shader(&self) -> String {
        let (bm, bn, bk) = (self.bm(), self.bn(), self.bk);
        let (a, b) = self.tiles();
        let threads = 32 * self.sgm * self.sgn;
        let (vec, ap, bp) = (self.vec4, bk + self.pad(), bn + self.pad());
        let elem = if vec { "vec4<f32>" } else { "f32" };
        let mut s = format!(
            "enable f16;
enable wgpu_cooperative_matrix;
@group(0) @binding(0) var<storage, read> P: array<u32>;
@group(0) @binding(1) var<storage, read> GA: array<{elem}>;
@group(0) @binding(2) var<storage, read> GB: array<{elem}>;
@group(0) @binding(3) var<storage, read_write> GC: array<f32>;
const BM = {bm}u;
const BN = {bn}u;
const BK = {bk}u;
const AP = {ap}u;
const BP = {bp}u;
const T = {threads}u;
var<workgroup> AH: array<f16, {a}>;
var<workgroup> AL: array<f16, {a}>;
var<workgroup> BH: array<f16, {b}>;
var<workgroup> BL: array<f16, {b}>;
var<workgroup> CS: array<f32, {c}>;
@compute @workgroup_size({threads})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {{
  let M = P[0]; let N = P[1]; let K = P[2];
  let tiles_n = (N + BN - 1u) / BN;
  let tn0 = (wg.x % tiles_n) * BN; let tm0 = (wg.x / tiles_n) * BM;
  let sg = lid / 32u;
  let qm = (sg / {sgn}u) * {qm}u; let qn = (sg % {sgn}u) * {qn}u;
",
            c = self.out_floats(),
            sgn = self.sgn,
            qm = 16 * self.wm,
            qn = 16 * self.wn,
        );
        for i in 0..self.wm {
            for j in 0..self.wn {
                s += &format!(
                    "  var c{i}{j} = coop_mat16x16<f32, C>();\n  var d{i}{j} = coop_mat16x16<f32, C>();\n"
                );
            }
        }
        s += "  for (var k0 = 0u; k0 < K; k0 = k0 + BK) {\n";
        // Stages one operand's `rows × cols` step of matrix `G{x}` into `{x}H`/`{x}L` (hi and
        // lo, rows `p` halves apart): element (r, c) is `G{x}[at]` where `r_ok && c_ok`, else 0.
        let stage = |x: &str, rows: &str, cols: &str, r_ok: &str, c_ok: &str, at: &str, p: &str| {
            if vec {
                format!(
                    "    for (var e = lid; e < {rows} * {cols} / 4u; e = e + T) {{
      let r = e / ({cols} / 4u); let c = (e % ({cols} / 4u)) * 4u;
      var v = vec4<f32>(0.0); if ({r_ok} && {c_ok}) {{ v = G{x}[({at}) / 4u]; }}
      let hv = bitcast<vec4<f32>>(bitcast<vec4<u32>>(v) & vec4<u32>(0xffffe000u));
      let h = vec4<f16>(hv); let l = vec4<f16>((v - hv) * 2048.0);
      let o = r * {p} + c;
      {x}H[o] = h.x; {x}H[o + 1u] = h.y; {x}H[o + 2u] = h.z; {x}H[o + 3u] = h.w;
      {x}L[o] = l.x; {x}L[o + 1u] = l.y; {x}L[o + 2u] = l.z; {x}L[o + 3u] = l.w;
    }}
"
                )
            } else {
                format!(
                    "    for (var e = lid; e < {rows} * {cols}; e = e + T) {{
      let r = e / {cols}; let c = e % {cols};
      var v = 0.0; if ({r_ok} && {c_ok}) {{ v = G{x}[{at}]; }}
      let hv = bitcast<f32>(bitcast<u32>(v) & 0xffffe000u);
      {x}H[r * {p} + c] = f16(hv); {x}L[r * {p} + c] = f16((v - hv) * 2048.0);
    }}
"
                )
            }
        };
        s += &stage(
            "A",
            "BM",
            "BK",
            "tm0 + r < M",
            "k0 + c < K",
            "(tm0 + r) * K + k0 + c",
            "AP",
        );
        s += &stage(
            "B",
            "BK",
            "BN",
            "k0 + r < K",
            "tn0 + c < N",
            "(k0 + r) * N + tn0 + c",
            "BP",
        );
        s += "    workgroupBarrier();\n    for (var kk = 0u; kk < BK; kk = kk + 16u) {\n";
        let load = |name: String, role: &str, at: String, stride: &str| {
            format!("      let {name} = coopLoadT<coop_mat16x16<f16, {role}>>(&{at}, {stride});\n")
        };
        let parts: &[&str] = if self.terms > 1 { &["h", "l"] } else { &["h"] };
        for i in 0..self.wm {
            for part in parts {
                let at = format!("A{}[(qm + {}u) * AP + kk]", part.to_uppercase(), 16 * i);
                s += &load(format!("a{part}{i}"), "A", at, "AP");
            }
        }
        for j in 0..self.wn {
            for part in parts {
                let at = format!("B{}[kk * BP + qn + {}u]", part.to_uppercase(), 16 * j);
                s += &load(format!("b{part}{j}"), "B", at, "BP");
            }
        }
        for i in 0..self.wm {
            for j in 0..self.wn {
                s += &format!("      c{i}{j} = coopMultiplyAdd(ah{i}, bh{j}, c{i}{j});\n");
                if self.terms > 1 {
                    s += &format!(
                        "      d{i}{j} = coopMultiplyAdd(ah{i}, bl{j}, d{i}{j});\n      d{i}{j} = coopMultiplyAdd(al{i}, bh{j}, d{i}{j});\n"
                    );
                }
            }
        }
        s += "    }\n    workgroupBarrier();\n  }\n";
        for i in 0..self.wm {
            for j in 0..self.wn {
                let (r0, c0) = (16 * i, 16 * j);
                let sum = format!("c{i}{j} + d{i}{j} * (1.0 / 2048.0)");
                if self.sub {
                    s += &format!(
                        "  coopStoreT({sum}, &CS[sg * 256u], 16u);
  workgroupBarrier();
  for (var e = lid % 32u; e < 256u; e = e + 32u) {{
    let gm = tm0 + qm + {r0}u + e / 16u; let gn = tn0 + qn + {c0}u + e % 16u;
    if (gm < M && gn < N) {{ GC[gm * N + gn] = CS[sg * 256u + e]; }}
  }}
  workgroupBarrier();
"
                    );
                } else {
                    s +=
                        &format!("  coopStoreT({sum}, &CS[(qm + {r0}u) * BN + qn + {c0}u], BN);\n");
                }
            }
        }
        if !self.sub {
            s += "  workgroupBarrier();
  for (var e = lid; e < BM * BN; e = e + T) {
    let gm = tm0 + e / BN; let gn = tn0 + e % BN;
    if (gm < M && gn < N) { GC[gm * N + gn] = CS[e]; }
  }
";
        }
        s + "}\n"
    }
}

const CONFIGS: [Config; 18] = {
    const fn c(wm: u32, wn: u32, sgm: u32, sgn: u32, bk: u32, terms: u32, staged: bool) -> Config {
        mixed(wm, wn, sgm, sgn, bk, terms, [staged; 3])
    }
    const fn mixed(
        wm: u32,
        wn: u32,
        sgm: u32,
        sgn: u32,
        bk: u32,
        terms: u32,
        f: [bool; 3],
    ) -> Config {
        Config {
            wm,
            wn,
            sgm,
            sgn,
            bk,
            terms,
            vec4: f[0],
            pad: f[1],
            sub: f[2],
        }
    }
    [
        c(2, 2, 2, 2, 16, 1, false),
        c(2, 2, 2, 2, 16, 3, false),
        c(2, 2, 2, 2, 32, 3, false),
        c(2, 2, 2, 2, 16, 3, true),
        c(2, 2, 2, 2, 32, 3, true),
        c(2, 2, 2, 2, 32, 1, true),
        c(4, 2, 2, 2, 32, 3, true),
        c(2, 4, 2, 2, 32, 3, true),
        c(2, 2, 4, 2, 32, 3, true),
        c(4, 2, 2, 4, 32, 3, true),
        c(4, 2, 2, 4, 16, 3, true),
        c(2, 2, 4, 4, 16, 3, true),
        c(4, 2, 4, 2, 16, 3, true),
        // Scalar loads into padded rows (as mia's tiles stage), with either epilogue, and the
        // other two mixes (all right on the H200: not these but a workgroup variable broke
        // mia's first tiles, see the module docs).
        mixed(2, 2, 2, 2, 16, 3, [false, true, false]),
        mixed(2, 2, 2, 2, 16, 3, [false, true, true]),
        mixed(2, 2, 2, 2, 16, 3, [true, true, false]),
        mixed(2, 2, 2, 2, 16, 3, [true, false, true]),
        // mia's first tensor-core tiling as the probe writes it.
        mixed(2, 2, 4, 4, 16, 3, [false, true, true]),
    ]
};

const SHAPES: [(u32, u32, u32); 6] = [
    (4096, 384, 1536),
    (4096, 1536, 384),
    (4096, 384, 384),
    (1000, 333, 517),
    (1000, 332, 516),
    (4096, 4096, 4096),
];

fn main() -> Result<(), Box<dyn Error>> {
    // Every shader is checked by naga first, so a generator mistake shows with its source;
    // `COOP_PROBE_DUMP=DIR` also writes them there, numbered as in `CONFIGS`.
    let dump = std::env::var("COOP_PROBE_DUMP").ok();
    for (i, cfg) in CONFIGS.iter().enumerate() {
        let src = cfg.shader();
        if let Some(dir) = &dump {
            std::fs::write(
                format!("{dir}/config{i}.wgsl"),
                format!("// {cfg:?}\n{src}"),
            )?;
        }
        let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| e.emit_to_string(&src))?;
    }
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))?;
    println!("adapter {}", adapter.get_info().name);
    for p in adapter.cooperative_matrix_properties() {
        println!("{p:?}");
    }
    let features = wgpu::Features::SHADER_F16 | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
    if !adapter.features().contains(features) {
        println!("this adapter has no cooperative matrices");
        return Ok(());
    }
    let limits = adapter.limits();
    // `COOP_PROBE_WGSL=FILE[:BMxBN],...` also runs each FILE, a mia matmul pass's tile shader
    // (bindings: params, A, B, C) on BMxBN tiles (default `COOP_PROBE_TILE`, else `128x128`),
    // checked and timed like the others: mia's f32 tiles beside tensor-core ones in one run.
    let default_tile = std::env::var("COOP_PROBE_TILE").unwrap_or_else(|_| "128x128".into());
    let mut external = Vec::new();
    for entry in std::env::var("COOP_PROBE_WGSL")
        .unwrap_or_default()
        .split(',')
    {
        if entry.is_empty() {
            continue;
        }
        let (path, tile) = entry.split_once(':').unwrap_or((entry, &default_tile));
        let (bm, bn) = tile
            .split_once('x')
            .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
            .ok_or_else(|| format!("{entry}: the tile must read like 128x128"))?;
        let src = std::fs::read_to_string(path)?;
        let module = naga::front::wgsl::parse_str(&src).map_err(|e| e.emit_to_string(&src))?;
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .map_err(|e| format!("{path}: {}", e.emit_to_string(&src)))?;
        let name = std::path::Path::new(path)
            .file_stem()
            .map_or(path.into(), |n| n.to_string_lossy());
        external.push((name.into_owned(), src, bm, bn));
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: None,
        required_features: features,
        required_limits: limits.clone(),
        // SAFETY: cooperative matrices are experimental in wgpu 30; this probe is their test.
        experimental_features: unsafe { wgpu::ExperimentalFeatures::enabled() },
        ..Default::default()
    }))?;
    // `COOP_PROBE_SHAPES=MxKxN,...` replaces the shapes; `COOP_PROBE_CHECK_ONLY=1` skips the
    // timing (for software drivers such as lavapipe, which checks the products but slowly).
    let shapes = match std::env::var("COOP_PROBE_SHAPES") {
        Ok(list) => list
            .split(',')
            .map(|s| {
                let d: Vec<u32> = s.split('x').filter_map(|d| d.trim().parse().ok()).collect();
                match d[..] {
                    [m, k, n] => Ok((m, k, n)),
                    _ => Err(format!(
                        "COOP_PROBE_SHAPES: `{s}` must read like 4096x384x1536"
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?,
        Err(_) => SHAPES.to_vec(),
    };
    let check_only = std::env::var("COOP_PROBE_CHECK_ONLY").is_ok_and(|v| v == "1");
    for (m, k, n) in shapes {
        let mut seed = 0x1234_5678_u64;
        let mut rnd = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let a: Vec<f32> = (0..m * k).map(|_| rnd()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rnd() * 0.05).collect();
        let rows: Vec<u32> = (0..m).step_by((m as usize / 64).max(1)).collect();
        let reference: Vec<f64> = rows
            .iter()
            .flat_map(|&i| (0..n).map(move |j| (i, j)))
            .map(|(i, j)| {
                (0..k)
                    .map(|p| {
                        f64::from(a[(i * k + p) as usize]) * f64::from(b[(p * n + j) as usize])
                    })
                    .sum()
            })
            .collect();
        let storage = |data: &[u8]| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: None,
                contents: data,
                usage: wgpu::BufferUsages::STORAGE,
            })
        };
        let a_buf = storage(bytemuck::cast_slice(&a));
        let b_buf = storage(bytemuck::cast_slice(&b));
        let size = u64::from(m * n * 4);
        let c_buf = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let read_back = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // (label, shader, its parameters, workgroups)
        let mut runs: Vec<(String, String, Vec<u32>, u32)> = Vec::new();
        for cfg in CONFIGS {
            // Over the limit, the H200's driver hung in pipeline creation instead of failing.
            if cfg.workgroup_bytes() > limits.max_compute_workgroup_storage_size {
                println!("{cfg:?}: skipped, over the workgroup memory limit");
            } else if !cfg.vec4 || (k % 4 == 0 && n % 4 == 0) {
                let groups = m.div_ceil(cfg.bm()) * n.div_ceil(cfg.bn());
                runs.push((format!("{cfg:?}"), cfg.shader(), vec![m, n, k], groups));
            }
        }
        for (name, src, bm, bn) in &external {
            // A row-major 2-D matmul pass's parameters: groups, end, start, M, N, C's strides
            // and window base, K, then A's and B's strides along M, N and K.
            let params = vec![
                m.div_ceil(*bm) * n.div_ceil(*bn),
                0,
                0,
                m,
                n,
                n,
                1,
                0,
                k,
                k,
                0,
                1,
                0,
                1,
                n,
            ];
            let groups = params[0];
            runs.push((name.clone(), src.clone(), params, groups));
        }
        for (label, src, params, groups) in runs {
            let params = storage(bytemuck::cast_slice(&params));
            let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
            // SAFETY: loops are bounded by construction (the runtime checks would block
            // unrolling); indices are in bounds by the guards above.
            let module = unsafe {
                device.create_shader_module_trusted(
                    wgpu::ShaderModuleDescriptor {
                        label: None,
                        source: wgpu::ShaderSource::Wgsl(src.into()),
                    },
                    wgpu::ShaderRuntimeChecks::unchecked(),
                )
            };
            let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: None,
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            });
            if let Some(e) = pollster::block_on(scope.pop()) {
                println!("{label}: pipeline error {e}");
                continue;
            }
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[&params, &a_buf, &b_buf, &c_buf]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| wgpu::BindGroupEntry {
                        binding: i as u32,
                        resource: b.as_entire_binding(),
                    })
                    .collect::<Vec<_>>(),
            });
            let run = |reps: u32| -> Result<(), wgpu::PollError> {
                let mut encoder = device.create_command_encoder(&Default::default());
                {
                    let mut pass = encoder.begin_compute_pass(&Default::default());
                    pass.set_pipeline(&pipeline);
                    pass.set_bind_group(0, &bind_group, &[]);
                    for _ in 0..reps {
                        pass.dispatch_workgroups(groups, 1, 1);
                    }
                }
                queue.submit([encoder.finish()]);
                device.poll(wgpu::PollType::wait_indefinitely()).map(drop)
            };
            // Poisoned, so an element the kernel does not write fails the check.
            queue.write_buffer(
                &c_buf,
                0,
                bytemuck::cast_slice(&vec![f32::NAN; (m * n) as usize]),
            );
            run(1)?;
            let mut encoder = device.create_command_encoder(&Default::default());
            encoder.copy_buffer_to_buffer(&c_buf, 0, &read_back, 0, size);
            queue.submit([encoder.finish()]);
            read_back.slice(..).map_async(wgpu::MapMode::Read, |_| {});
            device.poll(wgpu::PollType::wait_indefinitely())?;
            let got: Vec<f32> =
                bytemuck::cast_slice(&read_back.slice(..).get_mapped_range()?).to_vec();
            read_back.unmap();
            let got = rows
                .iter()
                .flat_map(|&i| (0..n).map(move |j| (i * n + j) as usize))
                .map(|at| f64::from(got[at]));
            let (err, norm) = got.zip(&reference).fold((0.0, 0.0), |(e, r), (g, x)| {
                (e + (g - x) * (g - x), r + x * x)
            });
            if check_only {
                println!(
                    "{m}x{k}x{n} {label}: rel. error {:.2e}",
                    (err / norm).sqrt()
                );
                continue;
            }
            let warm = Instant::now();
            while warm.elapsed().as_secs_f64() < 0.3 {
                run(10)?;
            }
            let mut times = Vec::new();
            for _ in 0..5 {
                let t = Instant::now();
                run(50)?;
                times.push(t.elapsed().as_secs_f64() / 50.0);
            }
            times.sort_by(f64::total_cmp);
            let t = times[2];
            println!(
                "{m}x{k}x{n} {label}: {:.1} us, {:.1} TFLOP/s, rel. error {:.2e}",
                t * 1e6,
                2.0 * f64::from(m) * f64::from(n) * f64::from(k) / t / 1e12,
                (err / norm).sqrt()
            );
        }
    }
    Ok(())
}
