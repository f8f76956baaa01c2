use super::*;
use deflect_core::event::{
    AiOutcome, Direction, DisconnectParty, EscalationSource, Initiation, IvrExitReason,
    QueueExitReason,
};
use proptest::prelude::*;

fn arb_kind() -> impl Strategy<Value = EventKind> {
    let s = "[a-z0-9]{1,8}";
    prop_oneof![
        (
            prop::sample::select(Direction::ALL),
            prop::sample::select(Initiation::ALL)
        )
            .prop_map(|(direction, initiation)| EventKind::ContactStarted {
                direction,
                initiation
            }),
        (s, 0u8..=100).prop_map(|(intent, c)| EventKind::IntentIdentified {
            intent: intent.into(),
            confidence: f32::from(c) / 100.0
        }),
        s.prop_map(|node| EventKind::IvrEntered { node: node.into() }),
        (s, s).prop_map(|(node, option)| EventKind::IvrMenuSelected {
            node: node.into(),
            option: option.into()
        }),
        (s, prop::sample::select(IvrExitReason::ALL)).prop_map(|(node, reason)| {
            EventKind::IvrExited {
                node: node.into(),
                reason,
            }
        }),
        s.prop_map(|item| EventKind::SelfServiceViewed { item: item.into() }),
        any::<bool>().prop_map(|confirmed| EventKind::SelfServiceResolved { confirmed }),
        Just(EventKind::AiAgentStarted),
        (prop::sample::select(AiOutcome::ALL), any::<u32>())
            .prop_map(|(outcome, turns)| EventKind::AiAgentEnded { outcome, turns }),
        (
            prop::sample::select(EscalationSource::ALL),
            s,
            any::<bool>()
        )
            .prop_map(
                |(from, reason, context_passed)| EventKind::EscalationRequested {
                    from,
                    reason: reason.into(),
                    context_passed
                }
            ),
        (s, -5i32..5).prop_map(|(queue, priority)| EventKind::QueueEntered {
            queue: queue.into(),
            priority
        }),
        prop::sample::select(QueueExitReason::ALL)
            .prop_map(|reason| EventKind::QueueExited { reason }),
        any::<bool>().prop_map(|context_received| EventKind::AgentConnected { context_received }),
        (any::<Option<u64>>(), any::<Option<u64>>())
            .prop_map(|(talk_ms, hold_ms)| EventKind::AgentDisconnected { talk_ms, hold_ms }),
        any::<Option<u64>>().prop_map(|acw_ms| EventKind::AfterContactWorkEnded { acw_ms }),
        s.prop_map(|callback_id| EventKind::CallbackRequested {
            callback_id: callback_id.into()
        }),
        s.prop_map(|callback_id| EventKind::CallbackCompleted {
            callback_id: callback_id.into()
        }),
        s.prop_map(|callback_id| EventKind::CallbackCanceled {
            callback_id: callback_id.into()
        }),
        s.prop_map(|callback_id| EventKind::CallbackExpired {
            callback_id: callback_id.into()
        }),
        (
            prop::option::of(prop::sample::select(DisconnectParty::ALL)),
            any::<bool>()
        )
            .prop_map(|(party, resolved)| EventKind::ContactEnded { party, resolved }),
        (1u8..=5).prop_map(|score| EventKind::SurveyResponse {
            score: f64::from(score),
            scale_min: 1.0,
            scale_max: 5.0
        }),
        (s, s).prop_map(|(campaign, topic)| EventKind::NotificationSent {
            campaign: campaign.into(),
            topic: topic.into()
        }),
    ]
}

pub(crate) fn arb_event() -> impl Strategy<Value = Event> {
    (
        "[a-z0-9-]{1,12}",
        "[a-z]{1,6}",
        "[a-z0-9]{1,10}",
        prop::option::of("[a-z0-9]{1,10}"),
        prop::option::of("[a-z0-9]{1,10}"),
        prop::sample::select(Channel::ALL.to_vec()),
        1i64..4_000_000_000_000,
        prop::option::of("[a-z_]{1,10}"),
        prop::option::of("[a-z_]{1,10}"),
        arb_kind(),
    )
        .prop_map(
            |(
                event_id,
                tenant,
                contact_id,
                parent_contact_id,
                customer_id,
                channel,
                occurred_at,
                intent,
                queue,
                kind,
            )| Event {
                event_id: event_id.into(),
                tenant: tenant.into(),
                contact_id: contact_id.into(),
                parent_contact_id: parent_contact_id.map(Into::into),
                customer_id: customer_id.map(Into::into),
                channel,
                occurred_at,
                intent: intent.clone().map(Into::into),
                queue: queue.map(Into::into),
                kind: match kind {
                    // An empty payload intent falls back to the envelope's; keep the round trip exact.
                    EventKind::IntentIdentified {
                        intent: i,
                        confidence,
                    } => EventKind::IntentIdentified {
                        intent: i,
                        confidence,
                    },
                    k => k,
                },
            },
        )
}

