//! Numbers as text: traffic in bytes (IEC: KiB, MiB) or bits (SI: kbit,
//! Mbit), counts, durations, and times on the local clock.

use std::time::SystemTime;

use chrono::{DateTime, FixedOffset, Local, Offset as _, TimeZone as _, Utc};
use clap::ValueEnum;
use humansize::{BaseUnit, FormatSizeOptions, Kilo, SizeFormatter, format_size_i};

/// `--units`: what traffic is counted in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Unit {
    /// Bytes, in IEC units (KiB = 1024 bytes).
    #[default]
    Bytes,
    /// Bits, in SI units (kbit = 1000 bits), as network links are rated.
    Bits,
}

/// How a view writes numbers: the traffic unit, and `raw` (exact
/// integers instead of human units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Units {
    pub unit: Unit,
    pub raw: bool,
}

impl Units {
    pub const fn new(unit: Unit, raw: bool) -> Self {
        Self { unit, raw }
    }

    fn options(self) -> FormatSizeOptions {
        let (base, kilo) = match self.unit {
            Unit::Bytes => (BaseUnit::Byte, Kilo::Binary),
            Unit::Bits => (BaseUnit::Bit, Kilo::Decimal),
        };
        FormatSizeOptions::from(humansize::BINARY)
            .base_unit(base)
            .kilo(kilo)
            .units(kilo)
            .decimal_places(1)
            .decimal_zeroes(0)
    }

    /// An amount of traffic: `1.5 KiB`, or `12.3 kbit` (exact bytes or
    /// bits with `raw`).
    #[allow(clippy::cast_precision_loss)] // display: 1 decimal of 53 bits
    pub fn volume(self, bytes: u64) -> String {
        match (self.unit, self.raw) {
            (Unit::Bytes, true) => bytes.to_string(),
            (Unit::Bits, true) => (u128::from(bytes) * 8).to_string(),
            (Unit::Bytes, false) => SizeFormatter::new(bytes, self.options()).to_string(),
            // More bits than a u64 holds: as a float.
            (Unit::Bits, false) => format_size_i(bytes as f64 * 8.0, self.options()),
        }
    }

    /// A rate without its `/s` (a column headed `IN/s`): `1.5 KiB`,
    /// `12.3 kbit`; whole bytes or bits per second with `raw`.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // a rounded, non-negative rate
    pub fn rate(self, bytes_per_second: f64) -> String {
        let bytes = bytes_per_second.max(0.0).round() as u64;
        match (self.unit, self.raw) {
            (Unit::Bits, true) => ((bytes_per_second.max(0.0) * 8.0).round() as u64).to_string(),
            _ => self.volume(bytes),
        }
    }

    /// A rate with its unit: `1.5 KiB/s`, `12.3 kbit/s`.
    pub fn per_second(self, bytes_per_second: f64) -> String {
        match (self.unit, self.raw) {
            (Unit::Bytes, true) => format!("{} B/s", self.rate(bytes_per_second)),
            (Unit::Bits, true) => format!("{} bit/s", self.rate(bytes_per_second)),
            _ => format!("{}/s", self.rate(bytes_per_second)),
        }
    }

    /// A count in SI units (`999`, `12.3k`), or exact with `raw`.
    // Hand-written: the unit crates format sizes (with a unit), not bare
    // quantities; this is one division loop.
    #[allow(clippy::cast_precision_loss)] // display only
    pub fn count(self, n: u64) -> String {
        const SI: [&str; 7] = ["", "k", "M", "G", "T", "P", "E"];
        if self.raw || n < 1000 {
            return n.to_string();
        }
        let (mut value, mut unit) = (n as f64, 0);
        while value >= 1000.0 && unit + 1 < SI.len() {
            value /= 1000.0;
            unit += 1;
        }
        format!("{value:.1}{}", SI[unit])
    }

