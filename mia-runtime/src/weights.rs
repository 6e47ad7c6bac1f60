//! Model weights from `.safetensors` files (the format Hugging Face models ship in).
//!
//! The file is memory-mapped, so opening a 90 MB model reads only its JSON header; each
//! [`SafeTensors::tensor`] call then copies one tensor out of the map onto a [`Device`],
//! checking its dtype and shape against what the model expects. Every failure is an
//! [`Error`] that names the file and the key, because a wrong or renamed checkpoint is the
//! usual cause and the message is all the user sees.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, TensorInfo};

use crate::device::Device;
use crate::error::{Error, Result};
use crate::tensor::{DType, Element, Tensor};

/// How many near-miss keys a [`Error::MissingWeight`] lists.
const CLOSEST: usize = 3;

/// A memory-mapped `.safetensors` file.
pub struct SafeTensors {
    path: PathBuf,
    map: Mmap,
    /// Where the data section starts in `map` (after the length word and the JSON header);
    /// each tensor's `data_offsets` are relative to it.
    data_start: usize,
    /// Sorted by key, so that [`SafeTensors::keys`] and error messages are deterministic.
    tensors: BTreeMap<String, TensorInfo>,
}

impl std::fmt::Debug for SafeTensors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafeTensors")
            .field("path", &self.path)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl SafeTensors {
    /// Maps the file at `path` and parses its header (offsets are validated against the file
    /// length here, so later reads cannot go out of bounds).
    pub fn open(path: impl AsRef<Path>) -> Result<SafeTensors> {
        let path = path.as_ref().to_path_buf();
        let file_error = |reason: String| Error::WeightsFile {
            path: path.display().to_string(),
            reason,
        };
        let file = File::open(&path).map_err(|e| file_error(e.to_string()))?;
        // SAFETY: the map is read-only. As with every memory map, another process truncating
        // or rewriting the file while it is mapped is undefined behaviour; model files are not
        // edited in place, and this is what every safetensors loader does to avoid reading
        // the whole file up front.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| file_error(e.to_string()))?;
        let (header_len, metadata) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|e| file_error(format!("not a safetensors file ({e})")))?;
        let tensors = metadata
            .tensors()
            .into_iter()
            .map(|(k, info)| (k, info.clone()))
            .collect();
        Ok(SafeTensors {
            path,
            data_start: 8 + header_len,
            map,
            tensors,
        })
    }

    /// The file this was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every tensor's key, sorted.
    pub fn keys(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// The number of tensors in the file.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The stored shape of `key`, if the file has it.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.tensors.get(key).map(|i| i.shape.as_slice())
    }

    /// The stored dtype of `key` as safetensors names it (`"F32"`, `"I64"`, …).
    pub fn dtype_name(&self, key: &str) -> Option<String> {
        self.tensors.get(key).map(|i| i.dtype.to_string())
    }

    /// Loads `key` onto `dev` as a tensor of `shape`. Stored dtypes convert as follows:
    /// `f32` ← F32, F16, BF16 (exact widening); `i32` ← I32, or I64 when every value fits
    /// (PyTorch saves index buffers such as `position_ids` as I64); `u32` ← U32;
    /// `bool` ← BOOL. The stored shape must equal `shape` exactly: a silent reshape would hide
    /// a transposed or mislabelled weight.
    pub fn tensor<T: Element>(
        &self,
        dev: &Device,
        key: &str,
        shape: &[usize],
    ) -> Result<Tensor<T>> {
        let info = self.tensors.get(key).ok_or_else(|| self.missing(key))?;
        if info.shape != shape {
            return Err(Error::WeightShape {
                path: self.path_string(),
                key: key.to_string(),
                expected: shape.to_vec(),
                found: info.shape.clone(),
            });
        }
        let (start, end) = info.data_offsets;
        // In bounds: `read_metadata` checked that the offsets tile the data section exactly.
        let bytes = self
            .map
            .get(self.data_start + start..self.data_start + end)
            .ok_or_else(|| Error::WeightsFile {
                path: self.path_string(),
                reason: format!("tensor `{key}` lies outside the file"),
            })?;
        let data = self.decode::<T>(key, info.dtype, bytes)?;
        Tensor::from_vec(dev, shape, data)
    }

    /// Converts the stored little-endian bytes to `T`, going through `T`'s 4-byte word so
    /// that one generic function serves every element type.
    fn decode<T: Element>(&self, key: &str, stored: Dtype, bytes: &[u8]) -> Result<Vec<T>> {
        let words4 = |f: fn([u8; 4]) -> u32| -> Vec<T> {
            bytes
                .chunks_exact(4)
                .map(|c| T::from_bits(f([c[0], c[1], c[2], c[3]])))
                .collect()
        };
        let words2 = |f: fn([u8; 2]) -> u32| -> Vec<T> {
            bytes
                .chunks_exact(2)
                .map(|c| T::from_bits(f([c[0], c[1]])))
                .collect()
        };
        match (T::DTYPE, stored) {
            (DType::F32, Dtype::F32) | (DType::I32, Dtype::I32) | (DType::U32, Dtype::U32) => {
                Ok(words4(u32::from_le_bytes))
            }
            (DType::F32, Dtype::F16) => {
                Ok(words2(|b| half::f16::from_le_bytes(b).to_f32().to_bits()))
            }
            (DType::F32, Dtype::BF16) => {
                Ok(words2(|b| half::bf16::from_le_bytes(b).to_f32().to_bits()))
            }
            (DType::I32, Dtype::I64) => bytes
                .chunks_exact(8)
                .enumerate()
                .map(|(index, c)| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(c);
                    let value = i64::from_le_bytes(w);
                    i32::try_from(value)
                        .map(|v| T::from_bits(v as u32))
                        .map_err(|_| Error::WeightValue {
                            path: self.path_string(),
                            key: key.to_string(),
                            expected: DType::I32,
                            index,
                            value,
                        })
                })
                .collect(),
            (DType::Bool, Dtype::BOOL) => {
                Ok(bytes.iter().map(|&b| T::from_bits(b as u32)).collect())
            }
            (expected, found) => Err(Error::WeightDType {
                path: self.path_string(),
                key: key.to_string(),
                expected,
                found: found.to_string(),
                loadable: loadable(expected),
            }),
        }
    }

    fn path_string(&self) -> String {
        self.path.display().to_string()
    }

    fn missing(&self, key: &str) -> Error {
        Error::MissingWeight {
            path: self.path_string(),
            key: key.to_string(),
            closest: closest_keys(key, self.tensors.keys().map(String::as_str)),
            count: self.tensors.len(),
        }
    }
}

