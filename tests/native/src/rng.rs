//! A small seeded generator (xorshift64*): scenarios are repeatable from
//! their seed, which every failure message prints.

/// xorshift64* (Vigna); good enough to pick interleavings and sizes.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` (any value; 0 is remapped).
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        // splitmix64 finaliser, so that nearby seeds diverge at once.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Self(if z == 0 { 1 } else { z })
    }

    /// The next 64 random bits.
    pub const fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub const fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True with probability `1 / n`.
    pub const fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// A derived generator for another thread.
    #[must_use]
    pub const fn fork(&mut self) -> Self {
        Self::new(self.next_u64())
    }
}

/// The base seed: `$WFPMON_NATIVE_SEED` (decimal or 0x-hex) or `default`.
#[must_use]
pub fn base_seed(default: u64) -> u64 {
    std::env::var("WFPMON_NATIVE_SEED")
        .ok()
        .and_then(|s| {
            s.strip_prefix("0x")
                .map_or_else(|| s.parse().ok(), |h| u64::from_str_radix(h, 16).ok())
        })
        .unwrap_or(default)
}

/// Repetitions: `$WFPMON_NATIVE_REPEAT` or `default`.
#[must_use]
pub fn repetitions(default: u32) -> u32 {
    std::env::var("WFPMON_NATIVE_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
