//! When a recurring run's runs are due: its trigger (cron or a fixed interval), start and end
//! times and catch-up rule, as KFP's scheduler computes them. Pure: the scheduler asks
//! [`Timetable::next`] with the last scheduled time and the clock's now.
//!
//! - The schedule counts from the last run's scheduled time, or before the first run from
//!   start_time, or else the creation time.
//! - Interval: the first run is at that time plus the interval, then every interval (and at
//!   start_time itself when it lies after the last run, as in KFP).
//! - Cron: the first matching time strictly after that time (and after start_time).
//! - Nothing after end_time.
//! - Catch-up (the default): every missed time gets a run, oldest first, each with its own
//!   scheduled time. With no_catchup, only the latest missed time gets one; the times before it
//!   are skipped. KFP schedules an interval trigger's catch-up run at "now", shifting its phase;
//!   runledger keeps the phase and takes the latest missed tick, as cron triggers do.

use super::cron::Cron;
use crate::api::{RecurringRun, trigger};
use crate::wkt::Timestamp;

/// A recurring run's schedule, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timetable {
    kind: Kind,
    start: Option<Timestamp>,
    end: Option<Timestamp>,
    created: Timestamp,
    no_catchup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Cron(Cron),
    Interval(i64),
}

impl Timetable {
    /// The timetable of `r`; the error names the field that is wrong.
    pub fn of(r: &RecurringRun) -> Result<Timetable, String> {
        let trigger =
            r.trigger.as_ref().and_then(|t| t.trigger.as_ref()).ok_or(
                "recurring_run.trigger is required: give cron_schedule or periodic_schedule",
            )?;
        let (kind, start, end) = match trigger {
            trigger::Trigger::CronSchedule(c) => {
                let cron = Cron::parse(&c.cron)
                    .map_err(|e| format!("recurring_run.trigger.cron_schedule.cron: {e}"))?;
                (Kind::Cron(cron), c.start_time, c.end_time)
            }
            trigger::Trigger::PeriodicSchedule(p) => {
                if p.interval_second < 1 {
                    return Err(format!(
                        "recurring_run.trigger.periodic_schedule.interval_second must be at \
                         least 1, not {}",
                        p.interval_second
                    ));
                }
                (Kind::Interval(p.interval_second), p.start_time, p.end_time)
            }
        };
        Ok(Timetable {
            kind,
            start,
            end,
            // Whole seconds, as KFP counts (so an interval's times are whole seconds too).
            created: Timestamp {
                nanos: 0,
                ..r.created_at.unwrap_or_default()
            },
            no_catchup: r.no_catchup,
        })
    }

    pub fn start(&self) -> Option<Timestamp> {
        self.start
    }

    pub fn end(&self) -> Option<Timestamp> {
        self.end
    }

    /// The scheduled time of the run after one scheduled at `last` (None: before the first), as
    /// of `now` (which only matters without catch-up). None when the schedule has ended.
    pub fn next(&self, last: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
        let from = last.or(self.start).unwrap_or(self.created);
        let next = match &self.kind {
            Kind::Interval(interval) => match self.start {
                Some(start) if start > from => start,
                _ => add_seconds(from, *interval)?,
            },
            Kind::Cron(cron) => cron.next_after(self.start.map_or(from, |s| s.max(from)))?,
        };
        if self.end.is_some_and(|end| end < next) {
            return None;
        }
        if !self.no_catchup {
            return Some(next);
        }
        let limit = self.end.map_or(now, |end| end.min(now));
        Some(self.latest_tick(next, limit))
    }

    /// The last tick at or before `limit`, counting on from the tick `first` (itself when none).
    fn latest_tick(&self, first: Timestamp, limit: Timestamp) -> Timestamp {
        if limit <= first {
            return first;
        }
        match &self.kind {
            Kind::Interval(interval) => {
                let steps = (limit.seconds - first.seconds) / interval;
                add_seconds(first, steps * interval).unwrap_or(first)
            }
            Kind::Cron(cron) => {
                // Find a tick shortly before the limit (a window that doubles until it holds
                // one), then step through the few ticks after it: a per-second cron that missed
                // a week is not walked tick by tick.
                let mut latest = first;
                let mut window = 3600;
                loop {
                    let from = Timestamp {
                        seconds: limit.seconds.saturating_sub(window),
                        nanos: 0,
                    };
                    if from <= latest {
                        break;
                    }
                    if let Some(tick) = cron.next_after(from)
                        && tick <= limit
                    {
                        latest = tick;
                        break;
                    }
                    window = window.saturating_mul(2);
                }
                while let Some(tick) = cron.next_after(latest) {
                    if tick > limit {
                        break;
                    }
                    latest = tick;
                }
                latest
            }
        }
    }
}

