//! The CSS tokeniser (CSS Syntax 3, the tokens the filter needs), with
//! escapes decoded so that no escape can hide a name from the filter.

/// A CSS token.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Ws,
    Ident(String),
    Function(String),
    AtKeyword(String),
    Hash(String),
    Str(String),
    Url(String),
    Delim(char),
}

/// Splits a stylesheet into [`Tok`]s.
pub(super) struct Lexer {
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
    /// All the tokens of `input`.
    pub(super) fn tokens(input: &str) -> Vec<Tok> {
        let mut lx = Lexer {
            c: input.chars().collect(),
            i: 0,
        };
        let mut toks = Vec::new();
        while let Some(t) = lx.next() {
            toks.push(t);
        }
        toks
    }

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

    /// After `url(`: the URL, quoted or not, and the closing `)`.
    fn url(&mut self) -> Tok {
        self.skip_ws();
        match self.peek(0) {
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
        }
    }

    /// An identifier, a function name with its `(`, or a `url(…)`.
    fn ident_like(&mut self) -> Tok {
        let name = self.name();
        if self.peek(0) == Some('(') {
            self.i += 1;
            if name.eq_ignore_ascii_case("url") {
                return self.url();
            }
            return Tok::Function(name);
        }
        Tok::Ident(name)
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
            return Some(self.ident_like());
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
