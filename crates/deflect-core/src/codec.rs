//! The byte encoding of stored state (postcard): journeys, cohorts and partition snapshots.
//! Encoding and decoding live together here so the store never disagrees with the engine.

use serde::{de::DeserializeOwned, Serialize};

use crate::dims::Dimensions;
use crate::event::{Millis, Text};
use crate::journey::{ContactState, Ended, Journey, NotificationWatch, Watch};

pub use postcard::Error;

/// Room a value's buffer starts with: most journeys fit, with no regrowing (and copying) from 8
/// bytes up.
const VALUE_CAPACITY: usize = 256;

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::serialize_with_flavor(v, Bytes(Vec::with_capacity(VALUE_CAPACITY)))
        .expect("state types always serialize")
}

/// postcard's output into a `Vec` made to size, each string copied as one slice (postcard's
/// `to_extend` copies byte by byte through an iterator; its own `Vec` flavor starts empty).
struct Bytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for Bytes {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // varints come as slices too, mostly of one byte: no call to `memcpy` for those
        match data {
            [b] => self.0.push(*b),
            _ => self.0.extend_from_slice(data),
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes)
}

/// A stored journey: `(timer, journey)` in exactly the bytes [`encode`] writes for it (a test
/// compares them on arbitrary journeys), written directly. Every changed journey is encoded at
/// every write of the state: through serde, 1,700 instructions for a journey of one contact (a
/// trait call per field, a copy per varint), the largest part of taking a batch's changes.
/// Read back with [`decode`]. The destructuring below stops compiling when a field is added:
/// add it here, in the order of its declaration.
pub fn encode_journey(timer: Option<Millis>, j: &Journey) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(VALUE_CAPACITY));
    w.option(timer, Writer::i64);
    let Journey {
        known_customer,
        contacts,
        watches,
        notifications,
        ended,
        callbacks,
    } = j;
    w.bool(*known_customer);
    w.len(contacts.len());
    for (id, c) in contacts {
        w.str(id);
        let ContactState {
            dims,
            potential,
            last_event_at,
            self_service_resolved,
            queued,
            enqueued_at,
            agent_connected,
            callback_requested,
            abandon_signal,
            escalated,
            automated_step,
            context_passed,
            handle_ms,
            talk_known,
            talk_unknown,
            raw_intent,
        } = &**c;
        let Dimensions {
            tenant,
            channel,
            intent,
            queue,
        } = dims;
        w.str(tenant);
        w.variant(*channel as u32);
        w.str(intent);
        w.str(queue);
        w.bool(*potential);
        w.i64(*last_event_at);
        w.bool(*self_service_resolved);
        w.bool(*queued);
        w.option(*enqueued_at, Writer::i64);
        w.bool(*agent_connected);
        w.bool(*callback_requested);
        w.bool(*abandon_signal);
        w.bool(*escalated);
        w.bool(*automated_step);
        w.bool(*context_passed);
        w.varint(*handle_ms);
        w.bool(*talk_known);
        w.bool(*talk_unknown);
        w.option(raw_intent.as_deref(), Writer::str);
    }
    w.len(watches.len());
    for Watch {
        contact_id,
        ended_at,
        labels,
        outcome,
        pending,
    } in watches
    {
        w.str(contact_id);
        w.i64(*ended_at);
        w.strs(labels);
        w.variant(*outcome as u32);
        w.0.push(*pending);
    }
    w.len(notifications.len());
    for NotificationWatch {
        sent_at,
        topic,
        labels,
    } in notifications
    {
        w.i64(*sent_at);
        w.str(topic);
        w.strs(labels);
    }
    w.len(ended.len());
    for Ended {
        contact_id,
        ended_at,
        outcome,
        tenant,
        channel,
    } in ended
    {
        w.str(contact_id);
        w.i64(*ended_at);
        w.variant(*outcome as u32);
        w.str(tenant);
        w.variant(*channel as u32);
    }
    w.len(callbacks.len());
    for (id, (at, tenant, queue)) in callbacks {
        w.str(id);
        w.i64(*at);
        w.str(tenant);
        w.str(queue);
    }
    w.0
}

