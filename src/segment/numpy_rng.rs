//! numpy's legacy global random generator (`np.random.seed(n)`, `np.random.choice(n, k,
//! replace=False)`), reproduced draw for draw, so that `segment-recist --sample-points
//! from_recist_n --seed 2024` picks the points MedSAM2's RECIST script picks.
//!
//! Hand-written because the sampling must be numpy's own: the Mersenne Twister MT19937 seeded
//! with an integer (Matsumoto and Nishimura's `init_genrand`), 32-bit outputs, numpy's bounded
//! integers by masking and rejection, and `choice` without replacement as the first k entries
//! of a Fisher-Yates shuffle of 0..n run from the end. General-purpose crates give other streams.

/// State size of MT19937 in 32-bit words.
const WORDS: usize = 624;
const SHIFT: usize = 397;

/// numpy's `RandomState` as far as `seed` and `choice(n, k, replace=False)` go.
#[derive(Clone, Debug)]
pub struct NumpyRandom {
    state: Box<[u32; WORDS]>,
    next: usize,
}

impl NumpyRandom {
    /// `np.random.seed(seed)`.
    pub fn seed(seed: u32) -> Self {
        let mut state = Box::new([0u32; WORDS]);
        state[0] = seed;
        for i in 1..WORDS {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        NumpyRandom { state, next: WORDS }
    }

    /// The next 32-bit output.
    fn next_u32(&mut self) -> u32 {
        if self.next >= WORDS {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    fn twist(&mut self) {
        for k in 0..WORDS {
            let y = (self.state[k] & 0x8000_0000) | (self.state[(k + 1) % WORDS] & 0x7fff_ffff);
            let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
            self.state[k] = self.state[(k + SHIFT) % WORDS] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// A uniform integer in 0..=max, as numpy's legacy `random_interval` draws it (values of
    /// 32 bits or fewer).
    fn interval(&mut self, max: u32) -> u32 {
        if max == 0 {
            return 0;
        }
        let mut mask = max;
        for shift in [1, 2, 4, 8, 16] {
            mask |= mask >> shift;
        }
        loop {
            let value = self.next_u32() & mask;
            if value <= max {
                return value;
            }
        }
    }

    /// `choice(n, k, replace=False)`: the first `k` of a shuffled 0..n (`k <= n`, n < 2^32).
    pub fn choice_without_replacement(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n && n <= u32::MAX as usize, "choice of {k} among {n}");
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.interval(i as u32) as usize;
            order.swap(i, j);
        }
        order.truncate(k);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_numpys() {
        // numpy 2.4.6: np.random.seed(2024); [np.random.choice(n, 5, replace=False) for n in (27, 30, 5, 100)]
        let mut rng = NumpyRandom::seed(2024);
        assert_eq!(rng.choice_without_replacement(27, 5), [20, 17, 22, 16, 23]);
        assert_eq!(rng.choice_without_replacement(30, 5), [29, 25, 2, 13, 17]);
        assert_eq!(rng.choice_without_replacement(5, 5), [2, 4, 3, 1, 0]);
        assert_eq!(rng.choice_without_replacement(100, 5), [27, 75, 21, 94, 39]);
    }
}