    /// Milliseconds as `2d03h`, `1h02m`, `2m03s` or `3.4s`; exact with `raw`.
    pub fn age(self, ms: u64) -> String {
        let s = ms / 1000;
        let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
        match () {
            () if self.raw => format!("{ms}ms"),
            () if d > 0 => format!("{d}d{h:02}h"),
            () if h > 0 => format!("{h}h{m:02}m"),
            () if m > 0 => format!("{m}m{sec:02}s"),
            () => format!("{sec}.{}s", (ms % 1000) / 100),
        }
    }
}

/// The local time zone's offset from UTC at `time`, in seconds east (the
/// zone's rules at that instant, daylight saving included; on Windows
/// chrono asks `GetTimeZoneInformationForYear`).
pub fn local_offset(time: SystemTime) -> i32 {
    let utc = DateTime::<Utc>::from(time).naive_utc();
    Local.offset_from_utc_datetime(&utc).local_minus_utc()
}

/// `time` on the local clock, `offset` seconds east of UTC (the local time
/// zone's offset at that instant), to the millisecond:
/// `2026-01-01 01:00:03.000`. Text output shows local times; JSON and CSV
/// keep UTC.
pub fn local_time(time: SystemTime, offset: i32) -> String {
    let utc: DateTime<Utc> = time.into();
    let zone = FixedOffset::east_opt(offset).unwrap_or_else(|| Utc.fix());
    utc.with_timezone(&zone)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bytes_are_iec_and_bits_si() {
        let bytes = Units::default();
        assert_eq!(bytes.volume(0), "0 B");
        assert_eq!(bytes.volume(1023), "1023 B");
        assert_eq!(bytes.volume(1536), "1.5 KiB");
        assert_eq!(bytes.volume(3 << 20), "3 MiB");
        assert_eq!(bytes.volume(5 << 30), "5 GiB");
        assert_eq!(bytes.rate(1536.4), "1.5 KiB");
        assert_eq!(bytes.per_second(1536.4), "1.5 KiB/s");
        let bits = Units::new(Unit::Bits, false);
        assert_eq!(bits.volume(100), "800 bits");
        assert_eq!(bits.volume(125), "1 kbit");
        assert_eq!(bits.volume(1536), "12.3 kbit");
        assert_eq!(bits.per_second(1_250_000.0), "10 Mbit/s");
        assert_eq!(bits.per_second(3_000_000_000.0), "24 Gbit/s");
        assert_eq!(bits.volume(u64::MAX), "147.6 Ebit");
        let raw = Units::new(Unit::Bytes, true);
        assert_eq!(raw.volume(u64::MAX), u64::MAX.to_string());
        assert_eq!(raw.rate(1536.4), "1536");
        assert_eq!(raw.per_second(1536.4), "1536 B/s");
        let raw_bits = Units::new(Unit::Bits, true);
        assert_eq!(
            raw_bits.volume(u64::MAX),
            (u128::from(u64::MAX) * 8).to_string()
        );
        assert_eq!(raw_bits.per_second(1536.4), "12291 bit/s");
        assert_eq!(raw_bits.rate(-1.0), "0");
    }

    #[test]
    fn counts_and_ages() {
        let u = Units::default();
        assert_eq!(u.count(999), "999");
        assert_eq!(u.count(12_345), "12.3k");
        assert_eq!(u.count(u64::MAX), "18.4E");
        assert_eq!(
            Units::new(Unit::Bits, true).count(u64::MAX),
            u64::MAX.to_string()
        );
        assert_eq!(u.age(1_500), "1.5s");
        assert_eq!(u.age(123_000), "2m03s");
        assert_eq!(u.age(3_723_000), "1h02m");
        assert_eq!(u.age(2 * 86_400_000 + 3_600_000 * 3), "2d03h");
        assert_eq!(Units::new(Unit::Bytes, true).age(1_500), "1500ms");
    }

    #[test]
    fn local_times() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_767_225_603_250);
        assert_eq!(local_time(t, 0), "2026-01-01 00:00:03.250");
        assert_eq!(local_time(t, 3600), "2026-01-01 01:00:03.250");
        assert_eq!(local_time(t, -5 * 3600 - 1800), "2025-12-31 18:30:03.250");
        assert_eq!(
            local_time(t, i32::MAX),
            "2026-01-01 00:00:03.250",
            "no such offset: UTC"
        );
    }
}