fn add_seconds(t: Timestamp, seconds: i64) -> Option<Timestamp> {
    let ts = Timestamp {
        seconds: t.seconds.checked_add(seconds)?,
        nanos: t.nanos,
    };
    ts.is_valid().then_some(ts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CronSchedule, PeriodicSchedule, Trigger};

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).expect("a time")
    }

    fn show(t: Option<Timestamp>) -> Option<String> {
        t.map(|t| t.to_string())
    }

    fn periodic(seconds: i64, start: Option<&str>, end: Option<&str>) -> RecurringRun {
        RecurringRun {
            created_at: Some(at("2026-03-01T10:00:00Z")),
            trigger: Some(Trigger {
                trigger: Some(trigger::Trigger::PeriodicSchedule(PeriodicSchedule {
                    start_time: start.map(at),
                    end_time: end.map(at),
                    interval_second: seconds,
                })),
            }),
            ..Default::default()
        }
    }

    fn cron(expr: &str, start: Option<&str>, end: Option<&str>) -> RecurringRun {
        RecurringRun {
            created_at: Some(at("2026-03-01T10:00:00Z")),
            trigger: Some(Trigger {
                trigger: Some(trigger::Trigger::CronSchedule(CronSchedule {
                    start_time: start.map(at),
                    end_time: end.map(at),
                    cron: expr.to_owned(),
                })),
            }),
            ..Default::default()
        }
    }

    fn timetable(r: RecurringRun) -> Timetable {
        Timetable::of(&r).expect("a valid trigger")
    }

    const NOW: &str = "2026-03-01T12:00:00Z";

    #[test]
    fn an_interval_counts_from_creation_then_from_the_last_run() {
        let t = timetable(periodic(60, None, None));
        assert_eq!(
            show(t.next(None, at(NOW))).as_deref(),
            Some("2026-03-01T10:01:00Z")
        );
        assert_eq!(
            show(t.next(Some(at("2026-03-01T10:01:00Z")), at(NOW))).as_deref(),
            Some("2026-03-01T10:02:00Z")
        );
    }

    #[test]
    fn an_interval_counts_from_its_start_time() {
        let t = timetable(periodic(60, Some("2026-03-05T00:00:00Z"), None));
        assert_eq!(
            show(t.next(None, at(NOW))).as_deref(),
            Some("2026-03-05T00:01:00Z")
        );
    }

    #[test]
    fn a_cron_counts_from_creation_or_its_start_time() {
        let t = timetable(cron("0 0 * * * *", None, None));
        assert_eq!(
            show(t.next(None, at(NOW))).as_deref(),
            Some("2026-03-01T11:00:00Z")
        );
        let t = timetable(cron("0 0 * * * *", Some("2026-03-05T00:30:00Z"), None));
        assert_eq!(
            show(t.next(None, at(NOW))).as_deref(),
            Some("2026-03-05T01:00:00Z")
        );
    }

    #[test]
    fn nothing_after_the_end_time() {
        let t = timetable(periodic(60, None, Some("2026-03-01T10:02:00Z")));
        assert!(t.next(Some(at("2026-03-01T10:01:00Z")), at(NOW)).is_some());
        assert_eq!(t.next(Some(at("2026-03-01T10:02:00Z")), at(NOW)), None);
        let t = timetable(cron("0 0 * * * *", None, Some("2026-03-01T10:30:00Z")));
        assert_eq!(t.next(None, at(NOW)), None);
    }

    #[test]
    fn catch_up_returns_every_missed_time_in_turn() {
        let t = timetable(cron("0 */10 * * * *", None, None));
        let mut last = None;
        let mut times = Vec::new();
        while let Some(next) = t.next(last, at("2026-03-01T10:35:00Z")) {
            if next > at("2026-03-01T10:35:00Z") {
                break;
            }
            times.push(next.to_string());
            last = Some(next);
        }
        assert_eq!(
            times,
            [
                "2026-03-01T10:10:00Z",
                "2026-03-01T10:20:00Z",
                "2026-03-01T10:30:00Z"
            ]
        );
    }

    #[test]
    fn without_catch_up_only_the_latest_missed_time_is_due() {
        let mut r = cron("0 */10 * * * *", None, None);
        r.no_catchup = true;
        let t = timetable(r);
        assert_eq!(
            show(t.next(None, at("2026-03-01T10:35:00Z"))).as_deref(),
            Some("2026-03-01T10:30:00Z")
        );
        // Not behind: the next time as usual.
        assert_eq!(
            show(t.next(Some(at("2026-03-01T10:30:00Z")), at("2026-03-01T10:35:00Z"))).as_deref(),
            Some("2026-03-01T10:40:00Z")
        );

        let mut r = periodic(60, None, None);
        r.no_catchup = true;
        let t = timetable(r);
        assert_eq!(
            show(t.next(None, at("2026-03-01T10:30:30Z"))).as_deref(),
            Some("2026-03-01T10:30:00Z")
        );
    }

    #[test]
    fn without_catch_up_a_long_outage_of_a_per_second_cron_is_skipped_at_once() {
        let mut r = cron("* * * * * *", None, None);
        r.no_catchup = true;
        let t = timetable(r);
        let now = at("2026-04-01T00:00:00.5Z");
        assert_eq!(
            show(t.next(None, now)).as_deref(),
            Some("2026-04-01T00:00:00Z")
        );
    }

    #[test]
    fn without_catch_up_the_latest_time_is_not_after_the_end_time() {
        let mut r = periodic(60, None, Some("2026-03-01T10:05:30Z"));
        r.no_catchup = true;
        let t = timetable(r);
        assert_eq!(
            show(t.next(None, at(NOW))).as_deref(),
            Some("2026-03-01T10:05:00Z")
        );
    }

    #[test]
    fn triggers_are_checked() {
        for (r, needle) in [
            (RecurringRun::default(), "trigger is required"),
            (periodic(0, None, None), "at least 1, not 0"),
            (
                cron("61 * * * * *", None, None),
                "cron_schedule.cron: second field",
            ),
        ] {
            let err = Timetable::of(&r).expect_err(needle);
            assert!(err.contains(needle), "{err}");
        }
    }
}
