//! Where a URL found in a page leads: inside the gateway (relative, or a
//! Freenet key), the outside web, or nowhere.

/// Freenet key prefixes (a path starting with one is a key).
pub const KEY_PREFIXES: [&str; 4] = ["CHK@", "SSK@", "USK@", "KSK@"];

/// Whether `s` starts with a Freenet key type (case-insensitive).
#[must_use]
pub fn is_key_path(s: &str) -> bool {
    KEY_PREFIXES.iter().any(|p| {
        s.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// Where a URL found in a page leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlKind {
    /// Stays inside the gateway: the value to write (relative, or an
    /// absolute path to a key).
    Inside(String),
    /// The outside web (the cleaned URL).
    External(String),
    /// Anything else (`javascript:`, `data:`, `file:`, gateway-internal
    /// paths that are not keys): removed.
    Drop,
}

/// Classify a URL from a page.
#[must_use]
pub fn classify_url(raw: &str) -> UrlKind {
    // Browsers strip tab and newlines anywhere, leading/trailing C0
    // controls and spaces, and read `\` as `/` in http(s) URLs.
    let cleaned: String = raw
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    let s = cleaned.trim_matches(|c: char| c <= ' ');
    if s.chars().any(char::is_control) {
        return UrlKind::Drop;
    }
    if s.is_empty() || s.starts_with('#') {
        return UrlKind::Inside(s.to_owned());
    }
    if let Some((scheme, rest)) = split_scheme(s) {
        return classify_with_scheme(s, scheme, rest);
    }
    if s.starts_with("//") {
        return UrlKind::External(format!("http:{s}"));
    }
    if let Some(rest) = s.strip_prefix('/') {
        return if is_key_path(rest) || rest.is_empty() {
            UrlKind::Inside(s.to_owned())
        } else {
            UrlKind::Drop
        };
    }
    if is_key_path(s) {
        return UrlKind::Inside(format!("/{s}"));
    }
    UrlKind::Inside(s.to_owned())
}

/// `(scheme, rest)` when `s` starts with a URL scheme and its colon.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (head, rest) = s.split_once(':')?;
    let is_scheme = !head.is_empty()
        && !head.contains(['/', '?', '#'])
        && head.starts_with(|c: char| c.is_ascii_alphabetic())
        && head
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    is_scheme.then_some((head, rest))
}

/// A cleaned URL `s` whose scheme is `scheme`, followed by `rest`.
fn classify_with_scheme(s: &str, scheme: &str, rest: &str) -> UrlKind {
    match scheme.to_ascii_lowercase().as_str() {
        "freenet" => {
            let k = rest.trim_start_matches('/');
            if is_key_path(k) {
                UrlKind::Inside(format!("/{k}"))
            } else {
                UrlKind::Drop
            }
        }
        "http" | "https" => {
            // http://host:port/KEY… (a link to some gateway) stays in.
            let after = rest.trim_start_matches('/');
            let path = after.find('/').map_or("", |i| &after[i + 1..]);
            if is_key_path(path) {
                UrlKind::Inside(format!("/{path}"))
            } else {
                UrlKind::External(s.to_owned())
            }
        }
        _ => UrlKind::Drop,
    }
}

/// The gateway path of the warning page for an outside link.
#[must_use]
pub fn external_link(url: &str) -> String {
    format!(
        "/external-link?url={}",
        percent_encoding::utf8_percent_encode(url, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// A URL in a resource context (image, stylesheet, font): inside or
/// nothing.
pub(crate) fn resource_url(raw: &str) -> Option<String> {
    match classify_url(raw) {
        UrlKind::Inside(u) if !u.is_empty() => Some(u),
        _ => None,
    }
}

/// A URL in a navigation context (a link): inside, the warning page, or
/// nothing.
pub(crate) fn link_url(raw: &str) -> Option<String> {
    match classify_url(raw) {
        UrlKind::Inside(u) => Some(u),
        UrlKind::External(u) => Some(external_link(&u)),
        UrlKind::Drop => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            classify_url("page.html"),
            UrlKind::Inside("page.html".into())
        );
        assert_eq!(classify_url("#top"), UrlKind::Inside("#top".into()));
        assert_eq!(
            classify_url("http://evil.example/x"),
            UrlKind::External("http://evil.example/x".into())
        );
        assert_eq!(
            classify_url("//evil.example/x"),
            UrlKind::External("http://evil.example/x".into())
        );
        assert_eq!(
            classify_url("\\\\evil.example/x"),
            UrlKind::External("http://evil.example/x".into())
        );
        assert_eq!(classify_url("java\tscript:alert(1)"), UrlKind::Drop);
        assert_eq!(classify_url(" JAVASCRIPT:alert(1)"), UrlKind::Drop);
        assert_eq!(classify_url("data:text/html,hi"), UrlKind::Drop);
        assert_eq!(classify_url("/upload"), UrlKind::Drop);
        assert_eq!(
            classify_url("CHK@abc/x"),
            UrlKind::Inside("/CHK@abc/x".into())
        );
        assert_eq!(
            classify_url("freenet:USK@abc/site/1/"),
            UrlKind::Inside("/USK@abc/site/1/".into())
        );
        assert_eq!(
            classify_url("http://127.0.0.1:8888/SSK@abc/site-1/"),
            UrlKind::Inside("/SSK@abc/site-1/".into())
        );
    }
}
