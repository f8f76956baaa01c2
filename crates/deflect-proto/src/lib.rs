//! Wire formats of contact events.
//!
//! Protobuf (`proto/deflect/v1/events.proto`, compiled with prost + protox) is the native format;
//! JSON with the same snake_case field names decodes to the same events. Both paths end in one
//! validation step ([`envelope`]) so that a record means the same thing whatever its format.

use std::borrow::Cow;

use deflect_core::event::{Channel, Event, EventKind, Text};
use prost::Message;

mod json;
pub mod report;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/deflect.v1.rs"));
}

pub use json::{decode_json, encode_json};

/// Why a record was rejected: a bounded set, used as the `reason` label and in dead-letter headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    EmptyRecord,
    NotProtobufOrJson,
    InvalidProtobuf,
    InvalidJson,
    BadJsonShape,
    UnknownEventType,
    MissingField,
    BadValue,
    /// Larger than the configured limit (checked before decoding).
    Oversized,
    /// Null or empty Kafka key: the record cannot be attributed to a customer's partition.
    MissingKey,
    /// `occurred_at` outside the configured bounds.
    TimestampOutOfBounds,
    /// The event's order makes no sense for its contact (for example answered before queued);
    /// found when its interval closes.
    JourneyOrder,
}

impl RejectReason {
    pub const ALL: [RejectReason; 12] = [
        RejectReason::EmptyRecord,
        RejectReason::NotProtobufOrJson,
        RejectReason::InvalidProtobuf,
        RejectReason::InvalidJson,
        RejectReason::BadJsonShape,
        RejectReason::UnknownEventType,
        RejectReason::MissingField,
        RejectReason::BadValue,
        RejectReason::Oversized,
        RejectReason::MissingKey,
        RejectReason::TimestampOutOfBounds,
        RejectReason::JourneyOrder,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::EmptyRecord => "empty_record",
            RejectReason::NotProtobufOrJson => "not_protobuf_or_json",
            RejectReason::InvalidProtobuf => "invalid_protobuf",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::BadJsonShape => "bad_json_shape",
            RejectReason::UnknownEventType => "unknown_event_type",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadValue => "bad_value",
            RejectReason::Oversized => "oversized",
            RejectReason::MissingKey => "missing_key",
            RejectReason::TimestampOutOfBounds => "timestamp_out_of_bounds",
            RejectReason::JourneyOrder => "journey_order",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct DecodeError {
    pub reason: RejectReason,
    pub detail: String,
}

impl DecodeError {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }
    fn missing(field: &str) -> Self {
        Self::new(
            RejectReason::MissingField,
            format!("required field {field} is missing"),
        )
    }
}

/// How the records of a topic are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// JSON if the record starts with `{` (after white space), protobuf otherwise. A protobuf
    /// record of this schema never starts with `{` (it would be a deprecated group of field 15).
    #[default]
    Auto,
    Protobuf,
    Json,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "auto" => Some(Format::Auto),
            "protobuf" => Some(Format::Protobuf),
            "json" => Some(Format::Json),
            _ => None,
        }
    }
}

/// Decodes one record. A record framed by a Confluent Schema Registry serializer (first byte 0,
/// which no protobuf message and no JSON text starts with) is decoded without its frame, in any
/// format (`decode_framed`).
pub fn decode(bytes: &[u8], format: Format) -> Result<Event, DecodeError> {
    match bytes.first() {
        None => Err(DecodeError::new(
            RejectReason::EmptyRecord,
            "record has no value",
        )),
        Some(&SCHEMA_REGISTRY_MAGIC) => decode_framed(bytes, format),
        Some(_) => decode_unframed(bytes, format),
    }
}

/// The first byte of a record framed by a Confluent Schema Registry serializer.
pub const SCHEMA_REGISTRY_MAGIC: u8 = 0;

