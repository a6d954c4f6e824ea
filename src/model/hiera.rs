//! The Hiera trunk of the image encoder (reference: `sam2/modeling/backbones/hieradet.py` and
//! `backbones/utils.py`): a 7x7 stride-4 patch embedding, a bicubically upsampled background
//! position embedding plus a tiled per-window embedding, and multi-scale blocks with windowed
//! or global attention that halve the resolution (q-pooling) at each stage start.
//!
//! Tensors stay channels-last (`[B, H, W, C]`) throughout, as in the reference blocks. All the
//! windows of a block are stacked along the batch dimension, with heads folded in, so each
//! block runs one batched attention.

use crate::model::config::{HieraBlockSpec, HieraConfig};
use crate::model::sam2_utils::{Activation, LayerNorm, Linear, Mlp, scaled_dot_product_attention};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::sync::Mutex;

/// LayerNorm eps of the Hiera blocks.
const NORM_EPS: f64 = 1e-6;
/// Coefficient of PyTorch's bicubic convolution kernel.
const BICUBIC_A: f32 = -0.75;

/// Max-pools `[B, H, W, C]` over non-overlapping `sy x sx` cells (floor mode, like
/// `nn.MaxPool2d(kernel=stride, ceil_mode=False)`).
fn max_pool_channels_last(x: &Tensor, [sy, sx]: [usize; 2]) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (ho, wo) = (h / sy, w / sx);
    let x = if ho * sy != h || wo * sx != w {
        x.narrow(1, 0, ho * sy)?.narrow(2, 0, wo * sx)?
    } else {
        x.clone()
    };
    x.reshape((b, ho, sy, wo, sx, c))?.max(4)?.max(2)
}

/// Splits `[B, H, W, C]` into `[B·nh·nw, s, s, C]` windows after zero-padding H and W up to
/// multiples of `s`; returns the padded size too.
fn window_partition(x: &Tensor, s: usize) -> Result<(Tensor, (usize, usize))> {
    let (b, h, w, c) = x.dims4()?;
    let (hp, wp) = (h.div_ceil(s) * s, w.div_ceil(s) * s);
    let x = if hp > h || wp > w {
        x.pad_with_zeros(1, 0, hp - h)?
            .pad_with_zeros(2, 0, wp - w)?
    } else {
        x.clone()
    };
    let windows = x
        .reshape((b, hp / s, s, wp / s, s, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (hp / s) * (wp / s), s, s, c))?;
    Ok((windows, (hp, wp)))
}

/// Inverse of `window_partition`: `[B·nh·nw, s, s, C]` back to `[B, H, W, C]`, dropping the
/// padding of the `(hp, wp)` padded grid.
fn window_unpartition(
    windows: &Tensor,
    s: usize,
    (hp, wp): (usize, usize),
    (h, w): (usize, usize),
) -> Result<Tensor> {
    let (n, _, _, c) = windows.dims4()?;
    let b = n / ((hp / s) * (wp / s));
    let x = windows
        .reshape((b, hp / s, wp / s, s, s, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b, hp, wp, c))?;
    if hp > h || wp > w {
        x.narrow(1, 0, h)?.narrow(2, 0, w)?.contiguous()
    } else {
        Ok(x)
    }
}

/// `MultiScaleAttention`: multi-head self-attention over each `[s, s]` token grid of a batch
/// of grids, with optional max-pooling of the queries (which halves the output grid).
#[derive(Debug, Clone)]
struct MultiScaleAttention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    dim_out: usize,
    q_stride: Option<[usize; 2]>,
}

impl MultiScaleAttention {
    fn new(vb: VarBuilder, spec: &HieraBlockSpec) -> Result<Self> {
        Ok(Self {
            qkv: Linear::new(vb.pp("qkv"), spec.dim, 3 * spec.dim_out)?,
            proj: Linear::new(vb.pp("proj"), spec.dim_out, spec.dim_out)?,
            num_heads: spec.num_heads,
            dim_out: spec.dim_out,
            q_stride: spec.q_stride,
        })
    }

