//! The group consumer across rebalances: each partition's records are read in batches from the
//! partition's own queue (split off the consumer's before the partition is assigned). A
//! partition that moves to another member, and back after it left, is read on from where it was
//! committed: every record once, in order within a member, except records whose commit failed
//! before their partition moved (a commit during a rebalance can fail with `IllegalGeneration`),
//! which the next owner reads again as Kafka's at-least-once delivery has it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use deflect_kafka::{
    Assignment, ClientSettings, EmbeddedBroker, GroupConsumer, OutputProducer, Seen,
};

const TOPIC: &str = "group-moves";
const PARTITIONS: i32 = 4;

/// Offsets of a partition that may be read twice.
type Repeat = (i32, std::ops::Range<i64>);

struct Member {
    consumer: GroupConsumer,
    assigned: BTreeSet<i32>,
    /// Partitions this member lost at some point.
    revoked: BTreeSet<i32>,
    /// Partitions read to their end (as the reads report it).
    at_end: BTreeSet<i32>,
    /// (partition, offset) of every record read, in reading order.
    got: Vec<(i32, i64)>,
    /// Next offset to commit per partition (a failed commit is tried again with the next).
    pending: BTreeMap<i32, i64>,
    /// The last offset committed per partition.
    committed: BTreeMap<i32, i64>,
    /// Records read but not committed when their partition left this member: (partition,
    /// offsets) another member may read again.
    may_repeat: Vec<Repeat>,
}

impl Member {
    fn join(settings: &ClientSettings) -> Member {
        Member {
            consumer: GroupConsumer::new(settings, "group-moves", TOPIC, true, &[]).unwrap(),
            at_end: BTreeSet::new(),
            assigned: BTreeSet::new(),
            revoked: BTreeSet::new(),
            got: Vec::new(),
            pending: BTreeMap::new(),
            committed: BTreeMap::new(),
            may_repeat: Vec::new(),
        }
    }

    /// Assignment, ends, records read per partition and offsets committed, for a message.
    fn state(&self) -> String {
        let mut per: BTreeMap<i32, usize> = BTreeMap::new();
        for (p, _) in &self.got {
            *per.entry(*p).or_default() += 1;
        }
        format!(
            "assigned {:?} at end {:?} read {per:?} committed {:?} pending {:?}",
            self.assigned, self.at_end, self.committed, self.pending
        )
    }

    /// What this member read of `p` and did not commit may be read again by another.
    fn release(&mut self, p: i32) {
        if let Some(to) = self.pending.remove(&p) {
            let first_read = (self.got.iter()).find(|(q, _)| *q == p).map_or(0, |r| r.1);
            let from = self.committed.get(&p).copied().unwrap_or(first_read);
            self.may_repeat.push((p, from..to));
        }
    }

    /// Leaves the group; returns what it read and what may be read again.
    fn leave(mut self) -> (Vec<(i32, i64)>, Vec<Repeat>) {
        for p in self.pending.keys().copied().collect::<Vec<_>>() {
            self.release(p);
        }
        (
            std::mem::take(&mut self.got),
            std::mem::take(&mut self.may_repeat),
        )
    }

    /// One read, its rebalances applied, and what it read committed before the next.
    fn step(&mut self) {
        let mut records = Vec::new();
        let at_end = &mut self.at_end;
        self.consumer.read(
            &mut records,
            500,
            Duration::from_millis(5),
            &mut |s| match s {
                Seen::Records(p) => {
                    at_end.remove(&p);
                }
                Seen::End(p) => {
                    at_end.insert(p);
                }
            },
        );
        for r in &records {
            self.got.push((r.partition(), r.offset()));
            self.pending.insert(r.partition(), r.offset() + 1);
        }
        drop(records);
        for a in self.consumer.take_assignments() {
            match a {
                Assignment::Assigned(ps) => self.assigned.extend(ps),
                Assignment::Revoked(ps) => {
                    for p in ps {
                        self.assigned.remove(&p);
                        self.revoked.insert(p);
                        self.release(p);
                    }
                }
            }
        }
        let next: Vec<(i32, i64)> = self.pending.iter().map(|(p, o)| (*p, *o)).collect();
        if self.consumer.commit_sync(&next).is_ok() {
            self.committed.extend(std::mem::take(&mut self.pending));
        }
    }
}

/// Sends `n` records, a partition in turn.
fn produce(p: &mut OutputProducer, n: usize) {
    for i in 0..n {
        let partition = (i % PARTITIONS as usize) as i32;
        p.send(TOPIC, Some(b"k"), b"record", None, Some(partition))
            .unwrap();
    }
    p.flush(Duration::from_secs(10)).unwrap();
}

