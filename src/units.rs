//! The small value types of the configuration language: durations (`30s`, `4d`), shares
//! (`80%`) and file modes (`"0640"`), each parsed by a pure function with its own error text.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// A duration written as `500ms`, `30s`, `5m`, `2h` or `4d` (combinations like `1h30m` too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

/// No duration in a config means more than this: every instant tokend computes from one
/// stays far inside what clocks, timestamps and RFC 3339 can represent.
pub const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let ok = !t.is_empty()
        && t.chars().next().is_some_and(|c| c.is_ascii_digit())
        && !t.chars().last().is_some_and(|c| c.is_ascii_digit());
    match ok.then(|| humantime::parse_duration(t)) {
        Some(Ok(d)) if d <= MAX_DURATION => Ok(d),
        Some(Ok(_)) => Err(format!(
            "`{text}` is longer than the 10 years tokend accepts for any duration"
        )),
        _ => Err(format!(
            "`{text}` is not a duration; write a number and a unit, like 500ms, 30s, 5m, 2h or 4d"
        )),
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParseVisitor {
            expecting: "a duration like 30s, 5m or 4d",
            parse: |s| parse_duration(s).map(Dur),
        })
    }
}

/// A share of a token's lifetime, written `80%`; stored as a fraction in [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Share(pub f64);

impl Share {
    pub fn of(self, d: Duration) -> Duration {
        d.mul_f64(self.0)
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", (self.0 * 100.0 * 1000.0).round() / 1000.0)
    }
}

pub fn parse_share(text: &str) -> Result<Share, String> {
    let bad = || format!("`{text}` is not a share; write a percentage like 80%");
    let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
    let value: f64 = number.trim().parse().map_err(|_| bad())?;
    if !value.is_finite() {
        return Err(bad());
    }
    Ok(Share(value / 100.0))
}

impl<'de> serde::Deserialize<'de> for Share {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParseVisitor {
            expecting: "a percentage like 80%",
            parse: parse_share,
        })
    }
}

/// A Unix permission mode. Written as a quoted octal string (`"0640"`); an unquoted
/// `0640` is read by YAML as the decimal number 640, whose digits we take as octal,
/// because that is what every operator who writes it means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

pub fn parse_mode(text: &str) -> Result<Mode, String> {
    let digits = text.trim().trim_start_matches("0o");
    let bad = || format!("`{text}` is not a file mode; write it in octal, like \"0640\"");
    if digits.is_empty() || digits.len() > 4 {
        return Err(bad());
    }
    let mode = u32::from_str_radix(digits, 8).map_err(|_| bad())?;
    if mode > 0o777 {
        return Err(format!(
            "file mode `{text}` sets special bits (setuid, setgid or sticky); only 0000..0777 is allowed"
        ));
    }
    Ok(Mode(mode))
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParseVisitor {
            expecting: "a file mode like \"0640\"",
            parse: parse_mode,
        })
    }
}

/// Accepts strings and bare numbers (YAML users write `timeout: 30` and `mode: 0640`) and
/// parses them inside the visitor, so the YAML layer reports the value's own line and key.
struct ParseVisitor<T> {
    expecting: &'static str,
    parse: fn(&str) -> Result<T, String>,
}

impl<T> Visitor<'_> for ParseVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.parse)(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        self.visit_str(&v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("4d"), Ok(Duration::from_secs(4 * 86400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("3650d"), Ok(MAX_DURATION));
        // Found by reading the fuzz targets: these overflowed `now + delay` and RFC 3339.
        assert!(parse_duration("10000y").unwrap_err().contains("10 years"));
        assert!(parse_duration("580000000000y").is_err());
        for bad in ["", "30", "s", "5x", "-5s", "4 days later"] {
            assert!(parse_duration(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn shares() {
        assert_eq!(parse_share("80%"), Ok(Share(0.8)));
        assert_eq!(parse_share("12.5%"), Ok(Share(0.125)));
        assert!(parse_share("80").is_err());
        assert!(parse_share("abc%").is_err());
        assert!(parse_share("inf%").is_err());
        assert_eq!(Share(0.8).to_string(), "80%");
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0640"), Ok(Mode(0o640)));
        assert_eq!(parse_mode("640"), Ok(Mode(0o640)));
        assert_eq!(parse_mode("0o600"), Ok(Mode(0o600)));
        assert!(parse_mode("0990").is_err());
        assert!(parse_mode("4755").unwrap_err().contains("special bits"));
        assert_eq!(Mode(0o600).to_string(), "0600");
    }
}
