#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use lichen_client::metadata::Metadata;
use lichen_client::{
    fetch, fetch_metadata, insert, BlockSource, ErrorKind, FetchError, FetchOptions, HasKind,
    InsertOptions, MemoryBlocks, NullSink, Progress,
};
use lichen_crypto::{BlockKind, Codec, FreenetUri, KeyUri};
use std::sync::atomic::Ordering;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

#[test]
fn chk_round_trips_at_every_size_class() {
    rt().block_on(async {
        let sizes = [
            0,
            1,
            1000,
            32 * 1024,
            32 * 1024 + 1,
            1024 * 1024,
            1024 * 1024 + 1,
            4 * 1024 * 1024 + 5,
            9 * 1024 * 1024 + 77,
        ];
        for (i, &len) in sizes.iter().enumerate() {
            for data in [random_bytes(len, i as u64), text_bytes(len)] {
                let store = MemoryBlocks::new();
                let r = put(&store, &data, &InsertOptions::default()).await;
                assert_eq!(r.size, len as u64);
                assert_eq!(r.sha256, lichen_crypto::sha256(&data));
                let (out, fr) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
                assert_eq!(out.len(), data.len(), "len {len}");
                assert!(out == data, "len {len}");
                assert_eq!(fr.size, len as u64);
            }
        }
    });
}

#[test]
fn compression_is_chosen_when_it_helps() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let text = text_bytes(3 * 1024 * 1024);
        let r = put(&store, &text, &InsertOptions::default()).await;
        assert_eq!(r.codec, Codec::Zstd);
        assert!(r.compressed_size < r.size / 4);
        let random = random_bytes(3 * 1024 * 1024, 9);
        let r2 = put(&store, &random, &InsertOptions::default()).await;
        assert_eq!(r2.codec, Codec::None);
        let opts = InsertOptions {
            compress: false,
            ..InsertOptions::default()
        };
        let r3 = put(&store, &text, &opts).await;
        assert_eq!(r3.codec, Codec::None);
        for (uri, data) in [(&r.uri, &text), (&r2.uri, &random), (&r3.uri, &text)] {
            let (out, _) = get(&store, uri, &FetchOptions::default()).await.unwrap();
            assert!(&out == data);
        }
    });
}

#[test]
fn chk_is_convergent_and_get_chk_only_matches() {
    rt().block_on(async {
        let data = random_bytes(200_000, 1);
        let a = MemoryBlocks::new();
        let r1 = put(&a, &data, &InsertOptions::default()).await;
        let r2 = insert(&NullSink, &data[..], &InsertOptions::default())
            .await
            .unwrap();
        assert_eq!(r1.uri, r2.uri);
        // Randomised keys: another URI every time, still fetchable.
        let opts = InsertOptions {
            randomise_keys: Some(true),
            ..InsertOptions::default()
        };
        let r3 = put(&a, &data, &opts).await;
        let r4 = put(&a, &data, &opts).await;
        assert_ne!(r3.uri, r1.uri);
        assert_ne!(r3.uri, r4.uri);
        let (out, _) = get(&a, &r3.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, data);
    });
}

#[test]
fn mime_and_filename() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let opts = InsertOptions {
            filename: Some("page.html".into()),
            ..InsertOptions::default()
        };
        let r = put(&store, b"<p>hi</p>", &opts).await;
        assert_eq!(r.uri.meta, vec!["page.html".to_string()]);
        assert_eq!(r.mime.as_deref(), Some("text/html"));
        let (out, fr) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, b"<p>hi</p>");
        assert_eq!(fr.mime.as_deref(), Some("text/html"));
        // Explicit MIME on a large file.
        let data = random_bytes(100_000, 3);
        let opts = InsertOptions {
            mime: Some("application/x-test".into()),
            ..InsertOptions::default()
        };
        let r = put(&store, &data, &opts).await;
        let (_, fr) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(fr.mime.as_deref(), Some("application/x-test"));
        // Plain data with a file name: MIME guessed, extra components refused.
        let r = put(&store, b"plain", &InsertOptions::default()).await;
        let named = r.uri.clone().with_meta("x.txt");
        let (_, fr) = get(&store, &named, &FetchOptions::default()).await.unwrap();
        assert_eq!(fr.mime.as_deref(), Some("text/plain"));
        let too_many = named.with_meta("y");
        let e = get(&store, &too_many, &FetchOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::TooManyPathComponents(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::BadPath);
    });
}

