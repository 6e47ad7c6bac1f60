//! all-MiniLM-L6-v2 against `shared/minilm/reference.json` (a float64 forward of the same
//! weights, which agrees with sentence-transformers to 2e-7): token ids exactly, embeddings
//! within 1e-4 per component and cosine >= 0.99999, on the CPU and the GPU, each sentence
//! alone and all four as one padded batch.
//!
//! The model is not in the repository (90 MB). Tests read it from `$MIA_MINILM_DIR`, default
//! `<repo>/target/minilm-model` (where `.ci/run` unzips it). Without it they print a notice and
//! pass, unless `MIA_REQUIRE_MODEL=1` (CI), when they fail. GPU tests skip without a GPU
//! unless `MIA_REQUIRE_GPU=1`, as everywhere in mia.

use std::path::{Path, PathBuf};

use mia_runtime::Device;
use minilm::{Encoder, DIM};

const MAX_ABS: f64 = 1e-4;
const MIN_COSINE: f64 = 0.99999;

#[derive(serde::Deserialize)]
struct Reference {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn reference() -> Reference {
    let path = repo_root().join("../shared/minilm/reference.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1" | "true" | "yes"))
}

/// The model directory, or `None` (after a notice) when it is absent and not required.
fn model_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("MIA_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/minilm-model"));
    if dir.join("model.safetensors").is_file() && dir.join("tokenizer.json").is_file() {
        return Some(dir);
    }
    let why = format!(
        "no all-MiniLM-L6-v2 model in {} (set MIA_MINILM_DIR; {})",
        dir.display(),
        minilm::HOW_TO_GET
    );
    assert!(!flag("MIA_REQUIRE_MODEL"), "MIA_REQUIRE_MODEL=1 but {why}");
    eprintln!("skipping MiniLM test: {why}");
    None
}

fn encoder(dev: &Device) -> Option<Encoder> {
    let dir = model_dir()?;
    match Encoder::open(&dir, dev) {
        Ok(e) => Some(e),
        Err(e) => panic!("opening {} on {}: {e}", dir.display(), dev.name()),
    }
}

/// Compares one embedding with its reference: every component, then the cosine.
fn check(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), DIM, "{what}: embedding length");
    assert_eq!(want.len(), DIM, "{what}: reference length");
    let (mut worst, mut at) = (0.0f64, 0);
    let (mut dot, mut gg, mut ww) = (0.0f64, 0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        assert!(g.is_finite(), "{what}: component {i} is {g}");
        if (g - w).abs() > worst {
            (worst, at) = ((g - w).abs(), i);
        }
        dot += g * w;
        gg += g * g;
        ww += w * w;
    }
    let cosine = dot / (gg.sqrt() * ww.sqrt());
    eprintln!("{what}: max |diff| {worst:.2e}, cosine {cosine:.9}");
    assert!(
        worst <= MAX_ABS,
        "{what}: component {at} is {} but the reference is {} (|diff| {worst:.3e} > {MAX_ABS:e})",
        got[at],
        want[at]
    );
    assert!(
        cosine >= MIN_COSINE,
        "{what}: cosine {cosine} < {MIN_COSINE}"
    );
}

fn check_device(dev: &Device) {
    let Some(enc) = encoder(dev) else { return };
    let cases = reference().cases;
    let on = dev.name();
    for c in &cases {
        let got = enc
            .embed(&[c.text.as_str()])
            .unwrap_or_else(|e| panic!("{on}: embedding {:?}: {e}", c.text));
        check(&format!("{on}, alone: {:?}", c.text), &got[0], &c.embedding);
    }
    // All four in one batch: three of them padded to the longest, and their order shuffled by
    // the length sort, so this checks masking and order restoration too.
    let texts: Vec<&str> = cases.iter().map(|c| c.text.as_str()).collect();
    let enc = enc.with_batch_size(texts.len());
    let got = enc
        .embed(&texts)
        .unwrap_or_else(|e| panic!("{on}: embedding a batch: {e}"));
    assert_eq!(got.len(), cases.len());
    for (g, c) in got.iter().zip(&cases) {
        check(
            &format!("{on}, in a batch of 4: {:?}", c.text),
            g,
            &c.embedding,
        );
    }
}

#[test]
fn tokenizer_ids_match_reference() {
    let Some(enc) = encoder(&Device::cpu()) else {
        return;
    };
    for c in reference().cases {
        let ids = enc.tokenize(&c.text).unwrap();
        assert_eq!(ids, c.ids, "token ids of {:?}", c.text);
    }
}

#[test]
fn long_input_is_truncated_to_256_tokens() {
    let Some(enc) = encoder(&Device::cpu()) else {
        return;
    };
    let long = "word ".repeat(1000);
    let ids = enc.tokenize(&long).unwrap();
    assert_eq!(ids.len(), minilm::MAX_TOKENS);
    assert_eq!(
        (ids[0], ids[ids.len() - 1]),
        (101, 102),
        "[CLS] … [SEP] kept"
    );
}

#[test]
fn embeddings_match_reference_on_cpu() {
    check_device(&Device::cpu());
}

#[test]
fn embeddings_match_reference_on_gpu() {
    if let Some(dev) = mia_runtime::testing::gpu() {
        check_device(&dev);
    }
}
