//! Amazon Connect contact trace records (CTR), as exported: JSON lines, JSON arrays, or objects
//! written back to back (Kinesis Firehose). Facts in `shared/reference/events.md`; decisions here:
//!
//! - Records are delivered at least once: per `ContactId` the copy with the highest
//!   `LastUpdateTimestamp` wins.
//! - Transfers and callbacks are legs linked by `PreviousContactId` (the parent); their
//!   `InitiationMethod` (TRANSFER, QUEUE_TRANSFER, CALLBACK) keeps them out of the potential calls.
//!   MONITOR and DISCONNECT records are not contacts of a customer and are skipped.
//! - Queue wait runs from `Queue.EnqueueTimestamp` to `Queue.DequeueTimestamp`; enqueued and never
//!   connected to an agent is a queue abandon.
//! - No queue, no agent and `DisconnectReason` CONTACT_FLOW_DISCONNECT is contained by the flow
//!   (deflected); no queue, no agent and any other reason is a hang-up in the flow (abandoned).
//! - The customer key is `Attributes.customer_id` (or `CustomerId`) when the flow sets one; phone
//!   numbers are never used as keys. Without it the contact is unverifiable for re-contact.
//! - Keys are matched case-insensitively (the near-real-time events are not consistent).
//! - The tenant is the last segment of `InstanceARN` (`connect` when absent).

use std::collections::BTreeMap;

use anyhow::Result;
use deflect_core::event::{
    Channel, Direction, DisconnectParty, Event, EventKind, Initiation, IvrExitReason, Millis,
    QueueExitReason,
};
use serde_json::Value;

use super::{Adapter, Converted};

pub struct ConnectCtr;

/// Case-insensitive field access.
fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let o = v.as_object()?;
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    get(v, key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

fn ts(v: &Value, key: &str) -> Option<Millis> {
    s(v, key)?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

fn secs(v: &Value, key: &str) -> Option<u64> {
    get(v, key)
        .and_then(Value::as_f64)
        .map(|x| (x.max(0.0) * 1000.0) as u64)
}

/// Every JSON object in the text: lines, arrays, or objects back to back.
fn records(text: &str, out: &mut Converted) -> Vec<Value> {
    let mut all = Vec::new();
    for item in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
        match item {
            Ok(Value::Array(a)) => all.extend(a),
            Ok(v @ Value::Object(_)) => all.push(v),
            Ok(_) => out.skip("not_an_object"),
            Err(_) => {
                out.skip("invalid_json");
                break; // the rest of the text cannot be framed
            }
        }
    }
    all
}

impl Adapter for ConnectCtr {
    fn name(&self) -> &'static str {
        "connect-ctr"
    }

    fn time_zone(&self) -> Option<&'static str> {
        None
    }

    fn convert(&self, text: &str) -> Result<Converted> {
        let mut out = Converted::default();
        // deduplicate: the highest LastUpdateTimestamp per ContactId
        let mut latest: BTreeMap<String, (Millis, Value)> = BTreeMap::new();
        for r in records(text, &mut out) {
            let Some(id) = s(&r, "ContactId").map(str::to_string) else {
                out.skip("missing_contact_id");
                continue;
            };
            let updated = ts(&r, "LastUpdateTimestamp").unwrap_or(i64::MIN);
            match latest.get(&id) {
                Some((t, _)) if *t >= updated => out.skip("superseded_copy"),
                Some(_) => {
                    out.skip("superseded_copy");
                    latest.insert(id, (updated, r));
                }
                None => {
                    latest.insert(id, (updated, r));
                }
            }
        }
        for (id, (_, r)) in latest {
            match contact_events(&id, &r) {
                Ok(evs) => {
                    out.records += 1;
                    out.events.extend(evs);
                }
                Err(reason) => out.skip(reason),
            }
        }
        Ok(out)
    }
}

