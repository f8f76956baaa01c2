use super::*;

fn stored() -> StoredJourney {
    StoredJourney {
        timer: Some(99),
        journey: deflect_core::journey::Journey::new(true),
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
        resume_offset: 17,
        ..Default::default()
    };
    let ch = StateChanges {
        timers_put: vec![(99, "c:u".into()), (7, "c:v".into()), (-5, "c:w".into())],
        journeys: vec![("c:u".into(), Some(codec::encode(&stored())))],
        ..Default::default()
    };
    let mut b = store.batch();
    b.partition(3, &snap, &ch);
    let mark = RecordMark {
        offset: 41,
        fingerprint: 0xfeed_0000_0000_beef,
    };
    b.last_record(3, mark);
    let other = StateChanges {
        timers_put: vec![(1, "c:x".into())],
        ..Default::default()
    };
    b.partition(4, &PartitionSnapshot::default(), &other);
    b.commit().unwrap();
    drop(store);

    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let r = store.load_partition(3).unwrap().unwrap();
    assert_eq!(r.snapshot, snap);
    assert_eq!(r.last_record, Some(mark));
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
    assert_eq!(r4.snapshot, PartitionSnapshot::default());
    assert_eq!(r4.last_record, None, "partition 3's mark only");
    assert_eq!(timers(4, Millis::MIN, Millis::MAX), vec![(1, "c:x".into())]);

    let del = StateChanges {
        timers_del: vec![(7, "c:v".into())],
        journeys: vec![("c:u".into(), None)],
        ..Default::default()
    };
    let mut b = store.batch();
    b.partition(3, &snap, &del);
    b.commit().unwrap();
    assert_eq!(timers(3, Millis::MIN, Millis::MAX).len(), 2);
    assert_eq!(store.journeys(3).load("c:u"), None);

    // fired timers go by range: every one of the partition before the instant, one put in the
    // same batch included, and no other partition's
    let fired = StateChanges {
        timers_put: vec![(50, "c:y".into()), (120, "c:z".into())],
        timers_fired_before: Some(99),
        ..Default::default()
    };
    let mut b = store.batch();
    b.partition(3, &snap, &fired);
    let other = StateChanges {
        timers_put: vec![(-7, "c:q".into())],
        ..Default::default()
    };
    b.partition(2, &snap, &other);
    b.commit().unwrap();
    assert_eq!(
        timers(3, Millis::MIN, Millis::MAX),
        vec![(99, "c:u".into()), (120, "c:z".into())]
    );
    assert_eq!(
        timers(2, Millis::MIN, Millis::MAX),
        vec![(-7, "c:q".into())]
    );
    assert_eq!(timers(4, Millis::MIN, Millis::MAX), vec![(1, "c:x".into())]);
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

#[test]
fn a_store_of_format_3_with_its_pending_events_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    {
        // what deflect up to format 3 wrote: a `pending` column family and its version
        let mut o = rocksdb::Options::default();
        o.create_if_missing(true);
        o.create_missing_column_families(true);
        let db = rocksdb::DB::open_cf(&o, dir.path(), ["meta", "pending", "timers"]).unwrap();
        let meta = db.cf_handle("meta").unwrap();
        db.put_cf(meta, FORMAT_KEY, "3").unwrap();
        db.put_cf(db.cf_handle("pending").unwrap(), [0u8; 12], b"x")
            .unwrap();
    }
    let msg = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains("has format 3, this deflect reads format 4"),
        "{msg}"
    );
}

