//! Calendar windows (hour, day, Monday-based week, month) in a time zone.

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Unit, Zoned, ZonedRound};

use crate::config::Window;

/// Start and end (exclusive) of the window holding `at`, as Unix seconds.
pub fn bounds(w: Window, tz: &TimeZone, at: Timestamp) -> (i64, i64) {
    let z = at.to_zoned(tz.clone());
    let (start, end) = match w {
        Window::Hour => {
            let s = z.round(ZonedRound::new().smallest(Unit::Hour).mode(jiff::RoundMode::Trunc)).ok();
            (s.clone(), s.and_then(|s| s.checked_add(1.hour()).ok()))
        }
        Window::Day => {
            let s = z.start_of_day().ok();
            (s.clone(), s.and_then(|s| s.tomorrow().ok()).and_then(|t| t.start_of_day().ok()))
        }
        Window::Week => {
            let back = i64::from(z.weekday().to_monday_zero_offset());
            let s = z.start_of_day().ok().and_then(|d| d.checked_sub(back.days()).ok()).and_then(|d| d.start_of_day().ok());
            (s.clone(), s.and_then(|s| s.checked_add(7.days()).ok()).and_then(|d| d.start_of_day().ok()))
        }
        Window::Month => {
            let s = z.first_of_month().ok().and_then(|d| d.start_of_day().ok());
            (s.clone(), s.and_then(|s| s.checked_add(1.month()).ok()).and_then(|d| d.start_of_day().ok()))
        }
    };
    // Only out-of-range dates fail; fall back to fixed-length windows then.
    let secs = at.as_second();
    let len = match w {
        Window::Hour => 3_600,
        Window::Day => 86_400,
        Window::Week => 7 * 86_400,
        Window::Month => 31 * 86_400,
    };
    let start = start.map(|s: Zoned| s.timestamp().as_second()).unwrap_or(secs - secs.rem_euclid(len));
    let end = end.map(|e: Zoned| e.timestamp().as_second()).unwrap_or(start + len);
    (start, end)
}

/// RFC 3339 text of a Unix second, in UTC.
pub fn rfc3339(secs: i64) -> String {
    Timestamp::from_second(secs).map(|t| t.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn windows_follow_the_calendar_in_the_time_zone() {
        let utc = TimeZone::UTC;
        let at = ts("2026-11-25T13:45:10Z"); // a Wednesday
        assert_eq!(bounds(Window::Hour, &utc, at), (ts("2026-11-25T13:00:00Z").as_second(), ts("2026-11-25T14:00:00Z").as_second()));
        assert_eq!(bounds(Window::Day, &utc, at), (ts("2026-11-25T00:00:00Z").as_second(), ts("2026-11-26T00:00:00Z").as_second()));
        assert_eq!(bounds(Window::Week, &utc, at), (ts("2026-11-23T00:00:00Z").as_second(), ts("2026-11-30T00:00:00Z").as_second()));
        assert_eq!(bounds(Window::Month, &utc, at), (ts("2026-11-01T00:00:00Z").as_second(), ts("2026-12-01T00:00:00Z").as_second()));
        // 01:30 UTC on the 25th is still the 24th in New York.
        let ny = TimeZone::get("America/New_York").unwrap();
        let (s, e) = bounds(Window::Day, &ny, ts("2026-11-25T01:30:00Z"));
        assert_eq!((s, e), (ts("2026-11-24T05:00:00Z").as_second(), ts("2026-11-25T05:00:00Z").as_second()));
        // A DST day is 23 hours long.
        let (s, e) = bounds(Window::Day, &ny, ts("2026-03-08T12:00:00Z"));
        assert_eq!(e - s, 23 * 3600);
        // Half-hour zones keep local hours.
        let india = TimeZone::get("Asia/Kolkata").unwrap();
        let (s, _) = bounds(Window::Hour, &india, ts("2026-11-25T13:45:00Z"));
        assert_eq!(s, ts("2026-11-25T13:30:00Z").as_second());
    }
}
