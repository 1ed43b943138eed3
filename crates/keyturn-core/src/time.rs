//! Instants, durations and the injected clock. Every instant is UTC as integer milliseconds since
//! the Unix epoch, so both stores hold the same integer and comparisons never involve time zones.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::quote_value;
use crate::Error;

/// A UTC instant in whole milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Instant(i64);

/// A non-negative span of time in whole milliseconds.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Duration(i64);

/// The source of the current instant. Every time-dependent decision takes its instant from here,
/// so tests move time instead of editing rows.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Instant;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// A clock that stays still until it is moved. Clones share the same instant.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl Instant {
    pub const fn from_millis(millis: i64) -> Self {
        Instant(millis)
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Parses an RFC 3339 date and time with an offset, such as `2027-01-31T12:00:00Z`.
    pub fn parse_rfc3339(value: &str) -> Result<Self, Error> {
        let parsed = OffsetDateTime::parse(value.trim(), &Rfc3339)
            .map_err(|_| Error::InvalidInstant { value: quote_value(value) })?;
        let millis = parsed.unix_timestamp_nanos() / 1_000_000;
        i64::try_from(millis).map(Instant).map_err(|_| Error::InvalidInstant { value: quote_value(value) })
    }

    /// Formats the instant as RFC 3339 in UTC, with milliseconds when they are not zero.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime().format(&Rfc3339).unwrap_or_else(|_| self.0.to_string())
    }

    /// Formats the instant as an HTTP-date (RFC 9110), rounded down to the second.
    pub fn to_http_date(self) -> String {
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        self.to_datetime().format(&format).unwrap_or_else(|_| self.0.to_string())
    }

    /// Returns the instant `duration` later, saturating at the largest instant.
    pub fn saturating_add(self, duration: Duration) -> Self {
        Instant(self.0.saturating_add(duration.0))
    }

    pub fn saturating_sub(self, duration: Duration) -> Self {
        Instant(self.0.saturating_sub(duration.0))
    }

    /// Returns the span from `earlier` to `self`, or zero when `earlier` is later.
    pub fn since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0).max(0))
    }

    fn to_datetime(self) -> OffsetDateTime {
        // Instants outside the calendar range of `time` (about ±9999 years) clamp to its ends.
        let nanos = i128::from(self.0) * 1_000_000;
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(if self.0 < 0 {
            OffsetDateTime::UNIX_EPOCH
        } else {
            time::macros::datetime!(9999-12-31 23:59:59 UTC)
        })
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Instant({})", self.to_rfc3339())
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

impl Duration {
    pub const ZERO: Duration = Duration(0);

    /// Creates a duration; a negative count of milliseconds is clamped to zero.
    pub const fn from_millis(millis: i64) -> Self {
        Duration(if millis < 0 { 0 } else { millis })
    }

    pub const fn from_secs(secs: i64) -> Self {
        Duration::from_millis(secs.saturating_mul(SECOND))
    }

    pub const fn from_days(days: i64) -> Self {
        Duration::from_millis(days.saturating_mul(DAY))
    }

    pub const fn as_millis(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses a duration written like `90d`, `12h`, `30m`, `45s`, `250ms` or `1h30m`: one or more
    /// whole amounts, each followed by a unit, units in the order d, h, m, s, ms and each at most
    /// once. `0s` is a valid zero duration; a sign, a fraction or an empty string is rejected.
    pub fn parse(value: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidDuration { value: quote_value(value) };
        let units = [("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND), ("ms", 1)];
        let mut rest = value.trim();
        let mut next_unit = 0;
        let mut total: i64 = 0;
        if rest.is_empty() {
            return Err(invalid());
        }

        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 12 {
                return Err(invalid());
            }
            let amount: i64 = rest[..digits].parse().map_err(|_| invalid())?;
            let after = &rest[digits..];
            let symbol_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
            let symbol = &after[..symbol_len];
            let position = units[next_unit..].iter().position(|(unit, _)| *unit == symbol).ok_or_else(invalid)?;
            let (_, millis) = units[next_unit + position];
            total = amount.checked_mul(millis).and_then(|part| total.checked_add(part)).ok_or_else(invalid)?;
            next_unit += position + 1;
            rest = &after[symbol_len..];
        }
        Ok(Duration(total))
    }
}

impl fmt::Debug for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Duration({self})")
    }
}

impl fmt::Display for Duration {
    /// Writes the duration in the same notation that [`Duration::parse`] reads, such as `1h30m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        if rest == 0 {
            return f.write_str("0s");
        }
        for (symbol, millis) in [("d", DAY), ("h", HOUR), ("m", MINUTE), ("s", SECOND)] {
            if rest >= millis {
                write!(f, "{}{symbol}", rest / millis)?;
                rest %= millis;
            }
        }
        if rest > 0 {
            write!(f, "{rest}ms")?;
        }
        Ok(())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Instant(i64::try_from(since_epoch.as_millis()).unwrap_or(i64::MAX))
    }
}

