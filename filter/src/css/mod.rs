//! CSS: tokenised (CSS Syntax 3, escapes decoded; the private `lexer`
//! module) and re-serialised with canonical escaping, so an escape cannot
//! hide a `url(` from the filter; `url()`, `@import` and the string
//! arguments of `image-set()`, `image()`, `src()` and `cross-fade()` are
//! rewritten like HTML URLs (see [`crate::url`]).

mod lexer;

use crate::url::resource_url;
use lexer::{Lexer, Tok};
use std::fmt::Write as _;

/// Filter a stylesheet or a declaration list (a `style` attribute).
#[must_use]
pub fn filter_css(input: &str) -> String {
    let toks = Lexer::tokens(input);
    let mut out = Serializer {
        out: String::with_capacity(input.len()),
        stack: Vec::new(),
    };
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            Tok::AtKeyword(n) if n.eq_ignore_ascii_case("import") => {
                i = out.import_rule(&toks, i);
            }
            t => {
                out.token(t);
                i += 1;
            }
        }
    }
    out.out
}

/// Writes the filtered tokens back out.
struct Serializer {
    out: String,
    /// Open functions / parentheses, innermost last.
    stack: Vec<String>,
}

impl Serializer {
    /// One token other than `@import`.
    fn token(&mut self, t: &Tok) {
        match t {
            Tok::Ws => self.out.push(' '),
            Tok::Ident(n) => {
                let l = n.to_ascii_lowercase();
                if l == "behavior" || l == "-moz-binding" || l == "expression" {
                    self.out.push_str("removed");
                } else {
                    push_escaped_name(&mut self.out, n);
                }
            }
            Tok::Function(n) => {
                let l = n.to_ascii_lowercase();
                if l.contains("expression") || l == "url" {
                    self.out.push_str("removed");
                } else {
                    push_escaped_name(&mut self.out, n);
                }
                self.out.push('(');
                self.stack.push(l);
            }
            Tok::AtKeyword(n) => {
                self.out.push('@');
                push_escaped_name(&mut self.out, n);
            }
            Tok::Hash(n) => self.hash(n),
            Tok::Str(s) => self.string(s),
            Tok::Url(s) => match resource_url(s) {
                Some(u) => {
                    self.out.push_str("url(");
                    push_string(&mut self.out, &u);
                    self.out.push(')');
                }
                None => self.out.push_str("none"),
            },
            Tok::Delim(c) => self.delim(*c),
        }
    }

    /// The `@import` rule at `toks[at]`: kept, up to `;`, only if its URL
    /// stays inside. Returns the index of the next token to read.
    fn import_rule(&mut self, toks: &[Tok], at: usize) -> usize {
        let mut j = at + 1;
        while toks.get(j) == Some(&Tok::Ws) {
            j += 1;
        }
        let target = match toks.get(j) {
            Some(Tok::Str(s) | Tok::Url(s)) => resource_url(s),
            _ => None,
        };
        if let Some(u) = target {
            self.out.push_str("@import url(");
            push_string(&mut self.out, &u);
            self.out.push(')');
            // media queries after the URL are kept
            return j + 1;
        }
        let mut end = j;
        while end < toks.len() && toks[end] != Tok::Delim(';') {
            end += 1;
        }
        end + 1
    }

    fn hash(&mut self, n: &str) {
        self.out.push('#');
        for c in n.chars() {
            if c.is_ascii_alphanumeric()
                || c == '_'
                || c == '-'
                || (!c.is_ascii() && !c.is_control())
            {
                self.out.push(c);
            } else {
                push_code_point(&mut self.out, c);
            }
        }
    }

    fn string(&mut self, s: &str) {
        if self.stack.iter().any(|f| takes_url_strings(f)) {
            match resource_url(s) {
                Some(u) => push_string(&mut self.out, &u),
                None => self.out.push_str("none"),
            }
        } else {
            push_string(&mut self.out, s);
        }
    }

    fn delim(&mut self, c: char) {
        match c {
            '(' => {
                self.stack.push(String::new());
                self.out.push('(');
            }
            ')' => {
                self.stack.pop();
                self.out.push(')');
            }
            '<' | '\\' | '`' => {}
            c if c.is_control() => {}
            c => self.out.push(c),
        }
    }
}

/// `c` as a CSS hex escape (`\3c `).
fn push_code_point(out: &mut String, c: char) {
    let _ = write!(out, "\\{:x} ", u32::from(c));
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
            push_code_point(out, c);
        }
    }
}

fn push_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' || c.is_control() {
            push_code_point(out, c);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
