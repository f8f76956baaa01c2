//! Metric definitions: every business metric's name, labels and meaning, in one place.
//!
//! All business metrics are additive counters (numerators and denominators); ratios are computed in
//! PromQL. The exporter adds a `partition` label so that series of a partition this instance no
//! longer owns can disappear. Wait sums are integer milliseconds so that they are exact.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Upper bounds (seconds) of the queue-wait histogram buckets; `+Inf` is implied.
pub const WAIT_BUCKETS_SECONDS: [u64; 10] = [5, 10, 20, 30, 60, 120, 180, 300, 600, 1800];

/// Re-contact windows for containment, in hours, with their label values.
pub const RECONTACT_WINDOWS: [(&str, i64); 3] = [("24h", 24), ("72h", 72), ("7d", 168)];

/// Outcomes of a contact, decided when it ends (a bounded label set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Outcome {
    Deflected,
    Assisted,
    Abandoned,
    /// Ended with none of the signals above (for example a contact that only requested a callback).
    Unresolved,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deflected => "deflected",
            Outcome::Assisted => "assisted",
            Outcome::Abandoned => "abandoned",
            Outcome::Unresolved => "unresolved",
        }
    }
}

macro_rules! metrics_table {
    ($($variant:ident => $name:literal, [$($label:literal),*], $help:literal;)+) => {
        /// Every business counter deflect exports.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub enum Metric { $($variant),+ }
        impl Metric {
            pub const ALL: &'static [Metric] = &[$(Metric::$variant),+];
            pub fn name(self) -> &'static str { match self { $(Metric::$variant => $name),+ } }
            pub fn labels(self) -> &'static [&'static str] { match self { $(Metric::$variant => &[$($label),*]),+ } }
            pub fn help(self) -> &'static str { match self { $(Metric::$variant => $help),+ } }
        }
    };
}

