//! Reading the node's replies: numbers, error texts, refusals, request
//! identifiers.

use anyhow::{anyhow, bail, Result};
use lichen_fcp::{FetchErrorCode, InsertErrorCode, Message, ProtocolErrorCode};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

pub(super) fn field_u64(m: &Message, key: &str) -> Option<u64> {
    m.get(key).and_then(|v| v.trim().parse().ok())
}

/// `"<words> (code N)[: <extra>]"` for an error reply.
pub(super) fn describe(m: &Message, words: impl Fn(u32) -> Option<&'static str>) -> String {
    let code = m.get("Code").and_then(|c| c.trim().parse::<u32>().ok());
    let table = code.and_then(&words);
    let text = table
        .map(str::to_string)
        .or_else(|| m.get("ShortCodeDescription").map(str::to_string))
        .or_else(|| m.get("CodeDescription").map(str::to_string))
        .unwrap_or_else(|| "unknown error".to_string());
    let mut s = match (code, m.get("Code")) {
        (Some(c), _) => format!("{text} (code {c})"),
        (None, Some(raw)) => format!("{text} (code {raw})"),
        (None, None) => text.clone(),
    };
    if let Some(extra) = m.get("ExtraDescription") {
        let extra = extra.trim();
        if !extra.is_empty() && extra != text {
            s.push_str(": ");
            s.push_str(extra);
        }
    }
    s
}

pub(super) fn protocol_error(m: &Message) -> anyhow::Error {
    anyhow!(
        "node refused the request: {}",
        describe(m, |c| ProtocolErrorCode::from_code(c)
            .map(|e| e.short_description()))
    )
}

pub(super) fn fetch_error(m: &Message) -> anyhow::Error {
    anyhow!("fetch failed: {}", describe(m, fetch_words))
}

pub(super) fn insert_error(m: &Message) -> anyhow::Error {
    let mut e = format!("insert failed: {}", describe(m, insert_words));
    if let Some(uri) = m.get("ExpectedURI").filter(|u| !u.is_empty()) {
        e.push_str(&format!(" (URI {uri})"));
    }
    anyhow!(e)
}

pub(super) fn fetch_words(c: u32) -> Option<&'static str> {
    FetchErrorCode::from_code(c).map(|e| e.short_description())
}

pub(super) fn insert_words(c: u32) -> Option<&'static str> {
    InsertErrorCode::from_code(c).map(|e| e.short_description())
}

/// Whether `m` concerns request `id`. Replies without an identifier
/// (a ProtocolError about an unparsable message) concern everyone.
pub(super) fn concerns(m: &Message, id: &str) -> bool {
    m.get("Identifier").is_none_or(|i| i == id)
}

/// Fails on the replies that end any request: ProtocolError,
/// IdentifierCollision.
pub(super) fn check_refusal(m: &Message, id: &str) -> Result<()> {
    if !concerns(m, id) {
        return Ok(());
    }
    match m.name.as_str() {
        "ProtocolError" => Err(protocol_error(m)),
        "IdentifierCollision" => {
            bail!("node refused the request: identifier {id} is already in use")
        }
        _ => Ok(()),
    }
}

pub(super) fn new_identifier(kind: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("lichen-cli-{}-{kind}-{nanos:x}-{n}", std::process::id())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::cli::test_support::*;

    #[test]
    fn error_words_for_unknown_codes() {
        let m = msg(
            "GetFailed",
            &[("Code", "99"), ("ShortCodeDescription", "Something new")],
        );
        assert_eq!(
            fetch_error(&m).to_string(),
            "fetch failed: Something new (code 99)"
        );
        let m = msg("PutFailed", &[]);
        assert_eq!(insert_error(&m).to_string(), "insert failed: unknown error");
    }
}