/// The stored dtypes [`SafeTensors::tensor`] converts to `t`, for error messages.
fn loadable(t: DType) -> &'static str {
    match t {
        DType::F32 => "F32, F16, BF16",
        DType::I32 => "I32, I64",
        DType::U32 => "U32",
        DType::Bool => "BOOL",
    }
}

/// The keys nearest to `key`: those sharing the most dot-separated parts with it at the two
/// ends together (a renamed prefix such as `bert.` keeps the whole tail; a typo in one part
/// keeps the rest), more trailing parts breaking ties. Only the best-scoring keys are listed,
/// and none that share no part at either end.
fn closest_keys<'a>(key: &str, keys: impl Iterator<Item = &'a str>) -> Vec<String> {
    let want: Vec<&str> = key.split('.').collect();
    let mut scored: Vec<((usize, usize), &str)> = keys
        .filter_map(|k| {
            let parts: Vec<&str> = k.split('.').collect();
            let tail = common(want.iter().rev(), parts.iter().rev());
            let head = common(want.iter(), parts.iter());
            (tail + head > 0).then_some(((tail + head, tail), k))
        })
        .collect();
    let Some(best) = scored.iter().map(|(s, _)| s.0).max() else {
        return Vec::new();
    };
    scored.retain(|(s, _)| s.0 == best);
    // Keys arrive sorted and the sort is stable, so ties stay in key order.
    scored.sort_by_key(|s| std::cmp::Reverse(s.0));
    scored
        .into_iter()
        .take(CLOSEST)
        .map(|(_, k)| k.to_string())
        .collect()
}

