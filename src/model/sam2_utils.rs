//! Layers shared by several SAM2 modules (reference: `sam2/modeling/sam2_utils.py` and the plain
//! `nn.Linear` / `nn.LayerNorm` / `nn.Conv2d` layers used all over the model): a token-wise
//! linear layer, layer normalisation over the last dimension (also standing in for
//! `LayerNorm2d` on channels-last data), strided convolutions returning channels-last data
//! (`StridedConv2d`), the 1x1 convolution (`PointwiseConv2d`), the multi-layer
//! perceptron, the activations the configuration can name, and the 1-D sine encoding of
//! object-pointer offsets (`get_1d_sine_pe`).
//!
//! On the CPU the layers run the kernels of `cpu_kernels` (fused bias and activation, stable
//! layer norm, strided multi-head attention); elsewhere they use plain candle operations.

use crate::model::cpu_kernels;
use candle_core::{D, DType, Module, Result, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

/// Element-wise activation named by the configuration (`get_activation_fn`) or hard-coded by a
/// module (`nn.ReLU`, `nn.GELU`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// PyTorch's default GELU, the exact erf form `x/2 · (1 + erf(x/√2))`.
    Gelu,
}

impl Activation {
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        if cpu_kernels::applies_to(x) {
            return cpu_kernels::activation(x, self);
        }
        match self {
            Activation::Relu => x.relu(),
            Activation::Gelu => x.gelu_erf(),
        }
    }
}

/// `nn.Linear` applied to the last dimension of a tensor of any rank. The leading dimensions are
/// folded into one row dimension so the product is a single matrix multiplication, however many
/// windows, heads or batch entries the caller stacked in front.
#[derive(Debug, Clone)]
pub struct Linear {
    /// Weight transposed to `[in, out]`, contiguous, so the product needs no strided access.
    weight_t: Tensor,
    bias: Tensor,
    in_dim: usize,
    out_dim: usize,
}

impl Linear {
    /// Loads `weight` `[out_dim, in_dim]` and `bias` `[out_dim]` under `vb`.
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::from_parts(
            &vb.get((out_dim, in_dim), "weight")?,
            vb.get(out_dim, "bias")?,
        )
    }

    /// A 1x1 convolution (`weight` `[out, in, 1, 1]`, `bias` `[out]` under `vb`) as a linear
    /// layer over channels-last pixels.
    pub fn pointwise_conv(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb
            .get((out_dim, in_dim, 1, 1), "weight")?
            .reshape((out_dim, in_dim))?;
        Self::from_parts(&weight, vb.get(out_dim, "bias")?)
    }

    /// From an `[out, in]` weight and `[out]` bias already loaded (e.g. a 1x1 convolution's
    /// kernel reshaped to a matrix).
    pub fn from_parts(weight: &Tensor, bias: Tensor) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
        if bias.dims() != [out_dim] {
            candle_core::bail!(
                "linear bias {:?} does not match weight {:?}",
                bias.dims(),
                weight.dims()
            );
        }
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
            in_dim,
            out_dim,
        })
    }

    /// The bias `[out]`: the layer's output for a zero input.
    pub fn bias(&self) -> &Tensor {
        &self.bias
    }

    /// `x` `[N, in]` times the weight alone, without the bias: `[N, out]`.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.weight_t)
    }

    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    pub fn out_dim(&self) -> usize {
        self.out_dim
    }
}

impl Linear {
    /// `activation(layer(x)) + residual`, fused into the matrix product on the CPU (the
    /// residual has the output's shape).
    pub fn forward_fused(
        &self,
        x: &Tensor,
        activation: Option<Activation>,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&last, lead)) = dims.split_last() else {
            candle_core::bail!("linear layer needs at least one dimension, got a scalar");
        };
        if last != self.in_dim {
            candle_core::bail!(
                "linear layer expects {} input features, got shape {:?}",
                self.in_dim,
                dims
            );
        }
        let rows: usize = lead.iter().product();
        let x = x.reshape((rows, last))?;
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_dim);
        let residual = match residual {
            Some(r) if r.dims() != out_dims.as_slice() => candle_core::bail!(
                "linear residual {:?} does not match the output {out_dims:?}",
                r.dims()
            ),
            Some(r) => Some(r.reshape((rows, self.out_dim))?),
            None => None,
        };
        let y = if cpu_kernels::applies_to(&x) {
            cpu_kernels::linear(
                &x,
                &self.weight_t,
                &self.bias,
                activation,
                residual.as_ref(),
            )?
        } else {
            let y = x.matmul(&self.weight_t)?.broadcast_add(&self.bias)?;
            let y = match activation {
                Some(activation) => activation.apply(&y)?,
                None => y,
            };
            match residual {
                Some(r) => (y + r)?,
                None => y,
            }
        };
        y.reshape(out_dims)
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_fused(x, None, None)
    }
}