#[test]
fn a_batch_made_for_its_changes_has_room_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let long = "c:".to_string() + &"x".repeat(300);
    let ch = StateChanges {
        timers_put: vec![(99, "c:u".into()), (7, long.as_str().into())],
        timers_del: vec![(5, "c:v".into())],
        timers_fired_before: Some(50),
        journeys: vec![
            ("c:u".into(), Some(codec::encode(&stored()))),
            (long.as_str().into(), Some(vec![7; 1000])),
            ("c:v".into(), None),
        ],
        cohorts: vec![(900_000, Some(vec![1; 2000])), (0, None)],
    };
    let none = StateChanges::default();
    let snaps = [vec![3u8; 5000], Vec::new()];
    let parts = [(0, &snaps[0], &ch), (1, &snaps[1], &none)];
    let room = batch_bytes(parts.iter().map(|(_, s, ch)| (s.as_slice(), *ch)));
    let mut b = store.batch_for(parts.iter().map(|(_, s, ch)| (s.as_slice(), *ch)));
    for (p, snap, ch) in parts {
        b.partition_encoded(p, snap, ch);
    }
    let used = b.wb.size_in_bytes();
    assert!(used > 5000 + 2000 + 1000 + 2 * 300, "{used}");
    // room for every record, and not much more
    assert!(
        room >= used && room < used + 300,
        "room {room} for {used} bytes"
    );
    b.commit().unwrap();
}

#[test]
fn settings_are_recorded_once_and_checked_at_every_start() {
    let dir = tempfile::tempdir().unwrap();
    let a = "site.time_zone=UTC site.interval_minutes=15 heatmap.cell=hour";
    let b = "site.time_zone=UTC site.interval_minutes=60 heatmap.cell=hour";
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        store.check_settings(a).unwrap();
        store.check_settings(a).unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    store.check_settings(a).unwrap();
    let err = store.check_settings(b).unwrap_err().to_string();
    assert!(
        err.contains(&format!("was built with {a}, the configuration says {b}")),
        "{err}"
    );
}

#[test]
fn a_store_open_elsewhere_is_named_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let err = Store::open(dir.path(), StoreOptions::default())
        .err()
        .expect("a second open fails")
        .to_string();
    assert!(
        err.ends_with("is open in another process (its RocksDB lock is held): one deflect per state directory"),
        "{err}"
    );
}

/// Every key and value of the store, in every column family.
fn dump(store: &Store) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for cf in CFS {
        for item in store.db.iterator_cf(store.cf(cf), IteratorMode::Start) {
            let (k, v) = item.unwrap();
            out.push((cf, k.to_vec(), v.to_vec()));
        }
    }
    out
}

/// Partitions 1, 2 and 5 with journeys, timers, cohorts, snapshots and marks.
fn store_with_three_partitions(dir: &Path, settings: &str) -> Store {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    store.check_settings(settings).unwrap();
    let mut b = store.batch();
    for p in [1, 2, 5] {
        let snap = PartitionSnapshot {
            next_offset: 100 + p as i64,
            resume_offset: 50 + p as i64,
            ..Default::default()
        };
        let ch = StateChanges {
            timers_put: vec![(99, format!("c:u{p}").into()), (-4, "c:v".into())],
            journeys: vec![
                (format!("c:u{p}").into(), Some(codec::encode(&stored()))),
                ("c:v".into(), Some(vec![p as u8; 300])),
            ],
            cohorts: vec![(
                900_000,
                Some(codec::encode(&CohortState {
                    start: 900_000,
                    end: 1_800_000,
                    emitted: p as u32,
                    ..Default::default()
                })),
            )],
            ..Default::default()
        };
        b.partition(p, &snap, &ch);
        b.last_record(
            p,
            RecordMark {
                offset: 99 + p as i64,
                fingerprint: p as u64,
            },
        );
    }
    b.commit().unwrap();
    store
}

