//! Colormaps for the slice views: 256-entry RGBA tables, uploaded as the rows of one texture
//! that the slice shader indexes with the windowed intensity.

/// The colormaps offered in the viewer, in texture row order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Colormap {
    #[default]
    Gray,
    InvertedGray,
    Hot,
    Bone,
}

impl Colormap {
    pub const ALL: [Colormap; 4] = [Colormap::Gray, Colormap::InvertedGray, Colormap::Hot, Colormap::Bone];

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Gray => "Gray",
            Colormap::InvertedGray => "Inverted",
            Colormap::Hot => "Hot",
            Colormap::Bone => "Bone",
        }
    }

    /// Row of this colormap in the table texture.
    pub fn row(self) -> u32 {
        Colormap::ALL.iter().position(|&c| c == self).unwrap_or(0) as u32
    }

    /// RGB at t in 0..=1.
    pub fn rgb(self, t: f32) -> [f32; 3] {
        let t = t.clamp(0.0, 1.0);
        match self {
            Colormap::Gray => [t, t, t],
            Colormap::InvertedGray => [1.0 - t, 1.0 - t, 1.0 - t],
            // Black -> red -> yellow -> white.
            Colormap::Hot => [(3.0 * t).min(1.0), (3.0 * t - 1.0).clamp(0.0, 1.0), (3.0 * t - 2.0).clamp(0.0, 1.0)],
            // Gray with a blue tint in the darks and a warm tint in the lights.
            Colormap::Bone => {
                let r = if t < 0.75 { 0.875 * t } else { 0.875 * t + (t - 0.75) * 0.5 };
                let g = if t < 0.375 { 0.875 * t } else if t < 0.75 { 0.875 * t + (t - 0.375) * 1.0 / 3.0 } else { 0.875 * t + 0.125 };
                let b = if t < 0.375 { 0.875 * t + t / 3.0 } else { 0.875 * t + 0.125 };
                [r.min(1.0), g.min(1.0), b.min(1.0)]
            }
        }
    }
}

/// All colormaps as RGBA8 rows of 256 texels (width 256, height `Colormap::ALL.len()`).
pub fn colormap_table() -> Vec<u8> {
    let mut out = Vec::with_capacity(256 * 4 * Colormap::ALL.len());
    for map in Colormap::ALL {
        for i in 0..256 {
            let [r, g, b] = map.rgb(i as f32 / 255.0);
            out.extend_from_slice(&[(r * 255.0).round() as u8, (g * 255.0).round() as u8, (b * 255.0).round() as u8, 255]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_run_from_dark_to_light() {
        let table = colormap_table();
        assert_eq!(table.len(), 256 * 4 * 4);
        for map in [Colormap::Gray, Colormap::Hot, Colormap::Bone] {
            let row = map.row() as usize * 256 * 4;
            assert_eq!(&table[row..row + 3], &[0, 0, 0], "{map:?} starts black");
            assert_eq!(&table[row + 255 * 4..row + 255 * 4 + 3], &[255, 255, 255], "{map:?} ends white");
        }
        let inv = Colormap::InvertedGray.row() as usize * 256 * 4;
        assert_eq!(table[inv], 255);
    }
}
