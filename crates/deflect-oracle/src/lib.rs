//! The batch oracle: every business figure of every interval, computed by a plain function over
//! the whole event list.
//!
//! It shares the metric *definitions* with the streaming path (names, labels, folding of bounded
//! label sets, configuration) and nothing of its machinery: no pending buffer, no watermark, no
//! timers, no state store, no interval type. Contacts are cut into segments by their end event or
//! by the contact timeout, each segment is folded once, and the relations between contacts
//! (re-contact, surveys, proactive notifications, callbacks) are found by searching the sorted
//! events of the customer. Intervals are found by flooring local wall-clock time.
//!
//! Tie rule shared with the engine (it is part of the definition, not of the machinery): at one
//! instant, events are processed in (lifecycle rank, event id) order, and a timer-decided figure
//! (contact timeout, end of a window) comes after every event of that instant.

use std::collections::{BTreeMap, HashSet};

use deflect_core::engine::HeatCell;
use deflect_core::event::{
    AiOutcome, Direction, Event, EventKind, Initiation, IvrExitReason, Millis, QueueExitReason,
};
use deflect_core::journey::JourneyConfig;
use deflect_core::metrics::RECONTACT_WINDOWS;
use deflect_core::metrics::{csat_box, wait_bucket_label, Counters, Metric, Outcome};

/// The figures of one interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub counters: Counters,
    pub heat: HeatCell,
}

/// Every interval's figures, by interval start (UTC ms). Every contact, window and callback is
/// decided (as after the end of a replay).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub intervals: BTreeMap<Millis, Figures>,
    /// Cohort report revisions by (interval start, revision): the cohort figures of the contacts
    /// that ended (notifications sent) in the interval, decided before the interval's end
    /// (revision 0) or before its end plus the revision's horizon. Empty revisions are left out.
    pub cohorts: BTreeMap<(Millis, u32), Counters>,
}

/// The horizons of the cohort reports, increasing: the re-contact windows, and the proactive
/// window when it is not one of them.
pub fn horizons(cfg: &JourneyConfig) -> Vec<Millis> {
    let mut h: Vec<Millis> = RECONTACT_WINDOWS
        .iter()
        .map(|(_, hours)| hours * 3_600_000)
        .collect();
    if !h.contains(&cfg.proactive_window_ms) {
        h.push(cfg.proactive_window_ms);
    }
    h.sort();
    h
}

/// Floors `t` to its interval of `minutes` in local wall-clock time of `tz`; an offset change
/// since that local floor starts the interval at the change instead.
pub fn interval_start(tz: &jiff::tz::TimeZone, minutes: i64, t: Millis) -> Millis {
    let ts = jiff::Timestamp::from_millisecond(t).expect("event time in range");
    let z = ts.to_zoned(tz.clone());
    let into = (i64::from(z.minute()) % minutes) * 60_000
        + i64::from(z.second()) * 1000
        + i64::from(z.millisecond());
    let changed = tz
        .preceding(ts + jiff::SignedDuration::from_millis(1))
        .next()
        .map(|tr| tr.timestamp().as_millisecond());
    match changed {
        Some(c) if c > t - into => c,
        _ => t - into,
    }
}

struct Out<'a> {
    tz: &'a jiff::tz::TimeZone,
    minutes: i64,
    report: Report,
    /// (origin, decided at, metric, labels) of every cohort figure.
    cohort: Vec<(Millis, Millis, Metric, Vec<String>)>,
}

impl Out<'_> {
    fn at(&mut self, t: Millis) -> &mut Figures {
        let start = interval_start(self.tz, self.minutes, t);
        self.report.intervals.entry(start).or_default()
    }
    fn count(&mut self, t: Millis, m: Metric, labels: &[&str], v: u64) {
        let labels = labels.iter().map(|s| s.to_string()).collect();
        self.at(t).counters.add(m, labels, v);
    }
    /// A cohort figure about a contact ended (or notification sent) at `origin`, decided at `at`.
    fn cohort(&mut self, origin: Millis, at: Millis, m: Metric, labels: &[&str]) {
        self.count(at, m, labels, 1);
        let labels = labels.iter().map(|s| s.to_string()).collect();
        self.cohort.push((origin, at, m, labels));
    }
}

/// Processing position of an event: (time, rank, id).
type Pos<'a> = (Millis, u8, &'a str);

