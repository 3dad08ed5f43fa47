use super::*;
use crate::reading::Reading;

/// A reading of source `h1` (shared with other modules' tests of the store).
pub(crate) fn reading(seq: u64, prev: Option<Cid>) -> Reading {
    Reading {
        joins: Vec::new(),
        aqi: None,
        seq,
        prev,
        time: 1_000 + seq,
        unit: "%RH".into(),
        topic: "humidity".into(),
        value: 40.0,
        source: "h1".into(),
    }
}

/// A batch that stores `r` and links it.
pub(crate) fn linked_batch(r: &Reading) -> (Cid, Batch) {
    let (cid, bytes) = r.encode();
    let size = bytes.len() as u64;
    (
        cid,
        Batch {
            blocks: vec![(cid, bytes)],
            linked: vec![(cid, r.clone(), size)],
            ..Batch::default()
        },
    )
}

/// Expires the humidity readings older than `before_ms`, as retention does; how many.
async fn expire_before(store: &Store, before_ms: u64) -> usize {
    let expire: Vec<_> = store
        .expired("humidity", before_ms, 100)
        .unwrap()
        .into_iter()
        .map(|(t, c)| ("humidity".to_string(), t, c))
        .collect();
    let n = expire.len();
    store
        .write(Batch {
            expire,
            ..Batch::default()
        })
        .await
        .unwrap();
    n
}

#[tokio::test]
async fn write_reopen_history_chain_and_expire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.redb");
    let mut prev = None;
    let mut cids = Vec::new();
    {
        let store = Store::open(&path).unwrap();
        for seq in 1..=10 {
            let r = reading(seq, prev);
            let (cid, batch) = linked_batch(&r);
            store.write(batch).await.unwrap();
            prev = Some(cid);
            cids.push(cid);
        }
        store.shutdown();
    }
    let store = Store::open(&path).unwrap();
    let head = store.head("humidity", "h1").unwrap().unwrap();
    assert_eq!((head.seq, head.cid), (10, cids[9]));
    let hist = store.history("humidity", 0, 100).unwrap();
    assert_eq!(
        hist.iter().map(|h| h.reading.seq).collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    assert_eq!(store.history("humidity", 1_005, 100).unwrap().len(), 6);
    let walk = store.chain(&cids[9], 6, 0, 100).unwrap();
    assert_eq!(walk.blocks.len(), 4, "seq 10..7, stopping above seq 6");
    assert_eq!(walk.end, WalkEnd::Done);
    assert!(crate::reading::verify_cid(&cids[9], &walk.blocks[0]));
    assert!(store.is_linked(&cids[3]).unwrap());

    assert_eq!(expire_before(&store, 1_004).await, 3);
    assert_eq!(store.history("humidity", 0, 100).unwrap().len(), 7);
    assert!(!store.has(&cids[0]).unwrap());
    assert_eq!(store.stats().unwrap().blocks, 7);

    // Everything past retention: the head keeps its block (no longer linked or listed), the
    // rest go with their bytes.
    assert_eq!(expire_before(&store, u64::MAX).await, 7);
    assert!(store.history("humidity", 0, 100).unwrap().is_empty());
    assert!(
        store.get(&cids[9]).unwrap().is_some(),
        "the head's block stays"
    );
    assert!(!store.is_linked(&cids[9]).unwrap());
    assert!(!store.has(&cids[8]).unwrap());
    assert_eq!(store.stats().unwrap().blocks, 1);
    let txn = store.shared.read().unwrap();
    let bytes = txn.open_table(BLOCK_BYTES).unwrap().len().unwrap();
    assert_eq!(bytes, 1, "no bytes left behind by an expired block");
}

#[tokio::test]
async fn pending_survive_until_linked() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("b.redb")).unwrap();
    let first = reading(1, None);
    let (c1, _) = first.encode();
    let second = reading(2, Some(c1));
    let (c2, b2) = second.encode();
    store
        .write(Batch {
            blocks: vec![(c2, b2)],
            pending: vec![c2],
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(store.pending().unwrap().len(), 1);
    assert!(!store.is_linked(&c2).unwrap());
    let (_, mut batch) = linked_batch(&first);
    batch.linked.push((c2, second.clone(), 10));
    store.write(batch).await.unwrap();
    assert!(store.pending().unwrap().is_empty());
    assert_eq!(store.head("humidity", "h1").unwrap().unwrap().seq, 2);
}

#[test]
fn damaged_file_is_reported_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.redb");
    std::fs::write(&path, vec![0x5a; 8192]).unwrap();
    let err = Store::open(&path)
        .err()
        .expect("garbage must not open")
        .to_string();
    assert!(err.contains("move it aside"), "{err}");
}