    /// `x`: `[G, H, W, dim]` grids (windows or whole images) → `[G, H', W', dim_out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (g, h, w, _) = x.dims4()?;
        let c = self.dim_out;
        // One fused projection; q, k and v are channel slices of it (heads consecutive).
        let qkv = self.qkv.forward(x)?.reshape((g, h * w, 3 * c))?;
        let k = qkv.narrow(2, c, c)?;
        let v = qkv.narrow(2, 2 * c, c)?;
        let mut q = qkv.narrow(2, 0, c)?;
        let (mut ho, mut wo) = (h, w);
        if let Some(stride) = self.q_stride {
            // Max-pooling each channel over the grid pools every head's queries.
            let pooled = max_pool_channels_last(&q.reshape((g, h, w, c))?, stride)?;
            (ho, wo) = (pooled.dim(1)?, pooled.dim(2)?);
            q = pooled.reshape((g, ho * wo, c))?;
        }
        let out = scaled_dot_product_attention(&q, &k, &v, self.num_heads)?;
        self.proj.forward(&out.reshape((g, ho, wo, c))?)
    }
}

/// `MultiScaleBlock`: pre-norm (windowed) attention with a residual, then a GELU MLP with a
/// residual; at a stage start the residual is projected to the new width and pooled.
#[derive(Debug, Clone)]
struct MultiScaleBlock {
    norm1: LayerNorm,
    attn: MultiScaleAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    /// Residual projection when the width changes.
    proj: Option<Linear>,
    spec: HieraBlockSpec,
}

impl MultiScaleBlock {
    fn new(vb: VarBuilder, spec: HieraBlockSpec) -> Result<Self> {
        let proj = if spec.dim != spec.dim_out {
            Some(Linear::new(vb.pp("proj"), spec.dim, spec.dim_out)?)
        } else {
            None
        };
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), spec.dim, NORM_EPS)?,
            attn: MultiScaleAttention::new(vb.pp("attn"), &spec)?,
            norm2: LayerNorm::new(vb.pp("norm2"), spec.dim_out, NORM_EPS)?,
            mlp: Mlp::new(
                vb.pp("mlp"),
                spec.dim_out,
                4 * spec.dim_out,
                spec.dim_out,
                2,
                Activation::Gelu,
                false,
            )?,
            proj,
            spec,
        })
    }

    /// `[B, H, W, dim]` → `[B, H', W', dim_out]`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let normed = self.norm1.forward(x)?;
        let shortcut = match &self.proj {
            Some(proj) => {
                let projected = proj.forward(&normed)?;
                match self.spec.q_stride {
                    Some(stride) => max_pool_channels_last(&projected, stride)?,
                    None => projected,
                }
            }
            None => x.clone(),
        };
        let window = self.spec.window_size;
        let attended = if window > 0 {
            let (windows, _) = window_partition(&normed, window)?;
            let out = self.attn.forward(&windows)?;
            // After q-pooling the windows shrink by the stride; the padded grid is recomputed
            // from the pooled size like the reference does.
            let out_window = match self.spec.q_stride {
                Some([sy, _]) => window / sy,
                None => window,
            };
            let (h, w) = (shortcut.dim(1)?, shortcut.dim(2)?);
            let padded = (
                h.div_ceil(out_window) * out_window,
                w.div_ceil(out_window) * out_window,
            );
            window_unpartition(&out, out_window, padded, (h, w))?
        } else {
            self.attn.forward(&normed)?
        };
        let x = (shortcut + attended)?;
        let mlp = self.mlp.forward(&self.norm2.forward(&x)?)?;
        x + mlp
    }
}

/// Bicubic interpolation matrix `[out, in]` reproducing `F.interpolate(mode="bicubic",
/// align_corners=False)` along one axis (PyTorch's kernel with a = -0.75, edge-clamped taps).
fn bicubic_matrix(input: usize, output: usize) -> Vec<f32> {
    let cubic_near = |x: f32| ((BICUBIC_A + 2.0) * x - (BICUBIC_A + 3.0)) * x * x + 1.0;
    let cubic_far =
        |x: f32| ((BICUBIC_A * x - 5.0 * BICUBIC_A) * x + 8.0 * BICUBIC_A) * x - 4.0 * BICUBIC_A;
    let scale = input as f32 / output as f32;
    let mut m = vec![0f32; output * input];
    for o in 0..output {
        let src = scale * (o as f32 + 0.5) - 0.5;
        let base = src.floor();
        let t = src - base;
        let taps = [
            cubic_far(t + 1.0),
            cubic_near(t),
            cubic_near(1.0 - t),
            cubic_far(2.0 - t),
        ];
        for (k, weight) in taps.into_iter().enumerate() {
            let idx = (base as i64 - 1 + k as i64).clamp(0, input as i64 - 1) as usize;
            m[o * input + idx] += weight;
        }
    }
    m
}

