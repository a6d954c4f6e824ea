//! Branch-free `exp`, `erf` and GELU in f32, written so that loops over them vectorise.

/// PyTorch's default GELU, `x/2 · (1 + erf(x/√2))`, with `erf` evaluated like PyTorch's
/// vectorised CPU kernel does.
#[inline(always)]
pub(super) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_approx(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// `erf(x) ≈ sign(x)·(1 − t·r(t)·e^(−x²))`, `t = 1/(1 + p|x|)` (Abramowitz & Stegun 7.1.26;
/// with f32 rounding the absolute error stays below 6e-7): the approximation PyTorch's
/// vectorised CPU `erf` uses. Written branch-free so loops over it vectorise.
#[inline(always)]
fn erf_approx(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (0.327_591_1 * a + 1.0);
    let r =
        (((1.061_405_4 * t - 1.453_152_1) * t + 1.421_413_8) * t - 0.284_496_74) * t + 0.254_829_6;
    (1.0 - r * t * exp_approx(-a * a)).copysign(x)
}

/// `e^x` for `x` in [-87, 88] (clamped outside) with a relative error of a few ulp: range
/// reduction by ln 2 and the Cephes polynomial, branch-free and free of float-to-int
/// conversions so that loops over it vectorise.
#[inline(always)]
pub(super) fn exp_approx(x: f32) -> f32 {
    // 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let k = (shifted.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let r = x - n * 0.693_359_4 + n * 2.121_944_4e-4;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let poly = p * r * r + r + 1.0;
    poly * f32::from_bits(((k + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_is_accurate_over_the_softmax_range() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = ((-87.0 + 175.0 * i as f64 / 200_000.0) as f32) as f64;
            let want = x.exp();
            let got = exp_approx(x as f32) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert!(exp_approx(-1000.0) < 1e-37 && exp_approx(-1000.0) >= 0.0);
    }

    #[test]
    fn erf_and_gelu_match_the_exact_functions() {
        let mut worst = 0f64;
        for i in 0..=100_000 {
            let x = ((-6.0 + 12.0 * i as f64 / 100_000.0) as f32) as f64;
            let want = libm_erf(x);
            worst = worst.max((erf_approx(x as f32) as f64 - want).abs());
            let gelu_want = 0.5 * x * (1.0 + libm_erf(x / std::f64::consts::SQRT_2));
            assert!((gelu_erf(x as f32) as f64 - gelu_want).abs() < 1e-6 * (1.0 + x.abs()));
        }
        assert!(worst < 6e-7, "worst absolute error {worst}");
    }

    /// Reference erf in f64 (candle's own, from libm).
    fn libm_erf(x: f64) -> f64 {
        candle_core::cpu::erf::erf_f64(x)
    }
}