#[tokio::test]
async fn concurrent_readings_are_sibling_heads_until_a_reading_joins_them() {
    let store = Store::in_memory().unwrap();
    let root = reading(1, None);
    let (root_cid, b) = linked_batch(&root);
    store.write(b).await.unwrap();
    // Two writers follow the root at once: two heads of one source, same height.
    let mut left = reading(2, Some(root_cid));
    left.value = 41.0;
    let mut right = reading(2, Some(root_cid));
    right.value = 42.0;
    let (left_cid, b) = linked_batch(&left);
    store.write(b).await.unwrap();
    let (right_cid, b) = linked_batch(&right);
    store.write(b).await.unwrap();
    let heads = store.heads_of("humidity", "h1").unwrap();
    assert_eq!(heads.len(), 2);
    assert!(heads.iter().all(|h| h.seq == 2));
    assert!(
        heads[0].order_key() > heads[1].order_key(),
        "greatest first"
    );
    assert_eq!(store.head("humidity", "h1").unwrap().unwrap(), heads[0]);
    // A reading that follows one and joins the other leaves one head.
    let mut join = reading(3, Some(heads[0].cid));
    join.joins = vec![heads[1].cid];
    let (join_cid, b) = linked_batch(&join);
    store.write(b).await.unwrap();
    let heads = store.heads_of("humidity", "h1").unwrap();
    assert_eq!(
        heads.iter().map(|h| h.cid).collect::<Vec<_>>(),
        vec![join_cid]
    );
    assert!(store.is_linked(&left_cid).unwrap() && store.is_linked(&right_cid).unwrap());
}

#[tokio::test]
async fn a_hole_filled_late_does_not_become_a_head_again() {
    let store = Store::in_memory().unwrap();
    let (c1, b1) = linked_batch(&reading(1, None));
    let r2 = reading(2, Some(c1));
    let (c2, _) = r2.encode();
    let r3 = reading(3, Some(c2));
    // 3 is linked past the missing 2 (a gap), then 2 arrives.
    store.write(b1).await.unwrap();
    let (c3, b3) = linked_batch(&r3);
    store.write(b3).await.unwrap();
    let (_, b2) = linked_batch(&r2);
    store.write(b2).await.unwrap();
    let heads = store.heads_of("humidity", "h1").unwrap();
    assert_eq!(heads.iter().map(|h| h.cid).collect::<Vec<_>>(), vec![c3]);
}

#[test]
fn a_store_with_the_old_single_head_table_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.redb");
    let r = reading(7, None);
    let (cid, bytes) = r.encode();
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut blocks = txn.open_table(OLD_BLOCKS).unwrap();
            blocks
                .insert(cid.to_bytes().as_slice(), bytes.as_slice())
                .unwrap();
            let mut old = txn.open_table(OLD_HEADS).unwrap();
            old.insert(("humidity", "h1"), (7, cid.to_bytes().as_slice()))
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    let head = store.head("humidity", "h1").unwrap().unwrap();
    assert_eq!((head.seq, head.time, head.cid), (7, r.time, cid));
    store.shutdown();
    drop(store);
    // Opening again finds nothing left to migrate.
    let store = Store::open(&path).unwrap();
    assert_eq!(store.heads(&[]).unwrap().len(), 1);
    store.shutdown();
}

/// What a crash leaves: the redb file as of its last checkpoint, and the log since then.
/// Opening applies the log; applying it again on top of a store that already holds it
/// (a crash between a checkpoint and the log's truncation) changes nothing.
#[tokio::test]
async fn the_log_is_applied_at_open_and_applying_it_twice_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.redb");
    let log = wal::Wal::path_for(&path);
    let mut prev = None;
    let mut cids = Vec::new();
    let store = Store::open(&path).unwrap();
    for seq in 1..=5 {
        let (cid, batch) = linked_batch(&reading(seq, prev));
        store.write(batch).await.unwrap();
        prev = Some(cid);
        cids.push(cid);
    }
    // Within a second of the first write no checkpoint has run: all five are in the log.
    let logged = std::fs::read(&log).unwrap();
    assert!(!logged.is_empty(), "acknowledged writes are in the log");
    store.shutdown();
    drop(store);
    let logged_now = |what: &str| {
        let (wal, batches) = wal::Wal::open(&path).unwrap();
        assert!(batches.is_empty() && wal.is_empty(), "{what}");
    };
    logged_now("a clean stop checkpoints and empties the log");

    let check = |store: &Store| {
        let heads = store.heads_of("humidity", "h1").unwrap();
        assert_eq!(heads.len(), 1, "one head: {heads:?}");
        assert_eq!((heads[0].seq, heads[0].cid), (5, cids[4]));
        let seqs: Vec<u64> = store
            .history("humidity", 0, 100)
            .unwrap()
            .iter()
            .map(|h| h.reading.seq)
            .collect();
        assert_eq!(seqs, (1..=5).collect::<Vec<_>>());
        assert!(cids.iter().all(|c| store.is_linked(c).unwrap()));
        let txn = store.shared.read().unwrap();
        let copies = txn.open_table(BLOCK_BYTES).unwrap().len().unwrap();
        assert_eq!(copies, 5, "a block applied again keeps its one copy");
    };
    // The log again on top of the store that holds its batches already.
    std::fs::write(&log, &logged).unwrap();
    let store = Store::open(&path).unwrap();
    check(&store);
    store.shutdown();
    drop(store);
    logged_now("applied, then emptied");

    // The log on top of a store whose file lost everything since its creation.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&log, &logged).unwrap();
    let store = Store::open(&path).unwrap();
    check(&store);
}