metrics_table! {
    PotentialCalls => "deflect_potential_calls_total", ["tenant", "channel", "intent"],
        "Inbound, customer-initiated contacts (the deflection denominator), counted at contact_started.";
    ContactOutcomes => "deflect_contact_outcomes_total", ["tenant", "channel", "intent", "outcome"],
        "Potential calls by outcome, counted when the contact ends (contact_ended or contact timeout).";
    HighStakesDeflected => "deflect_high_stakes_deflected_total", ["tenant", "channel", "intent"],
        "Deflected potential calls whose intent is in journey.high_stakes_intents, counted when the contact ends.";
    Containment => "deflect_containment_total", ["tenant", "channel", "intent", "window", "result"],
        "Deflected potential calls of known customers, counted when containment is decided: result=recontacted when the customer opens a new potential call within the window, result=contained at contact end + window.";
    ContainmentUnverifiable => "deflect_containment_unverifiable_total", ["tenant", "channel", "intent"],
        "Deflected potential calls without a customer id, whose containment cannot be verified.";
    Recontact => "deflect_recontact_total", ["tenant", "channel", "intent", "outcome", "window", "result"],
        "Potential calls of known customers by outcome, counted when re-contact is decided (result=recontacted or not_recontacted).";
    RecontactUnverifiable => "deflect_recontact_unverifiable_total", ["tenant", "channel", "intent", "outcome"],
        "Potential calls without a customer id by outcome (re-contact cannot be verified).";
    AutomatedContacts => "deflect_automated_contacts_total", ["tenant", "channel", "intent"],
        "Contacts that had a self-service, IVR or AI-agent step (the escalation denominator), counted when the contact ends.";
    Escalations => "deflect_escalations_total", ["tenant", "channel", "intent", "context"],
        "Automated contacts escalated to a queue or agent, counted when the contact ends; context=passed when an escalation_requested carried context_passed=true, else missing.";
    CsatResponses => "deflect_csat_responses_total", ["tenant", "channel", "outcome", "box"],
        "Survey responses by the outcome of the contact they refer to (unknown if not in state) and box (top2 = the two best points of the scale, rest).";
    QueueEntered => "deflect_queue_entered_total", ["tenant", "channel", "queue"],
        "Contacts entering a queue (offered), counted at queue_entered.";
    QueueAnswered => "deflect_queue_answered_total", ["tenant", "channel", "queue"],
        "Queued contacts answered by an agent, counted at agent_connected (direct answers too when service.asa_include_direct_answers).";
    QueueWaitMs => "deflect_queue_answered_wait_milliseconds_total", ["tenant", "channel", "queue"],
        "Sum of queue waits (answer - enqueue) of answered queued contacts, in milliseconds; ASA = this / answered.";
    QueueWaitBucket => "deflect_queue_answered_wait_seconds_bucket", ["tenant", "channel", "queue", "le"],
        "Histogram buckets (cumulative on /metrics) of queue waits of answered contacts, seconds.";
    QueueAnsweredWithin => "deflect_queue_answered_within_threshold_total", ["tenant", "channel", "queue"],
        "Answered queued contacts whose wait was at most service.level_threshold.";
    QueueAbandoned => "deflect_queue_abandoned_total", ["tenant", "channel", "queue"],
        "Queued contacts that abandoned (queue_exited reason=abandoned).";
    QueueAbandonWaitMs => "deflect_queue_abandoned_wait_milliseconds_total", ["tenant", "channel", "queue"],
        "Sum of waits of abandoned queued contacts, in milliseconds.";
    QueueAbandonedShort => "deflect_queue_abandoned_short_total", ["tenant", "channel", "queue"],
        "Abandons whose wait was shorter than service.short_abandon.";
    QueueAbandonedWithin => "deflect_queue_abandoned_within_threshold_total", ["tenant", "channel", "queue"],
        "Abandons whose wait was at most service.level_threshold (the connect service-level variant).";
    QueueCallbackRequested => "deflect_queue_callback_requested_total", ["tenant", "channel", "queue"],
        "Queued contacts that left the queue for a callback (not an abandon).";
    QueueCallbackWithin => "deflect_queue_callback_requested_within_threshold_total", ["tenant", "channel", "queue"],
        "Callback requests from the queue within service.level_threshold of enqueue.";
    Handled => "deflect_handled_total", ["tenant", "channel", "queue"],
        "Contacts an agent handled whose handle time is known, counted when the contact ends.";
    HandleTimeMs => "deflect_handle_time_milliseconds_total", ["tenant", "channel", "queue"],
        "Sum of talk + hold + after-contact work of handled contacts, ms; AHT = this / handled.";
    HandleTimeUnknown => "deflect_handle_time_unknown_total", ["tenant", "channel", "queue"],
        "Contacts an agent connected to whose handle time is unknown (no talk duration); not counted as zero.";
    IvrEntries => "deflect_ivr_node_entries_total", ["tenant", "channel", "node"],
        "IVR node entries (ivr_entered); nodes outside dimensions.ivr_nodes are other.";
    IvrDropoffs => "deflect_ivr_node_dropoffs_total", ["tenant", "channel", "node"],
        "IVR hang-ups at a node (ivr_exited reason=hang_up).";
    Callbacks => "deflect_callbacks_total", ["tenant", "queue", "event"],
        "Callback events: requested, completed, canceled, expired, and lost (still open after journey.callback_max_age).";
    Proactive => "deflect_proactive_notifications_total", ["tenant", "channel", "topic", "result"],
        "Proactive notifications, counted when decided: deflected (no potential call on the topic within proactive.window), called, or unverifiable (no customer id, at send).";
}

/// Metrics that share a label schema and are divided by one another in PromQL: when one series of
/// a family exists, the exporter shows its siblings with the same labels at 0 rather than absent,
/// so that ratios and sums do not vanish for a queue that, say, never had an abandon.
pub const FAMILIES: &[&[Metric]] = &[
    &[
        Metric::QueueEntered,
        Metric::QueueAnswered,
        Metric::QueueWaitMs,
        Metric::QueueAnsweredWithin,
        Metric::QueueAbandoned,
        Metric::QueueAbandonWaitMs,
        Metric::QueueAbandonedShort,
        Metric::QueueAbandonedWithin,
        Metric::QueueCallbackRequested,
        Metric::QueueCallbackWithin,
        Metric::Handled,
        Metric::HandleTimeMs,
        Metric::HandleTimeUnknown,
    ],
    &[Metric::IvrEntries, Metric::IvrDropoffs],
    &[Metric::PotentialCalls, Metric::AutomatedContacts],
];

