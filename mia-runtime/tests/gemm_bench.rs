//! CPU matrix-product timings: `rt::matmul` with B packed per tile, with B packed once per
//! call and shared, and as chosen by its estimate, against the `gemm` crate, side by side in
//! one run (median of 15 interleaved rounds after 3 warm-ups):
//! `cargo test --release -p mia-runtime --test gemm_bench -- --ignored --nocapture`.
use mia_runtime::rt::{self, MatDims, MatOperand};
use std::sync::atomic::{AtomicPtr, Ordering};

/// Median seconds of each of `fs` over 15 rounds after 3 warm-ups, a round running each once
/// in turn (so that load from elsewhere on the machine falls on all of them alike).
fn medians(fs: &mut [&mut dyn FnMut()]) -> Vec<f64> {
    let mut t = vec![Vec::new(); fs.len()];
    for round in 0..18 {
        for (f, t) in fs.iter_mut().zip(&mut t) {
            let t0 = std::time::Instant::now();
            f();
            if round >= 3 {
                t.push(t0.elapsed().as_secs_f64());
            }
        }
    }
    t.into_iter()
        .map(|mut t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect()
}

/// `c = a · b` through `rt::matmul` (B stored `[n, k]` and read transposed when `bt`).
fn mia(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize), bt: bool) {
    let out = AtomicPtr::new(c.as_mut_ptr());
    let (rs, cs) = if bt { (1, k) } else { (n, 1) };
    let op = |data, rs, cs| MatOperand {
        data,
        batch_strides: &[],
        rs,
        cs,
        pro: None,
    };
    let d = MatDims {
        batch: &[],
        m,
        n,
        k,
    };
    rt::matmul(
        d,
        op(a, k, 1),
        [op(b, rs, cs)],
        |_, i, j0, acc: &[&[f32]; 1]| {
            let p = out.load(Ordering::Relaxed);
            // SAFETY: row `i`, columns `j0..j0 + len` lie inside `c` (`m × n`), and each is written
            // by one task only.
            unsafe {
                std::ptr::copy_nonoverlapping(acc[0].as_ptr(), p.add(i * n + j0), acc[0].len())
            };
        },
    );
}

/// `c = a · b` through the `gemm` crate on rayon's threads.
fn gemm_crate(a: &[f32], b: &[f32], c: &mut [f32], (m, k, n): (usize, usize, usize), bt: bool) {
    let (rhs_cs, rhs_rs) = if bt { (k as isize, 1) } else { (1, n as isize) };
    // SAFETY: the slices hold exactly the elements these strides address, and `c` aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            rhs_cs,
            rhs_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

#[test]
#[ignore]
fn bench_matmul() {
    eprintln!(
        "{} threads; ms (ratio to gemm)",
        rayon::current_num_threads()
    );
    eprintln!(
        "{:<22} {:>16} {:>16} {:>16} {:>8}",
        "shape", "per tile", "shared", "auto", "gemm"
    );
    for (m, k, n, bt) in [
        (4096, 384, 1536, true),
        (4096, 384, 1536, false),
        (4096, 1536, 384, true),
        (4096, 1536, 384, false),
        (1024, 1024, 1024, false),
        (128, 384, 1536, true),
        (128, 1536, 384, true),
        (1, 384, 1536, true),
        (16, 64, 48, false),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 / 13.0 - 0.5).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 / 7.0 - 0.5).collect();
        let mut want = vec![0.0f32; m * n];
        gemm_crate(&a, &b, &mut want, (m, k, n), bt);
        let modes = [Some(false), Some(true), None];
        let mut outs = vec![vec![0.0f32; m * n]; modes.len() + 1];
        let (gc, mc) = outs.split_last_mut().unwrap();
        let mut fs: Vec<Box<dyn FnMut()>> = Vec::new();
        for (force, c) in modes.into_iter().zip(mc) {
            let (a, b) = (&a, &b);
            fs.push(Box::new(move || {
                rt::matmul_shared_b(force);
                mia(a, b, c, (m, k, n), bt);
            }));
        }
        let (a, b) = (&a, &b);
        fs.push(Box::new(move || gemm_crate(a, b, gc, (m, k, n), bt)));
        let mut refs: Vec<&mut dyn FnMut()> = fs.iter_mut().map(|f| &mut **f as _).collect();
        let t = medians(&mut refs);
        drop(fs);
        rt::matmul_shared_b(None);
        let g = t[modes.len()];
        let mut row = format!(
            "{:<22}",
            format!("{m}x{k}x{n} {}", if bt { "Bt" } else { "B" })
        );
        for (t, c) in t.iter().zip(&outs).take(modes.len()) {
            let err = c
                .iter()
                .zip(&want)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            assert!(err < 1e-2, "{m}x{k}x{n}: max error {err}");
            row += &format!(" {:>8.3} ({:.2}x)", t * 1e3, t / g);
        }
        eprintln!("{row} {:>8.3}", g * 1e3);
    }
}