/// Decodes a record in Confluent Schema Registry's wire format: the magic byte 0, the schema id
/// (4 bytes, big-endian), then for protobuf the message-index path (a zigzag varint count and as
/// many zigzag varint indexes; the single byte 0 for the first message of the file, which
/// `ContactEvent` is in `events.proto`) and the message, for JSON Schema the JSON text. The
/// schema id and the path are not looked up: the topic's records must be `ContactEvent`s, and
/// one that is not fails to decode like any other. A JSON body is told by its `{` (a message-index
/// count never starts with it: its zigzag value would be negative).
fn decode_framed(bytes: &[u8], format: Format) -> Result<Event, DecodeError> {
    // in `auto`, a body that is not protobuf (and did not start like JSON) is neither
    let reason = |r| match (format, r) {
        (Format::Auto, RejectReason::InvalidProtobuf) => RejectReason::NotProtobufOrJson,
        (_, r) => r,
    };
    let &[SCHEMA_REGISTRY_MAGIC, a, b, c, d, ref body @ ..] = bytes else {
        return Err(DecodeError::new(
            reason(match format {
                Format::Json => RejectReason::InvalidJson,
                _ => RejectReason::InvalidProtobuf,
            }),
            format!(
                "a Schema Registry frame (first byte 0) needs 5 bytes of header, the record has {}",
                bytes.len()
            ),
        ));
    };
    let schema = u32::from_be_bytes([a, b, c, d]);
    let json = match format {
        Format::Json => true,
        Format::Protobuf => false,
        Format::Auto => starts_like_json(body),
    };
    let decoded = if json {
        decode_json(body)
    } else {
        skip_message_indexes(body).and_then(decode_protobuf)
    };
    decoded.map_err(|e| {
        DecodeError::new(
            reason(e.reason),
            format!("Schema Registry schema id {schema}: {}", e.detail),
        )
    })
}

/// `body` framed as a Confluent Schema Registry serializer frames it: the magic byte,
/// `schema_id` (big-endian), `message_indexes` as written (from the protobuf serializer the
/// message's path, `[0]` for `ContactEvent`; from the JSON Schema serializer nothing), the body.
pub fn schema_registry_frame(schema_id: u32, message_indexes: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + message_indexes.len() + body.len());
    v.push(SCHEMA_REGISTRY_MAGIC);
    v.extend(schema_id.to_be_bytes());
    v.extend(message_indexes);
    v.extend(body);
    v
}

/// The protobuf message after a Schema Registry frame's message-index path.
fn skip_message_indexes(body: &[u8]) -> Result<&[u8], DecodeError> {
    let bad = |what: &str| {
        DecodeError::new(
            RejectReason::InvalidProtobuf,
            format!("bad message-index path after the Schema Registry header: {what}"),
        )
    };
    let mut rest = body;
    let mut next = || -> Result<i64, DecodeError> {
        let v = prost::encoding::decode_varint(&mut rest).map_err(|_| bad("truncated varint"))?;
        // zigzag
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    };
    let count = next()?;
    // 0 is the short form of the path [0]; protobuf nests messages only so deep
    if !(0..=100).contains(&count) {
        return Err(bad(&format!("{count} indexes")));
    }
    for _ in 0..count {
        if next()? < 0 {
            return Err(bad("a negative index"));
        }
    }
    Ok(rest)
}

fn starts_like_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

fn decode_unframed(bytes: &[u8], format: Format) -> Result<Event, DecodeError> {
    match format {
        Format::Protobuf => decode_protobuf(bytes),
        Format::Json => decode_json(bytes),
        Format::Auto => {
            if starts_like_json(bytes) {
                decode_json(bytes)
            } else {
                decode_protobuf(bytes).map_err(|e| match e.reason {
                    RejectReason::InvalidProtobuf => DecodeError::new(
                        RejectReason::NotProtobufOrJson,
                        format!("neither JSON nor protobuf ({})", e.detail),
                    ),
                    _ => e,
                })
            }
        }
    }
}

/// The envelope fields common to both formats, before validation.
pub struct Envelope<'a> {
    pub event_id: Cow<'a, str>,
    pub tenant: Cow<'a, str>,
    pub contact_id: Cow<'a, str>,
    pub parent_contact_id: Cow<'a, str>,
    pub customer_id: Cow<'a, str>,
    pub channel: Option<Channel>,
    pub occurred_at: Option<i64>,
    pub intent: Cow<'a, str>,
    pub queue: Cow<'a, str>,
}

