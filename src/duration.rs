//! The one duration grammar, for fleet.yaml values, every flag that takes a
//! time (`down --timeout`, `bench --timeout`) and the worker's flags.
//!
//! # The rule
//! A duration is humantime text with a unit: `250ms`, `10s`, `2m`, `1m 30s`,
//! or a bare number, which is seconds everywhere (`10`, `1.5`): the
//! convention of systemd's time spans, `sleep`, `timeout` and ab's `-s`, and
//! what `fleet down --timeout 10` always meant. Anything else is refused with
//! one message that says how to write it.
//!
//! What range is allowed (zero, a cap) is the caller's rule, not the
//! grammar's: `fleet down --timeout 0s` means "SIGKILL at once", while a
//! health interval of zero makes no sense.

use std::time::Duration;

/// Why text is not a duration. Each message names the value and says how to
/// write it; the caller adds which key or flag it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DurationError {
    /// A negative number or duration, e.g. `-1` or `-5s`.
    #[error("must not be negative (got {0})")]
    Negative(String),
    /// Anything else humantime cannot read.
    #[error("'{}' is not a duration; write it like 250ms, 1s or 2m", .0.escape_debug())]
    Malformed(String),
}

/// Parse a duration by [the rule](self).
pub(crate) fn parse(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(DurationError::Negative(t.to_owned()));
    }
    if let Ok(x) = t.parse::<f64>()
        && x.is_finite()
    {
        return Duration::try_from_secs_f64(x).map_err(|_| DurationError::Malformed(s.to_owned()));
    }
    humantime::parse_duration(t).map_err(|_| DurationError::Malformed(s.to_owned()))
}

/// A duration as the grammar writes it (`1s 500ms`), for messages.
pub(crate) fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration for a person: `12.5s`, `3m05s`, `2h07m` (status, top, the
/// dashboard).
pub(crate) fn human(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..60 => format!("{secs:.1}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn humantime_forms_and_bare_seconds_are_accepted() {
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("10s", Duration::from_secs(10)),
            ("2m", Duration::from_secs(120)),
            ("1m 30s", Duration::from_secs(90)),
            (" 5s ", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10", Duration::from_secs(10)),
            ("1.5", Duration::from_millis(1500)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn negative_and_malformed_values_are_rejected() {
        let cases = [
            ("-1", "must not be negative (got -1)"),
            ("-5s", "must not be negative (got -5s)"),
            (
                "soon",
                "'soon' is not a duration; write it like 250ms, 1s or 2m",
            ),
            (
                "ten s",
                "'ten s' is not a duration; write it like 250ms, 1s or 2m",
            ),
            ("", "'' is not a duration; write it like 250ms, 1s or 2m"),
        ];
        for (text, message) in cases {
            assert_eq!(parse(text).unwrap_err().to_string(), message, "{text}");
        }
    }
}
