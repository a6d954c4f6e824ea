//! Position encodings (reference: `sam2/modeling/position_encoding.py`):
//!
//! * `PositionEmbeddingSine`: the normalised 2-D sine/cosine grid encoding used by the FPN neck
//!   and the memory encoder, cached per grid size;
//! * `PositionEmbeddingRandom`: the prompt encoder's random-Fourier encoding (a learned-free
//!   Gaussian matrix stored in the checkpoint);
//! * `AxialRope`: the 2-D axial rotary encoding of memory attention (`compute_axial_cis` +
//!   `apply_rotary_enc`), with complex numbers held as real cos/sin tables.
//!
//! Constant tables are computed on the host in f32 with the same operation order as the
//! reference, then moved to the device.

use crate::model::config::PositionEmbeddingSineConfig;
use crate::model::cpu_kernels;
use crate::model::sam2_utils::sine_frequencies;
use candle_core::{D, DType, Device, Result, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::f32::consts::PI;
use std::sync::Mutex;

/// The 2-D sine encoding: `num_pos_feats/2` channels encode y, then as many encode x; within
/// each half, even channels are `sin(p / t_i)` and odd channels `cos(p / t_i)`.
#[derive(Debug)]
pub struct PositionEmbeddingSine {
    /// Channels per axis (half the configured `num_pos_feats`).
    feats_per_axis: usize,
    temperature: f64,
    normalize: bool,
    scale: f32,
    cache: Mutex<HashMap<(usize, usize), Tensor>>,
}

impl PositionEmbeddingSine {
    pub fn new(config: &PositionEmbeddingSineConfig) -> Result<Self> {
        if config.num_pos_feats == 0 || !config.num_pos_feats.is_multiple_of(2) {
            candle_core::bail!(
                "sine position encoding needs an even channel count, got {}",
                config.num_pos_feats
            );
        }
        Ok(Self {
            feats_per_axis: config.num_pos_feats / 2,
            temperature: config.temperature,
            normalize: config.normalize,
            scale: config.scale.map(|s| s as f32).unwrap_or(2.0 * PI),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// Total channels of the encoding.
    pub fn channels(&self) -> usize {
        2 * self.feats_per_axis
    }

    /// The encoding of an `h x w` grid, `[1, C, h, w]`, on `device`.
    pub fn grid(&self, h: usize, w: usize, device: &Device) -> Result<Tensor> {
        let mut cache = self
            .cache
            .lock()
            .map_err(|_| candle_core::Error::Msg("position encoding cache poisoned".into()))?;
        if let Some(pe) = cache.get(&(h, w)) {
            return pe.to_device(device);
        }
        let pe = Tensor::from_vec(self.grid_values(h, w), (1, self.channels(), h, w), device)?;
        cache.insert((h, w), pe.clone());
        Ok(pe)
    }

    /// The encoding for a `[B, C', H, W]` feature map: `[B, C, H, W]` (the reference `forward`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = x.dims4()?;
        let pe = self.grid(h, w, x.device())?;
        if b == 1 {
            Ok(pe)
        } else {
            pe.repeat((b, 1, 1, 1))
        }
    }

    fn grid_values(&self, h: usize, w: usize) -> Vec<f32> {
        let n = self.feats_per_axis;
        let freqs = sine_frequencies(n, self.temperature);
        let eps = 1e-6f32;
        let embed = |index: usize, extent: usize| -> f32 {
            let p = (index + 1) as f32;
            if self.normalize {
                p / (extent as f32 + eps) * self.scale
            } else {
                p
            }
        };
        let wave = |p: f32, i: usize| -> f32 {
            let v = p / freqs[i];
            if i.is_multiple_of(2) {
                v.sin()
            } else {
                v.cos()
            }
        };
        let plane = h * w;
        let mut out = vec![0f32; 2 * n * plane];
        for i in 0..n {
            for y in 0..h {
                let vy = wave(embed(y, h), i);
                for x in 0..w {
                    out[i * plane + y * w + x] = vy;
                    out[(n + i) * plane + y * w + x] = wave(embed(x, w), i);
                }
            }
        }
        out
    }
}

/// The prompt encoder's random-Fourier position encoding: for a point `c` normalised to
/// `[0, 1]²`, `[sin(2π (2c−1) G), cos(2π (2c−1) G)]` with the stored Gaussian matrix `G`.
#[derive(Debug, Clone)]
pub struct PositionEmbeddingRandom {
    /// `[2, num_pos_feats]`.
    gaussian_matrix: Tensor,
}

impl PositionEmbeddingRandom {
    /// Loads `positional_encoding_gaussian_matrix` `[2, num_pos_feats]` under `vb`.
    pub fn new(vb: VarBuilder, num_pos_feats: usize) -> Result<Self> {
        Ok(Self {
            gaussian_matrix: vb.get((2, num_pos_feats), "positional_encoding_gaussian_matrix")?,
        })
    }

    /// Channels of the encoding (twice the Gaussian matrix's width).
    pub fn channels(&self) -> usize {
        2 * self.gaussian_matrix.dim(1).unwrap_or(0)
    }

    /// Encodes `[..., 2]` (x, y) coordinates already normalised to `[0, 1]`: `[..., C]`.
    fn encode_normalized(&self, coords: &Tensor) -> Result<Tensor> {
        let dims = coords.dims().to_vec();
        let points = coords.elem_count() / 2;
        let centered = coords.reshape((points, 2))?.affine(2.0, -1.0)?;
        let projected = centered
            .matmul(&self.gaussian_matrix)?
            .affine(2.0 * std::f64::consts::PI, 0.0)?;
        let encoded = Tensor::cat(&[projected.sin()?, projected.cos()?], D::Minus1)?;
        let mut out_dims = dims[..dims.len() - 1].to_vec();
        out_dims.push(self.channels());
        encoded.reshape(out_dims)
    }

    /// The encoding of every cell centre of an `h x w` grid: `[C, h, w]` (reference `forward`).
    pub fn forward(&self, h: usize, w: usize) -> Result<Tensor> {
        let mut coords = Vec::with_capacity(h * w * 2);
        for y in 0..h {
            for x in 0..w {
                coords.push((x as f32 + 0.5) / w as f32);
                coords.push((y as f32 + 0.5) / h as f32);
            }
        }
        let coords = Tensor::from_vec(coords, (h, w, 2), self.gaussian_matrix.device())?;
        self.encode_normalized(&coords)?
            .permute((2, 0, 1))?
            .contiguous()
    }

    /// Encodes `[B, N, 2]` pixel coordinates (x, y) of an image of size `(h, w)`: `[B, N, C]`
    /// (reference `forward_with_coords`).
    pub fn forward_with_coords(
        &self,
        coords: &Tensor,
        image_size: (usize, usize),
    ) -> Result<Tensor> {
        let (h, w) = image_size;
        let extent = Tensor::new(&[w as f32, h as f32], coords.device())?;
        let normalized = coords.to_dtype(DType::F32)?.broadcast_div(&extent)?;
        self.encode_normalized(&normalized)
    }
}

/// 2-D axial rotary position encoding for a row-major `end_x x end_y` token grid.
///
/// Each head's channel pairs `(2i, 2i+1)` are treated as complex numbers and rotated: pair
/// `j < dim/4` by `x·f_j`, pair `dim/4 + j` by `y·f_j`, where `(x, y)` is the token's grid
/// position and `f_j = 1 / θ^(4j/dim)`.
#[derive(Debug, Clone)]
pub struct AxialRope {
    /// `[end_x·end_y, dim/2]` cosines and sines of the rotation angles.
    cos: Tensor,
    sin: Tensor,
    dim: usize,
    end_x: usize,
    end_y: usize,
}

impl AxialRope {
    /// Tables for head dimension `dim` (a multiple of 4) on a grid `end_x` wide, `end_y` high
    /// (reference `compute_axial_cis(dim, end_x, end_y, theta)`).
    pub fn new(
        dim: usize,
        end_x: usize,
        end_y: usize,
        theta: f64,
        device: &Device,
    ) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(4) {
            candle_core::bail!("axial RoPE needs a head dimension divisible by 4, got {dim}");
        }
        let quarter = dim / 4;
        let theta = theta as f32;
        let freqs: Vec<f32> = (0..quarter)
            .map(|j| 1.0 / theta.powf((4 * j) as f32 / dim as f32))
            .collect();
        let tokens = end_x * end_y;
        let mut cos = Vec::with_capacity(tokens * 2 * quarter);
        let mut sin = Vec::with_capacity(tokens * 2 * quarter);
        for t in 0..tokens {
            let tx = (t % end_x) as f32;
            let ty = (t / end_x) as f32;
            for pos in [tx, ty] {
                for &f in &freqs {
                    let angle = pos * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (tokens, dim / 2), device)?,
            sin: Tensor::from_vec(sin, (tokens, dim / 2), device)?,
            dim,
            end_x,
            end_y,
        })
    }

    /// Number of grid tokens the tables cover.
    pub fn tokens(&self) -> usize {
        self.end_x * self.end_y
    }

    pub fn head_dim(&self) -> usize {
        self.dim
    }

    /// Rotates the first `rotated` tokens of `x` `[B, N, heads·dim]`, every head alike
    /// (reference `apply_rotary_enc` on one operand); the remaining tokens (object pointers)
    /// pass unchanged. Without `repeat`, `rotated` must equal the grid size; with `repeat`
    /// (`repeat_freqs_k`, keys spanning several memory frames) it must be a multiple of it and
    /// token `n` uses the angles of grid token `n mod (end_x·end_y)`.
    pub fn rotate(&self, x: &Tensor, heads: usize, rotated: usize, repeat: bool) -> Result<Tensor> {
        let (_, n, c) = x.dims3()?;
        if heads == 0 || c != heads * self.dim {
            candle_core::bail!(
                "RoPE tables are for {heads} heads of dimension {}, got {c} channels",
                self.dim
            );
        }
        if rotated > n {
            candle_core::bail!("{rotated} tokens to rotate but only {n} tokens");
        }
        if rotated == 0 {
            return Ok(x.clone());
        }
        let tokens = self.tokens();
        if rotated != tokens && !(repeat && rotated % tokens == 0) {
            candle_core::bail!(
                "RoPE grid has {tokens} tokens, sequence has {rotated}{}",
                if repeat { " (not a multiple)" } else { "" }
            );
        }
        if cpu_kernels::applies_to(x) {
            cpu_kernels::rotate_pairs(x, &self.cos, &self.sin, heads, rotated)
        } else {
            self.rotate_with_candle_ops(x, heads, rotated)
        }
    }

    /// `rotate` for any device: heads split out, the tables repeated over the frames, and the
    /// unrotated tail concatenated back.
    fn rotate_with_candle_ops(&self, x: &Tensor, heads: usize, rotated: usize) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let copies = rotated / self.tokens();
        let (cos, sin) = if copies == 1 {
            (self.cos.clone(), self.sin.clone())
        } else {
            (self.cos.repeat((copies, 1))?, self.sin.repeat((copies, 1))?)
        };
        let head_major = x
            .narrow(1, 0, rotated)?
            .reshape((b, rotated, heads, self.dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let turned = candle_nn::rotary_emb::rope_i(&head_major, &cos, &sin)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, rotated, c))?;
        if rotated == n {
            Ok(turned)
        } else {
            Tensor::cat(&[&turned, &x.narrow(1, rotated, n - rotated)?], 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Sam2Config;
    use crate::model::test_support::max_abs_diff;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sam2-mini");

    fn fixture(file: &str) -> HashMap<String, Tensor> {
        candle_core::safetensors::load(format!("{FIXTURES}/{file}"), &Device::Cpu).unwrap()
    }

    #[test]
    fn sine_encoding_matches_memory_encoder_fixture() {
        let cfg = Sam2Config::from_file(format!("{FIXTURES}/config.yaml")).unwrap();
        let pe = PositionEmbeddingSine::new(&cfg.model.memory_encoder.position_encoding).unwrap();
        let want = &fixture("04_memory_encoder.safetensors")["maskmem_pos_enc"];
        let feat = Tensor::zeros((1, 32, 8, 8), DType::F32, &Device::Cpu).unwrap();
        let got = pe.forward(&feat).unwrap();
        let err = max_abs_diff(&got, want);
        assert!(err < 1e-5, "max abs error {err}");
        // A second request is served from the cache and batches repeat the grid.
        let batch = pe.forward(&Tensor::zeros((3, 1, 8, 8), DType::F32, &Device::Cpu).unwrap());
        let batch = batch.unwrap();
        assert_eq!(batch.dims(), &[3, 16, 8, 8]);
        assert!(max_abs_diff(&batch.get(2).unwrap().unsqueeze(0).unwrap(), want) < 1e-5);
    }

    #[test]
    fn sine_encoding_layout_is_y_then_x_with_interleaved_sin_cos() {
        let cfg = Sam2Config::default_t512();
        let mut pe_cfg = cfg.model.memory_encoder.position_encoding.clone();
        pe_cfg.num_pos_feats = 8;
        let pe = PositionEmbeddingSine::new(&pe_cfg).unwrap();
        let grid = pe.grid(2, 3, &Device::Cpu).unwrap();
        let v: Vec<Vec<Vec<f32>>> = grid.get(0).unwrap().to_vec3().unwrap();
        let two_pi = 2.0 * PI;
        // Channel 0: sin of normalised y; channel 1: cos of it (frequency 1).
        let y1 = 2.0 / (2.0 + 1e-6) * two_pi;
        assert!((v[0][1][0] - y1.sin()).abs() < 1e-6);
        assert!((v[1][1][2] - y1.cos()).abs() < 1e-6);
        // Channel 6: sin of normalised x over frequency 100 (10000^(2/4)).
        let x1 = 2.0 / (3.0 + 1e-6) * two_pi;
        assert!((v[6][0][1] - (x1 / 100.0).sin()).abs() < 1e-6);
        assert!((v[7][1][1] - (x1 / 100.0).cos()).abs() < 1e-6);
    }

    #[test]
    fn random_fourier_encoding_matches_prompt_encoder_fixture() {
        let weights = fixture("model.safetensors");
        let gaussian =
            weights["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"].clone();
        let mut map = HashMap::new();
        map.insert("positional_encoding_gaussian_matrix".to_string(), gaussian);
        let vb = VarBuilder::from_tensors(map, DType::F32, &Device::Cpu);
        let pe = PositionEmbeddingRandom::new(vb, 16).unwrap();
        let want = &fixture("02_prompt_encoder.safetensors")["dense_pe"];
        let got = pe.forward(8, 8).unwrap().unsqueeze(0).unwrap();
        let err = max_abs_diff(&got, want);
        assert!(err < 1e-5, "max abs error {err}");
        // Coordinates at cell centres (in pixels of an 8x8 image) give the grid's values.
        let coords = Tensor::new(&[[[2.5f32, 5.5]]], &Device::Cpu).unwrap();
        let point = pe.forward_with_coords(&coords, (8, 8)).unwrap();
        let cell = got
            .get(0)
            .unwrap()
            .narrow(1, 5, 1)
            .unwrap()
            .narrow(2, 2, 1)
            .unwrap();
        let cell = cell.flatten_all().unwrap().reshape((1, 1, 32)).unwrap();
        assert!(max_abs_diff(&point, &cell) < 1e-6);
    }

    /// Rotation of channel pairs by explicit complex multiplication, in f64.
    /// Rows of two heads side by side.
    fn want_rows(first: &[f32], second: &[f32], dim: usize) -> Vec<f32> {
        first
            .chunks(dim)
            .zip(second.chunks(dim))
            .flat_map(|(a, b)| a.iter().chain(b).copied().collect::<Vec<_>>())
            .collect()
    }

    fn rotate_reference(x: &[f32], n: usize, dim: usize, end_x: usize, theta: f64) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for t in 0..n {
            let grid = t % (end_x * end_x);
            let (tx, ty) = ((grid % end_x) as f64, (grid / end_x) as f64);
            for pair in 0..dim / 2 {
                let j = pair % (dim / 4);
                let pos = if pair < dim / 4 { tx } else { ty };
                let angle = pos / theta.powf((4 * j) as f64 / dim as f64);
                let (a, b) = (
                    x[t * dim + 2 * pair] as f64,
                    x[t * dim + 2 * pair + 1] as f64,
                );
                out[t * dim + 2 * pair] = (a * angle.cos() - b * angle.sin()) as f32;
                out[t * dim + 2 * pair + 1] = (a * angle.sin() + b * angle.cos()) as f32;
            }
        }
        out
    }

    #[test]
    fn rope_rotates_pairs_by_axial_angles() {
        let dev = Device::Cpu;
        let (dim, side) = (8, 3);
        let rope = AxialRope::new(dim, side, side, 10000.0, &dev).unwrap();
        let n = side * side;
        let values: Vec<f32> = (0..n * dim)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
            .collect();
        let rows = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let close = |got: &[f32], want: &[f32]| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        };
        let x = Tensor::from_vec(values.clone(), (1, n, dim), &dev).unwrap();
        let want = rotate_reference(&values, n, dim, side, 10000.0);
        close(&rows(&rope.rotate(&x, 1, n, false).unwrap()), &want);
        close(
            &rows(&rope.rotate_with_candle_ops(&x, 1, n).unwrap()),
            &want,
        );
        // Keys spanning two frames reuse the grid's angles; two trailing tokens stay as they are.
        let keys: Vec<f32> = values
            .iter()
            .chain(values.iter())
            .map(|v| v * 0.5)
            .chain((0..2 * dim).map(|i| i as f32))
            .collect();
        let k = Tensor::from_vec(keys.clone(), (1, 2 * n + 2, dim), &dev).unwrap();
        let mut want = rotate_reference(&keys[..2 * n * dim], 2 * n, dim, side, 10000.0);
        want.extend_from_slice(&keys[2 * n * dim..]);
        close(&rows(&rope.rotate(&k, 1, 2 * n, true).unwrap()), &want);
        close(
            &rows(&rope.rotate_with_candle_ops(&k, 1, 2 * n).unwrap()),
            &want,
        );
        // Two heads side by side are rotated alike.
        let two: Vec<f32> = values
            .chunks(dim)
            .flat_map(|row| {
                row.iter()
                    .copied()
                    .chain(row.iter().map(|v| v * 2.0))
                    .collect::<Vec<_>>()
            })
            .collect();
        let x2 = Tensor::from_vec(two, (1, n, 2 * dim), &dev).unwrap();
        let doubled: Vec<f32> = rotate_reference(
            &values.iter().map(|v| v * 2.0).collect::<Vec<_>>(),
            n,
            dim,
            side,
            10000.0,
        );
        let want2: Vec<f32> = want_rows(
            &rotate_reference(&values, n, dim, side, 10000.0),
            &doubled,
            dim,
        );
        close(&rows(&rope.rotate(&x2, 2, n, false).unwrap()), &want2);
        close(
            &rows(&rope.rotate_with_candle_ops(&x2, 2, n).unwrap()),
            &want2,
        );
        assert!(rope.rotate(&k, 1, 2 * n, false).is_err());
        assert!(rope.rotate(&k, 1, n + 1, true).is_err());
        assert!(rope.rotate(&k, 1, 3 * n, true).is_err());
        assert!(rope.rotate(&x2, 1, n, false).is_err());
        assert_eq!(rows(&rope.rotate(&k, 1, 0, true).unwrap()), keys);
        assert!(AxialRope::new(6, 2, 2, 10000.0, &dev).is_err());
    }
}
