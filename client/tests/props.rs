#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use lichen_client::metadata::{Hash, Inline, Manifest, Metadata, Redirect, Segment, Splitfile};
use lichen_client::{fetch_metadata, FetchError, FetchOptions, InsertOptions, MemoryBlocks};
use lichen_crypto::{chk, BlockKind};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{1,12}".prop_filter("not . or ..", |s| s != "." && s != "..")
}

fn mime() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z]{1,8}/[a-z0-9.+-]{1,12}")
}

fn segment() -> impl Strategy<Value = Segment> {
    (1u16..=128, 1u16..=128).prop_flat_map(|(d, c)| {
        proptest::collection::vec(any::<u8>(), (usize::from(d) + usize::from(c)) * 64).prop_map(
            move |keys| Segment {
                data: d,
                check: c,
                keys,
            },
        )
    })
}

fn leaf() -> impl Strategy<Value = Metadata> {
    prop_oneof![
        (
            "[ -~]{1,80}",
            mime(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<[u8; 32]>())
        )
            .prop_map(|(target, mime, size, h)| Metadata::Redirect(Redirect {
                target,
                mime,
                size,
                sha256: h.map(Hash),
            })),
        (
            mime(),
            proptest::collection::vec(any::<u8>(), 0..200),
            any::<[u8; 32]>()
        )
            .prop_map(|(mime, data, h)| Metadata::Inline(Inline {
                mime,
                codec: 0,
                size: data.len() as u64,
                data,
                sha256: Some(Hash(h)),
            })),
        (
            proptest::collection::vec(segment(), 1..4),
            mime(),
            any::<[u8; 32]>(),
            any::<bool>(),
            0u64..32768
        )
            .prop_map(|(segments, mime, h, metadata, slack)| {
                let blocks: u64 = segments.iter().map(|s| u64::from(s.data)).sum();
                let size = blocks * chk::PAYLOAD_LEN as u64 - slack;
                Metadata::Splitfile(Splitfile {
                    size,
                    compressed_size: size,
                    codec: 0,
                    mime,
                    sha256: Hash(h),
                    metadata,
                    segments,
                })
            }),
    ]
}

fn metadata() -> impl Strategy<Value = Metadata> {
    leaf().prop_recursive(3, 24, 6, |inner| {
        (
            proptest::option::of(name()),
            proptest::collection::btree_map(name(), inner, 0..6),
        )
            .prop_map(
                |(default, entries): (Option<String>, BTreeMap<String, Metadata>)| {
                    Metadata::Manifest(Manifest { default, entries })
                },
            )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn metadata_round_trips(m in metadata()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(Metadata::from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Metadata::from_bytes(&bytes);
    }

    #[test]
    fn mutated_metadata_never_panics(m in metadata(), flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = m.to_bytes();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        let _ = Metadata::from_bytes(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Documents over a few 4-block segments; erase up to `check` blocks
    /// per segment: recovered. Erase one more in one segment: a clear error.
    #[test]
    fn splitfile_recovers_from_any_erasures_up_to_the_limit(
        len in 40_000usize..600_000,
        seed in any::<u64>(),
        picks in proptest::collection::vec(any::<prop::sample::Index>(), 64),
        extra_seg in any::<prop::sample::Index>(),
    ) {
        let data = random_bytes(len, seed);
        let store = MemoryBlocks::new();
        let opts = InsertOptions { segment_blocks: 4, compress: false, ..InsertOptions::default() };
        let rt = rt();
        let r = rt.block_on(put(&store, &data, &opts));
        let Some(Metadata::Splitfile(sf)) =
            rt.block_on(fetch_metadata(&store, &r.uri, &FetchOptions::default())).unwrap()
        else { panic!("not a splitfile") };
        let mut p = picks.iter();
        let mut remaining: Vec<Vec<usize>> = Vec::new();
        for seg in &sf.segments {
            let mut idx: Vec<usize> = (0..seg.total()).collect();
            for _ in 0..seg.check {
                let i = p.next().unwrap().index(idx.len());
                let b = idx.swap_remove(i);
                prop_assert!(store.remove(BlockKind::Chk, &seg.key(b).unwrap().routing_key));
            }
            remaining.push(idx);
        }
        let (out, _) = rt.block_on(get(&store, &r.uri, &FetchOptions::default())).unwrap();
        prop_assert!(out == data);
        let s = extra_seg.index(sf.segments.len());
        let seg = &sf.segments[s];
        prop_assert!(store.remove(BlockKind::Chk, &seg.key(remaining[s][0]).unwrap().routing_key));
        match rt.block_on(get(&store, &r.uri, &FetchOptions::default())) {
            Err(FetchError::NotEnoughBlocks { segment, have, needed, total }) => {
                prop_assert_eq!(segment, s);
                prop_assert_eq!(needed, usize::from(seg.data));
                prop_assert_eq!(have, needed - 1);
                prop_assert_eq!(total, seg.total());
            }
            other => prop_assert!(false, "{:?}", other.map(|_| ())),
        }
    }
}