#[test]
fn exported_partitions_import_key_for_key_and_drop_leaves_the_others() {
    let settings = "site.time_zone=UTC site.interval_minutes=15";
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = store_with_three_partitions(a.path(), settings);
    let before = dump(&src);
    let held: Vec<i32> = src
        .partitions()
        .unwrap()
        .iter()
        .map(|h| h.partition)
        .collect();
    assert_eq!(held, [1, 2, 5]);
    assert_eq!(
        src.partitions().unwrap()[1],
        Held {
            partition: 2,
            next_offset: 102,
            resume_offset: 52,
            size: Size {
                journeys: 2,
                keys: 7,
                bytes: (before.iter())
                    .filter(|(_, k, _)| k.len() >= 4 && k[..4] == prefix(2))
                    .map(|(_, k, v)| (k.len() + v.len()) as u64)
                    .sum(),
            },
        }
    );
    let file = a.path().join("p2-p5.state");
    let moved = src.export(&[5, 2, 5], &file).unwrap();
    assert_eq!(
        moved.iter().map(|m| m.partition).collect::<Vec<_>>(),
        [2, 5]
    );
    // per partition: 2 journeys, 2 timers, 1 cohort, snapshot and mark
    assert!(
        moved
            .iter()
            .all(|m| m.size.journeys == 2 && m.size.keys == 7),
        "{moved:?}"
    );

    let dst = Store::open(b.path(), StoreOptions::default()).unwrap();
    assert_eq!(dst.import(&file, false).unwrap(), moved);
    assert_eq!(dst.settings().unwrap().as_deref(), Some(settings));
    let of = |d: &[(&str, Vec<u8>, Vec<u8>)], ps: &[i32]| -> Vec<(String, Vec<u8>, Vec<u8>)> {
        d.iter()
            .filter(|(cf, k, _)| {
                let partition_key = *cf != CF_META || k.len() <= 4 || k[4..] == *b"last-record";
                partition_key
                    && k.len() >= 4
                    && ps.contains(&i32::from_be_bytes(k[..4].try_into().unwrap()))
            })
            .map(|(cf, k, v)| (cf.to_string(), k.clone(), v.clone()))
            .collect()
    };
    assert_eq!(of(&dump(&dst), &[1, 2, 5]), of(&before, &[2, 5]));
    for p in [2, 5] {
        let (x, y) = (
            src.load_partition(p).unwrap().unwrap(),
            dst.load_partition(p).unwrap().unwrap(),
        );
        assert_eq!(
            (x.snapshot, x.cohorts, x.last_record),
            (y.snapshot, y.cohorts, y.last_record)
        );
    }
    assert_eq!(dst.journeys(5).load("c:u5"), Some(stored()));

    // the source still holds them until they are dropped; then only partition 1 is left
    src.drop_partitions(&[2, 5]).unwrap();
    assert_eq!(of(&dump(&src), &[1, 2, 5]), of(&before, &[1]));
    assert!(src.load_partition(2).unwrap().is_none());
    assert_eq!(src.partitions().unwrap().len(), 1);
}

#[test]
fn imports_refuse_held_partitions_other_settings_and_damaged_files() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = store_with_three_partitions(a.path(), "s1");
    let file = a.path().join("x.state");
    let err = src.export(&[2, 7], &file).unwrap_err().to_string();
    assert!(
        err.ends_with("holds no state of partitions [7] (it holds [1, 2, 5])"),
        "{err}"
    );
    src.export(&[2], &file).unwrap();

    // a store that holds partition 2 refuses it, unless replaced
    let dst = store_with_three_partitions(b.path(), "s1");
    let err = dst.import(&file, false).unwrap_err().to_string();
    assert!(
        err.contains("already holds partitions [2]: import with --replace"),
        "{err}"
    );
    let mut b2 = dst.batch();
    b2.partition(
        2,
        &PartitionSnapshot {
            next_offset: 1,
            ..Default::default()
        },
        &StateChanges {
            journeys: vec![("c:only-here".into(), Some(vec![1]))],
            ..Default::default()
        },
    );
    b2.commit().unwrap();
    dst.import(&file, true).unwrap();
    assert_eq!(
        dst.load_partition(2).unwrap().unwrap().snapshot.next_offset,
        102
    );
    assert_eq!(
        dst.journeys(2).load("c:only-here"),
        None,
        "replaced, not merged"
    );

    // other settings
    let c = tempfile::tempdir().unwrap();
    let other = Store::open(c.path(), StoreOptions::default()).unwrap();
    other.check_settings("s2").unwrap();
    let err = other.import(&file, false).unwrap_err().to_string();
    assert!(
        err.contains("was built with s2, the exported state with s1"),
        "{err}"
    );
    assert!(other.partitions().unwrap().is_empty());

    // a damaged or cut file writes nothing
    let bytes = std::fs::read(&file).unwrap();
    for (name, damaged) in [
        ("flipped", {
            let mut d = bytes.clone();
            d[bytes.len() / 2] ^= 1;
            d
        }),
        ("cut", bytes[..bytes.len() - 10].to_vec()),
        ("other", b"PAR1 not ours at all, but long enough".to_vec()),
    ] {
        let f = c.path().join(name);
        std::fs::write(&f, damaged).unwrap();
        let err = other.import(&f, false).unwrap_err().to_string();
        assert!(err.contains("cannot be imported"), "{name}: {err}");
        assert!(other.partitions().unwrap().is_empty(), "{name}");
    }
}

