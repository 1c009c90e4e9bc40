//! Timestamps on the wire are RFC 3339 in UTC with millisecond precision; in the engine they
//! are milliseconds since the Unix epoch, which sort and index cheaply.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};

use crate::InvalidInput;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Renders epoch milliseconds as RFC 3339 UTC, e.g. `2026-11-26T15:17:39.123Z`.
pub fn ms_to_rfc3339(ms: i64) -> String {
    match Utc.timestamp_millis_opt(ms).single() {
        Some(at) => at.to_rfc3339_opts(SecondsFormat::Millis, true),
        None => String::from("1970-01-01T00:00:00.000Z"),
    }
}

/// Parses an RFC 3339 timestamp (any offset) given in input `field` to epoch milliseconds.
/// A bare date (`2026-11-26`) is taken as midnight UTC.
pub fn parse_rfc3339(field: &str, text: &str) -> Result<i64, InvalidInput> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis());
    }
    if let Ok(date) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc().timestamp_millis());
    }
    Err(InvalidInput::new(
        field,
        format!(
            "\"{}\" is not an RFC 3339 timestamp (like 2026-11-26T15:00:00Z)",
            crate::error::excerpt(text)
        ),
    ))
}

/// Like [`parse_rfc3339`], for an optional input.
pub fn parse_optional_rfc3339(
    field: &str,
    text: Option<&str>,
) -> Result<Option<i64>, InvalidInput> {
    text.map(|t| parse_rfc3339(field, t)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        let ms = 1_795_000_000_123;
        assert_eq!(parse_rfc3339("since", &ms_to_rfc3339(ms)), Ok(ms));
    }

    #[test]
    fn accepts_offsets_and_bare_dates() {
        assert_eq!(
            parse_rfc3339("since", "2026-01-01T01:00:00+01:00"),
            parse_rfc3339("since", "2026-01-01")
        );
    }

    #[test]
    fn names_the_field_on_garbage() {
        let err = parse_rfc3339("until", "yesterday").unwrap_err();
        assert_eq!(err.field, "until");
        assert!(err.rule.contains("RFC 3339"));
    }
}
