#![allow(clippy::unwrap_used)]

mod common;
use common::*;
use lichen_client::usk::{find_latest_edition, next_edition, usk_to_ssk};
use lichen_client::{
    fetch_metadata, insert, insert_site, ErrorKind, FetchError, FetchOptions, HasKind, InsertError,
    InsertOptions, MemoryBlocks, Metadata, SiteData, SiteFile, SiteOptions,
};
use lichen_crypto::ssk::SskPrivate;
use lichen_crypto::uri::SskKey;
use lichen_crypto::{FreenetUri, KeyUri};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap()
}

fn ssk_insert(docname: &str) -> (SskPrivate, FreenetUri) {
    let k = SskPrivate::from_parts([7; 32], [8; 32]);
    let uri = FreenetUri::new(KeyUri::Ssk {
        key: SskKey::Private(k.clone()),
        docname: docname.into(),
    });
    (k, uri)
}

fn usk_insert(edition: i64) -> FreenetUri {
    let k = SskPrivate::from_parts([9; 32], [10; 32]);
    FreenetUri::new(KeyUri::Usk {
        key: SskKey::Private(k),
        site: "site".into(),
        edition,
    })
}

#[test]
fn ssk_small_large_and_with_mime() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        for (i, len) in [0usize, 10, 1024, 1025, 40_000, 3_000_000]
            .into_iter()
            .enumerate()
        {
            for mime in [None, Some("text/plain".to_string())] {
                let (_, target) = ssk_insert(&format!("doc{i}{}", mime.is_some()));
                let data = random_bytes(len, i as u64);
                let opts = InsertOptions {
                    target,
                    mime: mime.clone(),
                    ..InsertOptions::default()
                };
                let before = store.len();
                let r = put(&store, &data, &opts).await;
                if len <= 1024 && mime.is_none() {
                    assert_eq!(store.len() - before, 1, "small data lives in the SSK block");
                }
                assert!(r.uri.to_string().starts_with("SSK@"));
                assert!(r.insert_uri.is_some());
                let (out, fr) = get(&store, &r.uri, &FetchOptions::default()).await.unwrap();
                assert!(out == data, "len {len}");
                assert_eq!(fr.mime, mime);
            }
        }
    });
}

#[test]
fn ssk_targets_randomise_keys_by_default() {
    rt().block_on(async {
        let data = random_bytes(100_000, 1);
        let store = MemoryBlocks::new();
        let chk = put(&store, &data, &InsertOptions::default()).await;
        let chk_blocks = store.keys();
        let (_, target) = ssk_insert("r");
        let opts = InsertOptions {
            target,
            ..InsertOptions::default()
        };
        let r = put(&store, &data, &opts).await;
        // No block of the SSK insert equals one of the convergent insert
        // (its small splitfile metadata sits in the SSK block itself).
        let after = store.keys();
        assert_eq!(after.len(), chk_blocks.len() * 2);
        let _ = (chk, r);
    });
}

#[test]
fn new_ssk_ksk_and_collisions() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let opts = InsertOptions {
            target: FreenetUri::parse("SSK@/hello").unwrap(),
            seed: Some([1; 32]),
            ..InsertOptions::default()
        };
        let r = put(&store, b"hello", &opts).await;
        let ins = r.insert_uri.unwrap();
        assert!(matches!(
            ins.key,
            KeyUri::Ssk {
                key: SskKey::Private(_),
                ..
            }
        ));
        assert_eq!(ins.to_request(), r.uri);
        assert_eq!(
            get(&store, &r.uri, &FetchOptions::default())
                .await
                .unwrap()
                .0,
            b"hello"
        );

        let ksk = FreenetUri::parse("KSK@my-keyword").unwrap();
        let opts = InsertOptions {
            target: ksk.clone(),
            ..InsertOptions::default()
        };
        let r = put(&store, b"first", &opts).await;
        assert_eq!(r.uri, ksk);
        let e = insert(&store, &b"second"[..], &opts).await.unwrap_err();
        assert!(matches!(e, InsertError::Collision), "{e}");
        assert_eq!(e.kind(), ErrorKind::Collision);
        assert_eq!(
            get(&store, &ksk, &FetchOptions::default()).await.unwrap().0,
            b"first"
        );

        // A request URI cannot be inserted to.
        let opts = InsertOptions {
            target: r.uri.clone().to_request(),
            ..InsertOptions::default()
        };
        let (_, t) = ssk_insert("x");
        let opts2 = InsertOptions {
            target: t.to_request(),
            ..opts
        };
        let e = insert(&store, &b"x"[..], &opts2).await.unwrap_err();
        assert!(matches!(e, InsertError::InvalidUri(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::BadUri);
    });
}

