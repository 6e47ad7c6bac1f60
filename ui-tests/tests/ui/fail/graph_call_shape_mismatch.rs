use mia_runtime::prelude::*;

// A sub-model called with the wrong shape: the error points at the argument.
graph! {
    pub struct Model {
        w: Tensor<f32, 4, 4> = "w",
        head: Head = "head",
    }
    struct Head {
        v: Tensor<f32, 8> = "v",
    }
    impl Head {
        fn forward(&self, x: Tensor<f32, N, 8>) -> Tensor<f32, N, 8> {
            x + self.v
        }
    }
    impl Model {
        pub fn forward(&self, x: Tensor<f32, N, 4>) -> Tensor<f32, N, 8> {
            self.head.forward(matmul(x, self.w))
        }
    }
}

fn main() {}