/// A store written before blocks were kept in write order (blocks and linked marks keyed by
/// CID) opens with every block, mark, head and history entry, and new blocks follow it.
#[tokio::test]
async fn a_store_with_blocks_keyed_by_cid_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.redb");
    let mut prev = None;
    let mut chain = Vec::new();
    for seq in 1..=3 {
        let r = reading(seq, prev);
        prev = Some(r.encode().0);
        chain.push(r);
    }
    // Stored but never linked: its parent (seq 9) never came.
    let waiting = reading(10, Some(reading(9, None).encode().0));
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut blocks = txn.open_table(OLD_BLOCKS).unwrap();
            let mut linked = txn.open_table(OLD_LINKED).unwrap();
            let mut by_time = txn.open_table(BY_TIME).unwrap();
            let mut heads = txn.open_table(HEADS).unwrap();
            for r in chain.iter().chain([&waiting]) {
                let (cid, bytes) = r.encode();
                blocks
                    .insert(cid.to_bytes().as_slice(), bytes.as_slice())
                    .unwrap();
            }
            for r in &chain {
                let (cid, bytes) = r.encode();
                let key = cid.to_bytes();
                linked.insert(key.as_slice(), r.seq).unwrap();
                by_time
                    .insert(("humidity", r.time, key.as_slice()), bytes.len() as u64)
                    .unwrap();
            }
            let (top, _) = chain[2].encode();
            heads
                .insert(
                    ("humidity", "h1", top.to_bytes().as_slice()),
                    (3, chain[2].time),
                )
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    for r in &chain {
        let (cid, bytes) = r.encode();
        assert_eq!(store.get(&cid).unwrap(), Some(bytes), "seq {}", r.seq);
        assert!(store.is_linked(&cid).unwrap(), "seq {} stays linked", r.seq);
    }
    let (waiting_cid, waiting_bytes) = waiting.encode();
    assert_eq!(store.get(&waiting_cid).unwrap(), Some(waiting_bytes));
    assert!(store.has(&waiting_cid).unwrap());
    assert!(
        !store.is_linked(&waiting_cid).unwrap(),
        "an unlinked block stays unlinked"
    );
    let walk = store.chain(&chain[2].encode().0, 0, 0, 100).unwrap();
    assert_eq!((walk.blocks.len(), walk.end), (3, WalkEnd::Done));
    let seqs: Vec<u64> = store
        .history("humidity", 0, 100)
        .unwrap()
        .iter()
        .map(|h| h.reading.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // A new reading follows the migrated head, in the slot after the moved blocks.
    let (c4, batch) = linked_batch(&reading(4, Some(chain[2].encode().0)));
    store.write(batch).await.unwrap();
    assert_eq!(store.head("humidity", "h1").unwrap().unwrap().cid, c4);
    assert_eq!(store.stats().unwrap().blocks, 5);
    {
        let txn = store.shared.read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n == "blocks" || n == "linked"),
            "the old tables are gone: {names:?}"
        );
        let bytes = txn.open_table(BLOCK_BYTES).unwrap();
        assert_eq!(next_slot(&bytes).unwrap(), 5, "slots 0..=3 moved, 4 new");
    }
    store.shutdown();
}

/// A read that runs while the writer replaces the handle after a disk error (a full disk)
/// finishes on the old handle or starts on the new one: it never sees the old one closed
/// under it ("Database has been closed" made a publish fail with a 500 in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_during_a_reopen_never_see_the_handle_closed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.redb");
    let store = Store::open(&path).unwrap();
    let mut prev = None;
    // Enough blocks that a walk reads pages a fresh handle has not cached.
    let mut batch = Batch::default();
    for seq in 1..=3_000 {
        let (cid, one) = linked_batch(&reading(seq, prev));
        batch.blocks.extend(one.blocks);
        batch.linked.extend(one.linked);
        prev = Some(cid);
    }
    store.write(batch).await.unwrap();
    let top = prev.unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let walk = store.chain(&top, 0, 0, 3_000).unwrap();
                assert_eq!(walk.blocks.len(), 3_000);
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..200 {
        store.shared.reopen(|_| Ok(())).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("no read failed");
    assert!(reads > 0);
    store.shutdown();
}
