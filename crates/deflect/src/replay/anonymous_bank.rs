//! The Anonymous Bank call-center data, 1999 (Technion SEE Laboratory): one tab-separated line per
//! call, local Israel time. Layout, quirks and the event mapping are in the data's README; the
//! decisions taken here:
//!
//! - PHANTOM rows and rows whose IVR time is negative are skipped (counted by reason), as are lines
//!   that do not parse.
//! - Times are clock times on `date`; a step whose clock time is more than an hour before the
//!   previous step's happened after midnight (next day). A step a little before the previous one
//!   (data noise, e.g. `ser_start` before `q_exit`) is taken at the previous step's time.
//! - The queue wait is `q_time`: the answer is placed at `q_start + q_time`.

use anyhow::Result;
use deflect_core::event::{
    Channel, Direction, DisconnectParty, Event, EventKind, Initiation, IvrExitReason, Millis,
    QueueExitReason,
};
use deflect_core::time::IntervalSpec;
use jiff::civil::{Date, DateTime, Time};

use super::{Adapter, Converted};

pub const TIME_ZONE: &str = "Asia/Jerusalem";
pub const TENANT: &str = "anonymous-bank";

pub struct AnonymousBank;

/// One parsed line.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    pub vru_line: &'a str,
    pub call_id: &'a str,
    pub customer_id: &'a str,
    pub priority: i32,
    pub kind: &'a str,
    pub date: Date,
    pub vru_entry: Option<Time>,
    pub vru_exit: Option<Time>,
    pub vru_time: i64,
    pub q_start: Option<Time>,
    pub q_exit: Option<Time>,
    pub q_time: i64,
    pub outcome: &'a str,
    pub ser_start: Option<Time>,
    pub ser_exit: Option<Time>,
    pub ser_time: i64,
}

fn clock(s: &str) -> Option<Option<Time>> {
    let mut it = s.split(':');
    let (h, m, sec) = (
        it.next()?.parse::<i8>().ok()?,
        it.next()?.parse::<i8>().ok()?,
        it.next()?.parse::<i8>().ok()?,
    );
    let t = Time::new(h, m, sec, 0).ok()?;
    Some((t != Time::midnight()).then_some(t))
}

/// Parses one data line (not the header).
pub fn parse_line(line: &str) -> Option<Call<'_>> {
    let f: Vec<&str> = line.split('\t').map(str::trim).collect();
    if f.len() < 17 {
        return None;
    }
    let d = f[5];
    if d.len() != 6 {
        return None;
    }
    let date = Date::new(
        1900 + d[..2].parse::<i16>().ok()?,
        d[2..4].parse().ok()?,
        d[4..].parse().ok()?,
    )
    .ok()?;
    Some(Call {
        vru_line: f[0],
        call_id: f[1],
        customer_id: f[2],
        priority: f[3].parse().ok()?,
        kind: f[4],
        date,
        vru_entry: clock(f[6])?,
        vru_exit: clock(f[7])?,
        vru_time: f[8].parse().ok()?,
        q_start: clock(f[9])?,
        q_exit: clock(f[10])?,
        q_time: f[11].parse().ok()?,
        outcome: f[12],
        ser_start: clock(f[13])?,
        ser_exit: clock(f[14])?,
        ser_time: f[15].parse().ok()?,
    })
}

/// Resolves successive clock times of one call into instants (midnight crossings included).
struct Timeline<'s> {
    spec: &'s IntervalSpec,
    day: Date,
    prev: DateTime,
}

impl Timeline<'_> {
    fn at(&mut self, t: Time) -> Millis {
        let mut dt = self.day.to_datetime(t);
        if dt < self.prev - jiff::SignedDuration::from_hours(1) {
            self.day = self.day.tomorrow().expect("1999 has a tomorrow");
            dt = self.day.to_datetime(t);
        }
        if dt < self.prev {
            dt = self.prev;
        }
        self.prev = dt;
        self.spec
            .local_to_utc(dt)
            .expect("1999 local times convert")
    }
}

