//! Human-friendly durations for TTLs: `"90s"`, `"10m"`, `"1h30m"`, `"500ms"`, `"2d"`.
//!
//! Grammar: one or more `<digits><unit>` components, unit one of `ms`, `s`, `m`, `h`, `d`.
//! Each unit may appear at most once and units must be in descending order
//! (`1h30m`, not `30m1h`). The total must be positive and fit in `u64` milliseconds.

use std::time::Duration;

use thiserror::Error;

/// Why a duration string was rejected. Every variant names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error("empty duration (expected e.g. \"90s\", \"10m\", \"1h30m\")")]
    Empty,
    #[error("invalid duration `{input}`: negative durations are not allowed")]
    Negative { input: String },
    #[error("invalid duration `{input}`: number without a unit (use ms, s, m, h or d, e.g. \"{input}s\")")]
    MissingUnit { input: String },
    #[error("invalid duration `{input}`: unknown unit `{unit}` (expected ms, s, m, h or d)")]
    UnknownUnit { input: String, unit: String },
    #[error("invalid duration `{input}`: expected a number at `{rest}`")]
    ExpectedNumber { input: String, rest: String },
    #[error("invalid duration `{input}`: unit `{unit}` repeated or out of order (largest unit first, e.g. \"1h30m\")")]
    UnitOrder { input: String, unit: String },
    #[error("invalid duration `{input}`: value is too large")]
    Overflow { input: String },
    #[error("invalid duration `{input}`: must be greater than zero")]
    Zero { input: String },
}

/// Units in descending order: (suffix, milliseconds).
const UNITS: [(&str, u64); 5] = [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000), ("ms", 1)];

/// Parse a compact duration such as `"1h30m"`. Surrounding whitespace is ignored.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    let owned = || input.to_string();
    if input.starts_with('-') {
        return Err(DurationError::Negative { input: owned() });
    }
    let mut rest = input;
    let mut total: u64 = 0;
    // Index into UNITS of the last unit seen; the next must be strictly smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(DurationError::ExpectedNumber { input: owned(), rest: rest.to_string() });
        }
        let (digits, after) = rest.split_at(digits_end);
        let unit_end = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        if unit.is_empty() {
            return Err(DurationError::MissingUnit { input: owned() });
        }
        let Some(idx) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(DurationError::UnknownUnit { input: owned(), unit: unit.to_string() });
        };
        if last_unit.is_some_and(|prev| idx <= prev) {
            return Err(DurationError::UnitOrder { input: owned(), unit: unit.to_string() });
        }
        last_unit = Some(idx);
        let overflow = || DurationError::Overflow { input: owned() };
        let n: u64 = digits.parse().map_err(|_| overflow())?;
        let ms = n.checked_mul(UNITS[idx].1).ok_or_else(overflow)?;
        total = total.checked_add(ms).ok_or_else(overflow)?;
        rest = next;
    }
    if total == 0 {
        return Err(DurationError::Zero { input: owned() });
    }
    Ok(Duration::from_millis(total))
}

/// Format a duration compactly, e.g. `1h30m`, `2d`, `1500ms` → `1s500ms`.
/// Sub-millisecond precision is truncated; a zero duration formats as `0s`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let n = ms / size;
        if n > 0 {
            out.push_str(&n.to_string());
            out.push_str(unit);
            ms -= n * size;
        }
    }
    out
}

/// Serde adapter storing a [`Duration`] as its compact string form.
///
/// Use `#[serde(with = "crate::grant::duration::serde_duration")]` for `Duration` fields and
/// `#[serde(default, with = "crate::grant::duration::serde_duration::option")]` for `Option<Duration>`.
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::{format_duration, parse_duration};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Duration>` (`None` ⇔ absent / null).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        use super::super::{format_duration, parse_duration};

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => s.serialize_some(&format_duration(*d)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                Some(s) => parse_duration(&s).map(Some).map_err(serde::de::Error::custom),
                None => Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_forms() {
        let cases = [
            ("90s", 90_000),
            ("10m", 600_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("2d", 172_800_000),
            ("1d2h3m4s5ms", 93_784_005),
            (" 5m ", 300_000),
            ("0h5m", 300_000),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s).unwrap(), Duration::from_millis(ms), "{s}");
        }
    }

    #[test]
    fn rejects_invalid_forms_naming_input() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(parse_duration("   "), Err(DurationError::Empty));
        type Check = fn(&DurationError) -> bool;
        let cases: [(&str, Check); 10] = [
            ("0", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("90", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("1h30", |e| matches!(e, DurationError::MissingUnit { .. })),
            ("-5s", |e| matches!(e, DurationError::Negative { .. })),
            ("5w", |e| matches!(e, DurationError::UnknownUnit { .. })),
            ("h", |e| matches!(e, DurationError::ExpectedNumber { .. })),
            ("1h 30m", |e| matches!(e, DurationError::ExpectedNumber { .. })),
            ("30m1h", |e| matches!(e, DurationError::UnitOrder { .. })),
            ("0s", |e| matches!(e, DurationError::Zero { .. })),
            ("99999999999999999999999s", |e| matches!(e, DurationError::Overflow { .. })),
        ];
        for (s, check) in cases {
            let err = parse_duration(s).unwrap_err();
            assert!(check(&err), "{s}: {err:?}");
            assert!(err.to_string().contains(s.trim()), "{s}: {err}");
        }
        assert!(matches!(parse_duration("1s1s"), Err(DurationError::UnitOrder { .. })));
        assert!(matches!(parse_duration("18446744073709551615d"), Err(DurationError::Overflow { .. })));
        assert!(matches!(parse_duration("213503982334d15h"), Err(DurationError::Overflow { .. })));
    }

    #[test]
    fn formats_compactly_and_round_trips() {
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(172_800)), "2d");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_nanos(10)), "0s");
        for s in ["90s", "10m", "1h", "1h30m", "500ms", "2d", "1d2h3m4s5ms"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(parse_duration("90s").unwrap()), "1m30s");
    }

    #[test]
    fn serde_helpers() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            #[serde(with = "serde_duration")]
            a: Duration,
            #[serde(default, with = "serde_duration::option")]
            b: Option<Duration>,
        }
        let t: T = serde_json::from_str(r#"{"a":"1h30m"}"#).unwrap();
        assert_eq!(t, T { a: Duration::from_secs(5400), b: None });
        let t: T = serde_json::from_str(r#"{"a":"1s","b":"2m"}"#).unwrap();
        assert_eq!(t.b, Some(Duration::from_secs(120)));
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"a":"1s","b":"2m"}"#);
        let err = serde_json::from_str::<T>(r#"{"a":"5"}"#).unwrap_err();
        assert!(err.to_string().contains("`5`"), "{err}");
    }
}
