//! A direct reader of a `ContactEvent` record into an [`Event`]: every field known and of its
//! declared wire type, one payload, no `attributes`. It reads the fields as prost's generated
//! decoder would (a repeated scalar or string field replaces the earlier value), validates them
//! as [`crate::decode_protobuf`] defines, and builds the event with no intermediate message: the
//! envelope's and the payload's strings go from the record straight into the event. Anything else
//! (unknown fields, a second payload, wrong wire types, truncation, bad UTF-8, groups, over-long
//! varints) gives `None`: prost then decodes the record with its own semantics and errors, and
//! its re-encoding, which has the common shape, is read here. One mapping from fields to events
//! serves both.

use deflect_core::event::{
    AiOutcome, Direction, DisconnectParty, EscalationSource, Event, EventKind, Initiation,
    IvrExitReason, QueueExitReason,
};

use crate::{
    bad, channel_from_pb, envelope, finite32, pb, survey, DecodeError, Envelope, RejectReason,
};

struct Reader<'a> {
    buf: &'a [u8],
}

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

impl<'a> Reader<'a> {
    /// Most varints are keys, lengths and small numbers: one byte, read inline.
    #[inline(always)]
    fn varint(&mut self) -> Option<u64> {
        match self.buf.split_first() {
            Some((&b, rest)) if b < 0x80 => {
                self.buf = rest;
                Some(u64::from(b))
            }
            _ => self.varint_long(),
        }
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.buf.iter().enumerate().take(10) {
            // the tenth byte may only carry the 64th bit
            if i == 9 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b < 0x80 {
                self.buf = &self.buf[i + 1..];
                return Some(v);
            }
        }
        None
    }

    /// A field's number and wire type.
    fn key(&mut self) -> Option<(u32, u8)> {
        let k = u32::try_from(self.varint()?).ok()?;
        let (number, wire) = (k >> 3, (k & 7) as u8);
        (number > 0).then_some((number, wire))
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.buf.len() {
            return None;
        }
        let (b, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(b)
    }

    fn str(&mut self) -> Option<&'a str> {
        let b = self.bytes()?;
        if b.is_ascii() {
            // SAFETY: ASCII is valid UTF-8. Ids and names mostly are ASCII: checking that a
            // word at a time costs a fraction of the full validation of short strings (about
            // 100 instructions each, five strings per event)
            return Some(unsafe { std::str::from_utf8_unchecked(b) });
        }
        std::str::from_utf8(b).ok()
    }

    fn fixed<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (b, rest) = self.buf.split_first_chunk::<N>()?;
        self.buf = rest;
        Some(*b)
    }
}

/// Reads every field of `buf` with `f` (number, wire type, reader). A scalar or string field
/// that comes again replaces the earlier value, as in prost.
fn fields<'a>(
    buf: &'a [u8],
    mut f: impl FnMut(u32, u8, &mut Reader<'a>) -> Option<()>,
) -> Option<()> {
    let mut r = Reader { buf };
    while !r.buf.is_empty() {
        let (n, wire) = r.key()?;
        f(n, wire, &mut r)?;
    }
    Some(())
}

/// The envelope's fields as read (strings borrowed from the record).
#[derive(Default)]
struct Fields<'a> {
    event_id: &'a str,
    tenant: &'a str,
    contact_id: &'a str,
    parent_contact_id: &'a str,
    customer_id: &'a str,
    channel: i32,
    occurred_at: i64,
    intent: &'a str,
    queue: &'a str,
    /// The payload's field number and bytes.
    payload: Option<(u32, &'a [u8])>,
}

