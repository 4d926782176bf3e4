//! The content filter: what the gateway lets a freesite put in front of a
//! browser. An anonymity feature: a page that makes the browser contact
//! the outside web (an image, a stylesheet, a font, a prefetch, a script)
//! tells that server who is reading it.
//!
//! - HTML is parsed and sanitised by `ammonia` (html5ever, the same parsing
//!   algorithm as browsers): an allow-list of elements and attributes, no
//!   scripts, no event handlers, no frames, objects, forms, `<meta>` or
//!   `<base>`. Every URL attribute goes through [`classify_url`]: relative
//!   URLs and Freenet keys stay inside the gateway, links to the web become
//!   links to the `/external-link` warning page, external resources are
//!   dropped. `<style>` elements and `style` attributes go through the CSS
//!   filter.
//! - CSS is tokenised (CSS Syntax 3, escapes decoded) and re-serialised
//!   with canonical escaping, so an escape cannot hide a `url(` from the
//!   filter; `url()`, `@import` and the string arguments of `image-set()`,
//!   `image()`, `src()` and `cross-fade()` are rewritten like HTML URLs.
//! - Images are passed only when their first bytes match the claimed type.

use std::borrow::Cow;
use std::collections::HashSet;

/// Freenet key prefixes (a path starting with one is a key).
const KEY_PREFIXES: [&str; 4] = ["CHK@", "SSK@", "USK@", "KSK@"];

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
    if let Some(colon) = s.find(':') {
        let head = &s[..colon];
        let is_scheme = !head.is_empty()
            && !head.contains(['/', '?', '#'])
            && head.starts_with(|c: char| c.is_ascii_alphabetic())
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if is_scheme {
            let rest = &s[colon + 1..];
            return match head.to_ascii_lowercase().as_str() {
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
            };
        }
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
fn resource_url(raw: &str) -> Option<String> {
    match classify_url(raw) {
        UrlKind::Inside(u) if !u.is_empty() => Some(u),
        _ => None,
    }
}

/// A URL in a navigation context (a link): inside, the warning page, or
/// nothing.
fn link_url(raw: &str) -> Option<String> {
    match classify_url(raw) {
        UrlKind::Inside(u) => Some(u),
        UrlKind::External(u) => Some(external_link(&u)),
        UrlKind::Drop => None,
    }
}

fn html_builder() -> ammonia::Builder<'static> {
    let mut b = ammonia::Builder::default();
    b.rm_clean_content_tags(["style"])
        .add_clean_content_tags([
            "title", "noscript", "iframe", "object", "embed", "applet", "frameset", "frame",
            "template", "svg", "math", "xmp", "noembed", "noframes",
        ])
        .add_tags([
            "style",
            "link",
            "font",
            "center",
            "section",
            "article",
            "nav",
            "header",
            "footer",
            "main",
            "aside",
            "figure",
            "figcaption",
            "mark",
            "small",
            "time",
        ])
        .add_generic_attributes(["style", "class", "id", "align"])
        .add_tag_attributes("link", ["rel", "href", "type", "media"])
        .add_tag_attributes("font", ["color", "size", "face"])
        .add_tag_attributes("a", ["name", "id"])
        .add_tag_attributes("img", ["border", "hspace", "vspace"])
        .add_tag_attributes("td", ["bgcolor", "valign", "nowrap"])
        .add_tag_attributes(
            "table",
            ["bgcolor", "cellpadding", "cellspacing", "border", "width"],
        )
        .url_schemes(HashSet::from(["http", "https", "freenet"]))
        .link_rel(Some("noopener noreferrer"))
        .strip_comments(true)
        .attribute_filter(filter_attribute);
    b
}

fn filter_attribute<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    // No '<' or '>' in attribute values: see filter_html.
    filter_attribute_inner(element, attribute, value).map(|v| {
        if v.contains(['<', '>']) {
            Cow::Owned(v.replace(['<', '>'], ""))
        } else {
            v
        }
    })
}

fn filter_attribute_inner<'u>(
    element: &str,
    attribute: &str,
    value: &'u str,
) -> Option<Cow<'u, str>> {
    match attribute {
        "href" if matches!(element, "a" | "area") => link_url(value).map(Cow::Owned),
        "href" if element == "link" => resource_url(value).map(Cow::Owned),
        "src" | "href" | "cite" | "longdesc" | "poster" | "background" | "action"
        | "formaction" | "data" | "xlink:href" => {
            if attribute == "cite" {
                link_url(value).map(Cow::Owned)
            } else {
                resource_url(value).map(Cow::Owned)
            }
        }
        "srcset" | "ping" | "lowsrc" | "dynsrc" | "manifest" | "codebase" | "usemap" => None,
        "rel" if element == "link" => {
            let v = value.trim().to_ascii_lowercase();
            matches!(v.as_str(), "stylesheet" | "icon" | "shortcut icon").then(|| Cow::Owned(v))
        }
        "style" => Some(Cow::Owned(filter_css(value))),
        a if a.starts_with("on") => None,
        _ => Some(Cow::Borrowed(value)),
    }
}