/// One contact from its first event to its end (event or timeout), folded.
struct Segment<'a> {
    contact_id: &'a str,
    end: Millis,
    /// Position of the end: the end event's, or (end, u8::MAX, "") for a timeout (after every
    /// event of that instant).
    end_pos: (Millis, u8, &'a str),
    outcome: Outcome,
    potential: bool,
    tenant: String,
    channel: &'static str,
    intent: String,
}

/// Computes every figure the engine computes, for the given accepted events.
pub fn compute(cfg: &JourneyConfig, tz_name: &str, minutes: u32, events: &[Event]) -> Report {
    let tz = jiff::tz::TimeZone::get(tz_name).expect("valid zone");
    let mut out = Out {
        tz: &tz,
        minutes: i64::from(minutes),
        report: Report::default(),
        cohort: Vec::new(),
    };
    // duplicates (same event id) count once
    let mut seen = HashSet::new();
    let mut sorted: Vec<&Event> = events.iter().collect();
    sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
    sorted.retain(|e| seen.insert(e.event_id.as_str()));
    let mut journeys: BTreeMap<String, Vec<&Event>> = BTreeMap::new();
    for e in sorted {
        journeys.entry(e.journey_key()).or_default().push(e);
    }
    for (key, evs) in &journeys {
        journey(cfg, key.starts_with("c:"), evs, &mut out);
    }
    let len = i64::from(minutes) * 60_000;
    let h = horizons(cfg);
    let cohort = std::mem::take(&mut out.cohort);
    for (origin, at, m, labels) in cohort {
        let start = interval_start(&tz, i64::from(minutes), origin);
        // the interval's end in local time: the next interval's start (a DST change falls on an
        // interval boundary, so an interval is `len` long in UTC)
        let end = start + len;
        for r in 0..=h.len() {
            let bound = if r == 0 { end } else { end + h[r - 1] };
            if at < bound {
                out.report
                    .cohorts
                    .entry((start, r as u32))
                    .or_default()
                    .add(m, labels.clone(), 1);
            }
        }
    }
    out.report
}

fn pos(e: &Event) -> Pos<'_> {
    (e.occurred_at, e.kind.rank(), e.event_id.as_str())
}

