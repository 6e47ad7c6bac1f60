#!/usr/bin/env python3
"""PyTorch side of mia's benchmark suite, on CUDA and the CPU.

Reads the JSON that `mia-bench --json` wrote, runs the same cases (same op, same shapes, the
same input distributions) with PyTorch, and writes a JSON report in mia-bench's schema
(see mia-bench's crate docs or BENCHMARKS.md), for `mia-bench report` to merge:

    python3 bench/torch_bench.py --mia mia.json --json torch.json

Implementations: `torch-eager`, `torch-compile` (torch.compile, default mode, static shapes),
`cublas-fp32` for matrix products (TF32 off), `torch-sdpa` for attention
(F.scaled_dot_product_attention). Cases mia ran on the CPU also run on the CPU with
`--cpu-threads` threads: `torch-eager` (a matrix product is then an MKL/oneDNN SGEMM) and
`torch-sdpa`; torch.compile is left out there (Inductor's CPU back end compiles C++ at run time,
which the lent machines cannot be relied on for). Every result is checked against the same op
run in float64 before it is timed. CPU timing: the same warm-up, then the median of 20 samples,
each the host clock around enough back-to-back calls to last 2 ms (at most REPS). CUDA timing:
>= 0.5 s of back-to-back warm-up, then the median of 20 samples,
each sample CUDA events around REPS back-to-back calls divided by REPS (a GPU-side time, as
mia's timestamps are). Each sample first queues a ~2 ms GPU spin (torch.cuda._sleep), so the
host has queued all REPS calls before the GPU reaches them: the sample measures the kernels,
not the host's launch overhead (torch.compile's guards and launcher cost tens of µs per call,
as long as these kernels run). Wall time is one call plus torch.cuda.synchronize().

`--minilm DIR` (the unzipped all-MiniLM-L6-v2 model.zip, see README.md) adds the whole-model
case: sentence-transformers' module pipeline (BERT encoder, mean pooling, L2 normalisation),
PyTorch eager, on pre-tokenized 128-token sentences (tokenization not timed) at batch 1 and 32,
on CUDA and on the CPU with `--cpu-threads` threads (default: every core this process may use,
as rayon's default on the Rust side). Its output is first checked against
shared/minilm/reference.json. Timing: warm-up as above, then the median of the samples, each
one call followed by a synchronize (host clock); records carry `sentences_per_s`. `--mia` may be
left out to run only this case:

    python3 bench/torch_bench.py --minilm target/minilm-model --json torch-minilm.json
"""

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
import zlib

import torch
import torch.nn.functional as F

SCHEMA = 1
# Must match mia-bench's cases.rs.
EPS = 1e-5
CHAIN_C = 0.75
REPS = 10
# GPU cycles to spin before each sample (about 2 ms at H100 clocks).
SPIN_CYCLES = 4_000_000


def uniform(gen, shape, lo, hi):
    return torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float32) * (hi - lo) + lo


def rowwise_inputs(vectors):
    """x[N, D] in [-4, 4) and vectors of length D in the given ranges (as mia-bench)."""

    def make(shape, gen):
        n, d = shape["N"], shape["D"]
        return [uniform(gen, (n, d), -4.0, 4.0)] + [uniform(gen, (d,), lo, hi) for lo, hi in vectors]

    return make


def matmul_inputs(shape, gen):
    m, k, n = shape["M"], shape["K"], shape["N"]
    return [uniform(gen, (m, k), -1.0, 1.0), uniform(gen, (k, n), -1.0, 1.0)]


def linear_gelu_inputs(shape, gen):
    m, k, n = shape["M"], shape["K"], shape["N"]
    return [uniform(gen, (m, k), -1.0, 1.0), uniform(gen, (k, n), -1.0, 1.0), uniform(gen, (n,), -1.0, 1.0)]


