//! Window/level: which intensity range is shown, the clinical presets, and the mapping of a
//! range onto 0..255 that both the display and MedSAM2's preprocessing use.

use serde::Serialize;

/// An intensity window given by its lower and upper bound (values, e.g. HU).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Window {
    pub lo: f64,
    pub hi: f64,
}

/// A named window as radiologists use them (width/level).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowPreset {
    pub name: &'static str,
    pub width: f64,
    pub level: f64,
}

/// The CT presets offered in the viewer (width / level in HU).
pub const CT_PRESETS: [WindowPreset; 5] = [
    WindowPreset { name: "Soft tissue", width: 400.0, level: 40.0 },
    WindowPreset { name: "Lung", width: 1500.0, level: -600.0 },
    WindowPreset { name: "Bone", width: 1800.0, level: 400.0 },
    WindowPreset { name: "Brain", width: 80.0, level: 40.0 },
    WindowPreset { name: "Liver", width: 150.0, level: 30.0 },
];

impl WindowPreset {
    pub fn window(&self) -> Window {
        Window::from_width_level(self.width, self.level)
    }
}

impl Window {
    pub fn new(lo: f64, hi: f64) -> Self {
        Window { lo, hi }
    }

    pub fn from_width_level(width: f64, level: f64) -> Self {
        Window { lo: level - width / 2.0, hi: level + width / 2.0 }
    }

    /// The window MedSAM2 really applies to a volume whose values span `min..=max`: after
    /// clipping to [lo, hi] it stretches the clipped data's own extremes onto 0..255.
    pub fn clipped_to(&self, min: f64, max: f64) -> Window {
        Window { lo: self.lo.max(min).min(self.hi), hi: self.hi.min(max).max(self.lo) }
    }

    pub fn width(&self) -> f64 {
        self.hi - self.lo
    }

    pub fn level(&self) -> f64 {
        (self.lo + self.hi) / 2.0
    }

    /// Maps a value onto 0..=255 like MedSAM2's CT preprocessing: clip to [lo, hi], scale
    /// (v - lo) / (hi - lo) · 255, then truncate toward zero as numpy's `astype(uint8)` does.
    /// (MedSAM2 stretches the *clipped volume's* min..max, so it calls this with
    /// `clipped_to` applied.) A window of zero width maps everything at or above `lo` to 255.
    #[inline]
    pub fn to_u8(&self, v: f64) -> u8 {
        let width = self.hi - self.lo;
        if width <= 0.0 {
            return if v >= self.lo { 255 } else { 0 };
        }
        let t = (v.clamp(self.lo, self.hi) - self.lo) / width * 255.0;
        t as u8
    }
}

/// "LO,HI": two finite numbers with LO < HI (spaces allowed, e.g. "-160, 240").
impl std::str::FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let values: Result<Vec<f64>, _> = s.split(',').map(|x| x.trim().parse::<f64>()).collect();
        match values {
            Ok(v) if v.len() == 2 && v[0] < v[1] && v.iter().all(|x| x.is_finite()) => Ok(Window::new(v[0], v[1])),
            _ => Err(format!("{s:?} is not LO,HI (two numbers, LO < HI)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_parse_from_lo_hi() {
        assert_eq!("-160,240".parse::<Window>(), Ok(Window::new(-160.0, 240.0)));
        assert_eq!(" -1350, 150 ".parse::<Window>(), Ok(Window::new(-1350.0, 150.0)));
        for bad in ["240,-160", "5,5", "1", "1,2,3", "a,b", "", "nan,1"] {
            assert!(bad.parse::<Window>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn width_level_round_trip() {
        let w = CT_PRESETS[1].window();
        assert_eq!((w.lo, w.hi), (-1350.0, 150.0));
        assert_eq!((w.width(), w.level()), (1500.0, -600.0));
    }

    #[test]
    fn to_u8_clips_and_truncates() {
        let w = Window::new(-160.0, 240.0);
        assert_eq!(w.to_u8(-1000.0), 0);
        assert_eq!(w.to_u8(240.0), 255);
        assert_eq!(w.to_u8(5000.0), 255);
        assert_eq!(w.to_u8(40.0), 127); // 127.5 truncated
    }

    #[test]
    fn clipped_window_follows_the_data() {
        let w = Window::new(-160.0, 240.0).clipped_to(-50.0, 1000.0);
        assert_eq!((w.lo, w.hi), (-50.0, 240.0));
    }
}
