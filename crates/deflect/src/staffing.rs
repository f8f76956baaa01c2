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