/// Sanitise an HTML document for the gateway. The result is a complete
/// UTF-8 document.
#[must_use]
pub fn filter_html(input: &str) -> String {
    let title = extract_title(input);
    let cleaned = html_builder().clean(input).to_string();
    // ammonia keeps the text of <style> elements verbatim: filter it. In
    // the serialised output every "<style>" is a real start tag (attribute
    // values have no '<', text is escaped, other raw-text elements are
    // removed) and its content ends at the first "</style".
    let mut body = String::with_capacity(cleaned.len());
    let mut rest = cleaned.as_str();
    while let Some(i) = rest.find("<style>") {
        let (before, after) = rest.split_at(i + "<style>".len());
        body.push_str(before);
        let end = after.find("</style>").unwrap_or(after.len());
        body.push_str(&filter_css(&after[..end]));
        rest = &after[end..];
    }
    body.push_str(rest);
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n<body>\n{body}\n</body></html>\n",
        super::pages::esc(&title)
    )
}

/// The text of the first `<title>` element (RCDATA: ends at the first
/// `</title`), with entities for `&`, `<` and `>` decoded loosely.
fn extract_title(input: &str) -> String {
    let lower = input.get(..input.len().min(1 << 16)).unwrap_or("");
    let lower = lower.to_ascii_lowercase();
    let Some(start) = lower.find("<title") else {
        return String::new();
    };
    let Some(gt) = lower[start..].find('>') else {
        return String::new();
    };
    let from = start + gt + 1;
    let Some(end) = lower[from..].find("</title") else {
        return String::new();
    };
    let t = &input[from..from + end];
    let t: String = t.split_whitespace().collect::<Vec<_>>().join(" ");
    t.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .chars()
        .take(200)
        .collect()
}

// ----------------------------------------------------------------------
// CSS

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ws,
    Ident(String),
    Function(String),
    AtKeyword(String),
    Hash(String),
    Str(String),
    Url(String),
    Delim(char),
}

struct Lexer {
    c: Vec<char>,
    i: usize,
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_name(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == '-'
}

impl Lexer {
    fn peek(&self, k: usize) -> Option<char> {
        self.c.get(self.i + k).copied()
    }

    fn valid_escape(&self, k: usize) -> bool {
        self.peek(k) == Some('\\') && !matches!(self.peek(k + 1), Some('\n' | '\r' | '\x0c') | None)
    }

    fn starts_ident(&self) -> bool {
        match self.peek(0) {
            Some('-') => {
                matches!(self.peek(1), Some(c) if is_name_start(c) || c == '-')
                    || self.valid_escape(1)
            }
            Some('\\') => self.valid_escape(0),
            Some(c) => is_name_start(c),
            None => false,
        }
    }

    /// Consume an escape (after the backslash).
    fn escape(&mut self) -> char {
        let mut hex = String::new();
        while hex.len() < 6 {
            match self.peek(0) {
                Some(c) if c.is_ascii_hexdigit() => {
                    hex.push(c);
                    self.i += 1;
                }
                _ => break,
            }
        }
        if hex.is_empty() {
            return match self.peek(0) {
                Some(c) => {
                    self.i += 1;
                    c
                }
                None => '\u{fffd}',
            };
        }
        if matches!(self.peek(0), Some(c) if c.is_ascii_whitespace()) {
            self.i += 1;
        }
        u32::from_str_radix(&hex, 16)
            .ok()
            .filter(|&v| v != 0)
            .and_then(char::from_u32)
            .unwrap_or('\u{fffd}')
    }

    fn name(&mut self) -> String {
        let mut s = String::new();
        loop {
            match self.peek(0) {
                Some(c) if is_name(c) => {
                    s.push(c);
                    self.i += 1;
                }
                Some('\\') if self.valid_escape(0) => {
                    self.i += 1;
                    s.push(self.escape());
                }
                _ => return s,
            }
        }
    }