#[test]
fn usk_editions_probe_and_redirect() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        for ed in 0..=12 {
            let opts = InsertOptions {
                target: usk_insert(ed),
                ..InsertOptions::default()
            };
            let r = put(&store, format!("edition {ed}").as_bytes(), &opts).await;
            assert!(r.uri.to_string().ends_with(&format!("/site/{ed}")));
        }
        let req = usk_insert(0).to_request();
        let KeyUri::Usk { key, .. } = &req.key else {
            panic!()
        };
        for from in [0, 3, 12] {
            assert_eq!(
                find_latest_edition(&store, &key.public(), "site", from, 32)
                    .await
                    .unwrap(),
                Some(12)
            );
        }
        assert_eq!(
            find_latest_edition(&store, &key.public(), "site", 13, 32)
                .await
                .unwrap(),
            None
        );
        // Bounded probes: a wrong but earlier answer, never a hang.
        let few = find_latest_edition(&store, &key.public(), "site", 0, 2)
            .await
            .unwrap()
            .unwrap();
        assert!(few < 12);
        assert_eq!(next_edition(&store, &req, 32).await.unwrap(), 13);
        // Mapping.
        let ssk = usk_to_ssk(&req.with_edition(4)).unwrap();
        assert!(ssk.to_string().ends_with("/site-4"));
        assert_eq!(
            get(&store, &ssk, &FetchOptions::default()).await.unwrap().0,
            b"edition 4"
        );
        // Fetching edition 4 as is, and with probing: permanent redirect.
        let old = req.with_edition(4);
        assert_eq!(
            get(&store, &old, &FetchOptions::default()).await.unwrap().0,
            b"edition 4"
        );
        let probing = FetchOptions {
            usk_probes: 16,
            ..FetchOptions::default()
        };
        match get(&store, &old, &probing).await.unwrap_err() {
            e @ FetchError::PermanentRedirect { .. } => {
                assert_eq!(e.kind(), ErrorKind::NewerEdition);
                let FetchError::PermanentRedirect { new_uri } = e else {
                    panic!()
                };
                assert_eq!(*new_uri, req.with_edition(12));
            }
            e => panic!("{e}"),
        }
        let latest = req.with_edition(12);
        assert_eq!(
            get(&store, &latest, &probing).await.unwrap().0,
            b"edition 12"
        );
        // Negative edition: "search from 2".
        assert!(matches!(
            get(&store, &req.with_edition(-2), &probing)
                .await
                .unwrap_err(),
            FetchError::PermanentRedirect { .. }
        ));
    });
}

fn site_files(big: &[u8], page: &str) -> Vec<SiteFile> {
    vec![
        SiteFile {
            path: "index.html".into(),
            mime: None,
            data: SiteData::Bytes(page.as_bytes().to_vec()),
        },
        SiteFile {
            path: "img/big.bin".into(),
            mime: Some("application/octet-stream".into()),
            data: SiteData::Reader {
                reader: Box::new(std::io::Cursor::new(big.to_vec())),
                sha256: Some(lichen_crypto::sha256(big)),
            },
        },
        SiteFile {
            path: "docs/a/b/readme.txt".into(),
            mime: None,
            data: SiteData::Bytes(text_bytes(50_000)),
        },
        SiteFile {
            path: "docs/index.html".into(),
            mime: None,
            data: SiteData::Bytes(b"<p>docs</p>".to_vec()),
        },
    ]
}

