//! Corrupt and hostile metadata: typed errors, never a panic, a hang or an
//! allocation sized by untrusted counts.
#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use lichen_client::metadata::{
    Hash, Inline, Manifest, Metadata, MetadataError, Redirect, Segment, Splitfile, MAX_METADATA_LEN,
};
use lichen_client::{BlockSink, ErrorKind, FetchError, FetchOptions, HasKind, MemoryBlocks};
use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::{chk, BlockKind, Codec, DataFlags, FreenetUri};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

fn splitfile(segments: Vec<Segment>, size: u64) -> Metadata {
    Metadata::Splitfile(Splitfile {
        size,
        compressed_size: size,
        codec: 0,
        mime: None,
        sha256: Hash([0; 32]),
        metadata: false,
        segments,
    })
}

fn seg(data: u16, check: u16, keys: usize) -> Segment {
    Segment {
        data,
        check,
        keys: vec![0; keys],
    }
}

fn invalid(m: &Metadata) -> MetadataError {
    Metadata::from_bytes(&m.to_bytes()).unwrap_err()
}

#[test]
fn hostile_counts_and_lengths_are_rejected() {
    let block = chk::PAYLOAD_LEN as u64;
    for m in [
        splitfile(vec![seg(200, 200, 400 * 64)], 200 * block),
        splitfile(vec![seg(u16::MAX, 1, 64)], block),
        splitfile(vec![seg(0, 1, 64)], 0),
        splitfile(vec![seg(2, 0, 128)], 2 * block),
        splitfile(vec![seg(2, 2, 4 * 64 - 1)], 2 * block),
        splitfile(vec![seg(2, 2, 4 * 64)], u64::MAX),
        splitfile(vec![seg(2, 2, 4 * 64)], 10),
        splitfile(vec![], 0),
        Metadata::Inline(Inline {
            mime: None,
            codec: 0,
            size: 1 << 40,
            data: vec![1, 2],
            sha256: None,
        }),
        Metadata::Inline(Inline {
            mime: None,
            codec: 77,
            size: 2,
            data: vec![1, 2],
            sha256: None,
        }),
        Metadata::Redirect(Redirect {
            target: String::new(),
            mime: None,
            size: None,
            sha256: None,
        }),
        Metadata::Redirect(Redirect {
            target: "CHK@".into(),
            mime: Some("x".repeat(10_000)),
            size: None,
            sha256: None,
        }),
    ] {
        assert!(matches!(invalid(&m), MetadataError::Invalid(_)), "{m:?}");
    }
    // Bad manifest names.
    for name in ["", "..", "a/b", "x\ny"] {
        let mut man = Manifest::default();
        man.entries.insert(
            name.into(),
            Metadata::Redirect(Redirect {
                target: "KSK@a".into(),
                mime: None,
                size: None,
                sha256: None,
            }),
        );
        assert!(matches!(
            invalid(&Metadata::Manifest(man)),
            MetadataError::Invalid(_)
        ));
    }
    // The refusal does not repeat the name (errors may be logged).
    let mut man = Manifest::default();
    man.entries.insert(
        "secret-diary/2024.html".into(),
        Metadata::Redirect(Redirect {
            target: "KSK@a".into(),
            mime: None,
            size: None,
            sha256: None,
        }),
    );
    let e = invalid(&Metadata::Manifest(man));
    assert!(!e.to_string().contains("secret-diary"), "{e}");
}

#[test]
fn deep_manifests_are_bounded() {
    let mut m = Metadata::Manifest(Manifest::default());
    for _ in 0..40 {
        let mut man = Manifest::default();
        man.entries.insert("d".into(), m);
        m = Metadata::Manifest(man);
    }
    assert!(Metadata::from_bytes(&m.to_bytes()).is_err());
}

