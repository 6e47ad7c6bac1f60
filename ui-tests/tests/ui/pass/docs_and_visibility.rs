#![deny(missing_docs)]
//! Kernels with doc comments and restricted visibility keep both.
use mia_runtime::prelude::*;

mod inner {
    use mia_runtime::prelude::*;

    /// Doubles every element.
    ///
    /// Doc comments and other attributes are kept on the generated function.
    #[kernel]
    pub(crate) fn double(x: Tensor<f32, N>) -> Tensor<f32, N> {
        x * 2.0
    }

    /// Private to this module.
    #[kernel]
    #[allow(dead_code)]
    fn hidden(x: Tensor<f32, N>) -> Tensor<f32, N> {
        -x
    }
}

/// A public kernel of this crate.
#[kernel]
pub fn shift(x: Tensor<f32, N>) -> Tensor<f32, N> {
    x + 1.0
}

fn main() {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2], vec![1.0f32, 2.0]).unwrap();
    assert_eq!(inner::double(&x).unwrap().to_vec().unwrap(), vec![2.0, 4.0]);
    assert_eq!(inner::double::plan().passes(), 1);
    assert_eq!(shift(&x).unwrap().to_vec().unwrap(), vec![2.0, 3.0]);
}
