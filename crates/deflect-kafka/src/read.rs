//! Reading records in batches from librdkafka queues.
//!
//! rust-rdkafka's `BaseConsumer::poll` returns one message per call: it reads the clock for its
//! deadline, librdkafka notes the poll's start and end (`max.poll.interval.ms`) and updates the
//! partition's position under its lock, and the message holds its event in an `Arc` of its own.
//! `rd_kafka_consume_batch_queue` takes a queue's records under its lock one after the other,
//! notes the poll once and each partition's position once per call. In `deflect bench` the raw
//! consumer read 1.7–2.3 times as many records a second this way, at half the CPU per record
//! (README, Benchmarks).
//!
//! [`Queue::read`] is that call; [`Record`] owns what it returns. In librdkafka 2.12 an
//! end-of-partition notice read this way moves the partition's position one past the end
//! (librdkafka issue 4844): the group consumer does not ask for the notices (see
//! `GroupConsumer::new`); the benchmark's raw consumer, which never rebalances, does.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::message::BorrowedMessage;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::Message;

/// Records taken from a queue per librdkafka call.
const CHUNK: usize = 256;

/// A handle on a librdkafka queue, destroyed with it.
pub(crate) struct Queue(NonNull<rd::rd_kafka_queue_t>);

// SAFETY: librdkafka's queues are locked internally; a handle may be used and destroyed from any
// thread.
unsafe impl Send for Queue {}
unsafe impl Sync for Queue {}

impl Drop for Queue {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and destroyed once
        unsafe { rd::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

/// What a read saw of a partition, reported as it reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Records of the partition (a partition at its end no longer is).
    Records(i32),
    /// The end of the partition, after any records of it the read returned.
    End(i32),
}

impl Queue {
    /// # Safety
    /// `ptr` is a queue handle the caller owns (or null), of a client that outlives the handle.
    pub(crate) unsafe fn from_ptr(ptr: *mut rd::rd_kafka_queue_t) -> Option<Queue> {
        NonNull::new(ptr).map(Queue)
    }

    pub(crate) fn ptr(&self) -> *mut rd::rd_kafka_queue_t {
        self.0.as_ptr()
    }

    /// Ops (records, events) waiting in the queue.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: a live handle
        unsafe { rd::rd_kafka_queue_length(self.ptr()) }
    }

    /// Moves up to `max` records into `out`, waiting up to `wait` for the first one when none is
    /// there (librdkafka's batch call waits until it has all it was asked for, so only the first
    /// record is waited for). Ends of partitions and client errors are not records: they are
    /// reported to `seen` and logged, in order with the records of their partition. Returns the
    /// number of records read.
    pub(crate) fn read<'c>(
        &self,
        out: &mut Vec<Record<'c>>,
        max: usize,
        wait: Duration,
        seen: &mut dyn FnMut(Seen),
    ) -> usize {
        let mut buf = [std::ptr::null_mut::<rd::rd_kafka_message_t>(); CHUNK];
        let mut read = 0;
        let mut timeout_ms = wait.as_millis().min(i32::MAX as u128) as i32;
        while read < max {
            let ask = if timeout_ms > 0 {
                1
            } else {
                (max - read).min(CHUNK)
            };
            // SAFETY: a live queue handle and a buffer of `ask` pointers; the messages returned
            // are ours to destroy
            let n = unsafe {
                rd::rd_kafka_consume_batch_queue(self.ptr(), timeout_ms, buf.as_mut_ptr(), ask)
            };
            timeout_ms = 0;
            if n <= 0 {
                if n < 0 {
                    tracing::warn!("reading a consumer queue failed");
                }
                break;
            }
            let mut last = None;
            for &m in &buf[..n as usize] {
                // SAFETY: librdkafka returned a valid message, now owned by the record
                let rec = Record(Inner::Read(
                    unsafe { NonNull::new_unchecked(m) },
                    PhantomData,
                ));
                // SAFETY: as above
                let msg = unsafe { &*m };
                if msg.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                    if last != Some(msg.partition) {
                        last = Some(msg.partition);
                        seen(Seen::Records(msg.partition));
                    }
                    out.push(rec);
                    read += 1;
                } else {
                    last = None;
                    if msg.err == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__PARTITION_EOF {
                        seen(Seen::End(msg.partition));
                    } else {
                        let code = RDKafkaErrorCode::from(msg.err);
                        tracing::warn!(error = %code, partition = msg.partition, "consumer error");
                    }
                }
            }
            if (n as usize) < ask {
                break;
            }
        }
        read
    }
}

/// A consumed record: librdkafka's message, released when the record is dropped.
pub struct Record<'c>(Inner<'c>);