fn check(done: bool, state: impl FnOnce() -> String) -> Result<(), String> {
    if done {
        Ok(())
    } else {
        Err(state())
    }
}

fn both(a: &Member, b: &Member) -> String {
    format!("first: {}; second: {}", a.state(), b.state())
}

/// Steps until `done` says so (`Err` with the members' state while not).
fn until(what: &str, mut done: impl FnMut() -> Result<(), String>) {
    let start = Instant::now();
    while let Err(state) = done() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "timed out: {what}; {state}"
        );
    }
}

#[test]
fn partitions_moving_between_members_are_read_once_each() {
    let broker = EmbeddedBroker::start(&[(TOPIC, PARTITIONS)]).unwrap();
    let settings = broker.settings();
    let mut producer = OutputProducer::new(&settings).unwrap();
    produce(&mut producer, 400);

    // one member reads everything
    let mut a = Member::join(&settings);
    until(
        "the first member reads 400 records, to the end of each partition",
        || {
            a.step();
            check(
                a.got.len() == 400 && a.at_end.len() == PARTITIONS as usize,
                || a.state(),
            )
        },
    );
    assert_eq!(a.assigned.len(), PARTITIONS as usize);

    // a second member joins: some partitions move to it
    let mut b = Member::join(&settings);
    until("the second member gets partitions", || {
        a.step();
        b.step();
        check(
            !b.assigned.is_empty() && a.assigned.len() + b.assigned.len() == PARTITIONS as usize,
            || both(&a, &b),
        )
    });
    assert!(a.assigned.is_disjoint(&b.assigned));
    assert!(!a.revoked.is_empty(), "the first member gave partitions up");
    // before any record of them came, the second member's partitions are at their end: it
    // starts where the first committed
    until("the second member's partitions are at their end", || {
        a.step();
        b.step();
        check(b.at_end.is_superset(&b.assigned), || both(&a, &b))
    });
    // (records the first read whose commit failed in the rebalance are read again)
    assert!(
        (b.got.iter()).all(|(p, o)| (a.may_repeat.iter()).any(|(q, r)| q == p && r.contains(o))),
        "{}",
        both(&a, &b)
    );
    produce(&mut producer, 400);
    until("both members read 800 records in all", || {
        a.step();
        b.step();
        let mut all: Vec<_> = a.got.iter().chain(&b.got).collect();
        all.sort();
        all.dedup();
        check(all.len() == 800, || both(&a, &b))
    });
    assert!(!b.got.is_empty());
    let moved: BTreeSet<i32> = b.assigned.clone();

    // the second member leaves: its partitions come back to the first, whose queues for them
    // were split once already
    let (b_got, b_repeat) = b.leave();
    until("the first member has every partition again", || {
        a.step();
        check(a.assigned.len() == PARTITIONS as usize, || a.state())
    });
    produce(&mut producer, 400);
    until("1,200 records in all, every partition at its end", || {
        a.step();
        let mut all: Vec<_> = a.got.iter().chain(&b_got).collect();
        all.sort();
        all.dedup();
        check(
            a.at_end.len() == PARTITIONS as usize && all.len() == 1200,
            || a.state(),
        )
    });
    // the partitions that moved and came back were read on by the first member
    let third: BTreeSet<i32> = (a.got.iter())
        .filter(|(_, offset)| *offset >= 200)
        .map(|(p, _)| *p)
        .collect();
    assert!(moved.is_subset(&third), "{moved:?} {third:?}");

    // every record once, and each member read each partition in order
    for got in [&a.got, &b_got] {
        for p in 0..PARTITIONS {
            let offsets: Vec<i64> = (got.iter())
                .filter(|(q, _)| *q == p)
                .map(|(_, o)| *o)
                .collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
        }
    }
    let mut all: Vec<(i32, i64)> = a.got.iter().chain(&b_got).copied().collect();
    all.sort();
    let mut twice: Vec<(i32, i64)> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    all.dedup();
    let expected: Vec<(i32, i64)> = (0..PARTITIONS)
        .flat_map(|p| (0..300).map(move |o| (p, o)))
        .collect();
    assert_eq!(all, expected);
    let may_repeat: Vec<_> = a.may_repeat.iter().chain(&b_repeat).collect();
    twice.retain(|(p, o)| !may_repeat.iter().any(|(q, r)| q == p && r.contains(o)));
    assert_eq!(
        twice,
        [],
        "read twice though committed; may repeat: {may_repeat:?}"
    );
    // a few more steps read nothing more
    let read = a.got.len();
    for _ in 0..20 {
        a.step();
    }
    assert_eq!(a.got.len(), read);
}