#[test]
fn erasures_up_to_the_check_count_are_recovered_one_more_is_a_clear_error() {
    rt().block_on(async {
        let data = random_bytes(4 * 1024 * 1024 + 100_000, 5);
        let store = MemoryBlocks::new();
        let r = put(&store, &data, &InsertOptions::default()).await;
        let Some(Metadata::Splitfile(sf)) =
            fetch_metadata(&store, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
        else {
            panic!("expected a splitfile")
        };
        assert_eq!(sf.segments.len(), 2);
        assert_eq!(sf.segments[0].data, 128);
        // Remove `check` blocks of each segment, mixing data and check blocks.
        for seg in &sf.segments {
            for i in 0..usize::from(seg.check) {
                let idx = (i * 2) % seg.total();
                let idx = if i * 2 >= seg.total() {
                    i * 2 - seg.total() + 1
                } else {
                    idx
                };
                assert!(store.remove(BlockKind::Chk, &seg.key(idx).unwrap().routing_key));
            }
        }
        let mut last = None;
        let mut out = Vec::new();
        fetch(
            &store,
            &r.uri,
            &mut out,
            &FetchOptions::default(),
            |p: Progress| last = Some(p),
        )
        .await
        .unwrap();
        assert!(out == data);
        let p = last.unwrap();
        assert_eq!(p.needed, sf.block_counts().0);
        assert_eq!(p.total, sf.block_counts().1);
        assert_eq!(p.done, p.needed);
        // One more erasure in segment 1: not enough blocks.
        let seg = &sf.segments[1];
        let victim = (0..seg.total())
            .find(|&i| store.remove(BlockKind::Chk, &seg.key(i).unwrap().routing_key))
            .unwrap();
        let _ = victim;
        let e = get(&store, &r.uri, &FetchOptions::default())
            .await
            .unwrap_err();
        match &e {
            FetchError::NotEnoughBlocks {
                segment,
                have,
                needed,
                total,
            } => {
                assert_eq!(*segment, 1);
                assert_eq!(*needed, usize::from(seg.data));
                assert_eq!(*have, usize::from(seg.data) - 1);
                assert_eq!(*total, seg.total());
            }
            e => panic!("{e}"),
        }
        assert!(e.to_string().contains("have"), "{e}");
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.is_retryable());
    });
}

#[test]
fn corrupt_blocks_count_as_missing() {
    rt().block_on(async {
        let data = random_bytes(300_000, 6);
        let store = MemoryBlocks::new();
        let r = put(&store, &data, &InsertOptions::default()).await;
        let Some(Metadata::Splitfile(sf)) =
            fetch_metadata(&store, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
        else {
            panic!()
        };
        let seg = &sf.segments[0];
        for i in 0..usize::from(seg.check) {
            let rk = seg.key(i).unwrap().routing_key;
            let mut b = store.fetch_raw(rk);
            b[100] ^= 1;
            store.corrupt(BlockKind::Chk, &rk, b);
        }
        let (out, _) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert_eq!(out, data);
        // A corrupt top block is "not found" (a node served garbage).
        let top = r.uri.key.chk_key().unwrap().routing_key;
        store.corrupt(BlockKind::Chk, &top, vec![0; 10]);
        let e = get(&store, &r.uri, &FetchOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::DataNotFound), "{e}");
    });
}

trait FetchRaw {
    fn fetch_raw(&self, rk: lichen_crypto::RoutingKey) -> Vec<u8>;
}
impl FetchRaw for MemoryBlocks {
    fn fetch_raw(&self, rk: lichen_crypto::RoutingKey) -> Vec<u8> {
        futures::executor::block_on(lichen_client::BlockSource::fetch(self, BlockKind::Chk, rk))
            .unwrap()
    }
}

#[test]
fn max_size_is_enforced_before_data_is_fetched() {
    rt().block_on(async {
        let data = random_bytes(2_000_000, 7);
        let store = MemoryBlocks::new();
        let r = put(&store, &data, &InsertOptions::default()).await;
        let counting = Counting {
            inner: Some(&store),
            ..Counting::default()
        };
        let opts = FetchOptions {
            max_size: 1_000_000,
            ..FetchOptions::default()
        };
        let e = get(&counting, &r.uri, &opts).await.unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::TooBig {
                    size: 2_000_000,
                    max: 1_000_000
                }
            ),
            "{e}"
        );
        assert_eq!(e.kind(), ErrorKind::TooBig);
        assert_eq!(
            counting.fetches.load(Ordering::Relaxed),
            1,
            "only the metadata block"
        );
        // Small single-block data too.
        let r = put(&store, &random_bytes(5000, 1), &InsertOptions::default()).await;
        let opts = FetchOptions {
            max_size: 100,
            ..FetchOptions::default()
        };
        assert!(matches!(
            get(&store, &r.uri, &opts).await.unwrap_err(),
            FetchError::TooBig { .. }
        ));
    });
}

