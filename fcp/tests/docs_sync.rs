//! docs/fcp.md lists every error code with fred's constant name and text.

use lichen_fcp::{FetchErrorCode, InsertErrorCode, ProtocolErrorCode};

#[test]
fn error_tables_in_docs_match_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/fcp.md");
    let Ok(doc) = std::fs::read_to_string(path) else {
        // The crate packaged alone has no docs/ beside it.
        return;
    };
    let mut rows = Vec::new();
    for c in ProtocolErrorCode::ALL {
        rows.push(format!(
            "| {} | `{}` | {} |",
            c.code(),
            c.constant_name(),
            c.description()
        ));
    }
    for c in FetchErrorCode::ALL {
        rows.push(format!(
            "| {} | `{}` | {} | {} |",
            c.code(),
            c.constant_name(),
            c.short_description(),
            c.description()
        ));
    }
    for c in InsertErrorCode::ALL {
        rows.push(format!(
            "| {} | `{}` | {} | {} |",
            c.code(),
            c.constant_name(),
            c.short_description(),
            c.description()
        ));
    }
    for row in rows {
        assert!(doc.contains(&row), "docs/fcp.md lacks {row}");
    }
}