/// The family of a metric, if it has one.
pub fn family(m: Metric) -> Option<&'static [Metric]> {
    FAMILIES.iter().copied().find(|f| f.contains(&m))
}

/// The CSAT box of a response: `top2` for the two best points of the scale (4–5 of 1–5, 9–10 of
/// 0–10), `rest` otherwise. A scale of fewer than three points has only its best point on top.
pub fn csat_box(score: f64, scale_min: f64, scale_max: f64) -> &'static str {
    let top = if scale_max - scale_min >= 2.0 {
        scale_max - 1.0
    } else {
        scale_max
    };
    if score >= top {
        "top2"
    } else {
        "rest"
    }
}

/// The most labels a metric has (a test checks every metric against it).
pub const MAX_LABELS: usize = 6;

/// Label values of one count, borrowed and on the stack, so that counting allocates nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Labels<'a> {
    values: [&'a str; MAX_LABELS],
    len: usize,
}

impl<'a> Labels<'a> {
    pub fn push(&mut self, v: &'a str) {
        self.values[self.len] = v;
        self.len += 1;
    }
}

impl<'a> std::ops::Deref for Labels<'a> {
    type Target = [&'a str];
    fn deref(&self) -> &[&'a str] {
        &self.values[..self.len]
    }
}

/// A series looked up by borrowed label values: hashes like the [`CounterKey`] it equals, so a
/// hash map of `CounterKey`s is queried without building one.
pub struct CounterKeyRef<'a> {
    pub metric: Metric,
    pub labels: &'a [&'a str],
}

impl Hash for CounterKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_series(self.metric, self.labels.iter().map(|l| l.as_bytes()), state);
    }
}

impl hashbrown::Equivalent<CounterKey> for CounterKeyRef<'_> {
    fn equivalent(&self, key: &CounterKey) -> bool {
        self.metric == key.metric
            && self.labels.len() == key.labels.len()
            && (self.labels.iter().zip(key.labels.iter()))
                .all(|(a, b)| same(a.as_bytes(), b.as_bytes()))
    }
}

/// A label value as one word: its length with its first and last (up to) eight bytes. Label
/// values are short (tenants, intents, queues, channels, outcomes): counting a figure hashed
/// each value byte by byte with a terminator (`str`'s `Hash`), about 30 instructions per label
/// and five labels per count.
#[inline(always)]
fn label_word(b: &[u8]) -> u64 {
    let n = b.len();
    let head_tail = if n >= 8 {
        let head = u64::from_le_bytes(b[..8].try_into().expect("eight bytes"));
        let tail = u64::from_le_bytes(b[n - 8..].try_into().expect("eight bytes"));
        head ^ tail.rotate_left(29)
    } else if n >= 4 {
        let head = u32::from_le_bytes(b[..4].try_into().expect("four bytes"));
        let tail = u32::from_le_bytes(b[n - 4..].try_into().expect("four bytes"));
        u64::from(head) << 32 | u64::from(tail)
    } else if n > 0 {
        u64::from(b[0]) << 16 | u64::from(b[n / 2]) << 8 | u64::from(b[n - 1])
    } else {
        0
    };
    head_tail ^ (n as u64).rotate_right(8)
}

/// Equal label values: short ones compared a word at a time, inline (a call to `memcmp` per
/// label cost more than the comparison).
#[inline(always)]
fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n > 16 {
        return a == b;
    }
    if n >= 8 {
        let w = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().expect("eight"));
        return w(a, 0) == w(b, 0) && w(a, n - 8) == w(b, n - 8);
    }
    // under eight bytes the word holds every byte (the head and tail overlap)
    label_word(a) == label_word(b)
}

/// The hash of a series, whichever form its key takes.
#[inline(always)]
fn hash_series<'l, H: Hasher>(
    metric: Metric,
    labels: impl ExactSizeIterator<Item = &'l [u8]>,
    state: &mut H,
) {
    state.write_u64((metric as u64) << 8 | labels.len() as u64);
    for l in labels {
        state.write_u64(label_word(l));
    }
}

