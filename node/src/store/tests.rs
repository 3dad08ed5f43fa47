use super::*;
use crate::reading::Reading;

fn reading(seq: u64, prev: Option<Cid>) -> Reading {
    Reading {
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

fn linked_batch(r: &Reading) -> (Cid, Batch) {
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
    let chain = store.chain(&cids[9], 6, 0, 100).unwrap();
    assert_eq!(chain.len(), 4, "seq 10..7, stopping above seq 6");
    assert!(crate::reading::verify_cid(&cids[9], &chain[0]));
    assert!(store.is_linked(&cids[3]).unwrap());

    let old = store.expired("humidity", 1_004, 100).unwrap();
    assert_eq!(old.len(), 3);
    let expire = old
        .into_iter()
        .map(|(t, c)| ("humidity".to_string(), t, c))
        .collect();
    store
        .write(Batch {
            expire,
            ..Batch::default()
        })
        .await
        .unwrap();
    assert_eq!(store.history("humidity", 0, 100).unwrap().len(), 7);
    assert!(!store.has(&cids[0]).unwrap());
    assert_eq!(store.stats().unwrap().blocks, 7);
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
