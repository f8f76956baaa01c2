//! `deflect staffing`: Erlang C and Erlang A for one interval's demand.

use std::fmt::Write;
use std::time::Duration;

use anyhow::{ensure, Result};
use deflect_core::staffing::{
    asa, erlang_a_abandon, erlang_c, offered_load, required_agents, scheduled_staff, service_level,
};

#[derive(clap::Args, Debug, Clone)]
pub struct StaffingArgs {
    /// Contacts offered in the interval.
    #[arg(long)]
    pub offered: f64,
    /// Length of the interval.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30m")]
    pub interval: Duration,
    /// Average handle time.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub aht: Duration,
    /// Service-level threshold T.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    pub threshold: Duration,
    /// Service-level target (fraction answered within T).
    #[arg(long, default_value_t = 0.8)]
    pub target: f64,
    /// Share of paid time agents are unavailable.
    #[arg(long, default_value_t = 0.3)]
    pub shrinkage: f64,
    /// Mean patience for the Erlang A abandonment estimate.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "300s")]
    pub patience: Duration,
}

/// The report `deflect staffing` prints.
pub fn report(a: &StaffingArgs) -> Result<String> {
    let period = a.interval.as_secs_f64();
    let aht = a.aht.as_secs_f64();
    ensure!(a.offered > 0.0, "--offered must be positive");
    ensure!(
        period > 0.0 && aht > 0.0,
        "--interval and --aht must be positive"
    );
    ensure!(
        a.target > 0.0 && a.target < 1.0,
        "--target must be between 0 and 1"
    );
    ensure!(
        (0.0..0.95).contains(&a.shrinkage),
        "--shrinkage must be in [0, 0.95)"
    );
    let load = offered_load(a.offered, period, aht);
    let lambda = a.offered / period;
    let t = a.threshold.as_secs_f64();
    let mut out = String::new();
    writeln!(
        out,
        "offered load A = {load:.4} Erlangs ({} contacts in {}, AHT {})",
        a.offered,
        humantime::format_duration(a.interval),
        humantime::format_duration(a.aht)
    )?;
    writeln!(
        out,
        "{:>6} {:>10} {:>10} {:>10} {:>12}",
        "agents", "P(wait)", "SL", "ASA s", "P(abandon)"
    )?;
    let required = required_agents(load, aht, t, a.target);
    // from the load itself (Erlang C needs N > A; Erlang A is defined below it too)
    let first = (load.floor() as u32).max(1);
    let last = required.unwrap_or(first).max(first) + 2;
    let cell = |v: Option<f64>, width: usize, digits: usize| match v {
        Some(v) => format!("{v:>width$.digits$}"),
        None => format!("{:>width$}", "-"),
    };
    for n in first..=last {
        writeln!(
            out,
            "{n:>6} {} {} {} {}",
            cell(erlang_c(n, load), 10, 7),
            cell(service_level(n, load, aht, t), 10, 7),
            cell(asa(n, load, aht), 10, 4),
            cell(
                erlang_a_abandon(n, lambda, aht, a.patience.as_secs_f64()),
                12,
                5
            ),
        )?;
    }
    match required {
        Some(n) => writeln!(
            out,
            "required agents for {:.0}% within {}: {n}; scheduled staff with {:.0}% shrinkage: {}",
            a.target * 100.0,
            humantime::format_duration(a.threshold),
            a.shrinkage * 100.0,
            scheduled_staff(n, a.shrinkage)
        )?,
        None => writeln!(out, "no agent count up to 100,000 meets the target")?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_reference_example() {
        let a = StaffingArgs {
            offered: 100.0,
            interval: Duration::from_secs(1800),
            aht: Duration::from_secs(180),
            threshold: Duration::from_secs(20),
            target: 0.8,
            shrinkage: 0.3,
            patience: Duration::from_secs(300),
        };
        let r = report(&a).unwrap();
        assert!(r.contains("offered load A = 10.0000 Erlangs"), "{r}");
        assert!(
            r.contains("    14  0.1741319  0.8883500     7.8359      0.01398"),
            "{r}"
        );
        assert!(
            r.contains(
                "required agents for 80% within 20s: 14; scheduled staff with 30% shrinkage: 20"
            ),
            "{r}"
        );
        let bad = StaffingArgs { offered: 0.0, ..a };
        assert!(report(&bad).is_err());
    }
}

/// Staffing per (tenant, queue) from the last interval closed on every partition this instance
/// owns: offered contacts (queue entries) and AHT (handle time / handled) of that interval, Erlang
/// C required agents for the target, and scheduled staff after shrinkage. Exact for the site when
/// one instance owns every partition; with several instances each sees only its share (use the
/// summed interval reports and `deflect staffing` then).
#[derive(Debug, Default)]
pub struct StaffingTracker {
    /// interval start → (tenant, queue) → (offered, handle ms, handled).
    intervals: std::collections::BTreeMap<i64, Demand>,
}

type Demand = std::collections::BTreeMap<(String, String), (u64, u64, u64)>;

/// What the tracker computed for one (tenant, queue).
#[derive(Debug, Clone, PartialEq)]
pub struct Staffing {
    pub tenant: String,
    pub queue: String,
    pub offered: u64,
    pub aht_s: f64,
    pub load: f64,
    pub agents: u32,
    pub scheduled: u32,
}

impl StaffingTracker {
    /// Adds the figures of closed intervals (of any partition).
    pub fn add(&mut self, closed: &[deflect_core::engine::ClosedInterval]) {
        use deflect_core::metrics::Metric;
        for c in closed {
            for (k, v) in &c.counters.0 {
                let slot = match k.metric {
                    Metric::QueueEntered => 0,
                    Metric::HandleTimeMs => 1,
                    Metric::Handled => 2,
                    _ => continue,
                };
                // labels: tenant, channel, queue
                let key = (k.labels[0].clone(), k.labels[2].clone());
                let d = self
                    .intervals
                    .entry(c.interval.start)
                    .or_default()
                    .entry(key)
                    .or_default();
                match slot {
                    0 => d.0 += v,
                    1 => d.1 += v,
                    _ => d.2 += v,
                }
            }
        }
    }

    /// Staffing of the latest interval that ended at or before `closed_until` (the minimum
    /// frontier over the owned partitions), AHT from the last hour when that interval handled
    /// nothing. Forgets intervals older than an hour before it.
    pub fn compute(
        &mut self,
        closed_until: i64,
        interval_ms: i64,
        threshold_s: f64,
        target: f64,
        shrinkage: f64,
    ) -> Vec<Staffing> {
        let Some((&start, _)) = self
            .intervals
            .range(..=closed_until - interval_ms)
            .next_back()
        else {
            return Vec::new();
        };
        self.intervals = self.intervals.split_off(&(start - 3_600_000));
        let mut hour: Demand = Demand::new();
        for d in self
            .intervals
            .range(start - 3_600_000 + interval_ms..=start)
        {
            for (k, v) in d.1 {
                let h = hour.entry(k.clone()).or_default();
                h.1 += v.1;
                h.2 += v.2;
            }
        }
        let mut out = Vec::new();
        for ((tenant, queue), (offered, handle_ms, handled)) in &self.intervals[&start] {
            let (ms, n) = if *handled > 0 {
                (*handle_ms, *handled)
            } else {
                let h = hour.get(&(tenant.clone(), queue.clone())).copied();
                h.map_or((0, 0), |h| (h.1, h.2))
            };
            if *offered == 0 || n == 0 {
                continue;
            }
            let aht_s = ms as f64 / n as f64 / 1000.0;
            let load = offered_load(*offered as f64, interval_ms as f64 / 1000.0, aht_s);
            if let Some(agents) = required_agents(load, aht_s, threshold_s, target) {
                out.push(Staffing {
                    tenant: tenant.clone(),
                    queue: queue.clone(),
                    offered: *offered,
                    aht_s,
                    load,
                    agents,
                    scheduled: scheduled_staff(agents, shrinkage),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tracker_tests {
    use super::*;
    use deflect_core::engine::{ClosedInterval, HeatCell};
    use deflect_core::metrics::{Counters, Metric};
    use deflect_core::time::Interval;

    fn closed(start: i64, offered: u64, handle_ms: u64, handled: u64) -> ClosedInterval {
        let mut c = Counters::default();
        let l = || vec!["acme".to_string(), "voice".to_string(), "cards".to_string()];
        c.add(Metric::QueueEntered, l(), offered);
        if handled > 0 {
            c.add(Metric::HandleTimeMs, l(), handle_ms);
            c.add(Metric::Handled, l(), handled);
        }
        ClosedInterval {
            interval: Interval {
                start,
                end: start + 1_800_000,
            },
            counters: c.into(),
            heat: HeatCell::default(),
        }
    }

    #[test]
    fn reference_example_from_two_partitions() {
        let mut t = StaffingTracker::default();
        // 100 calls in 30 minutes with AHT 180 s, split over two partitions
        t.add(&[closed(0, 60, 60 * 180_000, 60)]);
        t.add(&[closed(0, 40, 40 * 180_000, 40)]);
        // not closed on every partition yet
        assert!(t.compute(1_799_999, 1_800_000, 20.0, 0.8, 0.3).is_empty());
        let s = t.compute(1_800_000, 1_800_000, 20.0, 0.8, 0.3);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].offered, s[0].agents, s[0].scheduled), (100, 14, 20));
        assert!((s[0].load - 10.0).abs() < 1e-12);
        // an interval that handled nothing takes its AHT from the last hour
        t.add(&[closed(1_800_000, 100, 0, 0)]);
        let s = t.compute(3_600_000, 1_800_000, 20.0, 0.8, 0.3);
        assert_eq!((s[0].offered, s[0].agents), (100, 14));
    }
}
