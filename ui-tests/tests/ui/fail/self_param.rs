use mia_runtime::prelude::*;

struct Layer;

impl Layer {
    #[kernel]
    fn forward(&self, x: Tensor<f32, N>) -> Tensor<f32, N> {
        relu(x)
    }
}

fn main() {}