/// Normalises `x` to zero mean and unit variance over dimension `dim` (biased variance, like
/// PyTorch), with tensor operations that run on any device.
fn normalize_over(x: &Tensor, dim: usize, eps: f64) -> Result<Tensor> {
    let centered = x.broadcast_sub(&x.mean_keepdim(dim)?)?;
    let var = centered.sqr()?.mean_keepdim(dim)?;
    centered.broadcast_div(&(var + eps)?.sqrt()?)
}

/// `nn.LayerNorm` over the last dimension with an affine weight and bias.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads `weight` and `bias` `[dim]` under `vb`. SAM2 uses eps 1e-6 in Hiera blocks and
    /// PyTorch's default 1e-5 in the transformers.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps,
        })
    }
}

impl LayerNorm {
    /// `activation(norm(x))`, in one pass on the CPU.
    pub fn forward_activated(&self, x: &Tensor, activation: Activation) -> Result<Tensor> {
        if cpu_kernels::applies_to(x) {
            cpu_kernels::layer_norm(x, &self.weight, &self.bias, self.eps, Some(activation))
        } else {
            activation.apply(&self.forward(x)?)
        }
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if cpu_kernels::applies_to(x) {
            cpu_kernels::layer_norm(x, &self.weight, &self.bias, self.eps, None)
        } else {
            let last = x.rank().checked_sub(1).ok_or_else(|| {
                candle_core::Error::Msg("layer norm needs at least one dimension".into())
            })?;
            normalize_over(x, last, self.eps)?
                .broadcast_mul(&self.weight)?
                .broadcast_add(&self.bias)
        }
    }
}

/// Where a 4-D image tensor keeps its channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelOrder {
    /// `[B, C, H, W]`.
    First,
    /// `[B, H, W, C]`.
    Last,
}

/// `nn.Conv2d(in, out, k, stride, padding)` returning channels-last `[B, Ho, Wo, out]`, the
/// layout the LayerNorms and linear layers after it take. On the CPU it is one patch matrix
/// (im2col) times the kernel matrix, with the bias added in the product's blocks.
#[derive(Debug, Clone)]
pub struct StridedConv2d {
    /// `[out, in, k, k]` for the generic convolution.
    weight: Tensor,
    /// The kernel as a linear layer over im2col patches.
    matrix: Linear,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl StridedConv2d {
    /// Loads `weight` `[out, in, k, k]` and `bias` `[out]` under `vb`.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
        let matrix = Linear::from_parts(
            &weight.reshape((out_channels, in_channels * kernel * kernel))?,
            vb.get(out_channels, "bias")?,
        )?;
        Ok(Self {
            weight,
            matrix,
            kernel,
            stride,
            padding,
        })
    }

    /// `x` with its channels in `order` → `[B, Ho, Wo, out]`.
    pub fn forward(&self, x: &Tensor, order: ChannelOrder) -> Result<Tensor> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if cpu_kernels::applies_to(x) {
            self.matrix
                .forward(&cpu_kernels::im2col(x, k, s, p, order)?)
        } else {
            let x = match order {
                ChannelOrder::First => x.clone(),
                ChannelOrder::Last => x.permute((0, 3, 1, 2))?,
            };
            x.conv2d(&self.weight, p, s, 1, 1)?
                .broadcast_add(&self.matrix.bias().reshape((1, (), 1, 1))?)?
                .permute((0, 2, 3, 1))?
                .contiguous()
        }
    }
}

/// Channels-last `x` `[B, H, W, C]` as a contiguous channels-first `[B, C, H, W]`.
pub fn to_channels_first(x: &Tensor) -> Result<Tensor> {
    if cpu_kernels::applies_to(x) {
        cpu_kernels::channels_first(x)
    } else {
        x.permute((0, 3, 1, 2))?.contiguous()
    }
}

/// `nn.Conv2d(in, out, kernel_size=1)` on `[B, C, H, W]` tensors: one product of the weight
/// with each image's flattened pixels (`W · X`), without im2col or layout changes.
#[derive(Debug, Clone)]
pub struct PointwiseConv2d {
    /// `[out, in]`.
    weight: Tensor,
    /// `[out, 1]`.
    bias: Tensor,
}