def attention_inputs(shape, gen):
    """q, k, v of [B, H, S, D] (B defaults to 1)."""
    dims = (shape.get("B", 1), shape["H"], shape["S"], shape["D"])
    return [uniform(gen, dims, -1.0, 1.0) for _ in range(3)]


def manual_attention(q, k, v):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    return torch.softmax(s, -1) @ v


# op -> (inputs, {implementation: function}, tolerance). The float64 reference is the first
# function run on float64 copies of the inputs.
OPS = {
    "bias_gelu": (rowwise_inputs([(-1.0, 1.0)]), lambda x, b: F.gelu(x + b), 1e-5),
    "chain4": (rowwise_inputs([(0.5, 1.5), (-1.0, 1.0)]), lambda x, a, b: torch.relu(x * a + b) * CHAIN_C, 1e-5),
    "softmax": (rowwise_inputs([]), lambda x: torch.softmax(x, -1), 1e-5),
    "layer_norm": (
        rowwise_inputs([(0.5, 1.5), (-0.5, 0.5)]),
        lambda x, g, b: F.layer_norm(x, (x.shape[-1],), g, b, EPS),
        1e-5,
    ),
    "rms_norm": (rowwise_inputs([(0.5, 1.5)]), lambda x, g: F.rms_norm(x, (x.shape[-1],), g, EPS), 1e-5),
    "matmul": (matmul_inputs, lambda a, b: a @ b, 1e-4),
    "linear_gelu": (linear_gelu_inputs, lambda x, w, b: F.gelu(x @ w + b), 1e-4),
    "attention": (attention_inputs, manual_attention, 1e-4),
}


def implementations(op, fn, dev):
    """(name, callable) pairs for an op on `dev` (gpu or cpu); torch.compile wraps a fresh
    function per case, on the GPU only."""
    if dev == "cpu":
        impls = [("torch-eager", fn)]
        if op == "attention":
            impls.append(("torch-sdpa", F.scaled_dot_product_attention))
        return impls
    if op == "matmul":
        # Eager `a @ b` in fp32 with TF32 off is a cuBLAS SGEMM call.
        impls = [("cublas-fp32", fn)]
    else:
        impls = [("torch-eager", fn)]
    if op == "attention":
        impls.append(("torch-sdpa", F.scaled_dot_product_attention))
    torch._dynamo.reset()
    impls.append(("torch-compile", torch.compile(fn, dynamic=False)))
    return impls


def rel_error(got, want):
    num = torch.linalg.vector_norm(got.double() - want).item()
    den = torch.linalg.vector_norm(want).item()
    e = num / max(den, sys.float_info.min)
    return math.inf if math.isnan(e) else e


def median_min_max(xs):
    return statistics.median(xs), min(xs), max(xs)


def warm_up(call, warmup_s):
    """Calls `call()` back to back for at least `warmup_s` seconds; returns seconds per call."""
    start = time.perf_counter()
    calls = 0
    while True:
        call()
        calls += 1
        if time.perf_counter() - start >= warmup_s:
            break
    return (time.perf_counter() - start) / calls


def time_cuda(fn, args, warmup_s, samples):
    warm_up(lambda: (fn(*args), torch.cuda.synchronize()), warmup_s)
    gpu = []
    spin = getattr(torch.cuda, "_sleep", None)
    for _ in range(samples):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        if spin is not None:
            spin(SPIN_CYCLES)
        begin.record()
        for _ in range(REPS):
            fn(*args)
        end.record()
        end.synchronize()
        gpu.append(begin.elapsed_time(end) / 1e3 / REPS)
    wall = []
    for _ in range(samples):
        t = time.perf_counter()
        fn(*args)
        torch.cuda.synchronize()
        wall.append(time.perf_counter() - t)
    return gpu, wall, spin is not None