impl Adapter for AnonymousBank {
    fn name(&self) -> &'static str {
        "anonymous-bank"
    }

    fn time_zone(&self) -> Option<&'static str> {
        Some(TIME_ZONE)
    }

    fn convert(&self, text: &str) -> Result<Converted> {
        let spec = IntervalSpec::new(TIME_ZONE, 15)?;
        let mut out = Converted::default();
        for line in text.lines().skip(1).filter(|l| !l.trim().is_empty()) {
            let Some(c) = parse_line(line) else {
                out.skip("unparsable_line");
                continue;
            };
            if c.outcome == "PHANTOM" {
                out.skip("phantom");
                continue;
            }
            if c.vru_time < 0 {
                out.skip("negative_ivr_time");
                continue;
            }
            let Some(entry) = c.vru_entry else {
                out.skip("unparsable_line");
                continue;
            };
            out.records += 1;
            call_events(&spec, &c, entry, &mut out.events);
        }
        Ok(out)
    }
}

fn call_events(spec: &IntervalSpec, c: &Call<'_>, entry: Time, out: &mut Vec<Event>) {
    let contact = format!("{}-{}-{}", c.date.strftime("%y%m%d"), c.vru_line, c.call_id);
    let customer =
        (c.customer_id != "0" && !c.customer_id.is_empty()).then(|| c.customer_id.to_string());
    let mut n = 0;
    let mut push = |at: Millis, kind: EventKind| {
        out.push(Event {
            event_id: format!("{contact}-{n}").into(),
            tenant: TENANT.into(),
            contact_id: contact.clone().into(),
            parent_contact_id: None,
            customer_id: customer.as_deref().map(Into::into),
            channel: Channel::Voice,
            occurred_at: at,
            intent: Some(c.kind.to_string().into()),
            queue: Some(c.kind.to_string().into()),
            kind,
        });
        n += 1;
    };
    let start_dt = c.date.to_datetime(entry);
    let mut tl = Timeline {
        spec,
        day: c.date,
        prev: start_dt,
    };
    let t0 = tl.at(entry);
    let initiation = if c.kind == "TT" {
        Initiation::Callback
    } else {
        Initiation::Customer
    };
    push(
        t0,
        EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation,
        },
    );
    push(t0, EventKind::IvrEntered { node: "vru".into() });
    let t_exit = c.vru_exit.map_or(t0, |t| tl.at(t));
    let agent = c.outcome == "AGENT";
    let queued = c.q_start.is_some();
    let reason = if queued {
        IvrExitReason::ToQueue
    } else if agent {
        IvrExitReason::ToAgent
    } else {
        IvrExitReason::HangUp
    };
    push(
        t_exit,
        EventKind::IvrExited {
            node: "vru".into(),
            reason,
        },
    );
    let mut connect_or_end = t_exit;
    if let Some(qs) = c.q_start {
        let tq = tl.at(qs);
        let tqx = tq + c.q_time.max(0) * 1000;
        // keep the timeline after the queue exit for the service times that follow
        if let Some(qx) = c.q_exit {
            let _ = tl.at(qx);
        }
        push(
            tq,
            EventKind::QueueEntered {
                queue: c.kind.to_string().into(),
                priority: c.priority,
            },
        );
        let r = if agent {
            QueueExitReason::Answered
        } else {
            QueueExitReason::Abandoned
        };
        push(tqx, EventKind::QueueExited { reason: r });
        connect_or_end = tqx;
    }
    if agent {
        push(
            connect_or_end,
            EventKind::AgentConnected {
                context_received: false,
            },
        );
        let end = match (c.ser_start, c.ser_exit) {
            (Some(_), Some(se)) => {
                let t = tl.at(se).max(connect_or_end);
                push(
                    t,
                    EventKind::AgentDisconnected {
                        talk_ms: Some(c.ser_time.max(0) as u64 * 1000),
                        hold_ms: None,
                    },
                );
                t
            }
            _ => {
                push(
                    connect_or_end,
                    EventKind::AgentDisconnected {
                        talk_ms: None,
                        hold_ms: None,
                    },
                );
                connect_or_end
            }
        };
        push(
            end,
            EventKind::ContactEnded {
                party: None,
                resolved: true,
            },
        );
    } else {
        push(
            connect_or_end,
            EventKind::ContactEnded {
                party: Some(DisconnectParty::Customer),
                resolved: false,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "vru+line\tcall_id\tcustomer_id\tpriority\ttype\tdate\tvru_entry\tvru_exit\tvru_time\tq_start\tq_exit\tq_time\toutcome\tser_start\tser_exit\tser_time\tserver\n";

    fn kinds(c: &Converted) -> Vec<(&'static str, Millis)> {
        c.events
            .iter()
            .map(|e| (e.kind.type_name(), e.occurred_at))
            .collect()
    }

    #[test]
    fn queued_call_answered_after_midnight() {
        let text = format!("{HEADER}AA0101\t1\t77\t2\tPS\t990101\t23:58:00\t23:58:10\t10\t23:58:10\t0:01:10\t180\tAGENT\t0:01:11\t0:05:00\t229\tX\n");
        let c = AnonymousBank.convert(&text).unwrap();
        assert_eq!(c.records, 1);
        let ms = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        // Israel is UTC+2 in January
        assert_eq!(
            kinds(&c),
            vec![
                ("contact_started", ms("1999-01-01T21:58:00Z")),
                ("ivr_entered", ms("1999-01-01T21:58:00Z")),
                ("ivr_exited", ms("1999-01-01T21:58:10Z")),
                ("queue_entered", ms("1999-01-01T21:58:10Z")),
                ("queue_exited", ms("1999-01-01T22:01:10Z")),
                ("agent_connected", ms("1999-01-01T22:01:10Z")),
                ("agent_disconnected", ms("1999-01-01T22:05:00Z")),
                ("contact_ended", ms("1999-01-01T22:05:00Z")),
            ]
        );
        assert_eq!(c.events[0].customer_id.as_deref(), Some("77"));
    }

    #[test]
    fn skips_by_reason_and_maps_outcomes() {
        let text = format!(
            "{HEADER}\
AA0101\t2\t0\t0\tPS\t990101\t0:34:12\t0:34:23\t11\t0:00:00\t0:00:00\t0\tHANG\t0:00:00\t0:00:00\t0\tNO_SERVER\n\
AA0101\t3\t0\t0\tPS\t990101\t1:00:00\t1:00:05\t5\t0:00:00\t0:00:00\t0\tPHANTOM\t0:00:00\t0:00:00\t0\tNO_SERVER\n\
AA0101\t4\t5\t1\tPS\t990113\t15:46:01\t15:45:24\t-37\t15:45:24\t15:46:41\t77\tHANG\t0:00:00\t0:00:00\t0\tNO_SERVER\n\
garbage line\n\
AA0101\t5\t9\t0\tTT\t990102\t7:41:16\t7:41:26\t10\t0:00:00\t0:00:00\t0\tAGENT\t0:00:00\t0:00:00\t0\tBASCH\n"
        );
        let c = AnonymousBank.convert(&text).unwrap();
        assert_eq!(c.records, 2);
        assert_eq!(c.skipped.get("phantom"), Some(&1));
        assert_eq!(c.skipped.get("negative_ivr_time"), Some(&1));
        assert_eq!(c.skipped.get("unparsable_line"), Some(&1));
        let hang: Vec<_> = c
            .events
            .iter()
            .filter(|e| e.contact_id.ends_with("-2"))
            .map(|e| e.kind.type_name())
            .collect();
        assert_eq!(
            hang,
            [
                "contact_started",
                "ivr_entered",
                "ivr_exited",
                "contact_ended"
            ]
        );
        assert!(matches!(
            c.events
                .iter()
                .find(|e| e.contact_id.ends_with("-2") && e.kind.type_name() == "ivr_exited")
                .unwrap()
                .kind,
            EventKind::IvrExited {
                reason: IvrExitReason::HangUp,
                ..
            }
        ));
        // a TT callback leg answered directly, handle time unknown
        let tt: Vec<_> = c
            .events
            .iter()
            .filter(|e| e.contact_id.ends_with("-5"))
            .collect();
        assert!(matches!(
            tt[0].kind,
            EventKind::ContactStarted {
                initiation: Initiation::Callback,
                ..
            }
        ));
        assert!(tt
            .iter()
            .any(|e| matches!(e.kind, EventKind::AgentDisconnected { talk_ms: None, .. })));
        assert!(c
            .events
            .iter()
            .all(|e| e.customer_id.as_deref() != Some("0")));
    }
}