impl PointwiseConv2d {
    /// Loads `weight` `[out, in, 1, 1]` and `bias` `[out]` under `vb`.
    pub fn new(vb: VarBuilder, in_channels: usize, out_channels: usize) -> Result<Self> {
        Ok(Self {
            weight: vb
                .get((out_channels, in_channels, 1, 1), "weight")?
                .reshape((out_channels, in_channels))?,
            bias: vb.get(out_channels, "bias")?.reshape((out_channels, 1))?,
        })
    }
}

impl Module for PointwiseConv2d {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let out = self.weight.dim(0)?;
        self.weight
            .broadcast_matmul(&x.reshape((b, c, h * w))?)?
            .broadcast_add(&self.bias)?
            .reshape((b, out, h, w))
    }
}

/// Epsilon of SAM2's `LayerNorm2d` (a channel norm of `[B, C, H, W]` tensors); the port
/// applies it with `LayerNorm` to channels-last data.
pub const LAYER_NORM_2D_EPS: f64 = 1e-6;

/// The reference `MLP`: `num_layers` linear layers (`layers.0`, `layers.1`, ...) with the
/// activation between them and an optional sigmoid on the output.
#[derive(Debug, Clone)]
pub struct Mlp {
    layers: Vec<Linear>,
    activation: Activation,
    sigmoid_output: bool,
}

impl Mlp {
    /// Hidden layers all have `hidden_dim` features; `num_layers` must be at least 1.
    pub fn new(
        vb: VarBuilder,
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        num_layers: usize,
        activation: Activation,
        sigmoid_output: bool,
    ) -> Result<Self> {
        if num_layers == 0 {
            candle_core::bail!("an MLP needs at least one layer");
        }
        let vb = vb.pp("layers");
        let layers = (0..num_layers)
            .map(|i| {
                let in_dim = if i == 0 { input_dim } else { hidden_dim };
                let out_dim = if i + 1 == num_layers {
                    output_dim
                } else {
                    hidden_dim
                };
                Linear::new(vb.pp(i), in_dim, out_dim)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            layers,
            activation,
            sigmoid_output,
        })
    }
}

impl Mlp {
    /// `residual + mlp(x)`, with the addition fused into the last layer on the CPU.
    pub fn forward_with_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        if self.sigmoid_output {
            return residual + self.forward(x)?;
        }
        self.run(x, Some(residual))
    }

    fn run(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let last = self.layers.len() - 1;
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = if i < last {
                layer.forward_fused(&x, Some(self.activation), None)?
            } else {
                layer.forward_fused(&x, None, residual)?
            };
        }
        Ok(x)
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = self.run(x, None)?;
        if self.sigmoid_output {
            candle_nn::ops::sigmoid(&x)
        } else {
            Ok(x)
        }
    }
}

/// Multi-head scaled dot-product attention, `softmax(q kᵀ / √d) v` per head, on
/// `q [B, Nq, C]`, `k [B, Nk, C]`, `v [B, Nk, Cv]` whose channels hold `num_heads` consecutive
/// head slices (the layout before PyTorch's `_separate_heads`). Returns `[B, Nq, Cv]` with the
/// heads recombined the same way. The inputs may be strided views (e.g. slices of one fused
/// projection) as long as the channel dimension is contiguous.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    num_heads: usize,
) -> Result<Tensor> {
    if cpu_kernels::applies_to(q) {
        cpu_kernels::attention(q, k, v, num_heads)
    } else {
        attention_with_candle_ops(q, k, v, num_heads)
    }
}

/// The device-generic form of `scaled_dot_product_attention`.
fn attention_with_candle_ops(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    num_heads: usize,
) -> Result<Tensor> {
    let (b, nq, c) = q.dims3()?;
    let (_, nk, cv) = v.dims3()?;
    if num_heads == 0 || c % num_heads != 0 || cv % num_heads != 0 {
        candle_core::bail!("attention: {num_heads} heads do not divide {c} / {cv} channels");
    }
    let (d, dv) = (c / num_heads, cv / num_heads);
    let split = |t: &Tensor, n: usize, width: usize| -> Result<Tensor> {
        t.reshape((b, n, num_heads, width))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * num_heads, n, width))
    };
    let q = (split(q, nq, d)? * (1.0 / (d as f64).sqrt()))?;
    let k = split(k, nk, d)?;
    let v = split(v, nk, dv)?;
    let weights = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
    weights
        .matmul(&v)?
        .reshape((b, num_heads, nq, dv))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((b, nq, cv))
}