impl ManualClock {
    pub fn new(start: Instant) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.0)))
    }

    pub fn set(&self, instant: Instant) {
        self.0.store(instant.0, Ordering::SeqCst);
    }

    pub fn advance(&self, duration: Duration) {
        self.0.fetch_add(duration.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        Instant(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_parses_each_unit() {
        assert_eq!(Duration::parse("90d").unwrap(), Duration::from_days(90));
        assert_eq!(Duration::parse("12h").unwrap().as_millis(), 12 * HOUR);
        assert_eq!(Duration::parse("30m").unwrap().as_millis(), 30 * MINUTE);
        assert_eq!(Duration::parse("45s").unwrap().as_millis(), 45 * SECOND);
        assert_eq!(Duration::parse("1h30m").unwrap().as_millis(), HOUR + 30 * MINUTE);
        assert_eq!(Duration::parse("0s").unwrap(), Duration::ZERO);
        assert_eq!(Duration::parse("250ms").unwrap().as_millis(), 250);
        assert_eq!(Duration::parse("1s500ms").unwrap().as_millis(), 1_500);
    }

    #[test]
    fn duration_rejects_malformed_values() {
        for value in [
            "",
            " ",
            "-5d",
            "5sm",
            "1ms1s",
            "5x",
            "5",
            "d",
            "1.5h",
            "30m1h",
            "1h1h",
            "5w",
            "+5d",
            "1h 30m",
            "9999999999999d",
        ] {
            assert!(Duration::parse(value).is_err(), "{value:?} should be rejected");
        }
    }

    #[test]
    fn duration_display_round_trips() {
        for value in ["90d", "1h30m", "45s", "0s", "2d3h4m5s", "250ms", "1s500ms"] {
            assert_eq!(Duration::parse(value).unwrap().to_string(), value);
        }
    }

    #[test]
    fn instant_formats_rfc3339_and_http_date() {
        let instant = Instant::parse_rfc3339("2026-12-04T20:17:05.250Z").unwrap();
        assert_eq!(instant.to_rfc3339(), "2026-12-04T20:17:05.25Z");
        assert_eq!(instant.to_http_date(), "Fri, 04 Dec 2026 20:17:05 GMT");
        assert_eq!(Instant::parse_rfc3339("2026-12-04T21:17:05+01:00").unwrap().as_millis(), instant.as_millis() - 250);
    }

    #[test]
    fn instant_rejects_malformed_rfc3339() {
        assert!(Instant::parse_rfc3339("2026-12-04").is_err());
        assert!(Instant::parse_rfc3339("tomorrow").is_err());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(Instant::from_millis(1_000));
        let shared = clock.clone();
        clock.advance(Duration::from_secs(2));
        assert_eq!(shared.now(), Instant::from_millis(3_000));
        shared.set(Instant::from_millis(5));
        assert_eq!(clock.now(), Instant::from_millis(5));
    }
}