    fn string(&mut self, quote: char) -> String {
        let mut s = String::new();
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                c if c == quote => break,
                '\n' => break, // bad string: ends it
                '\\' => match self.peek(0) {
                    None => {}
                    Some('\n') => self.i += 1,
                    Some(_) => s.push(self.escape()),
                },
                c => s.push(c),
            }
        }
        s
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(0), Some(c) if c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    /// After `url(`: an unquoted URL, up to `)`.
    fn unquoted_url(&mut self) -> String {
        let mut s = String::new();
        let mut bad = false;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            match c {
                ')' => break,
                '\\' if self.peek(0).is_some_and(|n| n != '\n') => s.push(self.escape()),
                c if c.is_ascii_whitespace() => {
                    self.skip_ws();
                    if self.peek(0) != Some(')') {
                        bad = true;
                    }
                }
                '"' | '\'' | '(' | '\\' => bad = true,
                c if c.is_control() => bad = true,
                c => s.push(c),
            }
        }
        if bad {
            String::new()
        } else {
            s
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let c = self.peek(0)?;
        if c.is_ascii_whitespace() {
            self.skip_ws();
            return Some(Tok::Ws);
        }
        if c == '/' && self.peek(1) == Some('*') {
            self.i += 2;
            while self.peek(0).is_some()
                && !(self.peek(0) == Some('*') && self.peek(1) == Some('/'))
            {
                self.i += 1;
            }
            self.i = (self.i + 2).min(self.c.len());
            return Some(Tok::Ws);
        }
        if c == '"' || c == '\'' {
            self.i += 1;
            return Some(Tok::Str(self.string(c)));
        }
        if self.starts_ident() {
            let name = self.name();
            if self.peek(0) == Some('(') {
                self.i += 1;
                if name.eq_ignore_ascii_case("url") {
                    self.skip_ws();
                    return Some(match self.peek(0) {
                        Some(q @ ('"' | '\'')) => {
                            self.i += 1;
                            let s = self.string(q);
                            self.skip_ws();
                            if self.peek(0) == Some(')') {
                                self.i += 1;
                            }
                            Tok::Url(s)
                        }
                        _ => Tok::Url(self.unquoted_url()),
                    });
                }
                return Some(Tok::Function(name));
            }
            return Some(Tok::Ident(name));
        }
        if c == '@' {
            self.i += 1;
            if self.starts_ident() {
                return Some(Tok::AtKeyword(self.name()));
            }
            return Some(Tok::Delim('@'));
        }
        if c == '#' {
            self.i += 1;
            if matches!(self.peek(0), Some(n) if is_name(n)) || self.valid_escape(0) {
                return Some(Tok::Hash(self.name()));
            }
            return Some(Tok::Delim('#'));
        }
        self.i += 1;
        Some(Tok::Delim(c))
    }
}