/// A `ContactEvent` record of the common shape, decoded and validated, or `None` (another shape:
/// decode with prost).
pub(crate) fn event(buf: &[u8]) -> Option<Result<Event, DecodeError>> {
    let mut m = Fields::default();
    fields(buf, |n, wire, r| {
        match (n, wire) {
            (1, LEN) => m.event_id = r.str()?,
            (2, LEN) => m.tenant = r.str()?,
            (3, LEN) => m.contact_id = r.str()?,
            (4, LEN) => m.parent_contact_id = r.str()?,
            (5, LEN) => m.customer_id = r.str()?,
            (6, VARINT) => m.channel = r.varint()? as i32,
            (7, VARINT) => m.occurred_at = r.varint()? as i64,
            (8, LEN) => m.intent = r.str()?,
            (9, LEN) => m.queue = r.str()?,
            (20..=41, LEN) => {
                // one payload: a second one is prost's to merge or replace
                if m.payload.is_some() {
                    return None;
                }
                m.payload = Some((n, r.bytes()?));
            }
            _ => return None,
        }
        Some(())
    })?;
    let kind = match m.payload {
        Some((n, b)) => kind(n, b, m.queue)?,
        None => Err(DecodeError::new(
            RejectReason::UnknownEventType,
            "no known event payload (unknown event type or none set)",
        )),
    };
    Some(kind.and_then(|kind| {
        let channel = match m.channel {
            0 => None,
            v => Some(channel_from_pb(v).ok_or_else(|| bad("channel", v))?),
        };
        envelope(
            Envelope {
                event_id: m.event_id.into(),
                tenant: m.tenant.into(),
                contact_id: m.contact_id.into(),
                parent_contact_id: m.parent_contact_id.into(),
                customer_id: m.customer_id.into(),
                channel,
                occurred_at: Some(m.occurred_at),
                intent: m.intent.into(),
                queue: m.queue.into(),
            },
            kind,
        )
    }))
}

/// Reads the fields of a payload message into the named variables (declared with their
/// defaults by the caller), or gives up (`None`) on any other field.
macro_rules! read {
    ($b:expr, { $( ($num:literal, $wire:ident) => $var:ident = $read:expr ),* $(,)? }) => {
        #[allow(unreachable_code, unused_variables)]
        fields($b, |n, wire, r| {
            match (n, wire) {
                $( ($num, $wire) => $var = $read(r)?, )*
                _ => return None,
            }
            Some(())
        })?
    };
}

fn i32_(r: &mut Reader<'_>) -> Option<i32> {
    r.varint().map(|v| v as i32)
}
fn u32_(r: &mut Reader<'_>) -> Option<u32> {
    r.varint().map(|v| v as u32)
}
fn bool_(r: &mut Reader<'_>) -> Option<bool> {
    r.varint().map(|v| v != 0)
}
fn some_u64(r: &mut Reader<'_>) -> Option<Option<u64>> {
    r.varint().map(Some)
}
fn f32_(r: &mut Reader<'_>) -> Option<f32> {
    r.fixed().map(f32::from_le_bytes)
}
fn f64_(r: &mut Reader<'_>) -> Option<f64> {
    r.fixed().map(f64::from_le_bytes)
}