/// Validates the envelope and builds the event.
pub fn envelope(env: Envelope<'_>, kind: EventKind) -> Result<Event, DecodeError> {
    // short strings are copied inline; owned long ones (prost) keep their buffer
    let text = |v: Cow<'_, str>| match v {
        Cow::Borrowed(b) => Text::from(b),
        Cow::Owned(o) => Text::from(o),
    };
    let req = |v: Cow<'_, str>, name: &str| {
        if v.is_empty() {
            Err(DecodeError::missing(name))
        } else {
            Ok(text(v))
        }
    };
    let opt = |v: Cow<'_, str>| (!v.is_empty()).then(|| text(v));
    let kind = match kind {
        // A survey refers to a contact; the intent payload also sets the envelope's intent.
        EventKind::IntentIdentified { intent, confidence } if intent.is_empty() => {
            if env.intent.is_empty() {
                return Err(DecodeError::missing("intent_identified.intent"));
            }
            EventKind::IntentIdentified {
                intent: Text::from(&*env.intent),
                confidence,
            }
        }
        k => k,
    };
    Ok(Event {
        event_id: req(env.event_id, "event_id")?,
        tenant: req(env.tenant, "tenant")?,
        contact_id: req(env.contact_id, "contact_id")?,
        parent_contact_id: opt(env.parent_contact_id),
        customer_id: opt(env.customer_id),
        channel: env.channel.ok_or_else(|| DecodeError::missing("channel"))?,
        occurred_at: match env.occurred_at {
            Some(t) if t > 0 => t,
            _ => return Err(DecodeError::missing("occurred_at")),
        },
        intent: opt(env.intent),
        queue: opt(env.queue),
        kind,
    })
}

fn bad(field: &str, v: i32) -> DecodeError {
    DecodeError::new(
        RejectReason::BadValue,
        format!("{field}: unknown or unspecified value {v}"),
    )
}

fn channel_from_pb(v: i32) -> Option<Channel> {
    use pb::Channel as C;
    Some(match C::try_from(v).ok()? {
        C::Unspecified => return None,
        C::Voice => Channel::Voice,
        C::Chat => Channel::Chat,
        C::Sms => Channel::Sms,
        C::Email => Channel::Email,
        C::Web => Channel::Web,
        C::App => Channel::App,
    })
}

fn channel_to_pb(c: Channel) -> pb::Channel {
    match c {
        Channel::Voice => pb::Channel::Voice,
        Channel::Chat => pb::Channel::Chat,
        Channel::Sms => pb::Channel::Sms,
        Channel::Email => pb::Channel::Email,
        Channel::Web => pb::Channel::Web,
        Channel::App => pb::Channel::App,
    }
}

/// Maps a protobuf enum value to the core enum through their shared snake_case name
/// (`DIRECTION_INBOUND` ↔ `inbound`), so the two cannot drift apart silently.
fn pb_enum<T>(
    field: &str,
    v: i32,
    pb_name: Option<&str>,
    parse: fn(&str) -> Option<T>,
) -> Result<T, DecodeError> {
    let name = pb_name.ok_or_else(|| bad(field, v))?;
    let rest = name.split_once('_').map_or(name, |(_, rest)| rest);
    // lowercased on the stack: one enum per record or more, each allocated a string before
    let mut buf = [0u8; 32];
    let parsed = match buf.get_mut(..rest.len()) {
        Some(b) => {
            b.copy_from_slice(rest.as_bytes());
            b.make_ascii_lowercase();
            std::str::from_utf8(b).ok().and_then(parse)
        }
        None => parse(&rest.to_ascii_lowercase()),
    };
    parsed.ok_or_else(|| bad(field, v))
}

macro_rules! pb_enum_name {
    ($ty:ty, $v:expr) => {
        <$ty>::try_from($v).ok().map(|e| e.as_str_name())
    };
}