def time_cpu(fn, args, warmup_s, samples):
    """Per-call host times: each sample is enough back-to-back calls to last 2 ms (at most
    REPS), divided by their number. Returns (times, calls per sample)."""
    per_call = warm_up(lambda: fn(*args), warmup_s)
    reps = max(1, min(REPS, math.ceil(2e-3 / max(per_call, 1e-9))))
    times = []
    for _ in range(samples):
        t = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        times.append((time.perf_counter() - t) / reps)
    return times, reps


MINILM_T = 128
MINILM_BATCHES = (1, 32)
# The float64 reference the Rust tests use: mia's tolerance for a float32 forward.
MINILM_REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/minilm/reference.json")
MINILM_MAX_ABS = 1e-4


def minilm_inputs(model, batch, device):
    """`batch` copies of a sentence of exactly MINILM_T tokens ([CLS] … [SEP]), as features."""
    words = "the quick brown fox jumps over the lazy dog while kernels fuse "
    text = words * (MINILM_T // 4)  # > MINILM_T word pieces before truncation
    feats = model.tokenizer(
        [text] * batch, padding="max_length", truncation=True, max_length=MINILM_T, return_tensors="pt"
    )
    assert feats["input_ids"].shape == (batch, MINILM_T), feats["input_ids"].shape
    return {k: v.to(device) for k, v in feats.items()}


def minilm_check(model, device, reference):
    """Max |component - reference| over the reference file's sentences."""
    with open(reference) as f:
        cases = json.load(f)["cases"]
    got = model.encode([c["text"] for c in cases], batch_size=len(cases), convert_to_tensor=True, device=device)
    want = torch.tensor([c["embedding"] for c in cases], dtype=torch.float64)
    return (got.double().cpu() - want).abs().max().item()


def minilm_cost(model, batch):
    """(bytes, flops) of one forward: every weight read once plus inputs and output; 2 flops
    per multiply-add of the linear layers and of the two attention products."""
    params = sum(p.numel() for p in model.parameters())
    cfg = model[0].auto_model.config
    h, f, layers, t = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, MINILM_T
    per_layer = 2 * t * (4 * h * h + 2 * h * f) + 2 * 2 * t * t * h
    return 4 * params + batch * t * 4 * 3 + batch * h * 4, batch * layers * per_layer


def minilm_records(model_dir, reference, threads, warmup_s, samples, profile=False, devices=("gpu", "cpu")):
    """sentences/s of sentence-transformers' all-MiniLM-L6-v2, eager, on CUDA and the CPU (those
    of `devices`); `profile` also prints where the CPU forward's time goes, per op (torch.profiler)."""
    from sentence_transformers import SentenceTransformer  # only this case needs it

    torch.set_num_threads(threads)
    records, failures = [], []
    targets = [("gpu", "cuda")] if torch.cuda.is_available() and "gpu" in devices else []
    if "cpu" in devices:
        targets.append(("cpu", "cpu"))
    for dev, torch_dev in targets:
        if dev == "gpu":
            device_name = f"{torch.cuda.get_device_name()} (CUDA, torch {torch.__version__})"
            sync = torch.cuda.synchronize
        else:
            device_name = f"{platform.processor() or platform.machine()} ({threads} threads, torch {torch.__version__})"
            sync = lambda: None  # noqa: E731
        model = SentenceTransformer(model_dir, device=torch_dev)
        model.eval()
        try:
            err = minilm_check(model, torch_dev, reference)
            if not err <= MINILM_MAX_ABS:
                raise ValueError(f"wrong result: max abs error {err:.3e} exceeds {MINILM_MAX_ABS:.0e}")
        except Exception as e:  # report, go on with the other device
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            print(f"minilm on {dev}: FAILED: {msg}", flush=True)
            for b in MINILM_BATCHES:
                failures.append({"case": f"minilm/{b}x{MINILM_T}", "device": dev, "implementation": "torch-eager", "message": msg})
            continue
        for batch in MINILM_BATCHES:
            name = f"minilm/{batch}x{MINILM_T}"
            feats = minilm_inputs(model, batch, torch_dev)

            def call():
                with torch.inference_mode():
                    return model(feats)["sentence_embedding"]

            warm_up(lambda: (call(), sync()), warmup_s)
            times = []
            for _ in range(samples):
                t = time.perf_counter()
                call()
                sync()
                times.append(time.perf_counter() - t)
            med, lo, hi = median_min_max(times)
            nbytes, flops = minilm_cost(model, batch)
            rec = {
                "case": name,
                "op": "minilm",
                "shape": {"B": batch, "T": MINILM_T},
                "device": dev,
                "device_name": device_name,
                "implementation": "torch-eager",
                "passes": None,
                "timer": "wall",
                "samples": len(times),
                "calls_per_sample": 1,
                "median_s": med,
                "min_s": lo,
                "max_s": hi,
                "wall_median_s": med,
                "bytes": nbytes,
                "flops": flops,
                "gb_per_s": nbytes / med / 1e9,
                "gflop_per_s": flops / med / 1e9,
                "rel_error": None,
                "ratios": {},
                "sentences_per_s": batch / med,
                "note": f"sentence-transformers forward (BERT, mean pooling, normalize) on {batch} pre-tokenized "
                f"{MINILM_T}-token sentences, host clock around one call and a synchronize; "
                f"max abs error vs the float64 reference {err:.1e}",
            }
            records.append(rec)
            print(f"{name} {dev:<4} torch-eager {med * 1e3:10.3f} ms {batch / med:10.1f} sentences/s", flush=True)
            if profile and dev == "cpu":
                with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                    for _ in range(3):
                        call()
                print(f"{name} cpu, 3 forwards, by op:", flush=True)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12), flush=True)
        del model
    return records, failures


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mia", default=None, help="JSON written by mia-bench --json")
    ap.add_argument("--json", required=True, help="where to write this run's JSON")
    ap.add_argument("--filter", default=None, help="only cases whose name contains this")
    ap.add_argument("--minilm", default=None, metavar="DIR", help="also time all-MiniLM-L6-v2 from this model dir")
    ap.add_argument(
        "--minilm-reference",
        default=MINILM_REFERENCE,
        metavar="FILE",
        help="float64 reference embeddings checked before timing (default: shared/minilm/reference.json)",
    )
    ap.add_argument(
        "--cpu-threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch CPU threads (default: the cores this process may use, as rayon)",
    )
    ap.add_argument(
        "--minilm-device",
        choices=["all", "cpu", "gpu"],
        default="all",
        help="where the MiniLM case runs: CUDA and the CPU (all), or one of them",
    )
    ap.add_argument("--minilm-profile", action="store_true", help="print where the CPU forward's time goes, per op")
    ap.add_argument("--quick", action="store_true", help="short warm-up and 3 samples (default with a quick --mia)")
    args = ap.parse_args()
    if args.mia is None and args.minilm is None:
        ap.error("give --mia, --minilm, or both")
    if args.mia is None:
        mia = {"mode": "quick" if args.quick else "full", "records": []}
    else:
        with open(args.mia) as f:
            mia = json.load(f)
    quick = args.quick or mia.get("mode") == "quick"
    warmup_s, samples = (0.05, 3) if quick else (0.5, 20)
    # Full fp32 everywhere (also the MiniLM case): no TF32 tensor cores.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    records, failures = [], []
    if args.minilm is not None:
        records, failures = minilm_records(
            args.minilm,
            args.minilm_reference,
            args.cpu_threads,
            warmup_s,
            samples,
            args.minilm_profile,
            ("gpu", "cpu") if args.minilm_device == "all" else (args.minilm_device,),
        )
        write_report(args.json, mia, records, failures)
    if args.mia is None:
        print(f"wrote {args.json}: {len(records)} records, {len(failures)} failures", flush=True)
        sys.exit(1 if failures else 0)

    torch._dynamo.config.cache_size_limit = 64
    torch.set_num_threads(args.cpu_threads)
    cuda = torch.cuda.is_available()
    if not cuda:
        print("torch_bench.py: CUDA is not available; only the CPU cases run", flush=True)

    # One entry per (case, device) that mia ran, in mia's order.
    cases = {}
    for r in mia["records"]:
        if r["implementation"] == "mia" and (r["device"] == "cpu" or cuda):
            cases.setdefault((r["case"], r["device"]), r)
    names = {
        "gpu": f"{torch.cuda.get_device_name()} (CUDA, torch {torch.__version__})" if cuda else None,
        "cpu": f"{platform.processor() or platform.machine()} ({args.cpu_threads} threads, torch {torch.__version__})",
    }
    for (name, dev), m in cases.items():
        if args.filter and args.filter not in name:
            continue
        if m["op"] not in OPS:
            print(f"{name} {dev}: no PyTorch version of op `{m['op']}`; skipped", flush=True)
            continue
        make, fn, tol = OPS[m["op"]]
        gen = torch.Generator(device="cuda" if dev == "gpu" else "cpu")
        gen.manual_seed(zlib.crc32(name.encode()))  # stable per case, like mia-bench's
        inputs = make(m["shape"], gen)
        want = fn(*[t.double() for t in inputs])
        print(f"{name} {dev} {m['shape']}", flush=True)
        for impl, f in implementations(m["op"], fn, dev):
            try:
                err = rel_error(f(*inputs), want)
                if not err <= tol:
                    raise ValueError(f"wrong result: relative error {err:.3e} exceeds {tol:.0e}")
                if dev == "gpu":
                    times, wall, spun = time_cuda(f, inputs, warmup_s, samples)
                    timer, reps = "cuda-event", REPS
                    note = f"CUDA events around {REPS} back-to-back calls, per call" + (
                        ", queued behind a GPU spin" if spun else ", no torch.cuda._sleep: may include launch gaps"
                    )
                else:
                    times, reps = time_cpu(f, inputs, warmup_s, samples)
                    wall, timer = times, "wall"
                    note = f"host clock around {reps} back-to-back calls, per call; {args.cpu_threads} threads"
            except Exception as e:  # a failed compile or a wrong result: report, go on
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                print(f"  {impl:<14} FAILED: {msg}", flush=True)
                failures.append({"case": name, "device": dev, "implementation": impl, "message": msg})
                continue
            med, lo, hi = median_min_max(times)
            rec = {
                "case": name,
                "op": m["op"],
                "shape": m["shape"],
                "device": dev,
                "device_name": names[dev],
                "implementation": impl,
                "passes": None,
                "timer": timer,
                "samples": len(times),
                "calls_per_sample": reps,
                "median_s": med,
                "min_s": lo,
                "max_s": hi,
                "wall_median_s": statistics.median(wall),
                "bytes": m["bytes"],
                "flops": m["flops"],
                "gb_per_s": m["bytes"] / med / 1e9,
                "gflop_per_s": m["flops"] / med / 1e9,
                "rel_error": err,
                "ratios": {},
                "note": note,
            }
            records.append(rec)
            print(
                f"  {impl:<14} {med * 1e3:10.3f} ms {rec['gb_per_s']:8.1f} GB/s  err {err:.1e}",
                flush=True,
            )
        del inputs, want
        write_report(args.json, mia, records, failures)

    write_report(args.json, mia, records, failures)
    print(f"wrote {args.json}: {len(records)} records, {len(failures)} failures", flush=True)
    sys.exit(1 if failures else 0)


def write_report(path, mia, records, failures):
    """Writes the report so far (after every case, so a run cut short still leaves one)."""
    report = {
        "schema": SCHEMA,
        "tool": f"torch_bench.py (torch {torch.__version__})",
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "mode": mia.get("mode", "full"),
        "command": " ".join(sys.argv),
        "host": f"{platform.processor() or platform.machine()}"
        + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
        "records": records,
        "failures": failures,
    }
    with open(path, "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