#[test]
fn garbage_cbor_never_panics() {
    let good = splitfile(vec![seg(2, 2, 4 * 64)], 2 * chk::PAYLOAD_LEN as u64).to_bytes();
    // Every truncation.
    for n in 0..good.len() {
        assert!(Metadata::from_bytes(&good[..n]).is_err(), "{n}");
    }
    // A byte string declaring 2^62 bytes: no giant allocation.
    let mut huge = vec![0x82, 0x01, 0xa1, 0x66];
    huge.extend_from_slice(b"inline");
    huge.extend_from_slice(&[0xa3, 0x65]);
    huge.extend_from_slice(b"codec");
    huge.push(0x00);
    huge.extend_from_slice(&[0x64]);
    huge.extend_from_slice(b"size");
    huge.push(0x01);
    huge.extend_from_slice(&[0x64]);
    huge.extend_from_slice(b"data");
    huge.extend_from_slice(&[0x5b, 0x40, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(
        Metadata::from_bytes(&huge),
        Err(MetadataError::Cbor(_))
    ));
    // An array declaring 2^32 elements.
    let arr = [
        0x82, 0x01, 0xa1, 0x69, b's', b'p', b'l', b'i', b't', b'f', b'i', b'l', b'e', 0x9a, 0xff,
        0xff, 0xff, 0xff,
    ];
    assert!(Metadata::from_bytes(&arr).is_err());
    // Deep nesting of arrays.
    let deep: Vec<u8> = std::iter::repeat_n(0x81, 100_000).collect();
    assert!(Metadata::from_bytes(&deep).is_err());
    // Unknown version.
    let mut v2 = good.clone();
    v2[1] = 0x02;
    assert_eq!(
        Metadata::from_bytes(&v2),
        Err(MetadataError::UnsupportedVersion(2))
    );
    assert!(matches!(
        Metadata::from_bytes(&vec![0; MAX_METADATA_LEN + 1]),
        Err(MetadataError::TooLarge { .. })
    ));
}

/// Insert `m` as a KSK metadata block.
async fn put_meta_ksk(store: &MemoryBlocks, keyword: &str, m: &Metadata) -> FreenetUri {
    let k = SskPrivate::from_keyword(keyword);
    let bytes = m.to_bytes();
    let (rk, block) = k
        .encode(
            keyword,
            &bytes,
            DataFlags {
                metadata: true,
                codec: Codec::None,
            },
        )
        .unwrap();
    store.put(BlockKind::Ssk, rk, block).await.unwrap();
    FreenetUri::parse(&format!("KSK@{keyword}")).unwrap()
}

fn redirect(target: &str) -> Metadata {
    Metadata::Redirect(Redirect {
        target: target.into(),
        mime: None,
        size: None,
        sha256: None,
    })
}

#[test]
fn redirect_cycles_end_in_too_much_recursion() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let a = put_meta_ksk(&store, "a", &redirect("KSK@b")).await;
        put_meta_ksk(&store, "b", &redirect("KSK@a")).await;
        let e = get(&store, &a, &FetchOptions::default()).await.unwrap_err();
        assert!(matches!(e, FetchError::TooMuchRecursion { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::BadContent);
        // A self-referencing manifest entry chain with meta-strings.
        let mut man = Manifest::default();
        man.entries.insert("x".into(), redirect("KSK@m/x"));
        let m = put_meta_ksk(&store, "m", &Metadata::Manifest(man)).await;
        let e = get(&store, &m.with_meta("x"), &FetchOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::TooMuchRecursion { .. }), "{e}");
        // Garbage metadata in a block: invalid metadata, code 4.
        let k = SskPrivate::from_keyword("g");
        let (rk, block) = k
            .encode(
                "g",
                b"\xff\x00garbage",
                DataFlags {
                    metadata: true,
                    codec: Codec::None,
                },
            )
            .unwrap();
        store.put(BlockKind::Ssk, rk, block).await.unwrap();
        let e = get(
            &store,
            &FreenetUri::parse("KSK@g").unwrap(),
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FetchError::InvalidMetadata(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::BadContent);
        // A zstd bomb in a metadata block is bounded.
        let bomb = zstd::bulk::compress(&vec![0u8; 100 << 20], 19).unwrap();
        assert!(bomb.len() < chk::PAYLOAD_LEN);
        let (key, block) = chk::encode(
            &bomb,
            DataFlags {
                metadata: true,
                codec: Codec::Zstd,
            },
        )
        .unwrap();
        store
            .put(BlockKind::Chk, key.routing_key, block)
            .await
            .unwrap();
        let bomb_uri = FreenetUri::from(&key);
        let e = get(&store, &bomb_uri, &FetchOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::TooBigMetadata { .. }), "{e}");
        assert_eq!(e.kind(), ErrorKind::TooBig);
    });
}

#[test]
fn splitfile_with_missing_blocks_and_wrong_hash() {
    rt().block_on(async {
        // Metadata pointing at blocks nobody has: not enough blocks.
        let store = MemoryBlocks::new();
        let m = splitfile(vec![seg(2, 2, 4 * 64)], 2 * chk::PAYLOAD_LEN as u64);
        let u = put_meta_ksk(&store, "missing", &m).await;
        let e = get(&store, &u, &FetchOptions::default()).await.unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::NotEnoughBlocks {
                    have: 0,
                    needed: 2,
                    total: 4,
                    ..
                }
            ),
            "{e}"
        );
        // Real blocks, wrong content hash in hostile metadata.
        let data = random_bytes(100_000, 3);
        let r = put(&store, &data, &Default::default()).await;
        let Some(Metadata::Splitfile(mut sf)) =
            lichen_client::fetch_metadata(&store, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
        else {
            panic!()
        };
        sf.sha256 = Hash([1; 32]);
        let u = put_meta_ksk(&store, "wronghash", &Metadata::Splitfile(sf)).await;
        let e = get(&store, &u, &FetchOptions::default()).await.unwrap_err();
        assert!(matches!(e, FetchError::HashMismatch), "{e}");
        assert_eq!(e.kind(), ErrorKind::BadContent);
    });
}