enum Inner<'c> {
    /// Read in a batch ([`Queue::read`]).
    Read(NonNull<rd::rd_kafka_message_t>, PhantomData<&'c ()>),
    /// Returned by the consumer's own poll: a record of a partition whose queue was not split
    /// off the consumer's (see `GroupConsumer::read`).
    Polled(BorrowedMessage<'c>),
}

// SAFETY: a record only reads its message, except for the header list librdkafka parses into it
// on the first `rd_kafka_message_headers` call, which [`Record::headers`] makes under a lock of
// its own; librdkafka's `rd_kafka_message_destroy` may be called from any thread.
unsafe impl Send for Record<'_> {}
unsafe impl Sync for Record<'_> {}

impl Drop for Record<'_> {
    fn drop(&mut self) {
        if let Inner::Read(m, _) = self.0 {
            // SAFETY: the message is owned by this record and destroyed once
            unsafe { rd::rd_kafka_message_destroy(m.as_ptr()) }
        }
    }
}

/// The message a record read in a batch owns.
fn message(m: &NonNull<rd::rd_kafka_message_t>) -> &rd::rd_kafka_message_t {
    // SAFETY: the record owns the message until it is dropped, and nothing changes it
    unsafe { m.as_ref() }
}

/// `len` bytes at `ptr` (none when `ptr` is null).
///
/// # Safety
/// `ptr` points to `len` readable bytes that live as long as `'a`.
unsafe fn bytes<'a>(ptr: *const std::ffi::c_void, len: usize) -> Option<&'a [u8]> {
    (!ptr.is_null()).then(|| unsafe { std::slice::from_raw_parts(ptr.cast::<u8>(), len) })
}

impl<'c> Record<'c> {
    pub(crate) fn polled(m: BorrowedMessage<'c>) -> Self {
        Record(Inner::Polled(m))
    }

    pub fn partition(&self) -> i32 {
        match &self.0 {
            Inner::Read(m, _) => message(m).partition,
            Inner::Polled(m) => m.partition(),
        }
    }

    pub fn offset(&self) -> i64 {
        match &self.0 {
            Inner::Read(m, _) => message(m).offset,
            Inner::Polled(m) => m.offset(),
        }
    }

    pub fn payload(&self) -> Option<&[u8]> {
        match &self.0 {
            Inner::Read(m, _) => {
                let m = message(m);
                // SAFETY: librdkafka's payload of `len` bytes, alive with the message
                unsafe { bytes(m.payload, m.len) }
            }
            Inner::Polled(m) => m.payload(),
        }
    }

    pub fn key(&self) -> Option<&[u8]> {
        match &self.0 {
            Inner::Read(m, _) => {
                let m = message(m);
                // SAFETY: librdkafka's key of `key_len` bytes, alive with the message
                unsafe { bytes(m.key, m.key_len) }
            }
            Inner::Polled(m) => m.key(),
        }
    }

    /// A fingerprint of the record's key and value ([`crate::fingerprint`]).
    pub fn fingerprint(&self) -> u64 {
        crate::fingerprint(self.key(), self.payload())
    }

    /// The record's headers in order: name and value (`None` for a null value). Parsed from the
    /// record on every call (librdkafka allocates the list the first time).
    pub fn headers(&self) -> Vec<(&str, Option<&[u8]>)> {
        use rdkafka::message::Headers;
        // librdkafka parses the header list into the message on the first call, a write: two
        // threads asking for the headers of one record must not both do it (records are shared
        // between threads; headers are read only for dead letters and late events, so one lock
        // for every record costs nothing)
        static PARSE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _parse = PARSE.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        match &self.0 {
            Inner::Polled(m) => {
                if let Some(h) = m.headers() {
                    out.extend(h.iter().map(|h| (h.key, h.value)));
                }
            }
            Inner::Read(m, _) => {
                let mut hdrs = std::ptr::null_mut();
                // SAFETY: a live message; the header list belongs to it
                let err = unsafe { rd::rd_kafka_message_headers(m.as_ptr(), &mut hdrs) };
                if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || hdrs.is_null() {
                    return out;
                }
                for idx in 0.. {
                    let (mut name, mut value, mut size) =
                        (std::ptr::null(), std::ptr::null(), 0usize);
                    // SAFETY: index within or past the list (past it returns an error); the
                    // name and value live as long as the message
                    let err = unsafe {
                        rd::rd_kafka_header_get_all(hdrs, idx, &mut name, &mut value, &mut size)
                    };
                    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                        break;
                    }
                    // SAFETY: a NUL-terminated name owned by the header list
                    let name = unsafe { std::ffi::CStr::from_ptr(name) };
                    let Ok(name) = name.to_str() else { continue };
                    // SAFETY: `size` bytes of value owned by the header list
                    out.push((name, unsafe { bytes(value, size) }));
                }
            }
        }
        out
    }
}

impl std::fmt::Debug for Record<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("partition", &self.partition())
            .field("offset", &self.offset())
            .finish()
    }
}
