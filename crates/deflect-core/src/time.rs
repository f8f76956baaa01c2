//! Event-time intervals aligned to a site's local time zone.
//!
//! Intervals are tumbling windows of 15, 30 or 60 minutes of *local* clock time. The interval of an
//! instant is found by flooring its local wall-clock time (UTC + the offset in force at that instant)
//! and mapping back with the same offset. Because every real DST transition happens on a quarter hour,
//! each transition falls on an interval boundary: a 23-hour day has 92 quarter-hour intervals and a
//! 25-hour day 100, and the repeated local hour at the end of DST yields two distinct intervals.
//! An offset change that is not a multiple of the interval length (Lord Howe's 30-minute DST with
//! hourly intervals, historical local mean time) cuts the interval it falls in at the change, so
//! intervals never overlap: there, the local hour 02:00–03:00 has only its last 30 minutes.

use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use crate::event::Millis;

#[derive(Debug, thiserror::Error)]
pub enum TimeError {
    #[error("unknown IANA time zone {name:?}: {source}")]
    UnknownZone { name: String, source: jiff::Error },
    #[error("interval length must be 15, 30 or 60 minutes, got {0}")]
    BadLength(u32),
}

/// One tumbling interval `[start, end)` in UTC milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Interval {
    pub start: Millis,
    pub end: Millis,
}

impl Interval {
    pub fn contains(&self, t: Millis) -> bool {
        self.start <= t && t < self.end
    }
}

/// The local (weekday, hour) cell of the heat map, plus the local date it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalHour {
    pub date: Date,
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    pub hour: u8,
    pub minute: u8,
}

#[derive(Clone, Debug)]
pub struct IntervalSpec {
    tz: TimeZone,
    tz_name: String,
    len_ms: i64,
}

impl IntervalSpec {
    pub fn new(tz_name: &str, minutes: u32) -> Result<Self, TimeError> {
        if !matches!(minutes, 15 | 30 | 60) {
            return Err(TimeError::BadLength(minutes));
        }
        let tz = TimeZone::get(tz_name).map_err(|source| TimeError::UnknownZone {
            name: tz_name.to_string(),
            source,
        })?;
        Ok(Self {
            tz,
            tz_name: tz_name.to_string(),
            len_ms: i64::from(minutes) * 60_000,
        })
    }

    pub fn tz_name(&self) -> &str {
        &self.tz_name
    }

    pub fn len_ms(&self) -> i64 {
        self.len_ms
    }

    fn offset_ms(&self, t: Millis) -> i64 {
        let ts = Timestamp::from_millisecond(clamp_ms(t)).expect("clamped into range");
        i64::from(self.tz.to_offset(ts).seconds()) * 1000
    }

    /// The interval containing instant `t`.
    pub fn interval_of(&self, t: Millis) -> Interval {
        let off = self.offset_ms(t);
        let local = t + off;
        let mut start = local.div_euclid(self.len_ms) * self.len_ms - off;
        let mut end = start + self.len_ms;
        // an offset change inside the local interval cuts it there
        if self.offset_ms(start) != off {
            let after_t = Timestamp::from_millisecond(clamp_ms(t + 1)).expect("clamped");
            if let Some(tr) = self.tz.preceding(after_t).next() {
                start = start.max(tr.timestamp().as_millisecond());
            }
        }
        if self.offset_ms(end - 1) != off {
            let at_t = Timestamp::from_millisecond(clamp_ms(t)).expect("clamped");
            if let Some(tr) = self.tz.following(at_t).next() {
                end = end.min(tr.timestamp().as_millisecond());
            }
        }
        Interval { start, end }
    }

    /// The heat-map cell of instant `t` in site time.
    pub fn local_hour(&self, t: Millis) -> LocalHour {
        let ts = Timestamp::from_millisecond(clamp_ms(t)).expect("clamped into range");
        let z = ts.to_zoned(self.tz.clone());
        LocalHour {
            date: z.date(),
            weekday: weekday_index(z.weekday()),
            hour: z.hour() as u8,
            minute: z.minute() as u8,
        }
    }

