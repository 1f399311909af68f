//! Human units in configuration and on the command line: sizes such as `64MiB` and
//! durations such as `30s`, parsed from strings (serde and `FromStr`).
//!
//! Parsing is exact: `1.5GiB` is exactly 1,610,612,736 bytes, and a value too large
//! for its type is an error, never a wrapped or saturated number. Every value prints
//! (`Display`) as text that parses back to it.

use serde::{Deserialize, Deserializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A number of bytes, written `1024`, `64KiB`, `64MiB`, `1GiB`, `10MB`, `1.5GiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "tib" => 1 << 40,
            other => {
                return Err(format!(
                "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ))
            }
        };
        if num.is_empty() {
            return Err(format!("size {s:?} has no number"));
        }
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if (int.is_empty() && frac.is_empty()) || frac.contains('.') {
            return Err(format!("bad number in size {s:?}"));
        }
        decimal_times(int, frac, mult)
            .map(ByteSize)
            .ok_or_else(|| format!("size {s:?} is too large"))
    }
}

/// `int.frac × mult` rounded half up, exactly (no floating point: an `f64` holds 53
/// bits, so `1.5` of a large size would be off, and a value at 2^64 would saturate);
/// `None` past `u64::MAX`. The digits are ASCII digits; either part may be empty.
fn decimal_times(int: &str, frac: &str, mult: u64) -> Option<u64> {
    let mut whole: u64 = 0;
    for d in int.bytes() {
        whole = whole.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    // The fraction times `mult`, by schoolbook multiplication from the last digit:
    // `carry` ends as its whole part, `first` as the first digit after the point.
    let (mut carry, mut first) = (0u64, 0u64);
    for d in frac.bytes().rev() {
        let t = u128::from(d - b'0') * u128::from(mult) + u128::from(carry);
        first = (t % 10) as u64;
        carry = (t / 10) as u64;
    }
    let round_up = u64::from(first >= 5);
    whole
        .checked_mul(mult)?
        .checked_add(carry)?
        .checked_add(round_up)
}

impl fmt::Display for ByteSize {
    /// Exact, in the largest binary unit that divides the size (`64MiB`, `1536B`), so
    /// the text parses back to the same size. [`format_bytes`] is the rounded form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut n = self.0;
        let mut i = 0;
        while n != 0 && n % 1024 == 0 && i < UNITS.len() - 1 {
            n /= 1024;
            i += 1;
        }
        write!(f, "{n}{}", UNITS[i])
    }
}

/// `1536` as `1.5KiB`: the form `ls -h` and reports print.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n}B")
    } else if v.fract() == 0.0 {
        format!("{}{}", v as u64, UNITS[i])
    } else {
        format!("{:.2}{}", v, UNITS[i])
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written `500ms`, `30s`, `5m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num.parse().map_err(|_| {
            format!("duration {s:?} must be a whole number with a unit (ms, s, m, h)")
        })?;
        let too_long = || format!("duration {s:?} is too long");
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" | "min" => Duration::from_secs(n.checked_mul(60).ok_or_else(too_long)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(too_long)?),
            other => {
                return Err(format!(
                    "unknown duration unit {other:?} in {s:?} (use ms, s, m, h)"
                ))
            }
        };
        Ok(HumanDuration(d))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

/// How stale Strata's view of an under-store path may grow before a lookup or a
/// listing of it compares it with the under-store again: `-1` never (what is
/// missing is still loaded once), `0` on every lookup and listing, or a duration
/// such as `30s` or `5m` (at most 365 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SyncInterval {
    /// Never compared again once loaded.
    Never,
    /// Compared on every lookup and listing.
    Always,
    /// Compared when the last comparison is older than this.
    Every(Duration),
}

/// The longest sync interval (365 days); for longer, use `-1` (never).
pub const MAX_SYNC_INTERVAL: Duration = Duration::from_secs(365 * 24 * 3600);

impl SyncInterval {
    /// The interval as it travels in a request: `-1`, `0`, or milliseconds.
    pub fn to_millis(self) -> i64 {
        match self {
            SyncInterval::Never => -1,
            SyncInterval::Always => 0,
            SyncInterval::Every(d) => d.as_millis().clamp(1, i64::MAX as u128) as i64,
        }
    }

    /// The interval a request names in milliseconds; anything below `-1` or past
    /// [`MAX_SYNC_INTERVAL`] is an error.
    pub fn from_millis(ms: i64) -> Result<Self, String> {
        match ms {
            -1 => Ok(SyncInterval::Never),
            0 => Ok(SyncInterval::Always),
            n if n > 0 && n as u128 <= MAX_SYNC_INTERVAL.as_millis() => {
                Ok(SyncInterval::Every(Duration::from_millis(n as u64)))
            }
            n => Err(format!(
                "sync interval {n} ms: use -1 (never), 0 (always), or 1 ms to 365 days"
            )),
        }
    }

    /// Whether a comparison made `elapsed` ago is too old.
    pub fn is_due(self, elapsed: Duration) -> bool {
        match self {
            SyncInterval::Never => false,
            SyncInterval::Always => true,
            SyncInterval::Every(d) => elapsed >= d,
        }
    }
}

