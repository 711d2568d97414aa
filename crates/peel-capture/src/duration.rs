//! Human durations as peel writes them everywhere (flags and playbooks): `30s`, `5m`, `1h`,
//! `250ms`, `1h30m`, `1.5s`.
//!
//! A bare number is refused rather than guessed (seconds? milliseconds?): in a tool about timings an
//! ambiguous unit is a bug. This is not a general date/time parser.

use std::time::Duration;

use thiserror::Error;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid duration '{input}': {reason} (write it like 30s, 5m, 1h, 250ms or 1h30m)")]
pub struct DurationError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Most decimals a number may have: 10^24 times a day in nanoseconds still fits in a u128.
const MAX_DECIMALS: usize = 24;

/// Parses `30s`, `5m`, `1h`, `2d`, `250ms`, `10us`, `5ns`, decimals like `1.5s` or `0.25ms`, and
/// sums like `1h30m` or `1m 30s`. A decimal must come out as whole nanoseconds (`1.5ns` is refused).
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let fail = |reason| DurationError { input: input.to_string(), reason };
    let text = input.trim();
    if text.is_empty() {
        return Err(fail("empty"));
    }
    let mut total_ns: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits_end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits_end == 0 {
            return Err(fail("expected a number"));
        }
        let value: u128 = rest[..digits_end].parse().map_err(|_| fail("number too large"))?;
        rest = &rest[digits_end..];
        // The decimals as a whole number and their count: "1.25" is 1 and (25, 2).
        let mut fraction: (u128, usize) = (0, 0);
        if let Some(after_point) = rest.strip_prefix('.') {
            let decimals =
                after_point.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_point.len());
            if decimals == 0 {
                return Err(fail("expected digits after '.'"));
            }
            if decimals > MAX_DECIMALS {
                return Err(fail("too many decimals"));
            }
            // At most MAX_DECIMALS digits: fits in a u128.
            fraction =
                (after_point[..decimals].parse().map_err(|_| fail("number too large"))?, decimals);
            rest = &after_point[decimals..];
        }
        let unit_end = rest.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(rest.len());
        let unit_ns = match &rest[..unit_end] {
            "" => return Err(fail("missing unit")),
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            _ => return Err(fail("unknown unit (use ns, us, ms, s, m, h or d)")),
        };
        let scale = 10u128.pow(fraction.1 as u32);
        // fraction.0 < 10^24 and unit_ns <= 8.64e13: the product fits in a u128.
        let fraction_ns = fraction.0 * unit_ns;
        if !fraction_ns.is_multiple_of(scale) {
            return Err(fail("finer than a nanosecond"));
        }
        total_ns = value
            .checked_mul(unit_ns)
            .and_then(|ns| ns.checked_add(fraction_ns / scale))
            .and_then(|ns| total_ns.checked_add(ns))
            .ok_or_else(|| fail("too large"))?;
        rest = rest[unit_end..].trim_start();
    }
    let secs = u64::try_from(total_ns / 1_000_000_000).map_err(|_| fail("too large"))?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = (total_ns % 1_000_000_000) as u32;
    Ok(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let cases: &[(&str, Duration)] = &[
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("1h", Duration::from_secs(3600)),
            ("2d", Duration::from_secs(172_800)),
            ("250ms", Duration::from_millis(250)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m 30s", Duration::from_secs(90)),
            (" 0s ", Duration::ZERO),
            ("1s500ms", Duration::from_millis(1500)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25ms", Duration::from_micros(250)),
            ("2.5m", Duration::from_secs(150)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1h0.5m", Duration::from_secs(3630)),
            ("0.5us", Duration::from_nanos(500)),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_duration(input).as_ref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn refused_forms_say_why() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("30", "missing unit"),
            ("s", "expected a number"),
            ("5 m", "missing unit"),
            ("1.5ns", "finer than a nanosecond"),
            ("1.0000000001s", "finer than a nanosecond"),
            ("1.s", "expected digits after '.'"),
            (".5s", "expected a number"),
            ("1.5", "missing unit"),
            ("1.1111111111111111111111111s", "too many decimals"),
            ("3w", "unknown unit (use ns, us, ms, s, m, h or d)"),
            ("-1s", "expected a number"),
            ("99999999999999999999999999999999999999999s", "number too large"),
            ("9999999999999999999999d", "too large"),
        ];
        for (input, reason) in cases {
            let err = parse_duration(input).unwrap_err();
            assert_eq!(err.reason, *reason, "{input}");
        }
    }

    #[test]
    fn message_shows_input_and_examples() {
        let err = parse_duration("30").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid duration '30': missing unit (write it like 30s, 5m, 1h, 250ms or 1h30m)"
        );
    }
}