fn contact_events(id: &str, r: &Value) -> Result<Vec<Event>, &'static str> {
    let (direction, initiation) = match s(r, "InitiationMethod").unwrap_or("INBOUND") {
        "INBOUND" => (Direction::Inbound, Initiation::Customer),
        "OUTBOUND" => (Direction::Outbound, Initiation::Api),
        "TRANSFER" | "QUEUE_TRANSFER" => (Direction::Inbound, Initiation::Transfer),
        "CALLBACK" => (Direction::Outbound, Initiation::Callback),
        "API" => (Direction::Inbound, Initiation::Api),
        "MONITOR" | "DISCONNECT" => return Err("not_a_customer_contact"),
        _ => return Err("unknown_initiation_method"),
    };
    let channel = match s(r, "Channel").unwrap_or("VOICE") {
        "VOICE" => Channel::Voice,
        "CHAT" => Channel::Chat,
        "EMAIL" => Channel::Email,
        "TASK" => Channel::Web,
        _ => return Err("unknown_channel"),
    };
    let start = ts(r, "InitiationTimestamp").ok_or("missing_initiation_timestamp")?;
    let end = ts(r, "DisconnectTimestamp");
    let tenant = s(r, "InstanceARN")
        .and_then(|a| a.rsplit('/').next())
        .unwrap_or("connect");
    let customer =
        get(r, "Attributes").and_then(|a| s(a, "customer_id").or_else(|| s(a, "CustomerId")));
    let queue = get(r, "Queue").filter(|q| q.is_object());
    let agent = get(r, "Agent").filter(|a| a.is_object());
    let queue_name = queue.and_then(|q| s(q, "Name"));
    let mut evs = Vec::new();
    let mut push = |at: Millis, kind: EventKind| {
        let n = evs.len();
        evs.push(Event {
            event_id: format!("{id}-{n}").into(),
            tenant: tenant.into(),
            contact_id: id.into(),
            parent_contact_id: s(r, "PreviousContactId").map(Into::into),
            customer_id: customer.map(Into::into),
            channel,
            occurred_at: at,
            intent: None,
            queue: queue_name.map(Into::into),
            kind,
        });
    };
    push(
        start,
        EventKind::ContactStarted {
            direction,
            initiation,
        },
    );
    let connected = agent.and_then(|a| ts(a, "ConnectedToAgentTimestamp"));
    if let Some(q) = queue.filter(|q| ts(q, "EnqueueTimestamp").is_some()) {
        let enq = ts(q, "EnqueueTimestamp").expect("filtered");
        let deq = ts(q, "DequeueTimestamp")
            .or(connected)
            .or(end)
            .unwrap_or(enq);
        push(
            enq,
            EventKind::QueueEntered {
                queue: queue_name.unwrap_or("unknown").into(),
                priority: 0,
            },
        );
        if let Some(c) = connected {
            push(
                deq,
                EventKind::QueueExited {
                    reason: QueueExitReason::Answered,
                },
            );
            push(
                c.max(deq),
                EventKind::AgentConnected {
                    context_received: false,
                },
            );
        } else {
            push(
                deq,
                EventKind::QueueExited {
                    reason: QueueExitReason::Abandoned,
                },
            );
        }
    } else if let Some(c) = connected {
        push(
            c,
            EventKind::AgentConnected {
                context_received: false,
            },
        );
    } else if let Some(e) = end {
        // only the flow ran
        let reason = if s(r, "DisconnectReason") == Some("CONTACT_FLOW_DISCONNECT") {
            IvrExitReason::SelfServed
        } else {
            IvrExitReason::HangUp
        };
        push(
            e,
            EventKind::IvrExited {
                node: "flow".into(),
                reason,
            },
        );
    }
    if let (Some(a), Some(c)) = (agent, connected) {
        let talk = secs(a, "AgentInteractionDuration");
        let hold = secs(a, "CustomerHoldDuration");
        let at = end
            .unwrap_or(c + talk.unwrap_or(0) as i64 + hold.unwrap_or(0) as i64)
            .max(c);
        push(
            at,
            EventKind::AgentDisconnected {
                talk_ms: talk,
                hold_ms: hold,
            },
        );
        if let Some(acw) = secs(a, "AfterContactWorkDuration") {
            push(
                at + acw as i64,
                EventKind::AfterContactWorkEnded { acw_ms: Some(acw) },
            );
        }
    }
    if let Some(e) = end {
        let party = match s(r, "DisconnectReason") {
            Some("CUSTOMER_DISCONNECT") => Some(DisconnectParty::Customer),
            Some("AGENT_DISCONNECT") => Some(DisconnectParty::Agent),
            Some(_) => Some(DisconnectParty::System),
            None => None,
        };
        push(
            e,
            EventKind::ContactEnded {
                party,
                resolved: connected.is_some(),
            },
        );
    }
    Ok(evs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deflect_core::metrics::{Metric, Outcome};

    fn kinds<'a>(c: &'a Converted, id: &str) -> Vec<&'a str> {
        c.events
            .iter()
            .filter(|e| e.contact_id == id)
            .map(|e| e.kind.type_name())
            .collect()
    }

    #[test]
    fn redelivered_record_keeps_the_latest_copy() {
        let text = r#"
{"ContactId":"a","InitiationMethod":"INBOUND","Channel":"VOICE","InitiationTimestamp":"2022-01-05T17:00:00Z","LastUpdateTimestamp":"2022-01-05T17:00:10Z"}
{"ContactId":"a","InitiationMethod":"INBOUND","Channel":"VOICE","InitiationTimestamp":"2022-01-05T17:00:00Z","DisconnectTimestamp":"2022-01-05T17:05:00Z","DisconnectReason":"CONTACT_FLOW_DISCONNECT","LastUpdateTimestamp":"2022-01-05T17:05:02Z"}
{"ContactId":"a","InitiationMethod":"INBOUND","Channel":"VOICE","InitiationTimestamp":"2022-01-05T17:00:00Z","LastUpdateTimestamp":"2022-01-05T17:02:00Z","SomeNewField":{"x":1}}
"#;
        let c = ConnectCtr.convert(text).unwrap();
        assert_eq!(c.records, 1);
        assert_eq!(c.skipped.get("superseded_copy"), Some(&2));
        assert_eq!(
            kinds(&c, "a"),
            ["contact_started", "ivr_exited", "contact_ended"]
        );
    }

    #[test]
    fn transfer_chain_callback_abandon_and_contained_flow() {
        let text = r#"[
 {"ContactId":"t1","InitiationMethod":"INBOUND","Channel":"VOICE","NextContactId":"t2","InitiationTimestamp":"2022-01-05T17:00:00Z",
  "Queue":{"Name":"billing","EnqueueTimestamp":"2022-01-05T17:01:00Z","DequeueTimestamp":"2022-01-05T17:01:30Z","Duration":30},
  "Agent":{"ConnectedToAgentTimestamp":"2022-01-05T17:01:30Z","AgentInteractionDuration":120,"CustomerHoldDuration":10,"AfterContactWorkDuration":30},
  "DisconnectTimestamp":"2022-01-05T17:04:00Z","DisconnectReason":"THIRD_PARTY_DISCONNECT","Attributes":{"customer_id":"u1"},
  "InstanceARN":"arn:aws:connect:eu-west-1:1:instance/acme","LastUpdateTimestamp":"2022-01-05T17:05:00Z"},
 {"ContactId":"t2","InitiationMethod":"TRANSFER","PreviousContactId":"t1","InitialContactId":"t1","Channel":"VOICE","InitiationTimestamp":"2022-01-05T17:04:00Z",
  "Queue":{"Name":"disputes","EnqueueTimestamp":"2022-01-05T17:04:05Z","DequeueTimestamp":"2022-01-05T17:06:05Z","Duration":120},
  "Agent":{"ConnectedToAgentTimestamp":"2022-01-05T17:06:05Z","AgentInteractionDuration":300},
  "DisconnectTimestamp":"2022-01-05T17:11:05Z","DisconnectReason":"CUSTOMER_DISCONNECT","Attributes":{"customer_id":"u1"},"LastUpdateTimestamp":"2022-01-05T17:12:00Z"},
 {"ContactId":"ab","InitiationMethod":"INBOUND","Channel":"VOICE","InitiationTimestamp":"2022-01-05T18:00:00Z",
  "Queue":{"Name":"billing","EnqueueTimestamp":"2022-01-05T18:00:20Z","DequeueTimestamp":"2022-01-05T18:03:20Z","Duration":180},
  "DisconnectTimestamp":"2022-01-05T18:03:20Z","DisconnectReason":"CUSTOMER_DISCONNECT","LastUpdateTimestamp":"2022-01-05T18:04:00Z"},
 {"ContactId":"cb","InitiationMethod":"CALLBACK","PreviousContactId":"ab","Channel":"VOICE","InitiationTimestamp":"2022-01-05T18:30:00Z",
  "Queue":{"Name":"billing","EnqueueTimestamp":"2022-01-05T18:30:00Z","DequeueTimestamp":"2022-01-05T18:31:00Z"},
  "Agent":{"ConnectedToAgentTimestamp":"2022-01-05T18:31:00Z","AgentInteractionDuration":60},
  "DisconnectTimestamp":"2022-01-05T18:32:00Z","DisconnectReason":"AGENT_DISCONNECT","LastUpdateTimestamp":"2022-01-05T18:33:00Z"},
 {"ContactId":"bot","InitiationMethod":"INBOUND","Channel":"CHAT","InitiationTimestamp":"2022-01-05T19:00:00Z",
  "DisconnectTimestamp":"2022-01-05T19:03:00Z","DisconnectReason":"CONTACT_FLOW_DISCONNECT","LastUpdateTimestamp":"2022-01-05T19:03:01Z"},
 {"ContactId":"mon","InitiationMethod":"MONITOR","Channel":"VOICE","InitiationTimestamp":"2022-01-05T19:00:00Z","LastUpdateTimestamp":"2022-01-05T19:03:01Z"}
]"#;
        let c = ConnectCtr.convert(text).unwrap();
        assert_eq!(c.records, 5);
        assert_eq!(c.skipped.get("not_a_customer_contact"), Some(&1));
        // the transfer leg points at its parent and is not a potential call
        let t2: Vec<&Event> = c.events.iter().filter(|e| e.contact_id == "t2").collect();
        assert_eq!(t2[0].parent_contact_id.as_deref(), Some("t1"));
        assert!(matches!(
            t2[0].kind,
            EventKind::ContactStarted {
                initiation: Initiation::Transfer,
                ..
            }
        ));
        assert_eq!(t2[0].tenant, "connect");
        assert_eq!(
            c.events
                .iter()
                .find(|e| e.contact_id == "t1")
                .unwrap()
                .tenant,
            "acme"
        );
        assert_eq!(
            kinds(&c, "t1"),
            [
                "contact_started",
                "queue_entered",
                "queue_exited",
                "agent_connected",
                "agent_disconnected",
                "after_contact_work_ended",
                "contact_ended"
            ]
        );
        assert_eq!(
            kinds(&c, "ab"),
            [
                "contact_started",
                "queue_entered",
                "queue_exited",
                "contact_ended"
            ]
        );
        assert!(c.events.iter().any(|e| e.contact_id == "ab"
            && e.kind
                == EventKind::QueueExited {
                    reason: QueueExitReason::Abandoned
                }));
        assert!(matches!(
            c.events.iter().find(|e| e.contact_id == "cb").unwrap().kind,
            EventKind::ContactStarted {
                initiation: Initiation::Callback,
                ..
            }
        ));

        // run them through the engine: outcomes, waits and the potential calls come out as expected
        let cfg = std::sync::Arc::new(crate::Config::default().engine());
        let mut e = deflect_core::engine::PartitionEngine::new(cfg);
        let mut sorted = c.events.clone();
        sorted.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        for (i, ev) in sorted.into_iter().enumerate() {
            e.ingest(i as i64, ev, 0);
        }
        e.finalize(&mut deflect_core::engine::NoStore);
        let t = e.totals();
        assert_eq!(t.total(Metric::PotentialCalls), 3, "t1, ab, bot");
        let outcome = |o: Outcome| {
            t.0.iter()
                .filter(|(k, _)| k.metric == Metric::ContactOutcomes && k.labels[3] == o.as_str())
                .map(|(_, v)| *v)
                .sum::<u64>()
        };
        assert_eq!(
            (
                outcome(Outcome::Assisted),
                outcome(Outcome::Abandoned),
                outcome(Outcome::Deflected)
            ),
            (1, 1, 1)
        );
        assert_eq!(t.total(Metric::QueueEntered), 4);
        assert_eq!(t.total(Metric::QueueAnswered), 3);
        assert_eq!(t.total(Metric::QueueWaitMs), (30 + 120 + 60) * 1000);
        assert_eq!(t.total(Metric::QueueAbandoned), 1);
        assert_eq!(t.total(Metric::QueueAbandonWaitMs), 180_000);
    }

    #[test]
    fn back_to_back_objects_and_bad_tail() {
        let text = r#"{"ContactId":"x","InitiationTimestamp":"2022-01-05T17:00:00Z"}{"ContactId":"y","InitiationTimestamp":"2022-01-05T17:00:01Z"} {"broken": "#;
        let c = ConnectCtr.convert(text).unwrap();
        assert_eq!(c.records, 2);
        assert_eq!(c.skipped.get("invalid_json"), Some(&1));
    }
}
