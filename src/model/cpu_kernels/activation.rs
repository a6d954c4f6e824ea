//! ReLU and GELU: `activate`, the in-place pass the linear and layer-norm kernels run on
//! their blocks while they are in cache, and `activation`, the same pass over a whole tensor
//! in parallel blocks (candle's own GELU calls libm's `erf` value by value on one thread).

use super::math::gelu_erf;
use super::{contiguous_slice, f32_data, par_blocks};
use crate::model::sam2_utils::Activation;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// Values per parallel task: large enough to amortise the task, small enough to stay in L2.
const BLOCK: usize = 1 << 15;

/// `activation(x)` element by element, any shape.
pub(crate) fn activation(x: &Tensor, activation: Activation) -> Result<Tensor> {
    x.contiguous()?
        .apply_op1_no_bwd(&ActivationOp { activation })
}

struct ActivationOp {
    activation: Activation,
}

impl CustomOp1 for ActivationOp {
    fn name(&self) -> &'static str {
        "sam2-activation"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let src = contiguous_slice(
            f32_data(storage, "activation input")?,
            layout,
            "activation input",
        )?;
        let out = par_blocks(src.len(), BLOCK, |index, dst| {
            dst.copy_from_slice(&src[index * BLOCK..][..dst.len()]);
            activate(dst, self.activation);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

vectorised! {
    /// Applies `activation` to every value of `values`.
    pub(super) fn activate(values: &mut [f32], activation: Activation) = activate_scalar
}

#[inline(always)]
fn activate_scalar(values: &mut [f32], activation: Activation) {
    match activation {
        Activation::Relu => values.iter_mut().for_each(|v| *v = v.max(0.0)),
        Activation::Gelu => values.iter_mut().for_each(|v| *v = gelu_erf(*v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_candle_over_several_blocks_and_a_strided_view() {
        // More than two blocks, the last one partial.
        let rows = 22_000;
        let values: Vec<f32> = (0..3 * rows)
            .map(|i| ((i as f32) * 0.37).sin() * 6.0)
            .collect();
        let x = Tensor::from_vec(values, (rows, 3), &Device::Cpu).unwrap();
        let x = x.t().unwrap();
        for (act, want) in [
            (Activation::Gelu, x.gelu_erf().unwrap()),
            (Activation::Relu, x.relu().unwrap()),
        ] {
            let got = activation(&x, act).unwrap();
            assert_eq!(got.dims(), want.dims());
            let err = crate::model::test_support::max_abs_diff(&got, &want);
            assert!(err < 1e-6, "{act:?}: {err}");
        }
    }
}
