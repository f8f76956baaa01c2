use super::*;
use deflect_core::event::{Channel, Direction, EventKind, Initiation};

fn stored() -> StoredJourney {
    StoredJourney {
        timer: Some(99),
        journey: deflect_core::journey::Journey::new(true),
    }
}

fn ev(id: &str, t: Millis) -> Event {
    Event {
        event_id: id.into(),
        tenant: "t".into(),
        contact_id: "c".into(),
        parent_contact_id: None,
        customer_id: Some("u".into()),
        channel: Channel::Voice,
        occurred_at: t,
        intent: None,
        queue: None,
        kind: EventKind::ContactStarted {
            direction: Direction::Inbound,
            initiation: Initiation::Customer,
        },
    }
}

#[test]
fn time_keys_sort_numerically() {
    let mut v = [5i64, -3, 0, i64::MAX, i64::MIN, 1_700_000_000_000];
    let mut keys: Vec<_> = v.iter().map(|t| ts_key(*t)).collect();
    keys.sort();
    v.sort();
    assert_eq!(keys.iter().map(|k| ts_from(k)).collect::<Vec<_>>(), v);
}

#[test]
fn batch_round_trips_and_partitions_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    assert!(store.load_partition(0).unwrap().is_none());
    let snap = PartitionSnapshot {
        next_offset: 42,
        ..Default::default()
    };
    let ch = StateChanges {
        pending_blobs_put: vec![
            (1, codec::encode(&vec![ev("b", 20)])),
            (2, codec::encode(&vec![ev("a", 10)])),
        ],
        timers_put: vec![(99, "c:u".into()), (7, "c:v".into()), (-5, "c:w".into())],
        journeys: vec![("c:u".into(), Some(codec::encode(&stored())))],
        ..Default::default()
    };
    let mut b = store.batch();
    b.partition(3, &snap, &ch);
    let other = StateChanges {
        timers_put: vec![(1, "c:x".into())],
        ..Default::default()
    };
    b.partition(4, &PartitionSnapshot::default(), &other);
    b.commit().unwrap();
    drop(store);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let r = store.load_partition(3).unwrap().unwrap();
    assert_eq!(r.snapshot.next_offset, 42);
    let ids: Vec<(u64, &str)> = r
        .pending
        .iter()
        .flat_map(|(id, es)| es.iter().map(move |e| (*id, e.event_id.as_str())))
        .collect();
    assert_eq!(ids, [(1, "b"), (2, "a")]);
    let timers = |p: i32, from: Millis, to: Millis| store.journeys(p).timers(from, to);
    assert_eq!(
        timers(3, Millis::MIN, Millis::MAX),
        vec![(-5, "c:w".into()), (7, "c:v".into()), (99, "c:u".into())]
    );
    // [from, to): a timer at `to` is not included, one at `from` is
    assert_eq!(timers(3, 7, 99), vec![(7, "c:v".into())]);
    assert_eq!(timers(3, 8, 99), vec![]);
    assert_eq!(store.journeys(3).first_timer(8), Some(99));
    assert_eq!(
        store.journeys(3).first_timer(100),
        None,
        "not partition 4's"
    );
    assert_eq!(store.journeys(4).first_timer(Millis::MIN), Some(1));
    assert_eq!(store.journeys(3).load("c:u"), Some(stored()));
    assert_eq!(store.journeys(4).load("c:u"), None);
    let r4 = store.load_partition(4).unwrap().unwrap();
    assert!(r4.pending.is_empty());
    assert_eq!(timers(4, Millis::MIN, Millis::MAX), vec![(1, "c:x".into())]);

    let del = StateChanges {
        pending_blobs_del: vec![2],
        timers_del: vec![(7, "c:v".into())],
        journeys: vec![("c:u".into(), None)],
        ..Default::default()
    };
    let mut b = store.batch();
    b.partition(3, &snap, &del);
    b.commit().unwrap();
    let r = store.load_partition(3).unwrap().unwrap();
    assert_eq!(r.pending.len(), 1);
    assert_eq!(timers(3, Millis::MIN, Millis::MAX).len(), 2);
    assert_eq!(store.journeys(3).load("c:u"), None);
}

#[test]
fn unwritable_directory_is_a_clear_error() {
    let e = Store::open(
        Path::new("/proc/deflect-cannot-write-here"),
        StoreOptions::default(),
    )
    .err()
    .expect("must fail");
    assert!(
        e.to_string().contains("/proc/deflect-cannot-write-here"),
        "{e}"
    );
}

#[test]
fn a_store_of_another_format_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut b = store.batch();
    b.partition(0, &PartitionSnapshot::default(), &StateChanges::default());
    b.commit().unwrap();
    drop(store);
    // reopening the same format works
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    // a store written before versions existed: partition state but no format key
    store.db.delete_cf(store.cf(CF_META), FORMAT_KEY).unwrap();
    drop(store);
    let e = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("refused");
    let msg = e.to_string();
    assert!(msg.contains("has format 1 (no version recorded)"), "{msg}");
    assert!(
        msg.contains(&format!("reads format {FORMAT_VERSION}")),
        "{msg}"
    );
    assert!(msg.contains("empty state directory"), "{msg}");
}
