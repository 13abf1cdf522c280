//! Student's t tests (paired and Welch), with the t distribution's tail from the regularised
//! incomplete beta function. They match `scipy.stats.ttest_rel` and
//! `scipy.stats.ttest_ind(equal_var=False)` to 1e-9 on the committed fixtures; where scipy
//! returns NaN (no variation at all) the test is [`Stat::Undefined`].

use serde::{Deserialize, Serialize};

use crate::correlation::check_finite;
use crate::error::StatsError;
use crate::stat::Stat;

/// Reasons a t test has no p-value.
pub mod why {
    /// A t test needs two observations per sample.
    pub const FEWER_THAN_2: &str = "fewer than 2 observations in a sample";
    /// Every difference (paired) or every value (unpaired) is equal and the means agree: 0/0.
    pub const NO_VARIATION: &str = "no variation and no difference (t is 0/0)";
}

/// A t test's statistic, degrees of freedom and two-sided p-value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TTest {
    /// t (positive when the second sample's mean is larger).
    pub t: Stat,
    /// Degrees of freedom (Welch–Satterthwaite for the unpaired test).
    pub df: Stat,
    /// Two-sided p-value.
    pub p_value: Stat,
}

impl TTest {
    fn undefined(why: &'static str) -> Self {
        Self {
            t: Stat::undefined(why),
            df: Stat::undefined(why),
            p_value: Stat::undefined(why),
        }
    }

    /// t = `num / sqrt(var)`: a zero variance gives t = ±inf and p = 0 when the means differ
    /// (as scipy does), undefined when they do not.
    fn from_parts(num: f64, var: f64, df: f64) -> Self {
        if var <= 0.0 {
            if num == 0.0 {
                return Self::undefined(why::NO_VARIATION);
            }
            return Self {
                t: Stat::undefined("t is infinite: constant values with different means"),
                df: Stat::finite_or(df, why::NO_VARIATION),
                p_value: Stat::Value(0.0),
            };
        }
        let t = num / var.sqrt();
        Self {
            t: Stat::Value(t),
            df: Stat::Value(df),
            p_value: Stat::finite_or(t_two_sided_p(t, df), crate::stat::reason::NON_FINITE),
        }
    }
}

fn mean_var(x: &[f64]) -> (f64, f64) {
    let n = x.len() as f64;
    let m = x.iter().sum::<f64>() / n;
    let v = x.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (n - 1.0);
    (m, v)
}

/// Paired t test of `b - a` against 0 (`scipy.stats.ttest_rel(b, a)`).
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Result<TTest, StatsError> {
    if a.len() != b.len() {
        return Err(StatsError::LengthMismatch {
            left: a.len(),
            right: b.len(),
        });
    }
    check_finite(a)?;
    check_finite(b)?;
    if a.len() < 2 {
        return Ok(TTest::undefined(why::FEWER_THAN_2));
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let (m, v) = mean_var(&d);
    let n = d.len() as f64;
    Ok(TTest::from_parts(m, v / n, n - 1.0))
}

/// Welch's unequal-variance t test of `mean(b) - mean(a)`
/// (`scipy.stats.ttest_ind(b, a, equal_var=False)`).
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Result<TTest, StatsError> {
    check_finite(a)?;
    check_finite(b)?;
    if a.len() < 2 || b.len() < 2 {
        return Ok(TTest::undefined(why::FEWER_THAN_2));
    }
    let (ma, va) = mean_var(a);
    let (mb, vb) = mean_var(b);
    let (sa, sb) = (va / a.len() as f64, vb / b.len() as f64);
    let var = sa + sb;
    let df = var * var / (sa * sa / (a.len() as f64 - 1.0) + sb * sb / (b.len() as f64 - 1.0));
    Ok(TTest::from_parts(mb - ma, var, df))
}

/// Two-sided p-value of Student's t with `df` degrees of freedom: `I_{df/(df+t²)}(df/2, 1/2)`.
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if !t.is_finite() {
        return 0.0;
    }
    regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error about 1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1-x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularised incomplete beta function I_x(a, b), by Lentz's continued fraction on the
/// side of `x` where it converges fast.
pub fn regularized_incomplete_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(b, a, 1.0 - x) / b
    }
}

fn beta_continued_fraction(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    let guard = |v: f64| if v.abs() < TINY { TINY } else { v };
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 / guard(1.0 - qab * x / qap);
    let mut h = d;
    for m in 1..=20_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 / guard(1.0 + aa * d);
        c = guard(1.0 + aa / c);
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_t_tails() {
        // Two-sided p of t = 2.228 with 10 df is 0.05 (the textbook 97.5% quantile).
        assert!((t_two_sided_p(2.228_138_851_986_273_6, 10.0) - 0.05).abs() < 1e-12);
        // df = 1 is Cauchy: p = 1 - 2 atan(t) / π.
        let t: f64 = 3.0;
        let cauchy = 1.0 - 2.0 * t.atan() / std::f64::consts::PI;
        assert!((t_two_sided_p(t, 1.0) - cauchy).abs() < 1e-14);
        assert_eq!(t_two_sided_p(0.0, 5.0), 1.0);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-13);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-13);
    }

    #[test]
    fn degenerate_samples() {
        let same = paired_t_test(&[1.0, 2.0], &[1.0, 2.0]).unwrap();
        assert_eq!(same.p_value, Stat::undefined(why::NO_VARIATION));
        let shifted = paired_t_test(&[1.0, 2.0, 3.0], &[2.0, 3.0, 4.0]).unwrap();
        assert_eq!(shifted.p_value, Stat::Value(0.0));
        let one = welch_t_test(&[1.0], &[1.0, 2.0]).unwrap();
        assert_eq!(one.p_value, Stat::undefined(why::FEWER_THAN_2));
        assert!(paired_t_test(&[1.0], &[1.0, 2.0]).is_err());
    }
}