/// postcard's encoding of the types journeys are made of: unsigned integers and lengths as
/// LEB128 varints, signed ones zigzagged first, `u8` and `bool` as one byte, strings as their
/// length and bytes, an option as 0 or 1 and its value, an enum's unit variant as its index.
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    fn i64(&mut self, v: i64) {
        self.varint(((v << 1) ^ (v >> 63)) as u64);
    }
    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }
    fn variant(&mut self, index: u32) {
        self.varint(u64::from(index));
    }
    fn bool(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }
    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn strs(&mut self, v: &[Text]) {
        self.len(v.len());
        for s in v {
            self.str(s);
        }
    }
    fn option<T>(&mut self, v: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                write(self, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Channel;
    use crate::metrics::Outcome;
    use proptest::prelude::*;

    /// Short and long (inline and allocated), empty and not, ASCII and not.
    fn text() -> impl Strategy<Value = Text> {
        prop_oneof![
            "",
            "[a-z]{1,8}",
            "[a-z0-9-]{20,40}",
            "t\u{e9}l\u{e9}[a-z]{0,3}"
        ]
        .prop_map(Text::from)
    }

    /// Times around zero and far from it (zigzag and every varint length).
    fn millis() -> impl Strategy<Value = Millis> {
        prop_oneof![
            -200i64..200,
            any::<i64>(),
            1_700_000_000_000i64..1_800_000_000_000
        ]
    }

    fn channel() -> impl Strategy<Value = Channel> {
        prop::sample::select(Channel::ALL.to_vec())
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop::sample::select(vec![
            Outcome::Deflected,
            Outcome::Assisted,
            Outcome::Abandoned,
            Outcome::Unresolved,
        ])
    }

    fn contact() -> impl Strategy<Value = ContactState> {
        (
            (text(), channel(), text(), text()),
            any::<[bool; 12]>(),
            millis(),
            proptest::option::of(millis()),
            any::<u64>(),
            proptest::option::of(text()),
        )
            .prop_map(
                |((tenant, channel, intent, queue), b, last, enqueued, handle_ms, raw)| {
                    ContactState {
                        dims: Dimensions {
                            tenant,
                            channel,
                            intent,
                            queue,
                        },
                        potential: b[0],
                        last_event_at: last,
                        self_service_resolved: b[1],
                        queued: b[2],
                        enqueued_at: enqueued,
                        agent_connected: b[3],
                        callback_requested: b[4],
                        abandon_signal: b[5],
                        escalated: b[6],
                        automated_step: b[7],
                        context_passed: b[8],
                        handle_ms,
                        talk_known: b[9],
                        talk_unknown: b[10],
                        raw_intent: raw,
                    }
                },
            )
    }

    fn journey() -> impl Strategy<Value = Journey> {
        let labels = || prop::collection::vec(text(), 0..4);
        (
            any::<bool>(),
            prop::collection::btree_map(text(), contact().prop_map(Box::new), 0..3),
            prop::collection::vec(
                (text(), millis(), labels(), outcome(), any::<u8>()).prop_map(
                    |(contact_id, ended_at, labels, outcome, pending)| Watch {
                        contact_id,
                        ended_at,
                        labels,
                        outcome,
                        pending,
                    },
                ),
                0..3,
            ),
            prop::collection::vec(
                (millis(), text(), labels()).prop_map(|(sent_at, topic, labels)| {
                    NotificationWatch {
                        sent_at,
                        topic,
                        labels,
                    }
                }),
                0..3,
            ),
            prop::collection::vec(
                (text(), millis(), outcome(), text(), channel()).prop_map(
                    |(contact_id, ended_at, outcome, tenant, channel)| Ended {
                        contact_id,
                        ended_at,
                        outcome,
                        tenant,
                        channel,
                    },
                ),
                0..3,
            ),
            prop::collection::btree_map(text(), (millis(), text(), text()), 0..3),
        )
            .prop_map(
                |(known, contacts, watches, notifications, ended, callbacks)| {
                    // a field added later keeps its default here, which the encoder must write too
                    let mut j = Journey::new(known);
                    (j.contacts, j.watches, j.notifications) = (contacts, watches, notifications);
                    (j.ended, j.callbacks) = (ended, callbacks);
                    j
                },
            )
    }

    proptest! {
        /// The direct journey encoding writes serde's (postcard's) bytes, and reads back.
        #[test]
        fn journeys_are_encoded_as_serde_does(timer in proptest::option::of(millis()), j in journey()) {
            let direct = encode_journey(timer, &j);
            prop_assert_eq!(&direct, &encode(&(timer, &j)));
            prop_assert_eq!(decode::<(Option<Millis>, Journey)>(&direct).unwrap(), (timer, j));
        }
    }

    /// Journeys hold [`crate::event::Text`] where they held `String`: stored state keeps its
    /// bytes both ways (no new state format), short and long (inline and allocated) alike.
    #[test]
    fn text_is_stored_as_a_string() {
        for s in ["", "c1", "a-contact-id-longer-than-twenty-four-bytes"] {
            let text = crate::event::Text::from(s);
            assert_eq!(encode(&text), encode(&s.to_string()));
            assert_eq!(
                decode::<crate::event::Text>(&encode(&s.to_string())).unwrap(),
                s
            );
        }
    }
}