#[test]
fn sites_resolve_paths_defaults_and_reuse_unchanged_files() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        let big = random_bytes(300_000, 4);
        let opts = SiteOptions {
            target: usk_insert(0),
            ..SiteOptions::default()
        };
        let r = insert_site(&store, site_files(&big, "<p>v0</p>"), &opts)
            .await
            .unwrap();
        assert_eq!(r.inserted, 4);
        assert_eq!(r.reused, 0);
        let site = r.uri.clone();
        let f = FetchOptions::default();
        let (page, fr) = get(&store, &site, &f).await.unwrap();
        assert_eq!(page, b"<p>v0</p>");
        assert_eq!(fr.mime.as_deref(), Some("text/html"));
        let (b, _) = get(
            &store,
            &site.clone().with_meta("img").with_meta("big.bin"),
            &f,
        )
        .await
        .unwrap();
        assert!(b == big);
        let (t, fr) = get(
            &store,
            &site
                .clone()
                .with_meta("docs")
                .with_meta("a")
                .with_meta("b")
                .with_meta("readme.txt"),
            &f,
        )
        .await
        .unwrap();
        assert_eq!(t, text_bytes(50_000));
        assert_eq!(fr.mime.as_deref(), Some("text/plain"));
        // Sub-directory default document.
        let (d, _) = get(&store, &site.clone().with_meta("docs"), &f)
            .await
            .unwrap();
        assert_eq!(d, b"<p>docs</p>");
        // Errors.
        let e = get(&store, &site.clone().with_meta("nope.html"), &f)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::NotInManifest(_)), "{e}");
        assert_eq!(e.kind(), ErrorKind::NotInSite);
        let e = get(&store, &site.clone().with_meta("img"), &f)
            .await
            .unwrap_err();
        assert!(matches!(e, FetchError::NotEnoughPathComponents), "{e}");
        assert_eq!(e.kind(), ErrorKind::NotInSite);

        // Next edition: only the changed page is inserted again.
        let prev = match fetch_metadata(&store, &site, &f).await.unwrap() {
            Some(Metadata::Manifest(m)) => m,
            m => panic!("{m:?}"),
        };
        assert_eq!(prev, r.manifest);
        let ed = next_edition(&store, &site, 16).await.unwrap();
        assert_eq!(ed, 1);
        let opts = SiteOptions {
            target: usk_insert(i64::try_from(ed).unwrap()),
            previous: Some(prev),
            ..SiteOptions::default()
        };
        let before = store.len();
        let r1 = insert_site(&store, site_files(&big, "<p>v1</p>"), &opts)
            .await
            .unwrap();
        assert_eq!(r1.reused, 3);
        assert_eq!(r1.inserted, 1);
        assert!(store.len() - before <= 3, "only the manifest is new");
        let (page, _) = get(&store, &r1.uri, &f).await.unwrap();
        assert_eq!(page, b"<p>v1</p>");
        let (b, _) = get(
            &store,
            &r1.uri.clone().with_meta("img").with_meta("big.bin"),
            &f,
        )
        .await
        .unwrap();
        assert!(b == big);
    });
}

#[test]
fn large_manifests_go_multi_level() {
    rt().block_on(async {
        let store = MemoryBlocks::new();
        // 600 files of 3 KB random data: 600 redirects ≈ 120 KB of manifest.
        let files: Vec<SiteFile> = (0..600)
            .map(|i| SiteFile {
                path: format!("d{}/f{i}.bin", i % 7),
                mime: None,
                data: SiteData::Bytes(random_bytes(3000, i)),
            })
            .collect();
        let r = insert_site(&store, files, &SiteOptions::default())
            .await
            .unwrap();
        for i in [0u64, 299, 599] {
            let uri = r
                .uri
                .clone()
                .with_meta(&format!("d{}", i % 7))
                .with_meta(&format!("f{i}.bin"));
            let (out, _) = get(&store, &uri, &FetchOptions::default()).await.unwrap();
            assert_eq!(out, random_bytes(3000, i));
        }
    });
}

#[test]
fn bad_site_paths_are_refused() {
    rt().block_on(async {
        for paths in [
            vec!["a/../b"],
            vec!["a//b"],
            vec!["a", "a/b"],
            vec!["x", "x"],
        ] {
            let files = paths
                .into_iter()
                .map(|p| SiteFile {
                    path: p.into(),
                    mime: None,
                    data: SiteData::Bytes(b"x".to_vec()),
                })
                .collect();
            let e = insert_site(&MemoryBlocks::new(), files, &SiteOptions::default())
                .await
                .unwrap_err();
            assert!(matches!(e, InsertError::InvalidSite(_)), "{e}");
        }
    });
}
