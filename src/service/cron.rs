//! KFP's cron dialect: the one its scheduler parses (robfig/cron v1's default parser), so an
//! expression means here what it means in KFP. Times are UTC.
//!
//! - Six space-separated fields, `second minute hour day-of-month month [day-of-week]`; the
//!   day-of-week may be left out (then `*`). Ranges: seconds and minutes 0-59, hours 0-23,
//!   days 1-31, months 1-12 or JAN-DEC, days of the week 0-6 (0 = Sunday) or SUN-SAT; names in
//!   any case.
//! - Each field is a comma-separated list of `*` or `?` (every value), `a`, `a-b`, each
//!   optionally `/step` (`a/step` runs from a to the field's maximum).
//! - When both the day-of-month and the day-of-week are restricted (neither starts with `*` or
//!   `?`), a day matches if either does; otherwise both must.
//! - Descriptors: `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
//!   `@hourly`, and `@every <duration>` with a Go duration (`90s`, `1h30m`, `1.5h`; units ns,
//!   us, ms, s, m, h), cut to whole seconds, at least one second; each time is the previous one
//!   plus the duration.
//!
//! The next matching time is searched up to five years ahead; an expression that matches no
//! time within them (`0 0 0 30 2 *`) has no next time.

use chrono::{DateTime, Datelike, Months, NaiveDate, NaiveDateTime, TimeDelta, Timelike};

use crate::wkt::Timestamp;

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron(Kind);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Fields(Fields),
    /// `@every`: a fixed delay, in whole seconds.
    Every(i64),
}

/// One bit per allowed value; [`STAR`] marks a field given as `*` or `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    second: u64,
    minute: u64,
    hour: u64,
    day_of_month: u64,
    month: u64,
    day_of_week: u64,
}

const STAR: u64 = 1 << 63;

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The number of `names[0]`.
    first_name: u32,
}

const SECONDS: Bounds = Bounds {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
    first_name: 0,
};
const MINUTES: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
    first_name: 0,
};
const HOURS: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
    first_name: 0,
};
const DAYS_OF_MONTH: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
    first_name: 0,
};
const MONTHS: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
    first_name: 1,
};
const DAYS_OF_WEEK: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
    first_name: 0,
};

/// How far ahead a matching time is searched.
const SEARCH_YEARS: i32 = 5;

impl Cron {
    /// Parses `text`; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<Cron, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("the cron expression is empty".to_owned());
        }
        if text.starts_with('@') {
            return descriptor(text);
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(format!(
                "expected 6 fields (second minute hour day-of-month month day-of-week; the \
                 last may be left out), found {}",
                fields.len()
            ));
        }
        Ok(Cron(Kind::Fields(Fields {
            second: field(fields[0], &SECONDS)?,
            minute: field(fields[1], &MINUTES)?,
            hour: field(fields[2], &HOURS)?,
            day_of_month: field(fields[3], &DAYS_OF_MONTH)?,
            month: field(fields[4], &MONTHS)?,
            day_of_week: match fields.get(5) {
                Some(dow) => field(dow, &DAYS_OF_WEEK)?,
                None => all(&DAYS_OF_WEEK),
            },
        })))
    }

    /// The first matching time strictly after `after` (at a whole second); None when there is
    /// none within five years, or past the Timestamp range.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let after = DateTime::from_timestamp(after.seconds, 0)?.naive_utc();
        let next = match &self.0 {
            Kind::Every(seconds) => after.checked_add_signed(TimeDelta::seconds(*seconds))?,
            Kind::Fields(fields) => fields.next_after(after)?,
        };
        let ts = Timestamp {
            seconds: next.and_utc().timestamp(),
            nanos: 0,
        };
        ts.is_valid().then_some(ts)
    }
}

impl std::str::FromStr for Cron {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cron::parse(s)
    }
}

