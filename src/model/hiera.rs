//! The Hiera trunk of the image encoder (reference: `sam2/modeling/backbones/hieradet.py` and
//! `backbones/utils.py`): a 7x7 stride-4 patch embedding, a bicubically upsampled background
//! position embedding plus a tiled per-window embedding, and multi-scale blocks with windowed
//! or global attention that halve the resolution (q-pooling) at each stage start.
//!
//! Tensors stay channels-last (`[B, H, W, C]`) throughout, as in the reference blocks. All the
//! windows of a block are stacked along the batch dimension, with heads folded in, so each
//! block runs one batched attention.

use crate::model::config::{HieraBlockSpec, HieraConfig};
use crate::model::cpu_kernels;
use crate::model::sam2_utils::{
    Activation, ChannelOrder, LayerNorm, Linear, Mlp, StridedConv2d, scaled_dot_product_attention,
};
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::sync::Mutex;

/// LayerNorm eps of the Hiera blocks.
const NORM_EPS: f64 = 1e-6;
/// Coefficient of PyTorch's bicubic convolution kernel.
const BICUBIC_A: f32 = -0.75;

/// Max-pools the row-major `h x w` token grid of each entry of `x [G, h·w, C]` (possibly a
/// strided view) over non-overlapping `sy x sx` cells, floor mode like
/// `nn.MaxPool2d(kernel=stride, ceil_mode=False)`: `[G, h/sy, w/sx, C]`.
fn max_pool_grid(x: &Tensor, grid: (usize, usize), stride: [usize; 2]) -> Result<Tensor> {
    if cpu_kernels::applies_to(x) {
        cpu_kernels::max_pool_grid(x, grid, stride)
    } else {
        max_pool_grid_with_candle_ops(x, grid, stride)
    }
}

fn max_pool_grid_with_candle_ops(
    x: &Tensor,
    (h, w): (usize, usize),
    [sy, sx]: [usize; 2],
) -> Result<Tensor> {
    let (g, _, c) = x.dims3()?;
    let (ho, wo) = (h / sy, w / sx);
    x.reshape((g, h, w, c))?
        .narrow(1, 0, ho * sy)?
        .narrow(2, 0, wo * sx)?
        .reshape((g, ho, sy, wo, sx, c))?
        .max(4)?
        .max(2)
}

/// Splits `[B, H, W, C]` into `[B·nh·nw, s, s, C]` windows after padding H and W up to
/// multiples of `s` with the per-channel values `pad [C]` (`window_partition` pads with zeros;
/// partitioning a linear layer's output pads with its bias, its value for a zero input).
fn window_partition(x: &Tensor, s: usize, pad: &Tensor) -> Result<Tensor> {
    if cpu_kernels::applies_to(x) {
        cpu_kernels::window_partition(x, s, pad)
    } else {
        window_partition_with_candle_ops(x, s, pad)
    }
}