    /// Local wall-clock rendering of an instant, for reports and logs (`1999-04-02T01:45:00+03:00`).
    pub fn format_local(&self, t: Millis) -> String {
        let ts = Timestamp::from_millisecond(clamp_ms(t)).expect("clamped into range");
        ts.to_zoned(self.tz.clone())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    /// Converts a local civil date-time in this zone to UTC milliseconds (earlier instant when
    /// ambiguous, shifted forward when it falls in a gap).
    pub fn local_to_utc(&self, dt: jiff::civil::DateTime) -> Result<Millis, jiff::Error> {
        Ok(self
            .tz
            .to_ambiguous_zoned(dt)
            .compatible()?
            .timestamp()
            .as_millisecond())
    }
}

/// Remembers recently computed intervals of one [`IntervalSpec`]: looking up the zone's offset
/// three times per instant is a measurable share of the engine's work, and most instants fall in
/// an interval seen a moment ago. Each slot holds the last interval computed for instants of its
/// UTC `len`-slice; a hit is checked by containment, so any zone (offsets that are not whole
/// intervals, cut intervals) gets exactly [`IntervalSpec::interval_of`].
#[derive(Clone, Debug)]
pub struct IntervalMemo {
    slots: Box<[Option<Interval>; MEMO_SLOTS]>,
}

const MEMO_SLOTS: usize = 64;

impl Default for IntervalMemo {
    fn default() -> Self {
        Self {
            slots: Box::new([None; MEMO_SLOTS]),
        }
    }
}

impl IntervalMemo {
    pub fn interval_of(&mut self, spec: &IntervalSpec, t: Millis) -> Interval {
        let slot =
            &mut self.slots[t.div_euclid(spec.len_ms).rem_euclid(MEMO_SLOTS as i64) as usize];
        match *slot {
            Some(i) if i.contains(t) => i,
            _ => {
                let i = spec.interval_of(t);
                *slot = Some(i);
                i
            }
        }
    }
}

pub fn weekday_index(w: Weekday) -> u8 {
    (w.to_monday_zero_offset()) as u8
}

pub const WEEKDAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

fn clamp_ms(t: Millis) -> i64 {
    // jiff's supported range is roughly years -9999..=9999.
    t.clamp(-377_705_116_800_000, 253_402_207_200_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(s: &str) -> Millis {
        s.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn rejects_bad_inputs() {
        assert!(matches!(
            IntervalSpec::new("UTC", 20),
            Err(TimeError::BadLength(20))
        ));
        assert!(IntervalSpec::new("Mars/Olympus", 15).is_err());
    }

    #[test]
    fn quarter_hours_in_utc() {
        let s = IntervalSpec::new("UTC", 15).unwrap();
        let i = s.interval_of(ms("2024-03-05T10:07:59Z"));
        assert_eq!(i.start, ms("2024-03-05T10:00:00Z"));
        assert_eq!(i.end, ms("2024-03-05T10:15:00Z"));
    }

    #[test]
    fn half_hour_zone_aligns_to_local_clock() {
        // India is UTC+05:30: local 10:00 is 04:30Z, so a 60-minute interval starts at :30 UTC.
        let s = IntervalSpec::new("Asia/Kolkata", 60).unwrap();
        let i = s.interval_of(ms("2024-03-05T04:40:00Z"));
        assert_eq!(i.start, ms("2024-03-05T04:30:00Z"));
    }

    fn intervals_in_local_day(
        s: &IntervalSpec,
        day_start: Millis,
        next_day_start: Millis,
    ) -> usize {
        let mut n = 0;
        let mut t = day_start;
        while t < next_day_start {
            let i = s.interval_of(t);
            assert_eq!(i.start, t, "intervals must tile the day without gaps");
            t = i.end;
            n += 1;
        }
        assert_eq!(t, next_day_start);
        n
    }

    #[test]
    fn jerusalem_1999_dst_days_have_23_and_25_hours() {
        let s = IntervalSpec::new("Asia/Jerusalem", 15).unwrap();
        // 1999-04-02: clocks jumped 02:00 -> 03:00 (UTC+2 -> UTC+3).
        let d0 = ms("1999-04-01T22:00:00Z"); // local midnight at UTC+2
        let d1 = ms("1999-04-02T21:00:00Z"); // next local midnight at UTC+3
        assert_eq!(intervals_in_local_day(&s, d0, d1), 92);
        // 1999-09-03: clocks fell back, a 25-hour day.
        let e0 = ms("1999-09-02T21:00:00Z");
        let e1 = ms("1999-09-03T22:00:00Z");
        assert_eq!(intervals_in_local_day(&s, e0, e1), 100);
    }

    #[test]
    fn repeated_hour_gives_two_intervals_and_two_heat_cells_of_same_hour() {
        let s = IntervalSpec::new("America/New_York", 60).unwrap();
        // 2024-11-03 01:30 EDT (05:30Z) and 01:30 EST (06:30Z).
        let a = s.interval_of(ms("2024-11-03T05:30:00Z"));
        let b = s.interval_of(ms("2024-11-03T06:30:00Z"));
        assert_ne!(a, b);
        assert_eq!(a.end, b.start);
        assert_eq!(s.local_hour(ms("2024-11-03T05:30:00Z")).hour, 1);
        assert_eq!(s.local_hour(ms("2024-11-03T06:30:00Z")).hour, 1);
        assert_eq!(s.local_hour(ms("2024-11-03T06:30:00Z")).weekday, 6);
    }

    #[test]
    fn half_hour_dst_cuts_hourly_intervals_instead_of_overlapping() {
        // Lord Howe: 1993-10-31 02:00 +10:30 (15:30Z) became 02:30 +11:00
        let s = IntervalSpec::new("Australia/Lord_Howe", 60).unwrap();
        let before = s.interval_of(ms("1993-10-30T15:10:00Z"));
        let cut = s.interval_of(ms("1993-10-30T15:40:00Z"));
        let after = s.interval_of(ms("1993-10-30T16:10:00Z"));
        assert_eq!(
            (before.start, before.end),
            (ms("1993-10-30T14:30:00Z"), ms("1993-10-30T15:30:00Z"))
        );
        assert_eq!(
            (cut.start, cut.end),
            (before.end, ms("1993-10-30T16:00:00Z"))
        );
        assert_eq!(
            (after.start, after.end),
            (cut.end, ms("1993-10-30T17:00:00Z"))
        );
        // and back: 02:00 +11:00 (1994-03-05T15:00Z) became 01:30 +10:30
        let before = s.interval_of(ms("1994-03-05T14:50:00Z"));
        let cut = s.interval_of(ms("1994-03-05T15:10:00Z"));
        assert_eq!(before.end, ms("1994-03-05T15:00:00Z"));
        assert_eq!(
            (cut.start, cut.end),
            (before.end, ms("1994-03-05T15:30:00Z"))
        );
        assert_eq!(s.interval_of(cut.end).start, cut.end);
    }

    proptest! {
        #[test]
        fn interval_contains_instant_and_is_stable(t in 0i64..4_000_000_000_000, len in prop::sample::select(vec![15u32, 30, 60]),
            zone in prop::sample::select(vec!["UTC", "Asia/Jerusalem", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata"])) {
            let s = IntervalSpec::new(zone, len).unwrap();
            let i = s.interval_of(t);
            prop_assert!(i.contains(t));
            prop_assert_eq!(s.interval_of(i.start), i);
            prop_assert_eq!(s.interval_of(i.end - 1), i);
            // the next interval starts where this one ends
            prop_assert_eq!(s.interval_of(i.end).start, i.end);
        }

        #[test]
        fn memo_gives_the_computed_interval(ts in prop::collection::vec(0i64..4_000_000_000_000, 1..200),
            steps in prop::collection::vec(-7_200_000i64..7_200_000, 1..200),
            len in prop::sample::select(vec![15u32, 30, 60]),
            zone in prop::sample::select(vec!["UTC", "Europe/London", "Australia/Lord_Howe", "Asia/Kolkata", "America/St_Johns"])) {
            let s = IntervalSpec::new(zone, len).unwrap();
            let mut memo = IntervalMemo::default();
            // far jumps and walks around each point, so slots are both hit and overwritten
            for t in ts {
                let mut u = t;
                for d in &steps {
                    u += d;
                    prop_assert_eq!(memo.interval_of(&s, u), s.interval_of(u));
                }
            }
        }
    }
}