#[test]
fn an_import_that_stopped_part_way_is_refused_until_replaced() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let src = store_with_three_partitions(a.path(), "s1");
    let file = a.path().join("x.state");
    src.export(&[5], &file).unwrap();
    let dst = Store::open(b.path(), StoreOptions::default()).unwrap();
    dst.import(&file, false).unwrap();
    // as an import leaves it when it stops after its first write: marked, snapshot not there
    dst.db
        .put_cf(dst.cf(CF_META), handoff::unfinished_key(5), [])
        .unwrap();
    dst.db.delete_cf(dst.cf(CF_META), prefix(5)).unwrap();
    let err = dst.load_partition(5).err().expect("refused").to_string();
    assert!(
        err.contains("the import of partition 5 into the state store at"),
        "{err}"
    );
    let err = dst.import(&file, false).unwrap_err().to_string();
    assert!(err.contains("already holds partitions [5]"), "{err}");
    dst.import(&file, true).unwrap();
    assert_eq!(
        dst.load_partition(5).unwrap().unwrap().snapshot.next_offset,
        105
    );
    // a drop clears an unfinished import too (no snapshot yet); one of a partition neither held
    // nor being imported is refused
    dst.db
        .put_cf(dst.cf(CF_META), handoff::unfinished_key(5), [])
        .unwrap();
    dst.db.delete_cf(dst.cf(CF_META), prefix(5)).unwrap();
    let err = dst.drop_partitions(&[5, 6]).unwrap_err().to_string();
    assert!(
        err.ends_with("holds no state of partitions [6] (it holds [])"),
        "{err}"
    );
    dst.drop_partitions(&[5]).unwrap();
    assert!(dst
        .db
        .get_cf(dst.cf(CF_META), handoff::unfinished_key(5))
        .unwrap()
        .is_none());
    assert!(dst.load_partition(5).unwrap().is_none());
}

mod moving {
    use super::*;
    use proptest::prelude::*;

    /// One partition's writes: journeys (key, value bytes), timers, cohorts, its snapshot's
    /// next offset.
    type Writes = (
        Vec<(String, Vec<u8>)>,
        Vec<(Millis, String)>,
        Vec<Millis>,
        i64,
    );

    fn writes() -> impl Strategy<Value = Writes> {
        (
            proptest::collection::vec(
                (
                    "c:[a-z0-9]{1,12}",
                    proptest::collection::vec(any::<u8>(), 0..64),
                ),
                0..12,
            ),
            proptest::collection::vec((-1_000i64..1_000, "c:[a-z]{1,6}"), 0..8),
            proptest::collection::vec(0i64..50, 0..4),
            0i64..1_000_000,
        )
    }

