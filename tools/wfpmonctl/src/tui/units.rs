//! Units of the live view: byte counts and rates in bytes (IEC, as the
//! other commands print them) or in bits per second (SI: `kbit/s`,
//! `Mbit/s`, the unit network engineers quote).
//!
//! The formatting is the other commands' (`crate::view::units`, on the
//! `humansize` crate): one way of writing traffic across the tool; this
//! type adds what the live view needs (a key toggles it, the title names
//! it).

use clap::ValueEnum;

use crate::view::units::{Unit, Units as Format};

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

    /// The other commands' formatting of this unit (human units).
    const fn format(self) -> Format {
        Format::new(
            match self {
                Self::Bytes => Unit::Bytes,
                Self::Bits => Unit::Bits,
            },
            false,
        )
    }

    /// `per_second` bytes per second: `1.5 MiB/s` or `12.6 Mbit/s`.
    #[must_use]
    pub fn rate(self, per_second: f64) -> String {
        self.format().per_second(per_second)
    }

    /// A count of `n` bytes: `3 MiB`, or in bits `25.2 Mbit`.
    #[must_use]
    pub fn amount(self, n: u64) -> String {
        self.format().volume(n)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_use_si_prefixes_and_bytes_iec() {
        assert_eq!(Units::Bits.rate(0.0), "0 bits/s");
        assert_eq!(Units::Bits.rate(100.0), "800 bits/s");
        assert_eq!(Units::Bits.rate(125.0), "1 kbit/s");
        assert_eq!(Units::Bits.rate(1_500_000.0), "12 Mbit/s");
        assert_eq!(Units::Bits.rate(125e9), "1 Tbit/s");
        assert_eq!(Units::Bytes.rate(1536.0), "1.5 KiB/s");
        assert_eq!(Units::Bytes.rate(12.4), "12 B/s");
        assert_eq!(Units::Bytes.amount(3 << 20), "3 MiB");
        assert_eq!(Units::Bits.amount(3 << 20), "25.2 Mbit");
        assert_eq!(Units::Bits.rate(-5.0), "0 bits/s", "never negative");
        assert_eq!(Units::Bytes.toggled(), Units::Bits);
        assert_eq!(Units::Bits.toggled().name(), "bytes");
    }
}
