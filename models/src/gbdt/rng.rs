//! A small seeded generator (SplitMix64) for bagging, feature sampling and
//! the binning sample. Determinism matters more than quality here: the same
//! seed gives the same model on any machine and thread count. Public so that
//! tests and benches across the workspace draw seeded data from one
//! generator.

/// SplitMix64 (Steele, Lea and Flood 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection so it is unbiased.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    /// `k` distinct indices of `0..n` in increasing order (selection
    /// sampling, Knuth's algorithm S), `k <= n`.
    pub fn sample_sorted(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut chosen = Vec::with_capacity(k);
        for i in 0..n {
            let needed = k - chosen.len();
            if needed == 0 {
                break;
            }
            if self.below(n - i) < needed {
                chosen.push(i);
            }
        }
        chosen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_sorted_is_sorted_distinct_and_sized() {
        let mut rng = SplitMix64::new(3);
        for (n, k) in [(10, 0), (10, 10), (1000, 37)] {
            let s = rng.sample_sorted(n, k);
            assert_eq!(s.len(), k);
            assert!(s.windows(2).all(|w| w[0] < w[1]));
            assert!(s.iter().all(|&i| i < n));
        }
        // Roughly uniform: every index of 0..4 appears when sampling 2 often.
        let mut seen = [0usize; 4];
        for _ in 0..400 {
            for i in rng.sample_sorted(4, 2) {
                seen[i] += 1;
            }
        }
        assert!(seen.iter().all(|&c| (150..250).contains(&c)), "{seen:?}");
    }
}