fn descriptor(text: &str) -> Result<Cron, String> {
    let at = |second: u32, minute: u32, hour: u32, dom: Option<u32>, month: Option<u32>| Fields {
        second: 1 << second,
        minute: 1 << minute,
        hour: 1 << hour,
        day_of_month: dom.map_or(all(&DAYS_OF_MONTH), |d| 1 << d),
        month: month.map_or(all(&MONTHS), |m| 1 << m),
        day_of_week: all(&DAYS_OF_WEEK),
    };
    let fields = match text {
        "@yearly" | "@annually" => at(0, 0, 0, Some(1), Some(1)),
        "@monthly" => at(0, 0, 0, Some(1), None),
        "@weekly" => Fields {
            day_of_week: 1,
            ..at(0, 0, 0, None, None)
        },
        "@daily" | "@midnight" => at(0, 0, 0, None, None),
        "@hourly" => Fields {
            hour: all(&HOURS),
            ..at(0, 0, 0, None, None)
        },
        _ => {
            if let Some(duration) = text.strip_prefix("@every ") {
                let nanos = go_duration(duration)
                    .map_err(|e| format!("@every takes a duration such as 90s or 1h30m: {e}"))?;
                // At least a second, cut to whole seconds.
                let seconds = (nanos / 1_000_000_000).max(1);
                return Ok(Cron(Kind::Every(seconds as i64)));
            }
            return Err(format!(
                "unknown descriptor {text:?}; use @yearly, @monthly, @weekly, @daily, @hourly \
                 or @every <duration>"
            ));
        }
    };
    Ok(Cron(Kind::Fields(fields)))
}

/// Every value of a field, marked as a star.
fn all(bounds: &Bounds) -> u64 {
    bits(bounds.min, bounds.max, 1) | STAR
}

fn bits(min: u32, max: u32, step: u32) -> u64 {
    (min..=max)
        .step_by(step as usize)
        .fold(0, |b, v| b | 1 << v)
}

fn field(text: &str, bounds: &Bounds) -> Result<u64, String> {
    let mut out = 0;
    for part in text.split(',').filter(|p| !p.is_empty()) {
        out |= range(part, bounds).map_err(|e| format!("{} field {text:?}: {e}", bounds.name))?;
    }
    Ok(out)
}

fn range(expr: &str, bounds: &Bounds) -> Result<u64, String> {
    let mut slash = expr.split('/');
    let span = slash.next().unwrap_or_default();
    let step = slash.next();
    if slash.next().is_some() {
        return Err(format!("too many slashes in {expr:?}"));
    }
    let ends: Vec<&str> = span.split('-').collect();
    let (mut start, mut end, star) = if span == "*" || span == "?" {
        (bounds.min, bounds.max, STAR)
    } else {
        match ends.as_slice() {
            [one] => {
                let v = value(one, bounds)?;
                (v, v, 0)
            }
            [a, b] => (value(a, bounds)?, value(b, bounds)?, 0),
            _ => return Err(format!("too many hyphens in {expr:?}")),
        }
    };
    let step = match step {
        None => 1,
        Some(step) => {
            let step = number(step)?;
            if ends.len() == 1 && star == 0 {
                // `a/step`: from a to the maximum.
                end = bounds.max;
            }
            step
        }
    };
    if star != 0 {
        start = bounds.min;
    }
    if start < bounds.min {
        return Err(format!("{start} is below the minimum {}", bounds.min));
    }
    if end > bounds.max {
        return Err(format!("{end} is above the maximum {}", bounds.max));
    }
    if start > end {
        return Err(format!("the range {start}-{end} ends before it starts"));
    }
    if step == 0 {
        return Err(format!("the step in {expr:?} must be positive"));
    }
    Ok(bits(start, end, step) | star)
}

fn value(text: &str, bounds: &Bounds) -> Result<u32, String> {
    let lower = text.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(bounds.first_name + i as u32);
    }
    number(text)
}

fn number(text: &str) -> Result<u32, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{text:?} is not a number or a name"));
    }
    text.parse::<u32>()
        .map_err(|_| format!("{text:?} is too large"))
}

/// Parses a Go duration (`1h30m`, `1.5h`, `300ms`) into nanoseconds; negative ones are refused.
fn go_duration(text: &str) -> Result<u128, String> {
    let unit_nanos = |unit: &str| -> Option<f64> {
        Some(match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        })
    };
    let text = text.trim();
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.starts_with('-') {
        return Err(format!("{text:?} is negative"));
    }
    if body == "0" {
        return Ok(0);
    }
    if body.is_empty() {
        return Err("no duration given".to_owned());
    }
    let mut total = 0f64;
    let mut rest = body;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?} lacks a unit (ns, us, ms, s, m, h)"))?;
        let (amount, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let amount: f64 = amount
            .parse()
            .map_err(|_| format!("{amount:?} in {text:?} is not a number"))?;
        let per = unit_nanos(unit).ok_or_else(|| format!("unknown unit {unit:?} in {text:?}"))?;
        total += amount * per;
        rest = next;
    }
    if !total.is_finite() || total > 1e20 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(total as u128)
}