impl CounterKeyRef<'_> {
    pub fn to_owned(&self) -> CounterKey {
        CounterKey {
            metric: self.metric,
            labels: self.labels.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// One counter series: the metric and its label values in the order of `Metric::labels`. The
/// values are shared: a copy of a key (an interval's figures, a report, the totals, a cohort)
/// costs a reference count, not an allocation per label; keys the engine builds come from its
/// [`Series`], so equal ones are mostly one allocation, compared by address first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CounterKey {
    pub metric: Metric,
    pub labels: Arc<[String]>,
}

impl CounterKey {
    pub fn new(metric: Metric, labels: impl IntoIterator<Item = impl Into<String>>) -> Self {
        CounterKey {
            metric,
            labels: labels.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every series a partition has counted, each key built once: an interval's figures start
/// empty, and a series new to the interval (a third of all counts in `deflect bench`, eight
/// partitions of 15-minute intervals) cost an allocation per label, freed again at the
/// interval's closing. Bounded as the label values are.
#[derive(Debug, Default)]
pub struct Series(hashbrown::HashSet<CounterKey, rustc_hash::FxBuildHasher>);

impl Series {
    /// The key of a series (shared with every other use of it).
    pub fn key(&mut self, r: &CounterKeyRef<'_>) -> CounterKey {
        self.0
            .get_or_insert_with(r, CounterKeyRef::to_owned)
            .clone()
    }
}

impl Hash for CounterKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_series(self.metric, self.labels.iter().map(|l| l.as_bytes()), state);
    }
}

/// A set of counter values (an interval's figures, or a partition's running totals).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters(pub BTreeMap<CounterKey, u64>);

impl Counters {
    pub fn add(&mut self, metric: Metric, labels: Vec<String>, v: u64) {
        self.add_key(CounterKey::new(metric, labels), v);
    }
    pub fn add_key(&mut self, key: CounterKey, v: u64) {
        debug_assert_eq!(key.labels.len(), key.metric.labels().len(), "{key:?}");
        *self.0.entry(key).or_insert(0) += v;
    }
    pub fn merge(&mut self, other: &Counters) {
        // a key's copy is a reference count (its labels are shared)
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }
    pub fn get(&self, metric: Metric, labels: &[&str]) -> u64 {
        self.0
            .iter()
            .filter(|(k, _)| k.metric == metric && k.labels.iter().zip(labels).all(|(a, b)| a == b))
            .map(|(_, v)| v)
            .sum()
    }
    /// Sum of a metric over all label values.
    pub fn total(&self, metric: Metric) -> u64 {
        self.get(metric, &[])
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A partition's running totals: every closed interval's figures added up (what Prometheus
/// sees). Hashed, where interval figures are sorted: each closing adds a few dozen series to a
/// few hundred, and a lookup in a B-tree of label vectors compared label strings on every level
/// (20 k instructions per closing in `deflect bench`). Stored in key order, as a [`Counters`]
/// is (the same bytes), so the state format does not depend on this.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals(pub rustc_hash::FxHashMap<CounterKey, u64>);

impl Totals {
    pub fn merge(&mut self, other: &Counters) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_insert(0) += v;
        }
    }
    /// Sum of a metric over all label values.
    pub fn total(&self, metric: Metric) -> u64 {
        (self.0.iter())
            .filter(|(k, _)| k.metric == metric)
            .map(|(_, v)| v)
            .sum()
    }
    /// The same series in key order.
    pub fn to_counters(&self) -> Counters {
        Counters(self.0.iter().map(|(k, v)| (k.clone(), *v)).collect())
    }
}

impl Serialize for Totals {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<(&CounterKey, &u64)> = self.0.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        serializer.collect_map(sorted)
    }
}

impl<'de> Deserialize<'de> for Totals {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Totals(Deserialize::deserialize(deserializer)?))
    }
}

/// The `le` label of each bucket of [`WAIT_BUCKETS_SECONDS`], then `+Inf` (a test checks them
/// against the bounds).
const WAIT_BUCKET_LABELS: [&str; 11] = [
    "5", "10", "20", "30", "60", "120", "180", "300", "600", "1800", "+Inf",
];

