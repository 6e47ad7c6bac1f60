use mia_runtime::prelude::*;

fn main() -> Result<(), Error> {
    #[kernel]
    fn local_norm(x: Tensor<f32, N, D>, gamma: Tensor<f32, D>, eps: f32) -> Tensor<f32, N, D> {
        rms_norm(x, gamma, eps)
    }

    let dev = Device::cpu();
    let x = Tensor::from_vec(&dev, [1, 2], vec![3.0f32, 4.0])?;
    let g = Tensor::from_vec(&dev, [2], vec![1.0f32, 1.0])?;
    let y = local_norm(&x, &g, 0.0)?.to_vec()?;
    let rms = (12.5f32).sqrt();
    assert!(
        (y[0] - 3.0 / rms).abs() < 1e-5 && (y[1] - 4.0 / rms).abs() < 1e-5,
        "{y:?}"
    );
    Ok(())
}