/// [`pb_enum`] of a protobuf enum field, from a table of every value below 64 made by it on
/// first use: mapping through the names cost 270 instructions per field (one or two per
/// record), the table a bounds check. The protobuf enums are all smaller: a value of 64 or more
/// is one they do not have, rejected as before.
macro_rules! pb_enum {
    ($field:literal, $pb:ty, $core:ty, $v:expr) => {{
        static TABLE: std::sync::OnceLock<Vec<Option<$core>>> = std::sync::OnceLock::new();
        let v: i32 = $v;
        let table = TABLE.get_or_init(|| {
            (0..64)
                .map(|i| $crate::pb_enum($field, i, pb_enum_name!($pb, i), <$core>::parse).ok())
                .collect()
        });
        match usize::try_from(v).ok().and_then(|i| table.get(i)) {
            Some(Some(t)) => Ok(*t),
            _ => Err($crate::bad($field, v)),
        }
    }};
}

mod wire;

/// Decodes a protobuf `ContactEvent` record. Records of the common shape are read directly
/// ([`wire`]); any other (unknown fields, `attributes`, a repeated payload…) is decoded by prost,
/// with its semantics and errors, and its re-encoding, which has the common shape, is read the
/// same way: one mapping from fields to events, and its validation, for both.
pub fn decode_protobuf(bytes: &[u8]) -> Result<Event, DecodeError> {
    if let Some(r) = wire::event(bytes) {
        return r;
    }
    let mut m = pb::ContactEvent::decode(bytes)
        .map_err(|e| DecodeError::new(RejectReason::InvalidProtobuf, e.to_string()))?;
    // `attributes` are dropped: no metric may use them
    m.attributes.clear();
    wire::event(&m.encode_to_vec()).unwrap_or_else(|| {
        Err(DecodeError::new(
            RejectReason::InvalidProtobuf,
            "record not readable after normalization",
        ))
    })
}

fn finite32(field: &str, v: f32) -> Result<f32, DecodeError> {
    if v.is_finite() {
        Ok(v)
    } else {
        Err(DecodeError::new(
            RejectReason::BadValue,
            format!("{field} is not a finite number"),
        ))
    }
}

pub(crate) fn survey(score: f64, min: f64, max: f64) -> Result<EventKind, DecodeError> {
    if !(score.is_finite() && min.is_finite() && max.is_finite())
        || min >= max
        || score < min
        || score > max
    {
        return Err(DecodeError::new(
            RejectReason::BadValue,
            format!("survey_response: score {score} outside scale [{min}, {max}]"),
        ));
    }
    Ok(EventKind::SurveyResponse {
        score,
        scale_min: min,
        scale_max: max,
    })
}

fn enum_to_pb(core_name: &str, pb_prefix: &str) -> String {
    format!("{pb_prefix}_{}", core_name.to_ascii_uppercase())
}

macro_rules! to_pb_enum {
    ($ty:ty, $prefix:literal, $v:expr) => {
        <$ty>::from_str_name(&enum_to_pb($v.as_str(), $prefix)).expect("core and proto enums agree")
            as i32
    };
}

