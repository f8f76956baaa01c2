//! Writing events to a topic (generator, demo, benchmark, tests).

use std::time::Duration;

use anyhow::{Context, Result};
use deflect_core::event::Event;
use deflect_kafka::{ClientSettings, OutputProducer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireFormat {
    Protobuf,
    Json,
    /// Protobuf framed as Confluent's Schema Registry serializer frames it, with this schema id.
    RegistryProtobuf(u32),
    /// JSON framed as Confluent's JSON Schema serializer frames it, with this schema id.
    RegistryJson(u32),
}

impl WireFormat {
    pub fn encode(self, e: &Event) -> Vec<u8> {
        use deflect_proto::{encode_json, encode_protobuf, schema_registry_frame as frame};
        match self {
            WireFormat::Protobuf => encode_protobuf(e),
            WireFormat::Json => encode_json(e),
            // `ContactEvent` is the first message of events.proto: the path [0], one byte 0
            WireFormat::RegistryProtobuf(id) => frame(id, &[0], &encode_protobuf(e)),
            WireFormat::RegistryJson(id) => frame(id, &[], &encode_json(e)),
        }
    }
}

pub struct EventProducer {
    producer: OutputProducer,
    topic: String,
    format: WireFormat,
    pub sent: u64,
}

impl EventProducer {
    pub fn new(settings: &ClientSettings, topic: &str, format: WireFormat) -> Result<Self> {
        Ok(EventProducer {
            producer: OutputProducer::new(settings).context("cannot create producer")?,
            topic: topic.to_string(),
            format,
            sent: 0,
        })
    }

    /// Sends one event keyed by customer (or contact), waiting while the local queue is full.
    pub fn send(&mut self, e: &Event) -> Result<()> {
        let payload = self.format.encode(e);
        self.send_raw(e.partition_key().as_bytes(), &payload)
    }

    /// Sends arbitrary bytes (tests of bad input).
    pub fn send_raw(&mut self, key: &[u8], payload: &[u8]) -> Result<()> {
        self.send_record(Some(key), payload)
    }

    /// Sends arbitrary bytes with an optional key.
    pub fn send_record(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        self.producer
            .send(&self.topic, key, payload, None, None)
            .with_context(|| format!("cannot produce to {}", self.topic))?;
        self.sent += 1;
        Ok(())
    }

    /// Sends to an explicit partition (tests).
    pub fn send_to(&mut self, partition: i32, e: &Event) -> Result<()> {
        let payload = self.format.encode(e);
        let key = e.partition_key().as_bytes();
        self.producer
            .send(&self.topic, Some(key), &payload, None, Some(partition))
            .with_context(|| format!("cannot produce to {}", self.topic))?;
        self.sent += 1;
        Ok(())
    }

    /// Waits until every event sent is delivered; an error if any was not.
    pub fn flush(&mut self) -> Result<()> {
        self.producer
            .flush(Duration::from_secs(60))
            .context("cannot deliver produced events")
    }
}

/// Decodes a protobuf record (benchmarks compare against the encoder above).
pub fn decode(bytes: &[u8]) -> Result<Event, deflect_proto::DecodeError> {
    deflect_proto::decode(bytes, deflect_proto::Format::Protobuf)
}
