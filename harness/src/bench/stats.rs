//! Median and spread of repeated measurements, and ratios that say
//! "not measured" instead of dividing by zero.

use serde::Serialize;

/// Median, min and max of `n` measurements.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// The median of an even count is the mean of the middle two.
    pub fn of(values: &[f64]) -> Spread {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1], n }
    }

    /// "12.3 (11.9-13.0)", or "12.3" for one measurement.
    pub fn show(&self, decimals: usize) -> String {
        if self.n <= 1 || (self.max - self.min).abs() < f64::EPSILON {
            format!("{:.*}", decimals, self.median)
        } else {
            format!("{:.*} ({:.*}-{:.*})", decimals, self.median, decimals, self.min, decimals, self.max)
        }
    }
}

/// `a / b`, None when b is not a positive number.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        assert_eq!(Spread::of(&[3.0, 1.0, 2.0]), Spread { median: 2.0, min: 1.0, max: 3.0, n: 3 });
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
        assert_eq!(Spread::of(&[]).n, 0);
        assert_eq!(Spread::of(&[5.0]).show(1), "5.0");
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0]).show(1), "2.0 (1.0-3.0)");
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(1.0, 4.0), Some(0.25));
    }
}