fn window_partition_with_candle_ops(x: &Tensor, s: usize, pad: &Tensor) -> Result<Tensor> {
    let (b, h, w, c) = x.dims4()?;
    let (hp, wp) = (h.div_ceil(s) * s, w.div_ceil(s) * s);
    x.broadcast_sub(pad)?
        .pad_with_zeros(1, 0, hp - h)?
        .pad_with_zeros(2, 0, wp - w)?
        .reshape((b, hp / s, s, wp / s, s, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .contiguous()?
        .reshape((b * (hp / s) * (wp / s), s, s, c))?
        .broadcast_add(pad)
}

/// Inverse of `window_partition` (`window_unpartition`): `[B·nh·nw, s, s, C]` windows back to
/// a `[B, h, w, C]` grid, dropping the padding.
fn window_unpartition(windows: &Tensor, grid: (usize, usize, usize)) -> Result<Tensor> {
    if cpu_kernels::applies_to(windows) {
        cpu_kernels::window_unpartition(windows, grid)
    } else {
        window_unpartition_with_candle_ops(windows, grid)
    }
}

fn window_unpartition_with_candle_ops(
    windows: &Tensor,
    (b, h, w): (usize, usize, usize),
) -> Result<Tensor> {
    let (_, s, _, c) = windows.dims4()?;
    let (nh, nw) = (h.div_ceil(s), w.div_ceil(s));
    windows
        .reshape((b, nh, nw, s, s, c))?
        .permute((0, 1, 3, 2, 4, 5))?
        .reshape((b, nh * s, nw * s, c))?
        .narrow(1, 0, h)?
        .narrow(2, 0, w)?
        .contiguous()
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

    /// The attention proper on projected `qkv [G, H, W, 3·dim_out]` grids (windows or whole
    /// images): `[G, H', W', dim_out]`, before the output projection.
    fn attend(&self, qkv: &Tensor) -> Result<Tensor> {
        let (g, h, w, _) = qkv.dims4()?;
        let c = self.dim_out;
        // q, k and v are channel slices of the fused projection (heads consecutive).
        let qkv = qkv.reshape((g, h * w, 3 * c))?;
        let k = qkv.narrow(2, c, c)?;
        let v = qkv.narrow(2, 2 * c, c)?;
        let mut q = qkv.narrow(2, 0, c)?;
        let (mut ho, mut wo) = (h, w);
        if let Some(stride) = self.q_stride {
            // Max-pooling each channel over the grid pools every head's queries.
            let pooled = max_pool_grid(&q, (h, w), stride)?;
            (ho, wo) = (pooled.dim(1)?, pooled.dim(2)?);
            q = pooled.reshape((g, ho * wo, c))?;
        }
        scaled_dot_product_attention(&q, &k, &v, self.num_heads)?.reshape((g, ho, wo, c))
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
    ///
    /// The reference partitions the normalised tokens into zero-padded windows and projects
    /// them; here the projection runs on the real tokens only and its output is partitioned
    /// with the bias as padding (the projection of a zero token). Likewise the output
    /// projection runs after the windows are reassembled and cropped. Both are per-token maps,
    /// so the result is the same without the work on padding.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, h, w, _) = x.dims4()?;
        let normed = self.norm1.forward(x)?;
        let shortcut = match &self.proj {
            Some(proj) => {
                let projected = proj.forward(&normed)?;
                match self.spec.q_stride {
                    Some(stride) => {
                        let tokens = projected.reshape((b, h * w, self.spec.dim_out))?;
                        max_pool_grid(&tokens, (h, w), stride)?
                    }
                    None => projected,
                }
            }
            None => x.clone(),
        };
        let qkv = self.attn.qkv.forward(&normed)?;
        let window = self.spec.window_size;
        let attended = if window > 0 {
            // Windows become the batch; after q-pooling they come back smaller, tiling the
            // pooled grid of the shortcut.
            let windows = window_partition(&qkv, window, self.attn.qkv.bias())?;
            let (_, ho, wo, _) = shortcut.dims4()?;
            window_unpartition(&self.attn.attend(&windows)?, (b, ho, wo))?
        } else {
            self.attn.attend(&qkv)?
        };
        let x = self
            .attn
            .proj
            .forward_fused(&attended, None, Some(&shortcut))?;
        self.mlp.forward_with_residual(&self.norm2.forward(&x)?, &x)
    }
}

/// `PatchEmbed`: a 7x7 stride-4 convolution (padding 3) from RGB to `embed_dim` channels,
/// returned channels-last.
#[derive(Debug, Clone)]
struct PatchEmbed {
    proj: StridedConv2d,
}

impl PatchEmbed {
    const KERNEL: usize = 7;
    const STRIDE: usize = 4;
    const PADDING: usize = 3;

    fn new(vb: VarBuilder, out: usize) -> Result<Self> {
        let proj = StridedConv2d::new(vb, 3, out, Self::KERNEL, Self::STRIDE, Self::PADDING)?;
        Ok(Self { proj })
    }

    /// `[B, 3, H, W]` → `[B, H/4, W/4, C]`.
    fn forward(&self, image: &Tensor) -> Result<Tensor> {
        self.proj.forward(image, ChannelOrder::First)
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
    patch_embed: PatchEmbed,
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
        let patch_embed = PatchEmbed::new(vb.pp("patch_embed").pp("proj"), c)?;
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
        let x = self.patch_embed.forward(image)?;
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
    use crate::model::test_support::max_abs_diff;
    use crate::model::checkpoint::Checkpoint;
    use crate::model::config::Sam2Config;
    use candle_core::{DType, Device};

    const MINI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

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
    fn window_kernels_match_candle_ops_with_padding() {
        let dev = Device::Cpu;
        let x = Tensor::arange(0f32, 2. * 5. * 7. * 3., &dev)
            .unwrap()
            .reshape((2, 5, 7, 3))
            .unwrap();
        let pad = Tensor::new(&[0.5f32, -1.0, 2.0], &dev).unwrap();
        let windows = window_partition(&x, 4, &pad).unwrap();
        assert_eq!(windows.dims(), &[8, 4, 4, 3]);
        let generic = window_partition_with_candle_ops(&x, 4, &pad).unwrap();
        assert_eq!(max_abs_diff(&windows, &generic), 0.0);
        // Window 1 of image 0 starts at column 4 of row 0; the padding holds `pad`.
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
        let padded: Vec<f32> = windows
            .get(3)
            .unwrap()
            .get(3)
            .unwrap()
            .get(3)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(padded, vec![0.5, -1.0, 2.0]);
        let back = window_unpartition(&windows, (2, 5, 7)).unwrap();
        assert_eq!(max_abs_diff(&back, &x), 0.0);
        let generic = window_unpartition_with_candle_ops(&windows, (2, 5, 7)).unwrap();
        assert_eq!(max_abs_diff(&back, &generic), 0.0);
        assert!(window_unpartition(&windows, (2, 9, 7)).is_err());
    }

    #[test]
    fn max_pool_takes_cell_maxima_floors_odd_sizes_and_reads_strided_views() {
        let dev = Device::Cpu;
        let x = Tensor::new(&[3f32, 1., 4., 1., 5., 9., 2., 6., 5., 3., 5., 8.], &dev)
            .unwrap()
            .reshape((1, 12, 1))
            .unwrap();
        let pooled = max_pool_grid(&x, (3, 4), [2, 2]).unwrap();
        let v: Vec<f32> = pooled.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(pooled.dims(), &[1, 1, 2, 1]);
        assert_eq!(v, vec![9., 6.]);
        // Channel slice of a wider tensor, several grids.
        let wide = Tensor::arange(0f32, 3. * 16. * 5., &dev)
            .unwrap()
            .reshape((3, 16, 5))
            .unwrap();
        let wide = wide.sin().unwrap();
        let view = wide.narrow(2, 1, 2).unwrap();
        let fast = max_pool_grid(&view, (4, 4), [2, 2]).unwrap();
        let generic = max_pool_grid_with_candle_ops(&view, (4, 4), [2, 2]).unwrap();
        assert_eq!(max_abs_diff(&fast, &generic), 0.0);
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
        let patches = trunk.patch_embed.forward(&image).unwrap();
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
