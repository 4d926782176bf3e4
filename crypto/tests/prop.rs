//! Property tests: URIs round-trip, decoders never panic on garbage.
#![allow(clippy::unwrap_used)]

use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::uri::{KeyUri, SskKey};
use lichen_crypto::{chk, verify_block, BlockKind, DataFlags, FreenetUri, RoutingKey};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = String> {
    // Any non-empty text that is not a dot path component.
    "[^\u{0}]{1,24}".prop_filter("dot components are rejected", |s| s != "." && s != "..")
}

fn key_uri() -> impl Strategy<Value = KeyUri> {
    prop_oneof![
        (
            any::<[u8; 32]>(),
            any::<[u8; 32]>(),
            proptest::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(r, c, e)| KeyUri::Chk {
                routing_key: RoutingKey(r),
                crypto_key: c,
                extra: e
            }),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), any::<bool>(), name()).prop_map(
            |(a, b, private, docname)| {
                let k = SskPrivate::from_parts(a, b);
                let key = if private {
                    SskKey::Private(k)
                } else {
                    SskKey::Public(k.public())
                };
                KeyUri::Ssk { key, docname }
            }
        ),
        name().prop_map(|keyword| KeyUri::Ksk { keyword }),
        (any::<[u8; 32]>(), any::<[u8; 32]>(), name(), any::<i64>()).prop_map(
            |(a, b, site, edition)| {
                KeyUri::Usk {
                    key: SskKey::Public(SskPrivate::from_parts(a, b).public()),
                    site,
                    edition,
                }
            }
        ),
    ]
}

proptest! {
    #[test]
    fn uri_round_trips(key in key_uri(), meta in proptest::collection::vec(name(), 0..4)) {
        let uri = FreenetUri { key, meta };
        let text = uri.to_string();
        let back = FreenetUri::parse(&text).unwrap();
        prop_assert_eq!(back, uri);
    }

    #[test]
    fn uri_parser_never_panics(s in "\\PC{0,200}") {
        let _ = FreenetUri::parse(&s);
    }

    #[test]
    fn uri_parser_never_panics_on_near_misses(
        ty in prop_oneof![Just("CHK@"), Just("SSK@"), Just("USK@"), Just("KSK@"), Just("freenet:CHK@")],
        rest in "[A-Za-z0-9~,/%.-]{0,120}",
    ) {
        let _ = FreenetUri::parse(&format!("{ty}{rest}"));
    }

    #[test]
    fn block_verify_never_panics(kind in prop_oneof![Just(BlockKind::Chk), Just(BlockKind::Ssk)],
                                 key in any::<[u8; 32]>(),
                                 len_delta in -3i64..3, fill in any::<u8>()) {
        let len = usize::try_from(kind.block_len() as i64 + len_delta).unwrap();
        let block = vec![fill; len];
        prop_assert!(verify_block(kind, &RoutingKey(key), &block).is_err());
    }

    #[test]
    fn chk_round_trips(data in proptest::collection::vec(any::<u8>(), 0..2048), metadata in any::<bool>()) {
        let flags = DataFlags { metadata, ..DataFlags::default() };
        let (k, block) = chk::encode(&data, flags).unwrap();
        verify_block(BlockKind::Chk, &k.routing_key, &block).unwrap();
        let uri = FreenetUri::from(&k);
        let k2 = FreenetUri::parse(&uri.to_string()).unwrap().key.chk_key().unwrap();
        prop_assert_eq!(chk::decode(&k2, &block).unwrap(), data);
    }

    #[test]
    fn chk_bit_flips_are_caught(pos in 0usize..chk::BLOCK_LEN, bit in 0u8..8) {
        let (k, mut block) = chk::encode(b"some data", DataFlags::default()).unwrap();
        block[pos] ^= 1 << bit;
        prop_assert!(chk::decode(&k, &block).is_err());
    }

    #[test]
    fn ssk_bit_flips_are_caught(pos in 0usize..lichen_crypto::ssk::BLOCK_LEN, bit in 0u8..8) {
        let k = SskPrivate::from_parts([5; 32], [6; 32]);
        let (rk, mut block) = k.encode("d", b"some data", DataFlags::default()).unwrap();
        block[pos] ^= 1 << bit;
        prop_assert!(verify_block(BlockKind::Ssk, &rk, &block).is_err());
    }
}