    fn write(store: &Store, p: i32, w: &Writes) {
        let (journeys, timers, cohorts, next) = w;
        let ch = StateChanges {
            journeys: (journeys.iter())
                .map(|(k, v)| (k.as_str().into(), Some(v.clone())))
                .collect(),
            timers_put: (timers.iter())
                .map(|(t, k)| (*t, k.as_str().into()))
                .collect(),
            cohorts: (cohorts.iter())
                .map(|i| {
                    let c = CohortState {
                        start: i * 900_000,
                        end: (i + 1) * 900_000,
                        ..Default::default()
                    };
                    (c.start, Some(codec::encode(&c)))
                })
                .collect(),
            ..Default::default()
        };
        let snap = PartitionSnapshot {
            next_offset: *next,
            ..Default::default()
        };
        let mut b = store.batch();
        b.partition(p, &snap, &ch);
        b.last_record(
            p,
            RecordMark {
                offset: next - 1,
                fingerprint: *next as u64,
            },
        );
        b.commit().unwrap();
    }

    /// The keys and values of partitions `ps`, every column family.
    fn of(store: &Store, ps: &[i32]) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
        dump(store)
            .into_iter()
            .filter(|(_, k, _)| {
                k.len() >= 4 && ps.contains(&i32::from_be_bytes(k[..4].try_into().unwrap()))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
        ))]
        /// Partitions written to one store and moved (export, import, drop) to another that holds
        /// other partitions: the destination then holds exactly the moved partitions' keys and
        /// values besides its own, unchanged, and the source exactly its others.
        #[test]
        fn moved_partitions_arrive_key_for_key(
            src_parts in proptest::collection::btree_map(0i32..6, writes(), 1..5),
            dst_parts in proptest::collection::btree_map(6i32..9, writes(), 0..3),
            pick in any::<u64>(),
        ) {
            let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (src, dst) = (
                Store::open(a.path(), StoreOptions::default()).unwrap(),
                Store::open(b.path(), StoreOptions::default()).unwrap(),
            );
            for (p, w) in &src_parts {
                write(&src, *p, w);
            }
            for (p, w) in &dst_parts {
                write(&dst, *p, w);
            }
            let all: Vec<i32> = src_parts.keys().copied().collect();
            // a non-empty subset of the source's partitions
            let moved: Vec<i32> = (all.iter().enumerate())
                .filter(|(i, _)| pick >> i & 1 == 1 || *i == 0)
                .map(|(_, p)| *p)
                .collect();
            let kept: Vec<i32> = all.iter().copied().filter(|p| !moved.contains(p)).collect();
            let own: Vec<i32> = dst_parts.keys().copied().collect();
            let (src_before, dst_before) = (of(&src, &all), of(&dst, &own));

            let file = a.path().join("moved.state");
            src.export(&moved, &file).unwrap();
            dst.import(&file, false).unwrap();
            src.drop_partitions(&moved).unwrap();

            let mut expected: Vec<_> = (src_before.iter())
                .filter(|(_, k, _)| moved.contains(&i32::from_be_bytes(k[..4].try_into().unwrap())))
                .cloned()
                .chain(dst_before.iter().cloned())
                .collect();
            expected.sort();
            let mut got = of(&dst, &[moved.clone(), own.clone()].concat());
            got.sort();
            prop_assert_eq!(got, expected);
            let mut left: Vec<_> = (src_before.iter())
                .filter(|(_, k, _)| kept.contains(&i32::from_be_bytes(k[..4].try_into().unwrap())))
                .cloned()
                .collect();
            left.sort();
            let mut src_after = of(&src, &all);
            src_after.sort();
            prop_assert_eq!(src_after, left);
            let held: Vec<i32> = dst.partitions().unwrap().iter().map(|h| h.partition).collect();
            let mut want = [moved.clone(), own].concat();
            want.sort();
            prop_assert_eq!(held, want);
        }
    }
}