impl FromStr for SyncInterval {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "-1" => return Ok(SyncInterval::Never),
            "0" => return Ok(SyncInterval::Always),
            _ => {}
        }
        let d = s
            .parse::<HumanDuration>()
            .map_err(|e| format!("{e}; a sync interval is -1 (never), 0 (always) or a duration"))?;
        if d.0 > MAX_SYNC_INTERVAL {
            return Err(format!(
                "sync interval {s:?} is longer than 365 days (use -1 for never)"
            ));
        }
        Ok(if d.0.is_zero() {
            SyncInterval::Always
        } else {
            SyncInterval::Every(d.0)
        })
    }
}

impl fmt::Display for SyncInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncInterval::Never => f.write_str("-1"),
            SyncInterval::Always => f.write_str("0"),
            SyncInterval::Every(d) => HumanDuration(*d).fmt(f),
        }
    }
}

impl<'de> Deserialize<'de> for SyncInterval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(-1) => Ok(SyncInterval::Never),
            Raw::Int(0) => Ok(SyncInterval::Always),
            Raw::Int(n) => Err(serde::de::Error::custom(format!(
                "sync interval {n}: a number is -1 (never) or 0 (always); write a duration as \"30s\""
            ))),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 << 20);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("10MB".parse::<ByteSize>().unwrap().0, 10_000_000);
        assert_eq!("1.5KiB".parse::<ByteSize>().unwrap().0, 1536);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("2 GiB".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert!("12XB".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!("99999999999TiB".parse::<ByteSize>().is_err());
        assert_eq!(format_bytes(1536), "1.50KiB");
        assert_eq!(format_bytes(64 << 20), "64MiB");
        assert_eq!(format_bytes(12), "12B");
    }

    #[test]
    fn durations() {
        assert_eq!(
            "30s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(30)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "2m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("30".parse::<HumanDuration>().is_err());
        assert!("1.5s".parse::<HumanDuration>().is_err());
    }

    #[test]
    fn a_fractional_size_is_exact_and_one_past_u64_is_an_error() {
        let size = |s: &str| s.parse::<ByteSize>().map(ByteSize::bytes);
        // Through an f64 both were taken as u64::MAX.
        assert!(size("18446744073709551615.5").is_err());
        assert!(size("16777216.0TiB").is_err());
        // 2^53 + 1 is not an f64.
        assert_eq!(size("9007199254740993.0"), Ok(9_007_199_254_740_993));
        assert_eq!(size("16777215.999999999999TiB"), Ok(u64::MAX));
        assert_eq!(size("0.5"), Ok(1));
        assert_eq!(size(".25KiB"), Ok(256));
        assert_eq!(size("3.KiB"), Ok(3072));
        assert!(size(".").is_err());
        assert!(size("1.2.3").is_err());
    }

    #[test]
    fn every_size_prints_as_text_that_parses_back() {
        for n in [0, 12, 1536, 36_537, 64 << 20, 3 << 40, 5 << 50, u64::MAX] {
            let text = ByteSize(n).to_string();
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(n)), "{text}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64MiB");
        assert_eq!(ByteSize(1536).to_string(), "1536B");
    }

    #[test]
    fn minutes_or_hours_past_u64_seconds_are_an_error() {
        // Both overflowed the multiplication (a panic in a debug build, a wrapped
        // duration in a release build).
        assert!("5124095576030432h".parse::<HumanDuration>().is_err());
        assert!("18446744073709551615m".parse::<HumanDuration>().is_err());
        assert_eq!(
            "5124095576030431h".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(5_124_095_576_030_431 * 3600)
        );
    }
    #[test]
    fn sync_intervals_parse_print_and_travel() {
        let p = |s: &str| s.parse::<SyncInterval>();
        assert_eq!(p("-1"), Ok(SyncInterval::Never));
        assert_eq!(p("0"), Ok(SyncInterval::Always));
        assert_eq!(p("0s"), Ok(SyncInterval::Always));
        assert_eq!(p("30s"), Ok(SyncInterval::Every(Duration::from_secs(30))));
        assert!(p("-2").is_err());
        assert!(p("soon").is_err());
        assert!(p("366d").is_err());
        assert!(p("8785h").is_err(), "past 365 days");
        for i in [
            SyncInterval::Never,
            SyncInterval::Always,
            SyncInterval::Every(Duration::from_millis(250)),
            SyncInterval::Every(MAX_SYNC_INTERVAL),
        ] {
            assert_eq!(p(&i.to_string()), Ok(i));
            assert_eq!(SyncInterval::from_millis(i.to_millis()), Ok(i));
        }
        assert!(SyncInterval::from_millis(-2).is_err());
        assert!(SyncInterval::from_millis(i64::MIN).is_err());
        assert!(SyncInterval::from_millis(MAX_SYNC_INTERVAL.as_millis() as i64 + 1).is_err());
        let every = SyncInterval::Every(Duration::from_secs(10));
        assert!(!every.is_due(Duration::from_secs(9)));
        assert!(every.is_due(Duration::from_secs(10)));
        assert!(!SyncInterval::Never.is_due(Duration::MAX));
        assert!(SyncInterval::Always.is_due(Duration::ZERO));
    }
}
