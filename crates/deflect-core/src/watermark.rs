//! Per-partition event-time watermark with idleness.
//!
//! The watermark of a partition is the largest event time it has seen. A partition that receives
//! nothing for `idle_timeout` of wall-clock time stops holding windows open: from then on its
//! watermark advances with the wall clock, so intervals close at night when traffic stops. The
//! watermark never goes backwards. Wall-clock time is passed in by the caller.

use serde::{Deserialize, Serialize};

use crate::event::Millis;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watermark {
    /// Largest event time observed.
    pub max_event_time: Option<Millis>,
    /// Effective watermark (never decreases).
    pub value: Option<Millis>,
    /// Wall-clock time of the last observed event (not persisted meaningfully across restarts:
    /// a restart counts as activity).
    #[serde(skip)]
    pub last_activity_wall: Option<Millis>,
}

impl Watermark {
    pub fn observe(&mut self, event_time: Millis, now_wall: Millis) {
        self.max_event_time = Some(
            self.max_event_time
                .map_or(event_time, |m| m.max(event_time)),
        );
        self.value = Some(self.value.map_or(event_time, |v| v.max(event_time)));
        self.last_activity_wall = Some(now_wall);
    }

    /// The partition cannot be read now (its leader is unreachable): its silence is not
    /// idleness, since its records may be waiting in Kafka (or in producers until the leader is
    /// back). Counts as activity, so the watermark does not advance with the wall clock meanwhile.
    pub fn unreadable(&mut self, now_wall: Millis) {
        self.last_activity_wall = Some(now_wall);
    }

    /// Whether the partition has been silent for at least `idle_timeout`.
    pub fn is_idle(&self, now_wall: Millis, idle_timeout: Millis) -> bool {
        match self.last_activity_wall {
            Some(last) => now_wall - last >= idle_timeout,
            None => true,
        }
    }

    /// Advances the watermark for idleness and returns it.
    pub fn tick(&mut self, now_wall: Millis, idle_timeout: Millis) -> Option<Millis> {
        let last = *self.last_activity_wall.get_or_insert(now_wall);
        if let (Some(v), true) = (self.value, now_wall - last >= idle_timeout) {
            let max = self.max_event_time.unwrap_or(v);
            let advanced = max.saturating_add(now_wall - last);
            self.value = Some(v.max(advanced));
        }
        self.value
    }
}

/// The watermark of an instance: the minimum over its non-idle partitions; when every partition is
/// idle, the maximum of their (advancing) watermarks.
pub fn instance_watermark<'a>(
    parts: impl IntoIterator<Item = &'a Watermark>,
    now_wall: Millis,
    idle_timeout: Millis,
) -> Option<Millis> {
    let mut active_min: Option<Millis> = None;
    let mut any_max: Option<Millis> = None;
    for w in parts {
        let Some(v) = w.value else { continue };
        any_max = Some(any_max.map_or(v, |m| m.max(v)));
        if !w.is_idle(now_wall, idle_timeout) {
            active_min = Some(active_min.map_or(v, |m| m.min(v)));
        }
    }
    active_min.or(any_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition that cannot be read is not idle: its watermark stays at its last event time
    /// however long that lasts, and advances with the wall clock only after `idle_timeout` of
    /// silence once it can be read again.
    #[test]
    fn an_unreadable_partition_does_not_advance_for_idleness() {
        let mut w = Watermark::default();
        w.observe(1_000_000, 0);
        for now in (0..=600_000).step_by(5_000) {
            w.unreadable(now);
            assert_eq!(w.tick(now, 60_000), Some(1_000_000), "at {now}");
            assert!(!w.is_idle(now, 60_000));
        }
        // readable again at 600 s, silent: idle after 60 s more, then advancing with the clock
        assert_eq!(w.tick(659_999, 60_000), Some(1_000_000));
        assert_eq!(w.tick(660_000, 60_000), Some(1_060_000));
        assert!(w.is_idle(660_000, 60_000));
        // without the outage noted, the same silence had advanced it by ten minutes
        let mut v = Watermark::default();
        v.observe(1_000_000, 0);
        assert_eq!(v.tick(600_000, 60_000), Some(1_600_000));
    }

    #[test]
    fn follows_max_event_time_and_never_regresses() {
        let mut w = Watermark::default();
        w.observe(1_000, 0);
        w.observe(500, 1);
        assert_eq!(w.tick(2, 60_000), Some(1_000));
    }

    #[test]
    fn idle_partition_advances_with_wall_clock() {
        let mut w = Watermark::default();
        w.observe(1_000, 10_000);
        assert_eq!(w.tick(69_999, 60_000), Some(1_000));
        assert_eq!(w.tick(70_000, 60_000), Some(61_000));
        assert_eq!(w.tick(100_000, 60_000), Some(91_000));
        // new traffic with older event time does not move it back
        w.observe(2_000, 100_001);
        assert_eq!(w.tick(100_002, 60_000), Some(91_000));
    }

    #[test]
    fn instance_ignores_idle_partitions() {
        let mut a = Watermark::default();
        let mut b = Watermark::default();
        a.observe(5_000, 0);
        b.observe(1_000, 0);
        assert_eq!(instance_watermark([&a, &b], 10, 60_000), Some(1_000));
        a.observe(6_000, 50_000);
        assert_eq!(instance_watermark([&a, &b], 60_000, 60_000), Some(6_000));
        assert_eq!(instance_watermark([&a, &b], 200_000, 60_000), Some(6_000));
    }
}