/// Encodes an event as protobuf (the generator and replays use this).
pub fn encode_protobuf(e: &Event) -> Vec<u8> {
    use pb::contact_event::Payload as P;
    let payload = match &e.kind {
        EventKind::ContactStarted {
            direction,
            initiation,
        } => P::ContactStarted(pb::ContactStarted {
            direction: to_pb_enum!(pb::contact_started::Direction, "DIRECTION", direction),
            initiation: to_pb_enum!(pb::contact_started::Initiation, "INITIATION", initiation),
        }),
        EventKind::IntentIdentified { intent, confidence } => {
            P::IntentIdentified(pb::IntentIdentified {
                intent: intent.to_string(),
                confidence: *confidence,
            })
        }
        EventKind::IvrEntered { node } => P::IvrEntered(pb::IvrEntered {
            node: node.to_string(),
        }),
        EventKind::IvrMenuSelected { node, option } => P::IvrMenuSelected(pb::IvrMenuSelected {
            node: node.to_string(),
            option: option.to_string(),
        }),
        EventKind::IvrExited { node, reason } => P::IvrExited(pb::IvrExited {
            node: node.to_string(),
            reason: to_pb_enum!(pb::ivr_exited::Reason, "REASON", reason),
        }),
        EventKind::SelfServiceViewed { item } => P::SelfServiceViewed(pb::SelfServiceViewed {
            item: item.to_string(),
        }),
        EventKind::SelfServiceResolved { confirmed } => {
            P::SelfServiceResolved(pb::SelfServiceResolved {
                confirmed: *confirmed,
            })
        }
        EventKind::AiAgentStarted => P::AiAgentStarted(pb::AiAgentStarted {}),
        EventKind::AiAgentEnded { outcome, turns } => P::AiAgentEnded(pb::AiAgentEnded {
            outcome: to_pb_enum!(pb::ai_agent_ended::Outcome, "OUTCOME", outcome),
            turns: *turns,
        }),
        EventKind::EscalationRequested {
            from,
            reason,
            context_passed,
        } => P::EscalationRequested(pb::EscalationRequested {
            from: to_pb_enum!(pb::escalation_requested::From, "FROM", from),
            reason: reason.to_string(),
            context_passed: *context_passed,
        }),
        EventKind::QueueEntered { queue, priority } => P::QueueEntered(pb::QueueEntered {
            queue: queue.to_string(),
            priority: *priority,
        }),
        EventKind::QueueExited { reason } => P::QueueExited(pb::QueueExited {
            reason: to_pb_enum!(pb::queue_exited::Reason, "REASON", reason),
        }),
        EventKind::AgentConnected { context_received } => P::AgentConnected(pb::AgentConnected {
            agent: String::new(),
            context_received: *context_received,
        }),
        EventKind::AgentDisconnected { talk_ms, hold_ms } => {
            P::AgentDisconnected(pb::AgentDisconnected {
                talk_ms: *talk_ms,
                hold_ms: *hold_ms,
            })
        }
        EventKind::AfterContactWorkEnded { acw_ms } => {
            P::AfterContactWorkEnded(pb::AfterContactWorkEnded { acw_ms: *acw_ms })
        }
        EventKind::CallbackRequested { callback_id } => {
            P::CallbackRequested(pb::CallbackRequested {
                callback_id: callback_id.to_string(),
            })
        }
        EventKind::CallbackCompleted { callback_id } => {
            P::CallbackCompleted(pb::CallbackCompleted {
                callback_id: callback_id.to_string(),
            })
        }
        EventKind::CallbackCanceled { callback_id } => P::CallbackCanceled(pb::CallbackCanceled {
            callback_id: callback_id.to_string(),
        }),
        EventKind::CallbackExpired { callback_id } => P::CallbackExpired(pb::CallbackExpired {
            callback_id: callback_id.to_string(),
        }),
        EventKind::ContactEnded { party, resolved } => P::ContactEnded(pb::ContactEnded {
            party: party.map_or(0, |p| to_pb_enum!(pb::contact_ended::Party, "PARTY", p)),
            resolved: *resolved,
        }),
        EventKind::SurveyResponse {
            score,
            scale_min,
            scale_max,
        } => P::SurveyResponse(pb::SurveyResponse {
            score: *score,
            scale_min: *scale_min,
            scale_max: *scale_max,
        }),
        EventKind::NotificationSent { campaign, topic } => {
            P::NotificationSent(pb::NotificationSent {
                campaign: campaign.to_string(),
                topic: topic.to_string(),
            })
        }
    };
    pb::ContactEvent {
        event_id: e.event_id.to_string(),
        tenant: e.tenant.to_string(),
        contact_id: e.contact_id.to_string(),
        parent_contact_id: e
            .parent_contact_id
            .as_deref()
            .unwrap_or_default()
            .to_string(),
        customer_id: e.customer_id.as_deref().unwrap_or_default().to_string(),
        channel: channel_to_pb(e.channel) as i32,
        occurred_at: e.occurred_at,
        intent: e.intent.as_deref().unwrap_or_default().to_string(),
        queue: e.queue.as_deref().unwrap_or_default().to_string(),
        attributes: Default::default(),
        payload: Some(payload),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests;