fn journey(cfg: &JourneyConfig, known: bool, evs: &[&Event], out: &mut Out) {
    // --- contacts, cut into segments
    let mut by_contact: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in evs {
        if !matches!(
            e.kind,
            EventKind::SurveyResponse { .. } | EventKind::NotificationSent { .. }
        ) {
            by_contact.entry(e.contact_id.as_str()).or_default().push(e);
        }
    }
    let mut segments: Vec<Segment> = Vec::new();
    // moments a potential call's intent became known: (position, raw intent)
    let mut intents: Vec<(Pos, String)> = Vec::new();
    // callback requests: (position, id, tenant, queue)
    let mut requests: Vec<(Pos, &str, String, String)> = Vec::new();
    for (cid, list) in &by_contact {
        let mut i = 0;
        while i < list.len() {
            let mut j = i;
            // a segment runs until its end event, or until a gap longer than the timeout
            while j + 1 < list.len()
                && !matches!(list[j].kind, EventKind::ContactEnded { .. })
                && list[j + 1].occurred_at <= list[j].occurred_at + cfg.contact_timeout_ms
            {
                j += 1;
            }
            let seg = &list[i..=j];
            segments.push(fold_segment(
                cfg,
                cid,
                seg,
                &mut intents,
                &mut requests,
                out,
            ));
            i = j + 1;
        }
    }
    segments.sort_by(|a, b| a.end_pos.cmp(&b.end_pos));
    // --- re-contact and containment of potential calls
    let starts: Vec<&Event> = evs
        .iter()
        .copied()
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::ContactStarted {
                    direction: Direction::Inbound,
                    initiation: Initiation::Customer
                }
            )
        })
        .collect();
    for s in segments.iter().filter(|s| s.potential) {
        let base = [s.tenant.as_str(), s.channel, s.intent.as_str()];
        if !known {
            let o = s.outcome.as_str();
            out.cohort(
                s.end,
                s.end,
                Metric::RecontactUnverifiable,
                &[base[0], base[1], base[2], o],
            );
            if s.outcome == Outcome::Deflected {
                out.cohort(s.end, s.end, Metric::ContainmentUnverifiable, &base);
            }
            continue;
        }
        for (name, hours) in RECONTACT_WINDOWS {
            let limit = s.end + hours * 3_600_000;
            let again = starts.iter().find(|e| {
                pos(e) > s.end_pos && e.occurred_at <= limit && e.contact_id != s.contact_id
            });
            let (at, result) = match again {
                Some(e) => (e.occurred_at, "recontacted"),
                None => (limit, "not_recontacted"),
            };
            let o = s.outcome.as_str();
            out.cohort(
                s.end,
                at,
                Metric::Recontact,
                &[base[0], base[1], base[2], o, name, result],
            );
            if s.outcome == Outcome::Deflected {
                let r = if result == "recontacted" {
                    "recontacted"
                } else {
                    "contained"
                };
                out.cohort(
                    s.end,
                    at,
                    Metric::Containment,
                    &[base[0], base[1], base[2], name, r],
                );
            }
        }
    }
    // --- surveys: split by the outcome of the contact they refer to, if it ended within the
    // survey window before the response
    for e in evs {
        let EventKind::SurveyResponse {
            score,
            scale_min,
            scale_max,
        } = &e.kind
        else {
            continue;
        };
        let p = pos(e);
        let refd = segments.iter().rev().find(|s| {
            s.contact_id == e.contact_id
                && s.end_pos < p
                && e.occurred_at <= s.end + cfg.survey_window_ms
        });
        let tenant_ev = cfg.dims.tenant(&e.tenant);
        let (tenant, channel, outcome) = match refd {
            Some(s) => (s.tenant.as_str(), s.channel, s.outcome.as_str()),
            None => (tenant_ev.as_str(), e.channel.as_str(), "unknown"),
        };
        let b = csat_box(*score, *scale_min, *scale_max);
        out.count(
            e.occurred_at,
            Metric::CsatResponses,
            &[tenant, channel, outcome, b],
            1,
        );
    }
    // --- proactive notifications
    intents.sort();
    for e in evs {
        let EventKind::NotificationSent { topic, .. } = &e.kind else {
            continue;
        };
        let tenant = cfg.dims.tenant(&e.tenant);
        let topic_l = cfg.dims.intent(Some(topic));
        let l = [tenant.as_str(), e.channel.as_str(), topic_l.as_str()];
        if !known {
            out.cohort(
                e.occurred_at,
                e.occurred_at,
                Metric::Proactive,
                &[l[0], l[1], l[2], "unverifiable"],
            );
            continue;
        }
        let limit = e.occurred_at + cfg.proactive_window_ms;
        let call = intents
            .iter()
            .find(|(p, i)| *p > pos(e) && p.0 <= limit && i == topic);
        let (at, result) = match call {
            Some((p, _)) => (p.0, "called"),
            None => (limit, "deflected"),
        };
        out.cohort(
            e.occurred_at,
            at,
            Metric::Proactive,
            &[l[0], l[1], l[2], result],
        );
    }
    // --- callbacks: a request opens one (labelled by its contact), a close ends the open one
    // (labelled like it), and one still open after the maximum age is lost
    requests.sort();
    let mut requests = requests.into_iter().peekable();
    let mut open: BTreeMap<&str, (Millis, String, String)> = BTreeMap::new();
    for e in evs {
        let p = pos(e);
        while let Some(r) = requests.next_if(|r| r.0 <= p) {
            lose_callbacks(cfg, &mut open, r.0 .0, false, out);
            let (t, q) = (r.2, r.3);
            out.count(r.0 .0, Metric::Callbacks, &[&t, &q, "requested"], 1);
            open.insert(r.1, (r.0 .0, t, q));
        }
        lose_callbacks(cfg, &mut open, e.occurred_at, false, out);
        let (EventKind::CallbackCompleted { callback_id }
        | EventKind::CallbackCanceled { callback_id }
        | EventKind::CallbackExpired { callback_id }) = &e.kind
        else {
            continue;
        };
        let ev = match e.kind {
            EventKind::CallbackCompleted { .. } => "completed",
            EventKind::CallbackCanceled { .. } => "canceled",
            _ => "expired",
        };
        let (t, q) = match open.remove(callback_id.as_str()) {
            Some((_, t, q)) => (t, q),
            None => (
                cfg.dims.tenant(&e.tenant).to_string(),
                cfg.dims.queue(e.queue.as_deref()).to_string(),
            ),
        };
        out.count(e.occurred_at, Metric::Callbacks, &[&t, &q, ev], 1);
    }
    lose_callbacks(cfg, &mut open, Millis::MAX, true, out);
}

/// Callbacks open for the maximum age are lost at that instant (after the events of that instant,
/// hence strictly before `now`, or at any time when `all`).
fn lose_callbacks(
    cfg: &JourneyConfig,
    open: &mut BTreeMap<&str, (Millis, String, String)>,
    now: Millis,
    all: bool,
    out: &mut Out,
) {
    open.retain(|_, (at, t, q)| {
        let due = *at + cfg.callback_max_age_ms;
        if due < now || all {
            out.count(due, Metric::Callbacks, &[t, q, "lost"], 1);
            false
        } else {
            true
        }
    });
}