#[test]
fn multi_level_metadata() {
    rt().block_on(async {
        // ~22 MiB of incompressible data: 704 data + 704 check blocks,
        // 90 KB of block keys: the metadata needs a second level.
        let data = random_bytes(22 * 1024 * 1024, 8);
        let store = MemoryBlocks::new();
        let r = put(&store, &data, &InsertOptions::default()).await;
        let (out, _) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
        assert!(out == data);
        // The top block is a metadata splitfile.
        let top = r.uri.key.chk_key().unwrap();
        assert!(top.flags.metadata);
        let bytes = lichen_crypto::chk::decode(&top, &store.fetch_raw(top.routing_key)).unwrap();
        let bytes = if top.flags.codec == Codec::Zstd {
            zstd::decode_all(&bytes[..]).unwrap()
        } else {
            bytes
        };
        match Metadata::from_bytes(&bytes).unwrap() {
            Metadata::Splitfile(sf) => assert!(sf.metadata),
            m => panic!("{m:?}"),
        }
    });
}

#[test]
fn futures_are_send_on_a_multi_thread_runtime() {
    let rt = rt();
    let store = std::sync::Arc::new(MemoryBlocks::new());
    let s2 = store.clone();
    let uri = rt
        .block_on(rt.spawn(async move {
            insert(
                &s2,
                &random_bytes(100_000, 2)[..],
                &InsertOptions::default(),
            )
            .await
            .unwrap()
            .uri
        }))
        .unwrap();
    let out = rt
        .block_on(rt.spawn(async move {
            let mut out = Vec::new();
            fetch(&store, &uri, &mut out, &FetchOptions::default(), |_| {})
                .await
                .unwrap();
            out
        }))
        .unwrap();
    assert_eq!(out, random_bytes(100_000, 2));
}

#[test]
fn insert_only_uris_cannot_be_fetched() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        for s in ["CHK@", "SSK@"] {
            let e = get(
                &store,
                &FreenetUri::parse(s).unwrap(),
                &FetchOptions::default(),
            )
            .await
            .unwrap_err();
            assert!(matches!(e, FetchError::InvalidUri(_)), "{e}");
            assert_eq!(e.kind(), ErrorKind::BadUri);
        }
        let e = get(
            &store,
            &FreenetUri::new(KeyUri::Ksk {
                keyword: "nothing-here".into(),
            }),
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FetchError::DataNotFound));
    });
}

/// A source that records the order of the keys it is asked for.
#[derive(Debug)]
struct Recording<'a> {
    inner: &'a MemoryBlocks,
    asked: std::sync::Mutex<Vec<lichen_crypto::RoutingKey>>,
}

impl BlockSource for Recording<'_> {
    async fn fetch(
        &self,
        kind: BlockKind,
        key: lichen_crypto::RoutingKey,
    ) -> Result<Vec<u8>, lichen_client::SourceError> {
        self.asked.lock().unwrap().push(key);
        self.inner.fetch(kind, key).await
    }
}

#[test]
fn a_download_asks_for_each_segments_blocks_in_a_random_order() {
    // In file order, each neighbour would get its arc of the file in
    // order (issue 15): the order is a permutation drawn per download.
    rt().block_on(async {
        let data = random_bytes(4 * 1024 * 1024 + 100_000, 9);
        let store = MemoryBlocks::new();
        let r = put(&store, &data, &InsertOptions::default()).await;
        let Some(Metadata::Splitfile(sf)) =
            fetch_metadata(&store, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
        else {
            panic!("expected a splitfile")
        };
        let seg = &sf.segments[0];
        let index_of = |k: &lichen_crypto::RoutingKey| {
            (0..seg.total()).find(|&i| seg.key(i).unwrap().routing_key == *k)
        };
        let data = &data;
        let order_with = |seed: u64| {
            let store = &store;
            let uri = r.uri.clone();
            async move {
                let rec = Recording {
                    inner: store,
                    asked: std::sync::Mutex::new(Vec::new()),
                };
                let opts = FetchOptions {
                    block_concurrency: 1,
                    segments_ahead: 1,
                    order_seed: seed,
                    ..FetchOptions::default()
                };
                let (out, _) = get(&rec, &uri, &opts).await.unwrap();
                assert!(out == *data);
                rec.asked.into_inner().unwrap()
            }
        };
        let asked = order_with(7).await;
        let first: Vec<usize> = asked.iter().filter_map(&index_of).collect();
        let k = usize::from(seg.data);
        // Every data block of segment 0 once, no check block (none was
        // missing), and not in file order.
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..k).collect::<Vec<_>>());
        assert_ne!(first, sorted, "asked in file order");
        // Another download draws another order; the same seed the same.
        let other: Vec<usize> = order_with(8).await.iter().filter_map(&index_of).collect();
        assert_ne!(first, other);
        let again: Vec<usize> = order_with(7).await.iter().filter_map(&index_of).collect();
        assert_eq!(first, again);
    });
}