fn push_escaped_name(out: &mut String, name: &str) {
    for (i, c) in name.chars().enumerate() {
        let raw = c.is_ascii_alphabetic()
            || c == '_'
            || (c == '-' && !(i == 0 && name.len() == 1))
            || (c.is_ascii_digit() && i > 0 && !(i == 1 && name.starts_with('-')))
            || (!c.is_ascii() && !c.is_control());
        if raw {
            out.push(c);
        } else {
            out.push_str(&format!("\\{:x} ", u32::from(c)));
        }
    }
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c.is_control() {
            out.push_str(&format!("\\{:x} ", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out.push('"');
}

/// Functions whose string arguments are URLs.
fn takes_url_strings(f: &str) -> bool {
    let f = f.to_ascii_lowercase();
    f == "src" || f.contains("image") || f.contains("cross-fade")
}

/// Filter a stylesheet or a declaration list (a `style` attribute).
#[must_use]
pub fn filter_css(input: &str) -> String {
    let mut lx = Lexer {
        c: input.chars().collect(),
        i: 0,
    };
    let mut toks = Vec::new();
    while let Some(t) = lx.next() {
        toks.push(t);
    }
    let mut out = String::with_capacity(input.len());
    // Open functions / parentheses, innermost last.
    let mut stack: Vec<String> = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::Ws => out.push(' '),
            Tok::Ident(n) => {
                let l = n.to_ascii_lowercase();
                if l == "behavior" || l == "-moz-binding" || l == "expression" {
                    out.push_str("removed");
                } else {
                    push_escaped_name(&mut out, n);
                }
            }
            Tok::Function(n) => {
                let l = n.to_ascii_lowercase();
                if l.contains("expression") || l == "url" {
                    out.push_str("removed");
                } else {
                    push_escaped_name(&mut out, n);
                }
                out.push('(');
                stack.push(l);
            }
            Tok::AtKeyword(n) => {
                if n.eq_ignore_ascii_case("import") {
                    // The whole rule, up to `;`, is kept only if its URL
                    // stays inside.
                    let mut j = i + 1;
                    while toks.get(j) == Some(&Tok::Ws) {
                        j += 1;
                    }
                    let target = match toks.get(j) {
                        Some(Tok::Str(s) | Tok::Url(s)) => resource_url(s),
                        _ => None,
                    };
                    let mut end = j;
                    while end < toks.len() && toks[end] != Tok::Delim(';') {
                        end += 1;
                    }
                    if let Some(u) = target {
                        out.push_str("@import url(");
                        push_string(&mut out, &u);
                        out.push(')');
                        // media queries after the URL are kept
                        i = j + 1;
                        continue;
                    }
                    i = end + 1;
                    continue;
                }
                out.push('@');
                push_escaped_name(&mut out, n);
            }
            Tok::Hash(n) => {
                out.push('#');
                for c in n.chars() {
                    if c.is_ascii_alphanumeric()
                        || c == '_'
                        || c == '-'
                        || (!c.is_ascii() && !c.is_control())
                    {
                        out.push(c);
                    } else {
                        out.push_str(&format!("\\{:x} ", u32::from(c)));
                    }
                }
            }
            Tok::Str(s) => {
                if stack.iter().any(|f| takes_url_strings(f)) {
                    match resource_url(s) {
                        Some(u) => push_string(&mut out, &u),
                        None => out.push_str("none"),
                    }
                } else {
                    push_string(&mut out, s);
                }
            }
            Tok::Url(s) => match resource_url(s) {
                Some(u) => {
                    out.push_str("url(");
                    push_string(&mut out, &u);
                    out.push(')');
                }
                None => out.push_str("none"),
            },
            Tok::Delim(c) => match c {
                '(' => {
                    stack.push(String::new());
                    out.push('(');
                }
                ')' => {
                    stack.pop();
                    out.push(')');
                }
                '<' | '\\' | '`' => {}
                c if c.is_control() => {}
                c => out.push(*c),
            },
        }
        i += 1;
    }
    out
}

// ----------------------------------------------------------------------
// Images

/// Image types passed after a magic-number check.
#[must_use]
pub fn image_magic_ok(mime: &str, head: &[u8]) -> bool {
    match mime {
        "image/png" => head.starts_with(b"\x89PNG\r\n\x1a\n"),
        "image/jpeg" | "image/jpg" | "image/pjpeg" => head.starts_with(&[0xff, 0xd8, 0xff]),
        "image/gif" => head.starts_with(b"GIF87a") || head.starts_with(b"GIF89a"),
        "image/webp" => head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP",
        "image/x-icon" | "image/vnd.microsoft.icon" => head.starts_with(&[0, 0, 1, 0]),
        _ => false,
    }
}

/// Whether the gateway can pass this image type at all (after the magic
/// check).
#[must_use]
pub fn is_passable_image(mime: &str) -> bool {
    matches!(
        mime,
        "image/png"
            | "image/jpeg"
            | "image/jpg"
            | "image/pjpeg"
            | "image/gif"
            | "image/webp"
            | "image/x-icon"
            | "image/vnd.microsoft.icon"
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
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

    #[test]
    fn css_urls() {
        let out = filter_css("a{background:url(http://evil.example/a.png)}");
        assert!(!out.contains("evil"), "{out}");
        let out = filter_css("a{background:u\\72l(http://evil.example/a.png)}");
        assert!(!out.contains("evil"), "{out}");
        let out = filter_css("a{background:\\75 rl('//evil.example/a.png')}");
        assert!(!out.contains("evil"), "{out}");
        let out = filter_css("@import 'http://evil.example/x.css'; p{color:red}");
        assert!(!out.contains("evil") && out.contains("color"), "{out}");
        let out = filter_css("@import url(style2.css); p{color:red}");
        assert!(out.contains("style2.css"), "{out}");
        let out = filter_css("a{background-image:image-set('http://evil.example/a.png' 1x)}");
        assert!(!out.contains("evil"), "{out}");
        let out = filter_css("a{background:url(img/a.png) no-repeat}");
        assert!(out.contains("url(\"img/a.png\")"), "{out}");
        let out = filter_css("p{color:#f00;margin:-1px 2em}");
        assert_eq!(out, "p{color:#f00;margin:-1px 2em}");
        let out = filter_css("x{content:'</style><img src=http://evil.example>'}");
        assert!(!out.contains('<'), "{out}");
    }

    #[test]
    fn magic() {
        assert!(image_magic_ok("image/png", b"\x89PNG\r\n\x1a\n...."));
        assert!(!image_magic_ok("image/png", b"<svg onload=alert(1)>"));
        assert!(image_magic_ok("image/gif", b"GIF89a..."));
        assert!(!image_magic_ok("image/svg+xml", b"<svg"));
    }
}
