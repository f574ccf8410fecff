//! Human durations in config files: `500ms`, `30s`, `5m`, `6h`, `1825d`.

use serde::{Deserialize, Deserializer};
use std::time::Duration;

/// A duration written as a number followed by a unit (`ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// What a duration must look like, for error messages.
pub const DURATION_FORMAT: &str =
    "a whole number followed by ms, s, m, h or d (e.g. 30s, 5m, 1825d)";

/// The longest duration a config may give (100 years): beyond it a lease, a grace period
/// or an inactivity cut-off means nothing, and time arithmetic would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(36_500 * 86_400);

/// Parses `"30d"` and friends, at most [`MAX_DURATION`]; the error says what was expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("missing unit: expected {DURATION_FORMAT}"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("not a duration: expected {DURATION_FORMAT}"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("unknown unit {unit:?}: expected {DURATION_FORMAT}")),
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| "too long (at most 36500d, 100 years)".to_string())
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(|problem| serde::de::Error::custom(format!("{text:?}: {problem}")))
    }
}

impl std::fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        let (value, unit) = [
            (86_400_000, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1_000, "s"),
        ]
        .into_iter()
        .find(|(size, _)| ms >= *size && ms.is_multiple_of(*size))
        .map(|(size, unit)| (ms / size, unit))
        .unwrap_or((ms, "ms"));
        write!(f, "{value}{unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("6h"), Ok(Duration::from_secs(21_600)));
        assert_eq!(
            parse_duration("1825d"),
            Ok(Duration::from_secs(1825 * 86_400))
        );
    }

    #[test]
    fn rejects_bad_text_with_the_expected_form() {
        for bad in ["", "30", "d", "30x", "-5s", "1.5h"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(
                err.contains("ms, s, m, h or d") || err.contains("unit"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rejects_durations_beyond_a_century() {
        assert_eq!(parse_duration("36500d"), Ok(MAX_DURATION));
        for huge in ["36501d", "99999999999999999h", "18446744073709551615ms"] {
            let err = parse_duration(huge).unwrap_err();
            assert!(err.contains("at most 36500d"), "{huge}: {err}");
        }
    }

    #[test]
    fn displays_in_the_largest_whole_unit() {
        assert_eq!(
            HumanDuration(Duration::from_secs(30 * 86_400)).to_string(),
            "30d"
        );
        assert_eq!(
            HumanDuration(Duration::from_millis(1500)).to_string(),
            "1500ms"
        );
        assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "90s");
    }
}