proptest! {
    #[test]
    fn protobuf_round_trip(e in arb_event()) {
        prop_assert_eq!(decode(&encode_protobuf(&e), Format::Auto).unwrap(), e.clone());
        prop_assert_eq!(decode(&encode_protobuf(&e), Format::Protobuf).unwrap(), e);
    }

    #[test]
    fn json_round_trip_and_same_event_as_protobuf(e in arb_event()) {
        let j = encode_json(&e);
        prop_assert_eq!(decode(&j, Format::Auto).unwrap(), decode(&encode_protobuf(&e), Format::Auto).unwrap());
        prop_assert_eq!(decode(&j, Format::Json).unwrap(), e);
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&b, Format::Auto);
        let _ = decode(&b, Format::Json);
    }

    #[test]
    fn arbitrary_json_never_panics(s in "\\{[ -~]{0,80}\\}") {
        let _ = decode(s.as_bytes(), Format::Auto);
    }
}

use super::schema_registry_frame as framed;

proptest! {
    /// A framed record decodes to the event its body holds, in every format that fits it:
    /// protobuf with the path's short form (`[0]` as the byte 0), its long form (count 1 and
    /// index 0, zigzag: 2, 0) and a nested path ([0, 3]: 4, 0, 6); JSON Schema's JSON text.
    #[test]
    fn schema_registry_frames_are_decoded(e in arb_event(), schema in any::<u32>()) {
        let pb = encode_protobuf(&e);
        for path in [&[0u8][..], &[2, 0], &[4, 0, 6]] {
            let f = framed(schema, path, &pb);
            prop_assert_eq!(decode(&f, Format::Auto).unwrap(), e.clone());
            prop_assert_eq!(decode(&f, Format::Protobuf).unwrap(), e.clone());
        }
        let f = framed(schema, b"", &encode_json(&e));
        prop_assert_eq!(decode(&f, Format::Auto).unwrap(), e.clone());
        prop_assert_eq!(decode(&f, Format::Json).unwrap(), e);
    }

    #[test]
    fn arbitrary_framed_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..256)) {
        let f = framed(7, b"", &b);
        for format in [Format::Auto, Format::Protobuf, Format::Json] {
            let _ = decode(&f, format);
            let _ = decode(&f[..f.len().min(4)], format);
        }
    }
}

/// What a broken frame is rejected as, in each format, with the schema id in the detail when the
/// header is whole.
#[test]
fn broken_schema_registry_frames_are_rejected_with_reasons() {
    let e = decode(
        br#"{"event_id": "e1", "tenant": "acme", "contact_id": "c1", "customer_id": "u1",
            "channel": "voice", "occurred_at": 1704704400000,
            "contact_started": {"direction": "inbound", "initiation": "customer"}}"#,
        Format::Json,
    )
    .unwrap();
    let pb = encode_protobuf(&e);
    let err = |bytes: &[u8], format| decode(bytes, format).unwrap_err();
    // the header cut short
    for (format, want) in [
        (Format::Auto, RejectReason::NotProtobufOrJson),
        (Format::Protobuf, RejectReason::InvalidProtobuf),
        (Format::Json, RejectReason::InvalidJson),
    ] {
        let got = err(&[0, 0, 1], format);
        assert_eq!(got.reason, want, "{got}");
        assert!(got.detail.contains("5 bytes of header"), "{got}");
    }
    // a negative count (zigzag 1 = -1), a negative index, a varint that never ends
    for path in [&[1u8][..], &[2, 1], &[0x80]] {
        let f = framed(42, path, if path == [0x80] { b"" } else { &pb });
        let got = err(&f, Format::Auto);
        assert_eq!(got.reason, RejectReason::NotProtobufOrJson, "{got}");
        assert!(
            got.detail
                .starts_with("Schema Registry schema id 42: bad message-index path"),
            "{got}"
        );
        assert_eq!(
            err(&f, Format::Protobuf).reason,
            RejectReason::InvalidProtobuf
        );
    }
    // protobuf in a JSON topic, JSON in a protobuf topic
    assert_eq!(
        err(&framed(1, &[0], &pb), Format::Json).reason,
        RejectReason::InvalidJson
    );
    assert_eq!(
        err(&framed(1, b"", &encode_json(&e)), Format::Protobuf).reason,
        RejectReason::InvalidProtobuf
    );
    // a body that decodes but is not an event (an empty message): the event's own reason
    let got = err(&framed(9, &[0], &[]), Format::Auto);
    assert_eq!(got.reason, RejectReason::UnknownEventType, "{got}");
    assert!(
        got.detail.starts_with("Schema Registry schema id 9: "),
        "{got}"
    );
}