impl Fields {
    fn day_matches(&self, date: NaiveDate) -> bool {
        let dom = self.day_of_month & (1 << date.day()) != 0;
        let dow = self.day_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        if self.day_of_month & STAR != 0 || self.day_of_week & STAR != 0 {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The search: move to the next allowed month, then day, hour, minute and second, starting
    /// over when a step wraps into the next year, month, day or hour.
    fn next_after(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut t = after.checked_add_signed(TimeDelta::seconds(1))?;
        let limit = t.year() + SEARCH_YEARS;
        // The first time a field moves, the smaller fields reset to their start.
        let mut moved = false;
        'search: loop {
            if t.year() > limit {
                return None;
            }
            while self.month & (1 << t.month()) == 0 {
                if !moved {
                    moved = true;
                    t = t.date().with_day(1)?.and_hms_opt(0, 0, 0)?;
                }
                t = t.checked_add_months(Months::new(1))?;
                if t.month() == 1 {
                    continue 'search;
                }
            }
            while !self.day_matches(t.date()) {
                if !moved {
                    moved = true;
                    t = t.date().and_hms_opt(0, 0, 0)?;
                }
                t = t.checked_add_signed(TimeDelta::days(1))?;
                if t.day() == 1 {
                    continue 'search;
                }
            }
            while self.hour & (1 << t.hour()) == 0 {
                if !moved {
                    moved = true;
                    t = t.date().and_hms_opt(t.hour(), 0, 0)?;
                }
                t = t.checked_add_signed(TimeDelta::hours(1))?;
                if t.hour() == 0 {
                    continue 'search;
                }
            }
            while self.minute & (1 << t.minute()) == 0 {
                if !moved {
                    moved = true;
                    t = t.date().and_hms_opt(t.hour(), t.minute(), 0)?;
                }
                t = t.checked_add_signed(TimeDelta::minutes(1))?;
                if t.minute() == 0 {
                    continue 'search;
                }
            }
            while self.second & (1 << t.second()) == 0 {
                moved = true;
                t = t.checked_add_signed(TimeDelta::seconds(1))?;
                if t.second() == 0 {
                    continue 'search;
                }
            }
            return Some(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("a time")
    }

    fn next(cron: &str, after: &str) -> Option<String> {
        Cron::parse(cron)
            .unwrap_or_else(|e| panic!("{cron}: {e}"))
            .next_after(at(after))
            .map(|t| t.to_string())
    }

    #[test]
    fn six_fields_start_with_seconds() {
        assert_eq!(
            next("30 * * * * *", "2026-03-01T10:00:00Z").as_deref(),
            Some("2026-03-01T10:00:30Z")
        );
        assert_eq!(
            next("0 0 9 * * *", "2026-03-01T10:00:00Z").as_deref(),
            Some("2026-03-02T09:00:00Z")
        );
        // Strictly after: a matching `after` is not its own next time.
        assert_eq!(
            next("0 0 9 * * *", "2026-03-02T09:00:00Z").as_deref(),
            Some("2026-03-03T09:00:00Z")
        );
        // Sub-second parts of `after` do not matter.
        assert_eq!(
            next("*/15 * * * * *", "2026-03-01T10:00:14.900Z").as_deref(),
            Some("2026-03-01T10:00:15Z")
        );
    }

    #[test]
    fn the_day_of_week_may_be_left_out() {
        assert_eq!(
            Cron::parse("0 30 * * *").unwrap(),
            Cron::parse("0 30 * * * *").unwrap()
        );
    }

    #[test]
    fn days_of_week_count_from_sunday_and_take_names() {
        // 2026-03-01 is a Sunday. KFP's documented example: 9:00 on days 2-6.
        let weekdays = "0 0 9 ? * 2-6";
        assert_eq!(
            next(weekdays, "2026-03-01T00:00:00Z").as_deref(),
            Some("2026-03-03T09:00:00Z")
        );
        assert_eq!(
            Cron::parse("0 0 9 ? * TUE-sat").unwrap(),
            Cron::parse(weekdays).unwrap()
        );
        assert_eq!(
            next("0 0 0 * * 0", "2026-03-02T00:00:00Z").as_deref(),
            Some("2026-03-08T00:00:00Z")
        );
    }

    #[test]
    fn restricted_day_of_month_and_day_of_week_match_either() {
        // The 15th or any Monday; 2026-03-02 is a Monday.
        assert_eq!(
            next("0 0 0 15 * MON", "2026-03-01T00:00:00Z").as_deref(),
            Some("2026-03-02T00:00:00Z")
        );
        assert_eq!(
            next("0 0 0 15 * MON", "2026-03-10T00:00:00Z").as_deref(),
            Some("2026-03-15T00:00:00Z")
        );
        // With a star on one side (`*/1` is one too), both must match: Mondays only, or the
        // 15th only. 2026-03-09 is the Monday after.
        for mondays in ["0 0 0 * * MON", "0 0 0 ? * 1", "0 0 0 */1 * 1"] {
            assert_eq!(
                next(mondays, "2026-03-03T00:00:00Z").as_deref(),
                Some("2026-03-09T00:00:00Z"),
                "{mondays}"
            );
        }
        assert_eq!(
            next("0 0 0 15 * *", "2026-03-03T00:00:00Z").as_deref(),
            Some("2026-03-15T00:00:00Z")
        );
    }

    #[test]
    fn lists_ranges_and_steps() {
        let cron = Cron::parse("0 5/20,1-2 */6 * JAN,jul *").unwrap();
        let times: Vec<String> =
            std::iter::successors(Some(at("2026-06-30T23:59:59Z")), |t| cron.next_after(*t))
                .skip(1)
                .take(6)
                .map(|t| t.to_string())
                .collect();
        assert_eq!(
            times,
            [
                "2026-07-01T00:01:00Z",
                "2026-07-01T00:02:00Z",
                "2026-07-01T00:05:00Z",
                "2026-07-01T00:25:00Z",
                "2026-07-01T00:45:00Z",
                "2026-07-01T06:01:00Z",
            ]
        );
    }

    #[test]
    fn months_and_years_wrap() {
        assert_eq!(
            next("0 0 0 1 1 *", "2026-03-01T00:00:00Z").as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next("0 0 12 29 2 *", "2026-03-01T00:00:00Z").as_deref(),
            Some("2028-02-29T12:00:00Z")
        );
        assert_eq!(
            next("59 59 23 31 12 *", "2026-12-31T23:59:59Z").as_deref(),
            Some("2027-12-31T23:59:59Z")
        );
    }

    #[test]
    fn an_impossible_date_has_no_next_time() {
        assert_eq!(next("0 0 0 30 2 *", "2026-03-01T00:00:00Z"), None);
    }

    #[test]
    fn descriptors() {
        assert_eq!(
            next("@hourly", "2026-03-01T10:20:00Z").as_deref(),
            Some("2026-03-01T11:00:00Z")
        );
        assert_eq!(
            next("@daily", "2026-03-01T10:20:00Z").as_deref(),
            Some("2026-03-02T00:00:00Z")
        );
        assert_eq!(
            next("@weekly", "2026-03-02T10:20:00Z").as_deref(),
            Some("2026-03-08T00:00:00Z")
        );
        assert_eq!(
            next("@monthly", "2026-03-02T10:20:00Z").as_deref(),
            Some("2026-04-01T00:00:00Z")
        );
        assert_eq!(
            next("@annually", "2026-03-02T10:20:00Z").as_deref(),
            Some("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            next("@every 1h30m", "2026-03-01T10:20:00.5Z").as_deref(),
            Some("2026-03-01T11:50:00Z")
        );
        // Less than a second is a second; fractions of a second are cut.
        assert_eq!(
            next("@every 300ms", "2026-03-01T10:20:00Z").as_deref(),
            Some("2026-03-01T10:20:01Z")
        );
        assert_eq!(
            next("@every 1.5s", "2026-03-01T10:20:00Z").as_deref(),
            Some("2026-03-01T10:20:01Z")
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (cron, needle) in [
            ("", "empty"),
            ("* * * *", "found 4"),
            ("* * * * * * *", "found 7"),
            (
                "60 * * * * *",
                "second field \"60\": 60 is above the maximum 59",
            ),
            (
                "* * * 0 * *",
                "day-of-month field \"0\": 0 is below the minimum 1",
            ),
            ("* * * * 13 *", "above the maximum 12"),
            ("* * * * * 7", "day-of-week"),
            ("* * 5-2 * * *", "ends before it starts"),
            ("*/0 * * * * *", "must be positive"),
            ("1/2/3 * * * * *", "too many slashes"),
            ("1-2-3 * * * * *", "too many hyphens"),
            ("x * * * * *", "\"x\" is not a number or a name"),
            ("* * * * FOO *", "\"FOO\""),
            ("@often", "unknown descriptor"),
            ("@every", "unknown descriptor"),
            ("@every soon", "duration"),
            ("@every 5", "lacks a unit"),
            ("@every -5s", "negative"),
            ("@every 5y", "unknown unit"),
        ] {
            let err = Cron::parse(cron).expect_err(cron);
            assert!(err.contains(needle), "{cron:?}: {err}");
        }
    }
}
