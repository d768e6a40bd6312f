//! Statistics for interleaved (ABBA) measurements: schedule, paired ratios, quantiles.
//!
//! Every overhead figure is a ratio against a baseline block measured next to it in time, so
//! drift of the (noisy, shared) machine cancels out as far as it is slow compared to a block.
use serde_json::{Value, json};

/// Which side of a pair a block belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The baseline (programs detached).
    Base,
    /// The arm under test.
    Arm,
}

/// `A B B A  A B B A ...` with exactly `n` blocks per side. The k-th `Base` block and the k-th
/// `Arm` block are always adjacent in time, so pairing by order of occurrence pairs neighbours.
/// An odd `n` ends with a plain `A B`.
#[must_use]
pub fn abba(n: usize) -> Vec<Slot> {
    let mut v = Vec::with_capacity(2 * n);
    for k in 0..n {
        if k % 2 == 0 {
            v.extend([Slot::Base, Slot::Arm]);
        } else {
            v.extend([Slot::Arm, Slot::Base]);
        }
    }
    v
}

/// `arm[i] / base[i]` for each pair (the k-th base block with the k-th arm block).
///
/// # Panics
/// If the slices differ in length (a programming error: every schedule is balanced).
#[must_use]
pub fn paired_ratios(base: &[f64], arm: &[f64]) -> Vec<f64> {
    assert_eq!(base.len(), arm.len(), "unbalanced schedule");
    base.iter().zip(arm).map(|(b, a)| a / b).collect()
}

/// Quantile of sorted data with linear interpolation between order statistics (the common
/// "type 7" definition, as in R, NumPy and spreadsheets). `q` in `[0, 1]`.
#[must_use]
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let h = q.clamp(0.0, 1.0) * (n - 1) as f64;
            let lo = h.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo])
        }
    }
}

fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut s: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    s.sort_by(f64::total_cmp);
    s
}

#[must_use]
pub fn median(xs: &[f64]) -> f64 {
    quantile_sorted(&sorted(xs), 0.5)
}

/// Interquartile range `(q1, q3)`.
#[must_use]
pub fn iqr(xs: &[f64]) -> (f64, f64) {
    let s = sorted(xs);
    (quantile_sorted(&s, 0.25), quantile_sorted(&s, 0.75))
}

/// Median with its spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub median: f64,
    pub q1: f64,
    pub q3: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    #[must_use]
    pub fn of(xs: &[f64]) -> Self {
        let s = sorted(xs);
        let (q1, q3) = iqr(&s);
        Self {
            n: s.len(),
            median: median(&s),
            q1,
            q3,
            min: s.first().copied().unwrap_or(f64::NAN),
            max: s.last().copied().unwrap_or(f64::NAN),
        }
    }

    #[must_use]
    pub fn json(&self) -> Value {
        json!({"n": self.n, "median": self.median, "q1": self.q1, "q3": self.q3, "min": self.min, "max": self.max})
    }
}

/// Percentile (`p` in 0..=100) of unsorted data.
#[must_use]
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    quantile_sorted(&sorted(xs), p / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn abba_is_balanced_and_pairs_neighbours() {
        use Slot::{Arm, Base};
        assert_eq!(abba(2), vec![Base, Arm, Arm, Base]);
        assert_eq!(abba(3), vec![Base, Arm, Arm, Base, Base, Arm]);
        for n in 1..20 {
            let s = abba(n);
            let bases: Vec<usize> = (0..s.len()).filter(|&i| s[i] == Base).collect();
            let arms: Vec<usize> = (0..s.len()).filter(|&i| s[i] == Arm).collect();
            assert_eq!((bases.len(), arms.len()), (n, n));
            for (b, a) in bases.iter().zip(&arms) {
                assert_eq!(b.abs_diff(*a), 1, "pair not adjacent in {s:?}");
            }
        }
    }

    #[test]
    fn paired_ratios_divide_pairwise() {
        let r = paired_ratios(&[100.0, 200.0, 50.0], &[110.0, 200.0, 60.0]);
        assert!(close(r[0], 1.1) && close(r[1], 1.0) && close(r[2], 1.2));
    }

    #[test]
    fn median_of_paired_ratios_ignores_one_outlier_pair() {
        // A noisy pair (the machine stalled during one arm block) does not move the median.
        let base = [100.0, 100.0, 100.0, 100.0, 100.0];
        let arm = [105.0, 104.0, 500.0, 106.0, 105.0];
        assert!(close(median(&paired_ratios(&base, &arm)), 1.05));
    }

    #[test]
    fn median_odd_and_even() {
        assert!(close(median(&[3.0, 1.0, 2.0]), 2.0));
        assert!(close(median(&[4.0, 1.0, 3.0, 2.0]), 2.5));
        assert!(median(&[]).is_nan());
        assert!(close(median(&[7.0]), 7.0));
    }

    #[test]
    fn quartiles_interpolate_like_type_7() {
        // numpy.percentile([1..=9], [25, 75]) == [3, 7]; [1..=4] -> [1.75, 3.25]
        let nine: Vec<f64> = (1..=9).map(f64::from).collect();
        assert_eq!(iqr(&nine), (3.0, 7.0));
        let four = [4.0, 2.0, 1.0, 3.0];
        let (q1, q3) = iqr(&four);
        assert!(close(q1, 1.75) && close(q3, 3.25));
        assert!(close(percentile(&nine, 99.0), 8.92));
    }

    #[test]
    fn summary_has_spread() {
        let s = Summary::of(&[1.2, 1.0, 1.1, f64::NAN, 1.3]);
        assert_eq!(s.n, 4);
        assert!(close(s.min, 1.0) && close(s.max, 1.3) && close(s.median, 1.15));
        assert!(s.q1 <= s.median && s.median <= s.q3);
    }
}