/// The Hiera trunk.
#[derive(Debug)]
pub struct Hiera {
    patch_embed: candle_nn::Conv2d,
    /// Background position embedding `[C, bh, bw]`.
    pos_embed: Tensor,
    /// Per-window position embedding `[1, C, wh, ww]`.
    pos_embed_window: Tensor,
    blocks: Vec<MultiScaleBlock>,
    stage_ends: Vec<usize>,
    return_interm_layers: bool,
    /// Full position embedding per token grid, `[1, H, W, C]`.
    pos_cache: Mutex<HashMap<(usize, usize), Tensor>>,
}

impl Hiera {
    /// Builds the trunk from the `image_encoder.trunk` weights.
    pub fn new(vb: VarBuilder, config: &HieraConfig) -> Result<Self> {
        let c = config.embed_dim;
        let patch_cfg = candle_nn::Conv2dConfig {
            padding: 3,
            stride: 4,
            ..Default::default()
        };
        let patch_embed = candle_nn::conv2d(3, c, 7, patch_cfg, vb.pp("patch_embed").pp("proj"))?;
        let [bh, bw] = config.window_pos_embed_bkg_spatial_size;
        let pos_embed = vb.get((1, c, bh, bw), "pos_embed")?.reshape((c, bh, bw))?;
        let w0 = config.window_spec.first().copied().unwrap_or(0);
        let pos_embed_window = vb.get((1, c, w0, w0), "pos_embed_window")?;
        let blocks_vb = vb.pp("blocks");
        let blocks = config
            .block_specs()
            .into_iter()
            .enumerate()
            .map(|(i, spec)| MultiScaleBlock::new(blocks_vb.pp(i), spec))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embed,
            pos_embed,
            pos_embed_window,
            blocks,
            stage_ends: config.stage_ends(),
            return_interm_layers: config.return_interm_layers,
            pos_cache: Mutex::new(HashMap::new()),
        })
    }

    /// The position embedding of an `h x w` token grid, `[1, h, w, C]` (`_get_pos_embed`).
    fn position_embedding(&self, h: usize, w: usize) -> Result<Tensor> {
        let mut cache = self
            .pos_cache
            .lock()
            .map_err(|_| candle_core::Error::Msg("Hiera position cache poisoned".into()))?;
        if let Some(pe) = cache.get(&(h, w)) {
            return Ok(pe.clone());
        }
        let (c, bh, bw) = self.pos_embed.dims3()?;
        let (_, _, wh, ww) = self.pos_embed_window.dims4()?;
        if !h.is_multiple_of(wh) || !w.is_multiple_of(ww) {
            candle_core::bail!(
                "token grid {h}x{w} is not a multiple of the {wh}x{ww} window position embedding"
            );
        }
        let device = self.pos_embed.device();
        let rows = Tensor::from_vec(bicubic_matrix(bh, h), (h, bh), device)?;
        let cols_t = Tensor::from_vec(bicubic_matrix(bw, w), (w, bw), device)?.t()?;
        // Interpolate along x, then along y: [C, bh, w] then [C, h, w].
        let along_x = self.pos_embed.broadcast_matmul(&cols_t)?;
        let upsampled = rows.broadcast_left(c)?.matmul(&along_x)?;
        let tiled = self.pos_embed_window.repeat((1, 1, h / wh, w / ww))?;
        let pe = upsampled
            .unsqueeze(0)?
            .add(&tiled)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        cache.insert((h, w), pe.clone());
        Ok(pe)
    }

    /// Patch embedding plus position embedding: `[B, 3, S, S]` → `[B, S/4, S/4, C]`.
    fn embed(&self, image: &Tensor) -> Result<Tensor> {
        let x = self
            .patch_embed
            .forward(image)?
            .permute((0, 2, 3, 1))?
            .contiguous()?;
        let (_, h, w, _) = x.dims4()?;
        x.broadcast_add(&self.position_embedding(h, w)?)
    }

    /// Runs the trunk on `[B, 3, S, S]` images. Returns the features at the end of each stage
    /// (or only the last with `return_interm_layers: false`), highest resolution first, in
    /// channels-last layout `[B, H, W, C]` (the reference returns them permuted to BCHW).
    pub fn forward(&self, image: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.embed(image)?;
        let last = self.blocks.len() - 1;
        let mut outputs = Vec::with_capacity(self.stage_ends.len());
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x)?;
            if i == last || (self.return_interm_layers && self.stage_ends.contains(&i)) {
                outputs.push(x.clone());
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::checkpoint::Checkpoint;
    use crate::model::config::Sam2Config;
    use candle_core::{DType, Device};

    const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn bicubic_matrix_rows_sum_to_one_and_match_identity_at_equal_size() {
        let m = bicubic_matrix(7, 32);
        for row in m.chunks(7) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        let same = bicubic_matrix(5, 5);
        for (i, row) in same.chunks(5).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert!((v - if i == j { 1.0 } else { 0.0 }).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn window_partition_round_trips_with_padding() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2. * 5. * 7. * 3., &dev)
            .unwrap()
            .reshape((2, 5, 7, 3))
            .unwrap();
        let (windows, padded) = window_partition(&x, 4).unwrap();
        assert_eq!(padded, (8, 8));
        assert_eq!(windows.dims(), &[8, 4, 4, 3]);
        // Window 1 of image 0 starts at column 4 of row 0; padding is zero.
        let w1: Vec<f32> = windows
            .get(1)
            .unwrap()
            .get(0)
            .unwrap()
            .get(0)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(w1, vec![12., 13., 14.]);
        let pad: Vec<f32> = windows
            .get(3)
            .unwrap()
            .get(3)
            .unwrap()
            .get(3)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(pad, vec![0., 0., 0.]);
        let back = window_unpartition(&windows, 4, padded, (5, 7)).unwrap();
        assert_eq!(max_abs_diff(&back, &x), 0.0);
    }

    #[test]
    fn max_pool_takes_cell_maxima_and_floors_odd_sizes() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[3f32, 1., 4., 1., 5., 9., 2., 6., 5., 3., 5., 8.], &dev)
            .unwrap()
            .reshape((1, 3, 4, 1))
            .unwrap();
        let pooled = max_pool_channels_last(&x, [2, 2]).unwrap();
        let v: Vec<f32> = pooled.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(pooled.dims(), &[1, 1, 2, 1]);
        assert_eq!(v, vec![9., 6.]);
    }

    #[test]
    fn trunk_matches_reference_tensors() {
        let cfg = Sam2Config::from_file(format!("{MINI}/config.yaml")).unwrap();
        let ckpt = Checkpoint::open(format!("{MINI}/model.safetensors")).unwrap();
        let dev = Device::Cpu;
        let vb = ckpt.var_builder(&dev).pp("image_encoder").pp("trunk");
        let trunk = Hiera::new(vb, &cfg.model.image_encoder.trunk).unwrap();
        ckpt.finish_under("image_encoder.trunk").unwrap();
        let input =
            candle_core::safetensors::load(format!("{MINI}/00_input.safetensors"), &dev).unwrap();
        let want =
            candle_core::safetensors::load(format!("{MINI}/01_image_encoder.safetensors"), &dev)
                .unwrap();
        let image = input["model_input"].get(4).unwrap().unsqueeze(0).unwrap();
        let mut report = Vec::new();
        let mut check = |name: &str, got: &Tensor| {
            let err = max_abs_diff(got, &want[name]);
            report.push(format!("{name}: {err:.2e}"));
            assert!(err < 1e-4, "{name}: max abs error {err}");
        };
        let patches = trunk
            .patch_embed
            .forward(&image)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap();
        check("trunk.patch_embed", &patches);
        check(
            "trunk.pos_embed",
            &trunk.position_embedding(32, 32).unwrap(),
        );
        let mut x = trunk.embed(&image).unwrap();
        for (i, block) in trunk.blocks.iter().enumerate() {
            x = block.forward(&x).unwrap();
            check(&format!("trunk.block{i}"), &x);
        }
        let stages = trunk.forward(&image).unwrap();
        assert_eq!(stages.len(), 4);
        for (i, stage) in stages.iter().enumerate() {
            check(
                &format!("trunk.stage{i}"),
                &stage.permute((0, 3, 1, 2)).unwrap(),
            );
        }
        println!("{}", report.join("\n"));
        assert_eq!(x.dtype(), DType::F32);
    }
}
