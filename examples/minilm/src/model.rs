//! all-MiniLM-L6-v2 written with `graph!`: a BERT encoder (6 layers, hidden 384, 12 heads of
//! 32, intermediate 1536, exact-erf GELU, layer norm eps 1e-12), then mean pooling over the
//! attention mask and L2 normalisation, exactly as sentence-transformers computes it. The
//! macro checks every shape at build time and compiles the whole forward pass into one
//! planned kernel (see `MiniLm::plan()`).

use mia_runtime::graph;

graph! {
    /// The sentence-transformers model all-MiniLM-L6-v2, with weights loaded by their
    /// safetensors keys.
    pub struct MiniLm {
        word: Tensor<f32, 30522, 384> = "embeddings.word_embeddings.weight",
        position: Tensor<f32, 512, 384> = "embeddings.position_embeddings.weight",
        token_type: Tensor<f32, 2, 384> = "embeddings.token_type_embeddings.weight",
        ln_g: Tensor<f32, 384> = "embeddings.LayerNorm.weight",
        ln_b: Tensor<f32, 384> = "embeddings.LayerNorm.bias",
        layers: [Layer; 6] = "encoder.layer.{i}",
    }

    /// One encoder layer: self-attention and a GELU feed-forward, each with a residual add and
    /// a layer norm. Linear weights are stored `[out, in]`, so they are used transposed (a
    /// strided view, no copy).
    struct Layer {
        wq: Tensor<f32, 384, 384> = "attention.self.query.weight",
        bq: Tensor<f32, 384> = "attention.self.query.bias",
        wk: Tensor<f32, 384, 384> = "attention.self.key.weight",
        bk: Tensor<f32, 384> = "attention.self.key.bias",
        wv: Tensor<f32, 384, 384> = "attention.self.value.weight",
        bv: Tensor<f32, 384> = "attention.self.value.bias",
        wo: Tensor<f32, 384, 384> = "attention.output.dense.weight",
        bo: Tensor<f32, 384> = "attention.output.dense.bias",
        ln1_g: Tensor<f32, 384> = "attention.output.LayerNorm.weight",
        ln1_b: Tensor<f32, 384> = "attention.output.LayerNorm.bias",
        wi: Tensor<f32, 1536, 384> = "intermediate.dense.weight",
        bi: Tensor<f32, 1536> = "intermediate.dense.bias",
        wf: Tensor<f32, 384, 1536> = "output.dense.weight",
        bf: Tensor<f32, 384> = "output.dense.bias",
        ln2_g: Tensor<f32, 384> = "output.LayerNorm.weight",
        ln2_b: Tensor<f32, 384> = "output.LayerNorm.bias",
    }

    impl Layer {
        fn forward(&self, x: Tensor<f32, B, T, 384>, mask: Tensor<f32, B, 1, 1, T>) -> Tensor<f32, B, T, 384> {
            // [B, T, 384] -> [B, 12, T, 32]: views of each projection.
            let q = transpose(reshape(matmul(x, transpose(self.wq, 0, 1)) + self.bq, [B, T, 12, 32]), 1, 2);
            let k = transpose(reshape(matmul(x, transpose(self.wk, 0, 1)) + self.bk, [B, T, 12, 32]), 1, 2);
            let v = transpose(reshape(matmul(x, transpose(self.wv, 0, 1)) + self.bv, [B, T, 12, 32]), 1, 2);
            // 1 / sqrt(32); the padding mask is additive.
            let scores = matmul(q, transpose(k, -1, -2)) * 0.17677669529663687 + mask;
            let ctx = matmul(softmax(scores, -1), v);
            let ctx = reshape(transpose(ctx, 1, 2), [B, T, 384]);
            let h = layer_norm(x + (matmul(ctx, transpose(self.wo, 0, 1)) + self.bo), self.ln1_g, self.ln1_b, 1e-12);
            let f = gelu(matmul(h, transpose(self.wi, 0, 1)) + self.bi);
            layer_norm(h + (matmul(f, transpose(self.wf, 0, 1)) + self.bf), self.ln2_g, self.ln2_b, 1e-12)
        }
    }

    impl MiniLm {
        /// `input_ids`, `token_type_ids`, `position_ids`: `[B, T]`; `attention_mask`: `[B, T]`,
        /// 1 for a token and 0 for padding. Returns L2-normalised sentence embeddings `[B, 384]`.
        pub fn forward(
            &self,
            input_ids: Tensor<i32, B, T>,
            token_type_ids: Tensor<i32, B, T>,
            position_ids: Tensor<i32, B, T>,
            attention_mask: Tensor<f32, B, T>,
        ) -> Tensor<f32, B, 384> {
            let emb = gather(self.word, input_ids) + gather(self.position, position_ids)
                + gather(self.token_type, token_type_ids);
            let mut x = layer_norm(emb, self.ln_g, self.ln_b, 1e-12);
            // BERT's extended mask: 0 where attended, the most negative f32 at padding.
            let mask = reshape((1.0 - attention_mask) * -3.4028234663852886e38, [B, 1, 1, T]);
            for layer in self.layers {
                x = layer.forward(x, mask);
            }
            // Mean over real tokens (sentence-transformers clamps the count at 1e-9), then
            // x / max(|x|, 1e-12) like torch.nn.functional.normalize.
            let m = reshape(attention_mask, [B, T, 1]);
            let pooled = reshape((x * m).sum(1) / maximum(m.sum(1), 1e-9), [B, 384]);
            pooled / maximum(sqrt((pooled * pooled).sum(-1)), 1e-12)
        }
    }
}
