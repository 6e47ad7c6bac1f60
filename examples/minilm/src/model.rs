//! PLACEHOLDER until `graph!` generates the model: it loads and checks every weight of
//! all-MiniLM-L6-v2 (so the weights path is exercised end to end), but `forward` returns an
//! error. The generated file replaces this one and keeps these two signatures.

use mia_runtime::weights::SafeTensors;
use mia_runtime::{Device, Error, Result, Tensor};

const HIDDEN: usize = 384;
const FFN: usize = 1536;
const LAYERS: usize = 6;

/// The BERT encoder of all-MiniLM-L6-v2 plus mean pooling and L2 normalisation.
pub struct MiniLm {
    weights: Vec<(String, Tensor<f32>)>,
}

impl MiniLm {
    /// Loads every weight by its safetensors key onto `dev`.
    pub fn load(dev: &Device, weights: &SafeTensors) -> Result<MiniLm> {
        let mut keys: Vec<(String, Vec<usize>)> = vec![
            (
                "embeddings.word_embeddings.weight".into(),
                vec![30522, HIDDEN],
            ),
            (
                "embeddings.position_embeddings.weight".into(),
                vec![512, HIDDEN],
            ),
            (
                "embeddings.token_type_embeddings.weight".into(),
                vec![2, HIDDEN],
            ),
            ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
            ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
        ];
        for l in 0..LAYERS {
            for (name, shape) in [
                ("attention.self.query.weight", vec![HIDDEN, HIDDEN]),
                ("attention.self.query.bias", vec![HIDDEN]),
                ("attention.self.key.weight", vec![HIDDEN, HIDDEN]),
                ("attention.self.key.bias", vec![HIDDEN]),
                ("attention.self.value.weight", vec![HIDDEN, HIDDEN]),
                ("attention.self.value.bias", vec![HIDDEN]),
                ("attention.output.dense.weight", vec![HIDDEN, HIDDEN]),
                ("attention.output.dense.bias", vec![HIDDEN]),
                ("attention.output.LayerNorm.weight", vec![HIDDEN]),
                ("attention.output.LayerNorm.bias", vec![HIDDEN]),
                ("intermediate.dense.weight", vec![FFN, HIDDEN]),
                ("intermediate.dense.bias", vec![FFN]),
                ("output.dense.weight", vec![HIDDEN, FFN]),
                ("output.dense.bias", vec![HIDDEN]),
                ("output.LayerNorm.weight", vec![HIDDEN]),
                ("output.LayerNorm.bias", vec![HIDDEN]),
            ] {
                keys.push((format!("encoder.layer.{l}.{name}"), shape));
            }
        }
        let weights = keys
            .into_iter()
            .map(|(k, shape)| {
                let t = weights.tensor(dev, &k, &shape)?;
                Ok((k, t))
            })
            .collect::<Result<_>>()?;
        Ok(MiniLm { weights })
    }

    /// input_ids, token_type_ids, position_ids: i32 [B, T]; attention_mask: f32 [B, T] (1 = token, 0 = pad).
    /// Returns the L2-normalised mean-pooled embeddings, f32 [B, 384].
    pub fn forward(
        &self,
        input_ids: &Tensor<i32>,
        _token_type_ids: &Tensor<i32>,
        _position_ids: &Tensor<i32>,
        _attention_mask: &Tensor<f32>,
    ) -> Result<Tensor<f32>> {
        Err(Error::Internal(format!(
            "MiniLm::forward is a placeholder until graph! generates the model ({} weights \
             loaded, input {:?})",
            self.weights.len(),
            input_ids.shape()
        )))
    }
}
