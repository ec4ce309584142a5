//! Units of the live view: byte counts and rates in bytes (IEC, as the
//! other commands print them) or in bits per second (SI: `kbit/s`,
//! `Mbit/s`, the unit network engineers quote).
//!
//! Kept apart so that the other commands' `--units` can share one helper.
//! Hand-written: bytes reuse the IEC helper of `crate::render`; the
//! byte-size crates (`humansize`, `human_bytes`) format bytes, not bits,
//! and the bit-rate crates found (`bitrate` 0.1, `use-bitrate` 0.0) are
//! early single releases — not worth a dependency for a ten-line loop.

use clap::ValueEnum;

use crate::render;

/// How rates and byte counts are shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Units {
    /// Bytes, IEC (KiB/s, MiB/s).
    #[default]
    Bytes,
    /// Bits, SI (kbit/s, Mbit/s).
    Bits,
}

impl Units {
    /// The other unit.
    #[must_use]
    pub const fn toggled(self) -> Self {
        match self {
            Self::Bytes => Self::Bits,
            Self::Bits => Self::Bytes,
        }
    }

    /// `per_second` bytes per second: `1.5 MiB/s` or `12.6 Mbit/s`.
    #[must_use]
    pub fn rate(self, per_second: f64) -> String {
        match self {
            Self::Bytes => render::rate(per_second, false) + "/s",
            Self::Bits => si_bits(per_second * 8.0) + "/s",
        }
    }

    /// A count of `n` bytes: `3.0 MiB`, or in bits `25.2 Mbit`.
    #[must_use]
    pub fn amount(self, n: u64) -> String {
        match self {
            Self::Bytes => render::bytes(n, false),
            #[allow(clippy::cast_precision_loss)] // display only
            Self::Bits => si_bits(n as f64 * 8.0),
        }
    }

    /// Name shown in the title bar.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bytes => "bytes",
            Self::Bits => "bits",
        }
    }
}

/// `bits` with an SI prefix (powers of 1000), one decimal above 1000.
fn si_bits(bits: f64) -> String {
    const PREFIXES: [&str; 6] = ["", "k", "M", "G", "T", "P"];
    let mut value = bits.max(0.0).round();
    if value < 1000.0 {
        return format!("{value} bit");
    }
    let mut prefix = 0;
    while value >= 1000.0 && prefix + 1 < PREFIXES.len() {
        value /= 1000.0;
        prefix += 1;
    }
    format!("{value:.1} {}bit", PREFIXES[prefix])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_use_si_prefixes_and_bytes_iec() {
        assert_eq!(Units::Bits.rate(0.0), "0 bit/s");
        assert_eq!(Units::Bits.rate(100.0), "800 bit/s");
        assert_eq!(Units::Bits.rate(125.0), "1.0 kbit/s");
        assert_eq!(Units::Bits.rate(1_500_000.0), "12.0 Mbit/s");
        assert_eq!(Units::Bits.rate(125e9), "1.0 Tbit/s");
        assert_eq!(Units::Bytes.rate(1536.0), "1.5 KiB/s");
        assert_eq!(Units::Bytes.rate(12.4), "12 B/s");
        assert_eq!(Units::Bytes.amount(3 << 20), "3.0 MiB");
        assert_eq!(Units::Bits.amount(3 << 20), "25.2 Mbit");
        assert_eq!(Units::Bits.rate(-5.0), "0 bit/s", "never negative");
        assert_eq!(Units::Bytes.toggled(), Units::Bits);
        assert_eq!(Units::Bits.toggled().name(), "bytes");
    }
}