/// The event of payload field `n` (bytes `b`), validated as [`crate::decode_protobuf`] defines;
/// `queue` is the envelope's (a queue entry without its own takes it).
fn kind(n: u32, b: &[u8], queue: &str) -> Option<Result<EventKind, DecodeError>> {
    use EventKind as K;
    Some(match n {
        20 => {
            let (mut direction, mut initiation) = (0, 0);
            read!(b, { (1, VARINT) => direction = i32_, (2, VARINT) => initiation = i32_ });
            let direction = pb_enum!(
                "contact_started.direction",
                pb::contact_started::Direction,
                Direction,
                direction
            );
            let initiation = pb_enum!(
                "contact_started.initiation",
                pb::contact_started::Initiation,
                Initiation,
                initiation
            );
            direction.and_then(|direction| {
                initiation.map(|initiation| K::ContactStarted {
                    direction,
                    initiation,
                })
            })
        }
        21 => {
            let (mut intent, mut confidence) = ("", 0.0);
            read!(b, { (1, LEN) => intent = Reader::str, (2, FIXED32) => confidence = f32_ });
            finite32("intent_identified.confidence", confidence).map(|confidence| {
                K::IntentIdentified {
                    intent: intent.into(),
                    confidence,
                }
            })
        }
        22 => {
            let mut node = "";
            read!(b, { (1, LEN) => node = Reader::str });
            Ok(K::IvrEntered { node: node.into() })
        }
        23 => {
            let (mut node, mut option) = ("", "");
            read!(b, { (1, LEN) => node = Reader::str, (2, LEN) => option = Reader::str });
            Ok(K::IvrMenuSelected {
                node: node.into(),
                option: option.into(),
            })
        }
        24 => {
            let (mut node, mut reason) = ("", 0);
            read!(b, { (1, LEN) => node = Reader::str, (2, VARINT) => reason = i32_ });
            pb_enum!(
                "ivr_exited.reason",
                pb::ivr_exited::Reason,
                IvrExitReason,
                reason
            )
            .map(|reason| K::IvrExited {
                node: node.into(),
                reason,
            })
        }
        25 => {
            let mut item = "";
            read!(b, { (1, LEN) => item = Reader::str });
            Ok(K::SelfServiceViewed { item: item.into() })
        }
        26 => {
            let mut confirmed = false;
            read!(b, { (1, VARINT) => confirmed = bool_ });
            Ok(K::SelfServiceResolved { confirmed })
        }
        27 => {
            read!(b, {});
            Ok(K::AiAgentStarted)
        }
        28 => {
            let (mut outcome, mut turns) = (0, 0);
            read!(b, { (1, VARINT) => outcome = i32_, (2, VARINT) => turns = u32_ });
            pb_enum!(
                "ai_agent_ended.outcome",
                pb::ai_agent_ended::Outcome,
                AiOutcome,
                outcome
            )
            .map(|outcome| K::AiAgentEnded { outcome, turns })
        }
        29 => {
            let (mut from, mut reason, mut context_passed) = (0, "", false);
            read!(b, {
                (1, VARINT) => from = i32_,
                (2, LEN) => reason = Reader::str,
                (3, VARINT) => context_passed = bool_,
            });
            pb_enum!(
                "escalation_requested.from",
                pb::escalation_requested::From,
                EscalationSource,
                from
            )
            .map(|from| K::EscalationRequested {
                from,
                reason: reason.into(),
                context_passed,
            })
        }
        30 => {
            let (mut own, mut priority) = ("", 0);
            read!(b, { (1, LEN) => own = Reader::str, (2, VARINT) => priority = i32_ });
            // a queue entry without a queue of its own or in the envelope is incomplete
            match if own.is_empty() { queue } else { own } {
                "" => Err(DecodeError::missing("queue_entered.queue")),
                q => Ok(K::QueueEntered {
                    queue: q.into(),
                    priority,
                }),
            }
        }
        31 => {
            let mut reason = 0;
            read!(b, { (1, VARINT) => reason = i32_ });
            pb_enum!(
                "queue_exited.reason",
                pb::queue_exited::Reason,
                QueueExitReason,
                reason
            )
            .map(|reason| K::QueueExited { reason })
        }
        32 => {
            // the agent's id is read (and must be UTF-8) but not kept: no metric may use it
            let (mut _agent, mut context_received) = ("", false);
            read!(b, { (1, LEN) => _agent = Reader::str, (2, VARINT) => context_received = bool_ });
            Ok(K::AgentConnected { context_received })
        }
        33 => {
            let (mut talk_ms, mut hold_ms) = (None, None);
            read!(b, { (1, VARINT) => talk_ms = some_u64, (2, VARINT) => hold_ms = some_u64 });
            Ok(K::AgentDisconnected { talk_ms, hold_ms })
        }
        34 => {
            let mut acw_ms = None;
            read!(b, { (1, VARINT) => acw_ms = some_u64 });
            Ok(K::AfterContactWorkEnded { acw_ms })
        }
        35..=38 => {
            let mut id = "";
            read!(b, { (1, LEN) => id = Reader::str });
            let callback_id = id.into();
            Ok(match n {
                35 => K::CallbackRequested { callback_id },
                36 => K::CallbackCompleted { callback_id },
                37 => K::CallbackCanceled { callback_id },
                _ => K::CallbackExpired { callback_id },
            })
        }
        39 => {
            let (mut party, mut resolved) = (0, false);
            read!(b, { (1, VARINT) => party = i32_, (2, VARINT) => resolved = bool_ });
            match party {
                0 => Ok(None),
                v => pb_enum!(
                    "contact_ended.party",
                    pb::contact_ended::Party,
                    DisconnectParty,
                    v
                )
                .map(Some),
            }
            .map(|party| K::ContactEnded { party, resolved })
        }
        40 => {
            let (mut score, mut min, mut max) = (0.0, 0.0, 0.0);
            read!(b, {
                (1, FIXED64) => score = f64_,
                (2, FIXED64) => min = f64_,
                (3, FIXED64) => max = f64_,
            });
            survey(score, min, max)
        }
        41 => {
            let (mut campaign, mut topic) = ("", "");
            read!(b, { (1, LEN) => campaign = Reader::str, (2, LEN) => topic = Reader::str });
            Ok(K::NotificationSent {
                campaign: campaign.into(),
                topic: topic.into(),
            })
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;
    use crate::{decode_protobuf, Text};
    use deflect_core::event::Channel;
    use pb::contact_event::Payload as P;
    use proptest::prelude::*;
    use prost::Message;

    /// What a record means, computed apart from the direct reader: prost's decoding, mapped field
    /// by field as `decode_protobuf` did before it read records directly (the same validation
    /// helpers; envelope strings owned).
    fn oracle(bytes: &[u8]) -> Result<Event, DecodeError> {
        use pb::contact_event::Payload as P;
        let mut m = pb::ContactEvent::decode(bytes)
            .map_err(|e| DecodeError::new(RejectReason::InvalidProtobuf, e.to_string()))?;
        let payload = m.payload.take().ok_or_else(|| {
            DecodeError::new(
                RejectReason::UnknownEventType,
                "no known event payload (unknown event type or none set)",
            )
        })?;
        let kind = match payload {
            P::ContactStarted(p) => EventKind::ContactStarted {
                direction: pb_enum!(
                    "contact_started.direction",
                    pb::contact_started::Direction,
                    Direction,
                    p.direction
                )?,
                initiation: pb_enum!(
                    "contact_started.initiation",
                    pb::contact_started::Initiation,
                    Initiation,
                    p.initiation
                )?,
            },
            P::IntentIdentified(p) => EventKind::IntentIdentified {
                intent: p.intent.into(),
                confidence: finite32("intent_identified.confidence", p.confidence)?,
            },
            P::IvrEntered(p) => EventKind::IvrEntered {
                node: p.node.into(),
            },
            P::IvrMenuSelected(p) => EventKind::IvrMenuSelected {
                node: p.node.into(),
                option: p.option.into(),
            },
            P::IvrExited(p) => EventKind::IvrExited {
                node: p.node.into(),
                reason: pb_enum!(
                    "ivr_exited.reason",
                    pb::ivr_exited::Reason,
                    IvrExitReason,
                    p.reason
                )?,
            },
            P::SelfServiceViewed(p) => EventKind::SelfServiceViewed {
                item: p.item.into(),
            },
            P::SelfServiceResolved(p) => EventKind::SelfServiceResolved {
                confirmed: p.confirmed,
            },
            P::AiAgentStarted(_) => EventKind::AiAgentStarted,
            P::AiAgentEnded(p) => EventKind::AiAgentEnded {
                outcome: pb_enum!(
                    "ai_agent_ended.outcome",
                    pb::ai_agent_ended::Outcome,
                    AiOutcome,
                    p.outcome
                )?,
                turns: p.turns,
            },
            P::EscalationRequested(p) => EventKind::EscalationRequested {
                from: pb_enum!(
                    "escalation_requested.from",
                    pb::escalation_requested::From,
                    EscalationSource,
                    p.from
                )?,
                reason: p.reason.into(),
                context_passed: p.context_passed,
            },
            P::QueueEntered(p) => EventKind::QueueEntered {
                queue: if p.queue.is_empty() {
                    Text::from(&*m.queue)
                } else {
                    p.queue.into()
                },
                priority: p.priority,
            },
            P::QueueExited(p) => EventKind::QueueExited {
                reason: pb_enum!(
                    "queue_exited.reason",
                    pb::queue_exited::Reason,
                    QueueExitReason,
                    p.reason
                )?,
            },
            P::AgentConnected(p) => EventKind::AgentConnected {
                context_received: p.context_received,
            },
            P::AgentDisconnected(p) => EventKind::AgentDisconnected {
                talk_ms: p.talk_ms,
                hold_ms: p.hold_ms,
            },
            P::AfterContactWorkEnded(p) => EventKind::AfterContactWorkEnded { acw_ms: p.acw_ms },
            P::CallbackRequested(p) => EventKind::CallbackRequested {
                callback_id: p.callback_id.into(),
            },
            P::CallbackCompleted(p) => EventKind::CallbackCompleted {
                callback_id: p.callback_id.into(),
            },
            P::CallbackCanceled(p) => EventKind::CallbackCanceled {
                callback_id: p.callback_id.into(),
            },
            P::CallbackExpired(p) => EventKind::CallbackExpired {
                callback_id: p.callback_id.into(),
            },
            P::ContactEnded(p) => EventKind::ContactEnded {
                party: match p.party {
                    0 => None,
                    v => Some(pb_enum!(
                        "contact_ended.party",
                        pb::contact_ended::Party,
                        DisconnectParty,
                        v
                    )?),
                },
                resolved: p.resolved,
            },
            P::SurveyResponse(p) => survey(p.score, p.scale_min, p.scale_max)?,
            P::NotificationSent(p) => EventKind::NotificationSent {
                campaign: p.campaign.into(),
                topic: p.topic.into(),
            },
        };
        if let EventKind::QueueEntered { queue, .. } = &kind {
            if queue.is_empty() {
                return Err(DecodeError::missing("queue_entered.queue"));
            }
        }
        envelope(
            Envelope {
                event_id: Cow::Owned(m.event_id),
                tenant: Cow::Owned(m.tenant),
                contact_id: Cow::Owned(m.contact_id),
                parent_contact_id: Cow::Owned(m.parent_contact_id),
                customer_id: Cow::Owned(m.customer_id),
                channel: match m.channel {
                    0 => None,
                    v => Some(channel_from_pb(v).ok_or_else(|| bad("channel", v))?),
                },
                occurred_at: Some(m.occurred_at),
                intent: Cow::Owned(m.intent),
                queue: Cow::Owned(m.queue),
            },
            kind,
        )
    }

    /// Compares two outcomes (events by their debug text: NaN floats compare as text).
    fn same(a: &Result<Event, DecodeError>, b: &Result<Event, DecodeError>) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    fn text() -> impl Strategy<Value = String> {
        // mostly values the envelope accepts, so that events, not only errors, are compared
        prop_oneof![1 => Just(String::new()), 4 => "[a-z0-9-]{1,40}", 1 => "\\PC{0,12}"]
    }

    fn payload() -> impl Strategy<Value = P> {
        // small enum values, mostly known ones, and any value
        let i = prop_oneof![6 => 0i32..8, 1 => any::<i32>()];
        let u = any::<u64>();
        prop_oneof![
            (i.clone(), i.clone()).prop_map(|(direction, initiation)| P::ContactStarted(
                pb::ContactStarted {
                    direction,
                    initiation
                }
            )),
            (text(), any::<f32>()).prop_map(|(intent, confidence)| P::IntentIdentified(
                pb::IntentIdentified { intent, confidence }
            )),
            text().prop_map(|node| P::IvrEntered(pb::IvrEntered { node })),
            (text(), text()).prop_map(|(node, option)| P::IvrMenuSelected(pb::IvrMenuSelected {
                node,
                option
            })),
            (text(), i.clone())
                .prop_map(|(node, reason)| P::IvrExited(pb::IvrExited { node, reason })),
            text().prop_map(|item| P::SelfServiceViewed(pb::SelfServiceViewed { item })),
            any::<bool>().prop_map(|confirmed| P::SelfServiceResolved(pb::SelfServiceResolved {
                confirmed
            })),
            Just(P::AiAgentStarted(pb::AiAgentStarted {})),
            (i.clone(), any::<u32>())
                .prop_map(|(outcome, turns)| P::AiAgentEnded(pb::AiAgentEnded { outcome, turns })),
            (i.clone(), text(), any::<bool>()).prop_map(|(from, reason, context_passed)| {
                P::EscalationRequested(pb::EscalationRequested {
                    from,
                    reason,
                    context_passed,
                })
            }),
            (text(), any::<i32>()).prop_map(|(queue, priority)| P::QueueEntered(
                pb::QueueEntered { queue, priority }
            )),
            i.clone()
                .prop_map(|reason| P::QueueExited(pb::QueueExited { reason })),
            (text(), any::<bool>()).prop_map(|(agent, context_received)| P::AgentConnected(
                pb::AgentConnected {
                    agent,
                    context_received
                }
            )),
            (prop::option::of(u), prop::option::of(u)).prop_map(|(talk_ms, hold_ms)| {
                P::AgentDisconnected(pb::AgentDisconnected { talk_ms, hold_ms })
            }),
            prop::option::of(u)
                .prop_map(|acw_ms| P::AfterContactWorkEnded(pb::AfterContactWorkEnded { acw_ms })),
            text().prop_map(|callback_id| P::CallbackRequested(pb::CallbackRequested {
                callback_id
            })),
            text().prop_map(|callback_id| P::CallbackCompleted(pb::CallbackCompleted {
                callback_id
            })),
            text()
                .prop_map(|callback_id| P::CallbackCanceled(pb::CallbackCanceled { callback_id })),
            text().prop_map(|callback_id| P::CallbackExpired(pb::CallbackExpired { callback_id })),
            (i.clone(), any::<bool>()).prop_map(|(party, resolved)| P::ContactEnded(
                pb::ContactEnded { party, resolved }
            )),
            (
                prop_oneof![any::<f64>(), 0.0..10.0],
                prop_oneof![any::<f64>(), Just(1.0)],
                prop_oneof![any::<f64>(), Just(5.0)]
            )
                .prop_map(|(score, scale_min, scale_max)| {
                    P::SurveyResponse(pb::SurveyResponse {
                        score,
                        scale_min,
                        scale_max,
                    })
                }),
            (text(), text()).prop_map(|(campaign, topic)| P::NotificationSent(
                pb::NotificationSent { campaign, topic }
            )),
        ]
    }

    fn message() -> impl Strategy<Value = pb::ContactEvent> {
        (
            (text(), text(), text(), text(), text()),
            (
                prop_oneof![6 => 1i32..7, 1 => any::<i32>()],
                prop_oneof![6 => 1i64..i64::MAX, 1 => any::<i64>()],
                text(),
                text(),
            ),
            prop::option::of(payload()),
            prop::collection::hash_map("[a-z]{1,5}", "[a-z]{0,5}", 0..2),
        )
            .prop_map(
                |(
                    (event_id, tenant, contact_id, parent_contact_id, customer_id),
                    (channel, occurred_at, intent, queue),
                    payload,
                    attributes,
                )| pb::ContactEvent {
                    event_id,
                    tenant,
                    contact_id,
                    parent_contact_id,
                    customer_id,
                    channel,
                    occurred_at,
                    intent,
                    queue,
                    attributes,
                    payload,
                },
            )
    }

    fn valid() -> pb::ContactEvent {
        pb::ContactEvent {
            event_id: "c1-0".into(),
            tenant: "acme".into(),
            contact_id: "c1".into(),
            customer_id: "u7".into(),
            channel: pb::Channel::Voice as i32,
            occurred_at: 1_700_000_000_000,
            queue: "billing".into(),
            payload: Some(P::QueueEntered(pb::QueueEntered {
                queue: String::new(),
                priority: -1,
            })),
            ..Default::default()
        }
    }

    /// A record of the usual shape as the generator and the README's examples produce it.
    #[test]
    fn reads_the_common_shape_without_prost() {
        let e = event(&valid().encode_to_vec())
            .expect("common shape")
            .expect("valid");
        let expected = Event {
            event_id: "c1-0".into(),
            tenant: "acme".into(),
            contact_id: "c1".into(),
            parent_contact_id: None,
            customer_id: Some("u7".into()),
            channel: Channel::Voice,
            occurred_at: 1_700_000_000_000,
            intent: None,
            queue: Some("billing".into()),
            // the envelope's queue, the entry having none of its own
            kind: EventKind::QueueEntered {
                queue: Text::from("billing"),
                priority: -1,
            },
        };
        assert_eq!(e, expected);
    }

    #[test]
    fn a_repeated_field_replaces_the_earlier_value_as_in_prost() {
        let first = pb::ContactEvent {
            event_id: "first".into(),
            occurred_at: 5,
            payload: None,
            ..valid()
        };
        let last = pb::ContactEvent {
            event_id: "last".into(),
            occurred_at: 7,
            ..valid()
        };
        let b = [first.encode_to_vec(), last.encode_to_vec()].concat();
        let e = event(&b).expect("common shape").expect("valid");
        assert_eq!((e.event_id.as_str(), e.occurred_at), ("last", 7));
        assert!(same(&Ok(e), &oracle(&b)));
    }

    #[test]
    fn leaves_other_shapes_to_prost() {
        let b = valid().encode_to_vec();
        let plain = decode_protobuf(&b);
        assert!(plain.is_ok());
        // a second payload (prost merges it), an unknown field, `attributes`: prost reads them,
        // and the re-encoding means the same as the plain record
        let twice = [b.clone(), b.clone()].concat();
        let unknown = [b.clone(), vec![0x98, 0x06, 1]].concat();
        let attributes = pb::ContactEvent {
            attributes: [("k".to_string(), "v".to_string())].into(),
            ..valid()
        }
        .encode_to_vec();
        for other in [&twice, &unknown, &attributes] {
            assert!(event(other).is_none());
            assert!(same(&decode_protobuf(other), &plain));
        }
        // a truncated record, a string that is not UTF-8, a varint of eleven bytes: prost's
        // errors
        let bad = [
            b[..b.len() - 1].to_vec(),
            vec![0x0a, 2, 0xff, 0xfe],
            [[0x38].as_slice(), &[0xff; 10], &[0]].concat(),
        ];
        for other in &bad {
            assert!(event(other).is_none());
            let e = decode_protobuf(other).expect_err("not a record");
            assert_eq!(e.reason, RejectReason::InvalidProtobuf, "{e:?}");
        }
    }

    proptest! {
        /// Every message prost writes means what the field-by-field mapping of prost's decoding
        /// says, events and errors alike; those without `attributes` are read directly.
        #[test]
        fn same_as_prost_on_encoded_messages(m in message()) {
            let b = m.encode_to_vec();
            prop_assert_eq!(event(&b).is_some(), m.attributes.is_empty());
            let (got, want) = (decode_protobuf(&b), oracle(&b));
            prop_assert!(same(&got, &want), "{:?} != {:?}", got, want);
        }

        /// Damaged records: whatever the direct reader makes of them, prost does too.
        #[test]
        fn never_disagrees_with_prost(m in message(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4)) {
            let mut b = m.encode_to_vec();
            for (at, byte, op) in edits {
                if b.is_empty() {
                    b.push(byte);
                    continue;
                }
                let i = at.index(b.len());
                match op {
                    0 => b[i] = byte,
                    1 => b.insert(i, byte),
                    _ => b.truncate(i),
                }
            }
            let (got, want) = (decode_protobuf(&b), oracle(&b));
            prop_assert!(same(&got, &want), "{:?} != {:?}", got, want);
        }
    }
}
