"""Compares the `minilm` binary with sentence-transformers itself on sentences of every kind.

The reference tests check four sentences against stored float64 embeddings; this checks any
sentences against the live library (empty and whitespace-only text, unicode and emoji, input
past the 256-token truncation, numbers and URLs), through the binary's arguments and its stdin
(where blank lines are skipped). It needs sentence-transformers (PyTorch), which CI does not
install; the lent NVIDIA machines have it.

    python3 bench/compare_st.py --model target/minilm-model --minilm target/release/minilm \
        [--device cpu|gpu] [--tol 1e-4] [SENTENCE ...]

Exits 1 when a component differs by more than --tol or a cosine is below 0.99999.
"""

import argparse
import json
import subprocess
import sys

import numpy as np

SENTENCES = [
    "A man is eating food.",
    "",
    " ",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Ünïcödé façade naïve café — 東京 タワー 🚀 emojis",
    "a",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Numbers 3.14159 and 2,718 and 1e-9; URLs http://example.com/a?b=c",
    "\ttabs\tand   multiple   spaces\t",
    "UPPER CASE lower case MiXeD",
    "word " * 250,
    "Short.",
]


def run(binary, model, device, sentences, stdin):
    cmd = [binary, "--model", model, "--device", device]
    if stdin:
        out = subprocess.run(cmd, input="\n".join(sentences) + "\n", capture_output=True, text=True)
    else:
        out = subprocess.run(cmd + ["--"] + sentences, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{binary} failed ({out.returncode}): {out.stderr}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="the unzipped all-MiniLM-L6-v2 model.zip")
    ap.add_argument("--minilm", required=True, help="the minilm binary")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("sentences", nargs="*")
    args = ap.parse_args()
    sentences = args.sentences or SENTENCES

    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(args.model, device="cpu")
    ref = st.encode(sentences, convert_to_numpy=True, batch_size=64).astype(np.float64)
    worst, min_cos, ok = 0.0, 1.0, True
    for stdin in (False, True):
        keep = [i for i, s in enumerate(sentences) if not stdin or (s.strip() and "\n" not in s)]
        got = run(args.minilm, args.model, args.device, [sentences[i] for i in keep], stdin)
        if len(got) != len(keep):
            print(f"{'stdin' if stdin else 'args'}: {len(got)} embeddings for {len(keep)} sentences")
            ok = False
            continue
        for i, g in zip(keep, got):
            e = np.array(g["embedding"], dtype=np.float64)
            err = float(np.abs(e - ref[i]).max())
            cos = float(e @ ref[i] / np.linalg.norm(e) / np.linalg.norm(ref[i]))
            worst, min_cos = max(worst, err), min(min_cos, cos)
            bad = g["text"] != sentences[i] or err > args.tol or cos < 0.99999
            ok &= not bad
            if bad or not stdin:
                print(f"{'FAIL ' if bad else ''}{err:.1e} {cos:.9f} {sentences[i][:50]!r}")
    print(f"{args.device}: max abs error {worst:.2e}, min cosine {min_cos:.9f}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