/// Folds the events of one contact segment: the figures of its events and of its end.
fn fold_segment<'a>(
    cfg: &JourneyConfig,
    cid: &'a str,
    seg: &[&'a Event],
    intents: &mut Vec<(Pos<'a>, String)>,
    requests: &mut Vec<(Pos<'a>, &'a str, String, String)>,
    out: &mut Out,
) -> Segment<'a> {
    let first = seg[0];
    let tenant = cfg.dims.tenant(&first.tenant);
    let channel = first.channel.as_str();
    let mut intent = cfg.dims.intent(first.intent.as_deref());
    let mut raw_intent = first.intent.clone().filter(|i| !i.is_empty());
    let mut queue = cfg.dims.queue(first.queue.as_deref());
    let (mut potential, mut resolved, mut queued, mut agent, mut callback) =
        (false, false, false, false, false);
    let (mut abandon, mut escalated, mut automated, mut context) = (false, false, false, false);
    let (mut handle, mut talk_known, mut talk_unknown) = (0u64, false, false);
    let mut enqueued: Option<Millis> = None;
    for e in seg {
        let t = e.occurred_at;
        let p: Pos<'a> = (t, e.kind.rank(), e.event_id.as_str());
        // events whose order makes no sense for the contact are not applied
        let nonsense = match e.kind {
            EventKind::QueueEntered { .. } => agent,
            EventKind::QueueExited { .. } => !queued,
            EventKind::AgentDisconnected { .. } => !agent,
            _ => false,
        };
        if nonsense {
            continue;
        }
        match &e.kind {
            EventKind::ContactStarted {
                direction,
                initiation,
            } => {
                potential = *direction == Direction::Inbound && *initiation == Initiation::Customer;
                if potential {
                    out.count(t, Metric::PotentialCalls, &[&tenant, channel, &intent], 1);
                    out.at(t).heat.arrivals += 1;
                    if let Some(i) = &raw_intent {
                        intents.push((p, i.to_string()));
                    }
                }
            }
            EventKind::IntentIdentified { intent: i, .. } => {
                intent = cfg.dims.intent(Some(i));
                raw_intent = Some(i.clone()).filter(|i| !i.is_empty());
                if potential {
                    if let Some(i) = &raw_intent {
                        intents.push((p, i.to_string()));
                    }
                }
            }
            EventKind::IvrEntered { node } => {
                automated = true;
                let n = cfg.dims.ivr_node(node);
                out.count(t, Metric::IvrEntries, &[&tenant, channel, &n], 1);
            }
            EventKind::IvrMenuSelected { .. }
            | EventKind::SelfServiceViewed { .. }
            | EventKind::AiAgentStarted => automated = true,
            EventKind::IvrExited { node, reason } => {
                automated = true;
                if *reason == IvrExitReason::SelfServed {
                    resolved = true;
                }
                if *reason == IvrExitReason::HangUp {
                    abandon = true;
                    let n = cfg.dims.ivr_node(node);
                    out.count(t, Metric::IvrDropoffs, &[&tenant, channel, &n], 1);
                }
            }
            EventKind::SelfServiceResolved { .. } => {
                automated = true;
                resolved = true;
            }
            EventKind::AiAgentEnded { outcome, .. } => {
                automated = true;
                match outcome {
                    AiOutcome::Success => resolved = true,
                    AiOutcome::Dropped | AiOutcome::Failed => abandon = true,
                    AiOutcome::Escalated => escalated = true,
                }
            }
            EventKind::EscalationRequested { context_passed, .. } => {
                automated = true;
                escalated = true;
                context |= *context_passed;
            }
            EventKind::QueueEntered { queue: q, .. } => {
                escalated |= automated;
                queue = cfg.dims.queue(Some(q));
                queued = true;
                enqueued = Some(t);
                out.count(t, Metric::QueueEntered, &[&tenant, channel, &queue], 1);
            }
            EventKind::QueueExited { reason } => {
                let ql = [tenant.as_str(), channel, queue.as_str()];
                match reason {
                    QueueExitReason::Abandoned => {
                        abandon = true;
                        if let Some(q) = enqueued.take() {
                            let w = t - q;
                            out.count(t, Metric::QueueAbandoned, &ql, 1);
                            out.count(t, Metric::QueueAbandonWaitMs, &ql, w as u64);
                            if w < cfg.short_abandon_ms {
                                out.count(t, Metric::QueueAbandonedShort, &ql, 1);
                            }
                            if w <= cfg.sl_threshold_ms {
                                out.count(t, Metric::QueueAbandonedWithin, &ql, 1);
                            }
                        }
                    }
                    QueueExitReason::Callback => {
                        callback = true;
                        if let Some(q) = enqueued.take() {
                            out.count(t, Metric::QueueCallbackRequested, &ql, 1);
                            if t - q <= cfg.sl_threshold_ms {
                                out.count(t, Metric::QueueCallbackWithin, &ql, 1);
                            }
                        }
                    }
                    _ => {}
                }
            }
            EventKind::CallbackRequested { callback_id } => {
                callback = true;
                requests.push((
                    p,
                    callback_id.as_str(),
                    tenant.to_string(),
                    queue.to_string(),
                ));
                let ql = [tenant.as_str(), channel, queue.as_str()];
                if let Some(q) = enqueued.take() {
                    out.count(t, Metric::QueueCallbackRequested, &ql, 1);
                    if t - q <= cfg.sl_threshold_ms {
                        out.count(t, Metric::QueueCallbackWithin, &ql, 1);
                    }
                }
            }
            EventKind::AgentConnected { .. } => {
                agent = true;
                let wait = match enqueued.take() {
                    Some(q) => Some(t - q),
                    None if cfg.asa_include_direct && !queued => Some(0),
                    None => None,
                };
                if let Some(w) = wait {
                    let ql = [tenant.as_str(), channel, queue.as_str()];
                    out.count(t, Metric::QueueAnswered, &ql, 1);
                    out.count(t, Metric::QueueWaitMs, &ql, w as u64);
                    if w <= cfg.sl_threshold_ms {
                        out.count(t, Metric::QueueAnsweredWithin, &ql, 1);
                    }
                    let b = wait_bucket_label(w);
                    out.count(t, Metric::QueueWaitBucket, &[ql[0], ql[1], ql[2], b], 1);
                    let h = &mut out.at(t).heat;
                    h.answered += 1;
                    h.wait_ms += w.max(0) as u64;
                }
            }
            EventKind::AgentDisconnected { talk_ms, hold_ms } => match talk_ms {
                Some(x) => {
                    talk_known = true;
                    handle += x + hold_ms.unwrap_or(0);
                }
                None => talk_unknown = true,
            },
            EventKind::AfterContactWorkEnded { acw_ms } => handle += acw_ms.unwrap_or(0),
            _ => {}
        }
    }
    let last = seg[seg.len() - 1];
    let (end, end_pos) = match last.kind {
        EventKind::ContactEnded { .. } => (
            last.occurred_at,
            (last.occurred_at, last.kind.rank(), last.event_id.as_str()),
        ),
        _ => {
            let t = last.occurred_at + cfg.contact_timeout_ms;
            (t, (t, u8::MAX, ""))
        }
    };
    let outcome = if agent {
        Outcome::Assisted
    } else if resolved && !queued && !callback {
        Outcome::Deflected
    } else if abandon {
        Outcome::Abandoned
    } else {
        Outcome::Unresolved
    };
    let cl = [tenant.as_str(), channel, intent.as_str()];
    if automated {
        out.count(end, Metric::AutomatedContacts, &cl, 1);
        if escalated {
            let c = if context { "passed" } else { "missing" };
            out.count(end, Metric::Escalations, &[cl[0], cl[1], cl[2], c], 1);
        }
    }
    if agent {
        let ql = [tenant.as_str(), channel, queue.as_str()];
        if talk_known && !talk_unknown {
            out.count(end, Metric::Handled, &ql, 1);
            out.count(end, Metric::HandleTimeMs, &ql, handle);
        } else {
            out.count(end, Metric::HandleTimeUnknown, &ql, 1);
        }
    }
    if potential {
        out.count(
            end,
            Metric::ContactOutcomes,
            &[cl[0], cl[1], cl[2], outcome.as_str()],
            1,
        );
        if outcome == Outcome::Deflected && cfg.high_stakes_intents.iter().any(|i| *i == intent) {
            out.count(end, Metric::HighStakesDeflected, &cl, 1);
        }
    }
    Segment {
        contact_id: cid,
        end,
        end_pos,
        outcome,
        potential,
        tenant: tenant.to_string(),
        channel,
        intent: intent.to_string(),
    }
}

#[cfg(test)]
mod tests;