fn common<'a>(a: impl Iterator<Item = &'a &'a str>, b: impl Iterator<Item = &'a &'a str>) -> usize {
    a.zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use safetensors::tensor::TensorView;

    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "mia-weights-{name}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn le<const N: usize, X: Copy>(xs: &[X], f: fn(X) -> [u8; N]) -> Vec<u8> {
        xs.iter().flat_map(|&x| f(x)).collect()
    }

    /// A small model-like file: f32, f16, bf16, i32, i64 (one in range, one not), u32, bool.
    fn write_file(dir: &TempDir) -> PathBuf {
        let w: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let halves = [1.5f32, -2.25, 0.0, 65504.0];
        let entries: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "encoder.layer.0.attention.self.query.weight",
                Dtype::F32,
                vec![2, 3],
                le(&w, f32::to_le_bytes),
            ),
            (
                "encoder.layer.0.attention.self.key.weight",
                Dtype::F32,
                vec![2, 3],
                le(&w, f32::to_le_bytes),
            ),
            (
                "encoder.layer.0.output.dense.bias",
                Dtype::F32,
                vec![3],
                le(&w[..3], f32::to_le_bytes),
            ),
            (
                "half.f16",
                Dtype::F16,
                vec![4],
                le(&halves.map(half::f16::from_f32), half::f16::to_le_bytes),
            ),
            (
                "half.bf16",
                Dtype::BF16,
                vec![4],
                le(&halves.map(half::bf16::from_f32), half::bf16::to_le_bytes),
            ),
            (
                "ids.i32",
                Dtype::I32,
                vec![3],
                le(&[7i32, -1, 30521], i32::to_le_bytes),
            ),
            (
                "ids.position_ids",
                Dtype::I64,
                vec![1, 4],
                le(&[0i64, 1, 2, 3], i64::to_le_bytes),
            ),
            (
                "ids.big",
                Dtype::I64,
                vec![2],
                le(&[5i64, 1 << 40], i64::to_le_bytes),
            ),
            (
                "ids.u32",
                Dtype::U32,
                vec![2],
                le(&[3u32, u32::MAX], u32::to_le_bytes),
            ),
            ("mask.bool", Dtype::BOOL, vec![3], vec![1, 0, 1]),
            (
                "wide.f64",
                Dtype::F64,
                vec![1],
                le(&[1.0f64], f64::to_le_bytes),
            ),
        ];
        let views: Vec<(String, TensorView<'_>)> = entries
            .iter()
            .map(|(k, dt, shape, data)| {
                (
                    k.to_string(),
                    TensorView::new(*dt, shape.clone(), data).unwrap(),
                )
            })
            .collect();
        let path = dir.0.join("model.safetensors");
        let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(views, Some(meta), &path).unwrap();
        path
    }

    #[test]
    fn round_trip_every_dtype_on_every_device() {
        let dir = TempDir::new("round-trip");
        let st = SafeTensors::open(write_file(&dir)).unwrap();
        assert_eq!(st.len(), 11);
        assert!(st.keys().windows(2).all(|w| w[0] < w[1]), "keys are sorted");
        assert_eq!(st.shape("ids.position_ids"), Some(&[1, 4][..]));
        assert_eq!(st.dtype_name("half.bf16").as_deref(), Some("BF16"));
        for dev in crate::testing::devices() {
            let q: Tensor<f32> = st
                .tensor(&dev, "encoder.layer.0.attention.self.query.weight", &[2, 3])
                .unwrap();
            assert_eq!(q.shape(), &[2, 3]);
            assert_eq!(q.device(), &dev);
            assert_eq!(q.to_vec().unwrap(), vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
            let want = vec![1.5f32, -2.25, 0.0, 65504.0];
            for key in ["half.f16", "half.bf16"] {
                let t: Tensor<f32> = st.tensor(&dev, key, &[4]).unwrap();
                let got = t.to_vec().unwrap();
                // bf16 has 8 mantissa bits: 65504 rounds to 65536.
                let tol = if key == "half.bf16" { 64.0 } else { 0.0 };
                assert!(
                    got.iter().zip(&want).all(|(a, b)| (a - b).abs() <= tol),
                    "{key}: {got:?}"
                );
            }
            let ids: Tensor<i32> = st.tensor(&dev, "ids.i32", &[3]).unwrap();
            assert_eq!(ids.to_vec().unwrap(), vec![7, -1, 30521]);
            let pos: Tensor<i32> = st.tensor(&dev, "ids.position_ids", &[1, 4]).unwrap();
            assert_eq!(pos.to_vec().unwrap(), vec![0, 1, 2, 3]);
            let u: Tensor<u32> = st.tensor(&dev, "ids.u32", &[2]).unwrap();
            assert_eq!(u.to_vec().unwrap(), vec![3, u32::MAX]);
            let m: Tensor<bool> = st.tensor(&dev, "mask.bool", &[3]).unwrap();
            assert_eq!(m.to_vec().unwrap(), vec![true, false, true]);
        }
    }

    #[test]
    fn unreadable_and_invalid_files_name_the_path() {
        let dir = TempDir::new("bad-files");
        let missing = dir.0.join("nope.safetensors");
        let e = SafeTensors::open(&missing).unwrap_err();
        assert!(matches!(e, Error::WeightsFile { .. }), "{e:?}");
        assert!(e.to_string().contains("nope.safetensors"), "{e}");

        let garbage = dir.0.join("garbage.safetensors");
        std::fs::write(&garbage, b"this is not a safetensors file at all").unwrap();
        let e = SafeTensors::open(&garbage).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("garbage.safetensors") && msg.contains("not a safetensors file"),
            "{msg}"
        );

        let empty = dir.0.join("empty.safetensors");
        std::fs::write(&empty, b"").unwrap();
        let e = SafeTensors::open(&empty).unwrap_err();
        assert!(matches!(e, Error::WeightsFile { .. }), "{e:?}");

        // A directory is not a file either.
        let e = SafeTensors::open(&dir.0).unwrap_err();
        assert!(matches!(e, Error::WeightsFile { .. }), "{e:?}");
    }

    #[test]
    fn missing_key_suggests_the_closest_keys() {
        let dir = TempDir::new("missing");
        let st = SafeTensors::open(write_file(&dir)).unwrap();
        let dev = Device::cpu();
        // A renamed prefix: the whole tail matches.
        let e = st
            .tensor::<f32>(&dev, "bert.encoder.layer.0.output.dense.bias", &[3])
            .unwrap_err();
        let Error::MissingWeight {
            key,
            closest,
            count,
            ..
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(key, "bert.encoder.layer.0.output.dense.bias");
        assert_eq!(closest[0], "encoder.layer.0.output.dense.bias");
        assert_eq!(*count, 11);
        let msg = e.to_string();
        assert!(
            msg.contains("`bert.encoder.layer.0.output.dense.bias`"),
            "{msg}"
        );
        assert!(
            msg.contains("closest keys: `encoder.layer.0.output.dense.bias`"),
            "{msg}"
        );
        assert!(msg.contains("model.safetensors"), "{msg}");

        // A typo in one part: the layer path and the suffix both match.
        let e = st
            .tensor::<f32>(&dev, "encoder.layer.0.attention.self.qeury.weight", &[2, 3])
            .unwrap_err();
        let Error::MissingWeight { closest, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(
            closest,
            &[
                "encoder.layer.0.attention.self.key.weight",
                "encoder.layer.0.attention.self.query.weight"
            ]
        );

        // Nothing in common: no suggestion.
        let e = st.tensor::<f32>(&dev, "zzz", &[1]).unwrap_err();
        assert!(!e.to_string().contains("closest"), "{e}");
    }

    #[test]
    fn wrong_dtype_names_key_and_both_dtypes() {
        let dir = TempDir::new("dtype");
        let st = SafeTensors::open(write_file(&dir)).unwrap();
        let dev = Device::cpu();
        let e = st
            .tensor::<i32>(&dev, "encoder.layer.0.output.dense.bias", &[3])
            .unwrap_err();
        assert_eq!(
            e,
            Error::WeightDType {
                path: st.path().display().to_string(),
                key: "encoder.layer.0.output.dense.bias".into(),
                expected: DType::I32,
                found: "F32".into(),
                loadable: "I32, I64",
            }
        );
        let msg = e.to_string();
        assert!(
            msg.contains("stored as F32") && msg.contains("as i32"),
            "{msg}"
        );
        let e = st.tensor::<f32>(&dev, "wide.f64", &[1]).unwrap_err();
        assert!(e.to_string().contains("stored as F64"), "{e}");
        let e = st.tensor::<f32>(&dev, "ids.i32", &[3]).unwrap_err();
        assert!(matches!(e, Error::WeightDType { .. }), "{e:?}");
    }

    #[test]
    fn wrong_shape_names_both_shapes() {
        let dir = TempDir::new("shape");
        let st = SafeTensors::open(write_file(&dir)).unwrap();
        let dev = Device::cpu();
        let e = st
            .tensor::<f32>(&dev, "encoder.layer.0.attention.self.query.weight", &[3, 2])
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("has shape [2, 3], but the model expects [3, 2]"),
            "{msg}"
        );
        assert!(
            msg.contains("`encoder.layer.0.attention.self.query.weight`"),
            "{msg}"
        );
        // Same element count, different rank: still an error.
        let e = st
            .tensor::<i32>(&dev, "ids.position_ids", &[4])
            .unwrap_err();
        assert!(matches!(e, Error::WeightShape { .. }), "{e:?}");
    }

    #[test]
    fn i64_out_of_i32_range_is_an_error() {
        let dir = TempDir::new("i64");
        let st = SafeTensors::open(write_file(&dir)).unwrap();
        let e = st
            .tensor::<i32>(&Device::cpu(), "ids.big", &[2])
            .unwrap_err();
        assert!(
            matches!(e, Error::WeightValue { index: 1, value, .. } if value == 1 << 40),
            "{e:?}"
        );
        assert!(e.to_string().contains("does not fit in i32"), "{e}");
    }

    #[test]
    fn closest_keys_ranks_tail_then_head() {
        let keys = ["a.b.c", "x.b.c", "a.y.z", "q.r.s"];
        assert_eq!(
            closest_keys("m.b.c", keys.into_iter()),
            vec!["a.b.c", "x.b.c"]
        );
        assert_eq!(closest_keys("a.y.w", keys.into_iter()), vec!["a.y.z"]);
        assert!(closest_keys("nothing", keys.into_iter()).is_empty());
    }
}