/// The `le` label of the smallest bucket holding `wait_ms`. State keeps one count per bucket (not
/// cumulative); the exporter turns them into the cumulative buckets Prometheus expects.
pub fn wait_bucket_label(wait_ms: i64) -> &'static str {
    let w = wait_ms.max(0) as u64;
    let i = WAIT_BUCKETS_SECONDS
        .iter()
        .position(|b| w <= *b * 1000)
        .unwrap_or(WAIT_BUCKETS_SECONDS.len());
    WAIT_BUCKET_LABELS[i]
}

/// Every `le` label in increasing order (the last is `+Inf`).
pub fn wait_bucket_labels() -> impl Iterator<Item = &'static str> {
    WAIT_BUCKET_LABELS.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_metric_has_more_than_max_labels() {
        for m in Metric::ALL {
            assert!(m.labels().len() <= MAX_LABELS, "{m:?}");
        }
    }

    /// `Journey::next_wake` takes a watch's first pending window as its earliest.
    #[test]
    fn recontact_windows_grow() {
        assert!(RECONTACT_WINDOWS.windows(2).all(|w| w[0].1 < w[1].1));
    }

    #[test]
    fn names_are_unique_and_prefixed() {
        let mut names: Vec<_> = Metric::ALL.iter().map(|m| m.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Metric::ALL.len());
        assert!(names.iter().all(|n| n.starts_with("deflect_")));
    }

    #[test]
    fn families_share_their_labels() {
        for f in FAMILIES {
            for m in *f {
                assert_eq!(m.labels(), f[0].labels(), "{m:?}");
                assert_eq!(family(*m), Some(*f));
            }
        }
    }

    #[test]
    fn borrowed_keys_find_owned_series() {
        let mut m: hashbrown::HashMap<CounterKey, u64, rustc_hash::FxBuildHasher> =
            Default::default();
        let labels = ["t", "voice", "billing", "deflected"];
        let owned = CounterKeyRef {
            metric: Metric::ContactOutcomes,
            labels: &labels,
        }
        .to_owned();
        m.insert(owned.clone(), 1);
        // equal keys hash alike whichever form they take
        let h = |k: &dyn Fn(&mut rustc_hash::FxHasher)| {
            let mut s = rustc_hash::FxHasher::default();
            k(&mut s);
            std::hash::Hasher::finish(&s)
        };
        use std::hash::Hash;
        let r = CounterKeyRef {
            metric: Metric::ContactOutcomes,
            labels: &labels,
        };
        assert_eq!(h(&|s| owned.hash(s)), h(&|s| r.hash(s)));
        *m.get_mut(&r).unwrap() += 1;
        assert_eq!(m[&owned], 2);
        for other in [
            CounterKeyRef {
                metric: Metric::PotentialCalls,
                labels: &labels,
            },
            CounterKeyRef {
                metric: Metric::ContactOutcomes,
                labels: &labels[..3],
            },
            CounterKeyRef {
                metric: Metric::ContactOutcomes,
                labels: &["t", "voice", "billing", "assisted"],
            },
        ] {
            assert!(m.get(&other).is_none());
        }
    }

    #[test]
    fn csat_boxes_normalise_scales() {
        assert_eq!(csat_box(4.0, 1.0, 5.0), "top2");
        assert_eq!(csat_box(3.0, 1.0, 5.0), "rest");
        assert_eq!(csat_box(9.0, 0.0, 10.0), "top2");
        assert_eq!(csat_box(8.0, 0.0, 10.0), "rest");
        assert_eq!(csat_box(1.0, 0.0, 1.0), "top2");
        assert_eq!(csat_box(0.0, 0.0, 1.0), "rest");
    }

    #[test]
    fn bucket_of_a_wait() {
        assert_eq!(wait_bucket_label(0), "5");
        assert_eq!(wait_bucket_label(20_000), "20");
        assert_eq!(wait_bucket_label(20_001), "30");
        assert_eq!(wait_bucket_label(3_600_000), "+Inf");
        assert_eq!(
            wait_bucket_labels().collect::<Vec<_>>(),
            ["5", "10", "20", "30", "60", "120", "180", "300", "600", "1800", "+Inf"]
        );
        // each label is its bucket's bound, and holds a wait of exactly that bound
        assert_eq!(WAIT_BUCKET_LABELS.len(), WAIT_BUCKETS_SECONDS.len() + 1);
        for (b, l) in WAIT_BUCKETS_SECONDS.iter().zip(WAIT_BUCKET_LABELS) {
            assert_eq!(b.to_string(), l);
            assert_eq!(wait_bucket_label(*b as i64 * 1000), l);
        }
    }

    #[test]
    fn counters_add_and_filter() {
        let mut c = Counters::default();
        c.add(
            Metric::QueueAnswered,
            vec!["a".into(), "voice".into(), "q1".into()],
            2,
        );
        c.add(
            Metric::QueueAnswered,
            vec!["a".into(), "chat".into(), "q1".into()],
            3,
        );
        assert_eq!(c.total(Metric::QueueAnswered), 5);
        assert_eq!(c.get(Metric::QueueAnswered, &["a", "chat"]), 3);
    }

    use proptest::prelude::*;

    /// Label values of every length around the word sizes the hash and comparison read, often
    /// alike (same length, shared head or tail) so that unequal ones are close.
    fn label() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "",
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "abd",
            "xbc",
            "abcd",
            "abce",
            "abcde",
            "abXde",
            "voice",
            "billing",
            "billinh",
            "cilling",
            "abcdefgh",
            "abcdefgi",
            "bbcdefgh",
            "abcdefghi",
            "abcdXfghi",
            "sixteen-bytes-xx",
            "sixteen-bytes-xy",
            "sixteen-bytes-yx",
            "seventeen-bytes-x",
            "seventeen-bytes-y",
            "twenty-five-bytes-long-aa",
            "twenty-five-bytes-lXng-aa",
            "t\u{e9}l\u{e9}phone",
        ])
        .prop_map(String::from)
    }

    fn key() -> impl Strategy<Value = CounterKey> {
        (
            prop::sample::select(vec![
                Metric::PotentialCalls,
                Metric::ContactOutcomes,
                Metric::Recontact,
            ]),
            prop::collection::vec(label(), 0..4),
        )
            .prop_map(|(metric, labels)| CounterKey::new(metric, labels))
    }

    fn counters() -> impl Strategy<Value = Counters> {
        prop::collection::btree_map(key(), 0u64..100, 0..40).prop_map(Counters)
    }

    fn fx(k: &dyn Fn(&mut rustc_hash::FxHasher)) -> u64 {
        let mut s = rustc_hash::FxHasher::default();
        k(&mut s);
        s.finish()
    }

    proptest! {
        /// Totals are stored as the same series in a sorted map would be, and read back.
        #[test]
        fn totals_are_stored_as_sorted_counters(c in counters()) {
            let mut t = Totals::default();
            t.merge(&c);
            prop_assert_eq!(&t.to_counters(), &c);
            let bytes = crate::codec::encode(&t);
            prop_assert_eq!(&bytes, &crate::codec::encode(&c));
            prop_assert_eq!(crate::codec::decode::<Totals>(&bytes).unwrap(), t);
        }

        /// Borrowed labels find exactly the owned key they equal, and equal keys hash alike.
        #[test]
        fn borrowed_keys_are_equal_exactly_when_their_labels_are(a in key(), b in key()) {
            let labels: Vec<&str> = a.labels.iter().map(String::as_str).collect();
            let r = CounterKeyRef { metric: a.metric, labels: &labels };
            prop_assert_eq!(hashbrown::Equivalent::equivalent(&r, &b), a == b);
            prop_assert_eq!(fx(&|s| r.hash(s)), fx(&|s| a.hash(s)));
            if a == b {
                prop_assert_eq!(fx(&|s| a.hash(s)), fx(&|s| b.hash(s)));
            }
        }

        /// Merging adds every series of the other set, either way round.
        #[test]
        fn merge_adds_every_series(a in counters(), b in counters()) {
            let mut expected = a.0.clone();
            for (k, v) in &b.0 {
                *expected.entry(k.clone()).or_insert(0) += v;
            }
            let mut merged = a.clone();
            merged.merge(&b);
            prop_assert_eq!(&merged.0, &expected);
            let mut other_way = b.clone();
            other_way.merge(&a);
            prop_assert_eq!(&other_way.0, &expected);
        }
    }
}