/// Frequencies `temperature^(2·⌊i/2⌋/n)` for `i in 0..n`, computed in f32 exactly as the
/// reference does (`dim_t = temperature ** (2 * (dim_t // 2) / n)`). Shared by the 1-D and 2-D
/// sine encodings.
pub(crate) fn sine_frequencies(n: usize, temperature: f64) -> Vec<f32> {
    let temperature = temperature as f32;
    (0..n)
        .map(|i| {
            let half = (i / 2) as f32;
            temperature.powf(2.0 * half / n as f32)
        })
        .collect()
}

/// `get_1d_sine_pe`: for positions `pos` (any shape, f32) returns `pos.shape + [dim]` holding
/// `sin(pos / t_i)` in the first `dim/2` channels and `cos(pos / t_i)` in the last `dim/2`,
/// with `t_i = temperature^(2·⌊i/2⌋/(dim/2))`.
pub fn get_1d_sine_pe(pos: &Tensor, dim: usize, temperature: f64) -> Result<Tensor> {
    if !dim.is_multiple_of(2) {
        candle_core::bail!("1-D sine encoding needs an even dimension, got {dim}");
    }
    let half = dim / 2;
    let freqs = Tensor::from_vec(sine_frequencies(half, temperature), half, pos.device())?;
    let scaled = pos
        .to_dtype(DType::F32)?
        .unsqueeze(D::Minus1)?
        .broadcast_div(&freqs)?;
    Tensor::cat(&[scaled.sin()?, scaled.cos()?], D::Minus1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::test_support::max_abs_diff;
    use candle_core::Device;
    use std::collections::HashMap;

    fn var_builder(tensors: Vec<(&str, Tensor)>) -> VarBuilder<'static> {
        let map: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)
    }

    #[test]
    fn strided_convolution_matches_candle_in_both_channel_orders() {
        let dev = Device::Cpu;
        for (cin, cout, k, stride, padding) in [(3, 8, 7, 4, 3), (4, 16, 3, 2, 1), (1, 4, 2, 2, 0)]
        {
            let weight = Tensor::arange(0f32, (cout * cin * k * k) as f32, &dev)
                .unwrap()
                .affine(0.37, 0.1)
                .unwrap()
                .sin()
                .unwrap()
                .reshape((cout, cin, k, k))
                .unwrap();
            let bias = Tensor::arange(0f32, cout as f32, &dev)
                .unwrap()
                .cos()
                .unwrap();
            let conv = StridedConv2d::new(
                var_builder(vec![("weight", weight.clone()), ("bias", bias.clone())]),
                cin,
                cout,
                k,
                stride,
                padding,
            )
            .unwrap();
            let image = Tensor::arange(0f32, (2 * cin * 19 * 22) as f32, &dev)
                .unwrap()
                .reshape((2, cin, 19, 22))
                .unwrap()
                .cos()
                .unwrap();
            let want = image
                .conv2d(&weight, padding, stride, 1, 1)
                .unwrap()
                .broadcast_add(&bias.reshape((1, cout, 1, 1)).unwrap())
                .unwrap()
                .permute((0, 2, 3, 1))
                .unwrap();
            let first = conv.forward(&image, ChannelOrder::First).unwrap();
            let channels_last = image.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
            let last = conv.forward(&channels_last, ChannelOrder::Last).unwrap();
            assert_eq!(first.dims(), want.dims());
            assert!(max_abs_diff(&first, &want) < 1e-5, "{cin}->{cout} k{k}");
            assert!(
                max_abs_diff(&last, &want) < 1e-5,
                "{cin}->{cout} k{k} channels last"
            );
        }
        let conv_input = Tensor::zeros((1, 3, 2, 2), DType::F32, &dev).unwrap();
        let conv = StridedConv2d::new(
            var_builder(vec![
                (
                    "weight",
                    Tensor::zeros((8, 3, 7, 7), DType::F32, &dev).unwrap(),
                ),
                ("bias", Tensor::zeros(8, DType::F32, &dev).unwrap()),
            ]),
            3,
            8,
            7,
            4,
            0,
        )
        .unwrap();
        assert!(conv.forward(&conv_input, ChannelOrder::First).is_err());
    }

    #[test]
    fn linear_folds_leading_dimensions() {
        let dev = Device::Cpu;
        let w = Tensor::new(&[[1f32, 2., 3.], [-1., 0., 0.5]], &dev).unwrap();
        let b = Tensor::new(&[0.5f32, -2.], &dev).unwrap();
        let lin = Linear::new(var_builder(vec![("weight", w), ("bias", b)]), 3, 2).unwrap();
        let x = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((2, 2, 3))
            .unwrap();
        let y = lin.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, 2, 2]);
        // Row [3, 4, 5]: 3 + 8 + 15 + 0.5 = 26.5 and -3 + 2.5 - 2 = -2.5.
        let row: Vec<f32> = y.get(0).unwrap().get(1).unwrap().to_vec1().unwrap();
        assert_eq!(row, vec![26.5, -2.5]);
        assert!(
            lin.forward(&Tensor::zeros((2, 4), DType::F32, &dev).unwrap())
                .is_err()
        );
    }

    #[test]
    fn fused_residual_and_activation_match_separate_operations() {
        let dev = Device::Cpu;
        let w: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) / 5.0).collect();
        let vb = var_builder(vec![
            ("weight", Tensor::from_vec(w, (5, 3), &dev).unwrap()),
            (
                "bias",
                Tensor::new(&[0.1f32, -0.2, 0.3, 0.0, -0.5], &dev).unwrap(),
            ),
        ]);
        let lin = Linear::new(vb, 3, 5).unwrap();
        let x = Tensor::arange(0f32, 12., &dev)
            .unwrap()
            .reshape((2, 2, 3))
            .unwrap();
        let x = (x / 4.0).unwrap();
        let res = Tensor::arange(0f32, 20., &dev)
            .unwrap()
            .reshape((2, 2, 5))
            .unwrap();
        let plain = lin.forward(&x).unwrap();
        let fused = lin.forward_fused(&x, None, Some(&res)).unwrap();
        assert!(max_abs_diff(&fused, &(&plain + &res).unwrap()) < 1e-6);
        let fused = lin
            .forward_fused(&x, Some(Activation::Gelu), Some(&res))
            .unwrap();
        let want = (plain.gelu_erf().unwrap() + &res).unwrap();
        assert!(max_abs_diff(&fused, &want) < 1e-6);
        let bad = Tensor::zeros((2, 5), DType::F32, &dev).unwrap();
        assert!(lin.forward_fused(&x, None, Some(&bad)).is_err());
    }

    #[test]
    fn layer_norm_is_exact_for_large_means() {
        // Mean 1000 with spread 1e-2: E[x²]−mean² in f32 would lose everything.
        let dev = Device::Cpu;
        let values: Vec<f32> = (0..8).map(|i| 1000.0 + 0.01 * i as f32).collect();
        let x = Tensor::from_vec(values.clone(), (1, 8), &dev).unwrap();
        let ln = LayerNorm::new(
            var_builder(vec![
                ("weight", Tensor::ones(8, DType::F32, &dev).unwrap()),
                ("bias", Tensor::zeros(8, DType::F32, &dev).unwrap()),
            ]),
            8,
            1e-6,
        )
        .unwrap();
        let y: Vec<f32> = ln
            .forward(&x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let mean = values.iter().map(|&v| v as f64).sum::<f64>() / 8.0;
        let var = values
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / 8.0;
        for (got, &v) in y.iter().zip(&values) {
            let want = ((v as f64 - mean) / (var + 1e-6).sqrt()) as f32;
            assert!((got - want).abs() < 1e-4, "{got} vs {want}");
        }
        // The device-generic path agrees where f32 sums suffice.
        let moderate = (x.affine(1.0, -990.0).unwrap() * 10.0).unwrap();
        let generic = normalize_over(&moderate, 1, 1e-6).unwrap();
        assert!(max_abs_diff(&generic, &ln.forward(&moderate).unwrap()) < 1e-4);
    }

    #[test]
    fn layer_norm_with_activation_equals_the_two_steps() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 40., &dev)
            .unwrap()
            .sin()
            .unwrap()
            .reshape((2, 4, 5))
            .unwrap();
        let ln = LayerNorm::new(
            var_builder(vec![
                (
                    "weight",
                    Tensor::new(&[1f32, 2., 3., 0.5, -1.], &dev).unwrap(),
                ),
                (
                    "bias",
                    Tensor::new(&[0f32, 1., 0., -0.5, 0.2], &dev).unwrap(),
                ),
            ]),
            5,
            1e-6,
        )
        .unwrap();
        let fused = ln.forward_activated(&x, Activation::Gelu).unwrap();
        let two_steps = ln.forward(&x).unwrap().gelu_erf().unwrap();
        assert!(max_abs_diff(&fused, &two_steps) < 1e-6);
    }

    #[test]
    fn mlp_applies_activation_between_layers_and_sigmoid_at_the_end() {
        let dev = Device::Cpu;
        let eye = Tensor::new(&[[1f32, 0.], [0., 1.]], &dev).unwrap();
        let zero = Tensor::zeros(2, DType::F32, &dev).unwrap();
        let vb = var_builder(vec![
            ("layers.0.weight", eye.clone()),
            ("layers.0.bias", zero.clone()),
            ("layers.1.weight", eye),
            ("layers.1.bias", zero),
        ]);
        let x = Tensor::new(&[[-1f32, 2.]], &dev).unwrap();
        let relu = Mlp::new(vb.clone(), 2, 2, 2, 2, Activation::Relu, false).unwrap();
        let y: Vec<Vec<f32>> = relu.forward(&x).unwrap().to_vec2().unwrap();
        assert_eq!(y, vec![vec![0.0, 2.0]]);
        let gelu = Mlp::new(vb, 2, 2, 2, 2, Activation::Gelu, true).unwrap();
        let y: Vec<Vec<f32>> = gelu.forward(&x).unwrap().to_vec2().unwrap();
        // gelu(-1) = -0.158655 (erf form), gelu(2) = 1.954500; then the sigmoid.
        let want = [-0.158_655_25f32, 1.954_499_8].map(|v| 1.0 / (1.0 + (-v).exp()));
        assert!((y[0][0] - want[0]).abs() < 1e-6 && (y[0][1] - want[1]).abs() < 1e-6);
    }

    #[test]
    fn attention_kernel_matches_candle_ops_on_strided_views() {
        let dev = Device::Cpu;
        // A fused projection [B, N, 3C] sliced into q, k, v views, 2 heads of 4 channels.
        let (b, n, c) = (3, 5, 8);
        let values: Vec<f32> = (0..b * n * 3 * c)
            .map(|i| ((i * 7919 % 113) as f32 - 56.0) / 40.0)
            .collect();
        let qkv = Tensor::from_vec(values, (b, n, 3 * c), &dev).unwrap();
        let (q, k, v) = (
            qkv.narrow(2, 0, c).unwrap(),
            qkv.narrow(2, c, c).unwrap(),
            qkv.narrow(2, 2 * c, c).unwrap(),
        );
        let fast = scaled_dot_product_attention(&q, &k, &v, 2).unwrap();
        let generic = attention_with_candle_ops(&q, &k, &v, 2).unwrap();
        assert_eq!(fast.dims(), &[b, n, c]);
        assert!(max_abs_diff(&fast, &generic) < 1e-5);
        // Fewer queries than keys (pooled queries), one big batch entry (threaded products).
        let q1 = q.narrow(1, 0, 2).unwrap().narrow(0, 0, 1).unwrap();
        let (k1, v1) = (k.narrow(0, 0, 1).unwrap(), v.narrow(0, 0, 1).unwrap());
        let fast = scaled_dot_product_attention(&q1, &k1, &v1, 1).unwrap();
        let generic = attention_with_candle_ops(&q1, &k1, &v1, 1).unwrap();
        assert!(max_abs_diff(&fast, &generic) < 1e-5);
        assert!(scaled_dot_product_attention(&q, &k, &v, 3).is_err());
    }

    #[test]
    fn one_dimensional_sine_encoding_matches_formula() {
        let dev = Device::Cpu;
        let pos = Tensor::new(&[0f32, 0.5, 3.0], &dev).unwrap();
        let pe: Vec<Vec<f32>> = get_1d_sine_pe(&pos, 8, 10000.0).unwrap().to_vec2().unwrap();
        // dim 8 -> 4 frequencies 1, 1, 100, 100 (10000^(0/4), 10000^(2/4)).
        let t = [1f32, 1., 100., 100.];
        for (row, &p) in pe.iter().zip(&[0f32, 0.5, 3.0]) {
            for i in 0..4 {
                assert!((row[i] - (p / t[i]).sin()).abs() < 1e-6);
                assert!((row[4 + i] - (p / t[i]).cos()).abs() < 1e-6);
            }
        }
        assert!(get_1d_sine_pe(&pos, 7, 10000.0).is_err());
    }
}
