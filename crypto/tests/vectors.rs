//! Test vectors: fixed inputs give fixed URIs and block hashes. A change to
//! any block or URI format breaks these on purpose; update docs/formats.md
//! together with them.
#![allow(clippy::unwrap_used)]

use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::uri::{KeyUri, SskKey};
use lichen_crypto::{chk, sha256, Codec, DataFlags, FreenetUri};

fn hex(b: &[u8]) -> String {
    hex::encode(b)
}

#[test]
fn chk_vector() {
    let (k, block) = chk::encode(b"Hello, Lichen!\n", DataFlags::default()).unwrap();
    assert_eq!(
        FreenetUri::from(&k).to_string(),
        "CHK@Ale2~gI6gd~vOzdUjmkcnxJxN-p8c7FZaTRyQwPUvgQ,ffkCFqj7Kr2y-PgPVP-jileehA1~Sq-qhPNnRHr6gUE,AQEAAAA"
    );
    assert_eq!(hex(&sha256(&block)), hex(&k.routing_key.0));
    assert_eq!(
        hex(&k.crypto_key),
        "7df90216a8fb2abdb2fcf80f54ffe38a579e840d7e4aafea84f367447afa8141"
    );
}

#[test]
fn chk_metadata_zstd_vector() {
    let flags = DataFlags {
        metadata: true,
        codec: Codec::Zstd,
    };
    let (k, _) = chk::encode(&[0u8; 32768], flags).unwrap();
    assert_eq!(FreenetUri::from(&k).to_string(), "CHK@e8FSIj38PRc0cVkfkc09oaw3oULp3TcGqlbEjsFxYlc,Y836tOiXkIXo4M5UP1juI6aOmK-9~JhQeU1tyU-4KUY,AQEBAAE");
}

#[test]
fn ssk_vector() {
    let k = SskPrivate::from_parts([1; 32], [2; 32]);
    let ins = FreenetUri::new(KeyUri::Ssk {
        key: SskKey::Private(k.clone()),
        docname: "doc".into(),
    });
    assert_eq!(ins.to_string(), "SSK@AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI,AQECAAE/doc");
    assert_eq!(ins.to_request().to_string(), "SSK@NHUPmL1Z-PyUbaRaqr6TO~FUpLUJThxKv0KGZQXzyX4,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI,AQACAAE/doc");
    let (rk, block) = k
        .encode("doc", b"signed data", DataFlags::default())
        .unwrap();
    assert_eq!(
        hex(&rk.0),
        "f47f8635bedaedcd7e51d67449aa1fab1d80dc85dad24baf4f3f6e805b15d78a"
    );
    assert_eq!(
        hex(&sha256(&block)),
        "8aa64a7068df65afb011403533be12baae0d61d98b34b3887f62940751438b94"
    );
}

#[test]
fn ksk_vector() {
    let k = SskPrivate::from_keyword("lichen-test");
    assert_eq!(
        hex(&k.public().routing_key("lichen-test").0),
        "918ca17294167e1318c9299a9ea0f0b045b4ce371b31448b4469c361965e0609"
    );
}

#[test]
fn usk_vector() {
    let k = SskPrivate::from_parts([1; 32], [2; 32]);
    let u = FreenetUri::new(KeyUri::Usk {
        key: SskKey::Public(k.public()),
        site: "site".into(),
        edition: 3,
    })
    .with_meta("index.html");
    assert_eq!(u.to_string(), "USK@NHUPmL1Z-PyUbaRaqr6TO~FUpLUJThxKv0KGZQXzyX4,AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI,AQACAAE/site/3/index.html");
    let (pk, doc) = u.key.ssk_target().unwrap();
    assert_eq!(doc, "site-3");
    assert_eq!(
        hex(&pk.routing_key(&doc).0),
        "a448e0f9601d3ca2274904262ea1a2e951b94450d2cf59580185933a00fb5325"
    );
}
