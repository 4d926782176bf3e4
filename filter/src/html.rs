//! HTML: parsed and sanitised by `ammonia` (html5ever, the same parsing
//! algorithm as browsers) with an allow-list of elements and attributes;
//! every URL attribute goes through [`crate::url`], `<style>` elements and
//! `style` attributes through [`crate::css`].

use crate::css::filter_css;
use crate::url::{link_url, resource_url};
use std::borrow::Cow;
use std::collections::HashSet;

/// Escape text for HTML content and attribute values.
#[must_use]
pub fn escape_html(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
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
        escape_html(&title)
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
