use mia_runtime::prelude::*;

// Unknown weights and loops over something that is not a repeated layer.
graph! {
    pub struct Model {
        w: Tensor<f32, 4, 4> = "w",
    }
    impl Model {
        pub fn forward(&self, x: Tensor<f32, N, 4>) -> Tensor<f32, N, 4> {
            let mut h = x;
            for layer in self.w {
                h = h + 1.0;
            }
            matmul(h, self.missing)
        }
    }
}

fn main() {}