fn reason(bytes: &[u8]) -> RejectReason {
    decode(bytes, Format::Auto).unwrap_err().reason
}

#[test]
fn json_example_from_the_schema_decodes() {
    let e = decode(
        br#"{"event_id": "e1", "tenant": "acme", "contact_id": "c1", "customer_id": "u1",
            "channel": "VOICE", "occurred_at": "2024-01-02T03:04:05.678Z", "unknown_field": [1,2],
            "contact_started": {"direction": "DIRECTION_INBOUND", "initiation": "customer"}}"#,
        Format::Auto,
    )
    .unwrap();
    assert_eq!(e.occurred_at, 1_704_164_645_678);
    assert_eq!(e.customer_id.as_deref(), Some("u1"));
    assert_eq!(
        e.kind,
        EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer
        }
    );
}

#[test]
fn rejects_with_reasons() {
    assert_eq!(reason(b""), RejectReason::EmptyRecord);
    assert_eq!(reason(b"\xff\xfe garbage"), RejectReason::NotProtobufOrJson);
    assert_eq!(reason(b"{not json"), RejectReason::InvalidJson);
    assert_eq!(reason(b"[1,2]"), RejectReason::NotProtobufOrJson);
    assert_eq!(
        decode(b"[1,2]", Format::Json).unwrap_err().reason,
        RejectReason::BadJsonShape
    );
    assert_eq!(reason(br#"{"event_id": 5}"#), RejectReason::MissingField);
    assert_eq!(
        reason(br#"{"event_id":"e","tenant":"t","contact_id":"c","channel":"voice","occurred_at":1,"teleported":{}}"#),
        RejectReason::UnknownEventType
    );
    let missing_tenant = br#"{"event_id":"e","contact_id":"c","channel":"voice","occurred_at":1,"ai_agent_started":{}}"#;
    let err = decode(missing_tenant, Format::Auto).unwrap_err();
    assert_eq!(err.reason, RejectReason::MissingField);
    assert!(err.detail.contains("tenant"), "{err}");
    assert_eq!(
        reason(br#"{"event_id":"e","tenant":"t","contact_id":"c","channel":"fax","occurred_at":1,"ai_agent_started":{}}"#),
        RejectReason::BadValue
    );
    assert_eq!(
        reason(br#"{"event_id":"e","tenant":"t","contact_id":"c","channel":"voice","occurred_at":1,"contact_started":{"direction":"inbound"}}"#),
        RejectReason::MissingField
    );
    assert_eq!(
        reason(br#"{"event_id":"e","tenant":"t","contact_id":"c","channel":"voice","occurred_at":1,"survey_response":{"score":9}}"#),
        RejectReason::BadValue
    );
    // a protobuf record with no payload (e.g. an event type newer than this schema)
    let no_payload = pb::ContactEvent {
        event_id: "e".into(),
        ..Default::default()
    }
    .encode_to_vec();
    assert_eq!(reason(&no_payload), RejectReason::UnknownEventType);
}

/// Every value of a protobuf enum field, known or not, decodes as its name says: the table the
/// decoder maps through agrees with the names (`REASON_ABANDONED` ↔ `abandoned`),
/// and a value the enum lacks (unspecified, negative, past the end, past the table) is a bad
/// value naming the field.
#[test]
fn protobuf_enum_values_map_by_name() {
    use crate::pb::queue_exited::Reason;
    for v in [
        -1,
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        63,
        64,
        65,
        1000,
        i32::MAX,
        i32::MIN,
    ] {
        let record = pb::ContactEvent {
            event_id: "e".into(),
            tenant: "t".into(),
            contact_id: "c".into(),
            channel: pb::Channel::Voice as i32,
            occurred_at: 1,
            payload: Some(pb::contact_event::Payload::QueueExited(pb::QueueExited {
                reason: v,
            })),
            ..Default::default()
        }
        .encode_to_vec();
        let by_name = Reason::try_from(v)
            .ok()
            .map(|r| r.as_str_name().to_ascii_lowercase())
            .and_then(|n| {
                deflect_core::event::QueueExitReason::parse(n.trim_start_matches("reason_"))
            });
        match (decode(&record, Format::Protobuf), by_name) {
            (Ok(e), Some(reason)) => {
                assert_eq!(e.kind, EventKind::QueueExited { reason }, "value {v}")
            }
            (Err(err), None) => {
                assert_eq!(err.reason, RejectReason::BadValue, "value {v}");
                assert!(err.detail.contains("queue_exited.reason"), "{err}");
            }
            (got, expected) => panic!("value {v}: decoded {got:?}, by name {expected:?}"),
        }
    }
}
