use mia_runtime::prelude::*;

// After an error, the macro still emits a function with the generated signature, so callers
// type-check and only the kernel's own error is reported.
#[kernel]
fn scale(x: Tensor<f32, N>, alpha: f32) -> (Tensor<f32, N>, Tensor<i32, N>) {
    (x * alpha, x + 1.0)
}

fn main() -> Result<(), Error> {
    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [2], vec![1.0f32, 2.0])?;
    let (a, b): (Tensor<f32>, Tensor<i32>) = scale(&x, 2.0)?;
    println!("{:?} {:?}", a.to_vec()?, b.to_vec()?);
    Ok(())
}
