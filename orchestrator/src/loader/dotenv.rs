//! `.env` files, as Docker Compose v2 reads them: the project's `.env` / `--env-file`, and
//! services' `env_file` (the default format, and `format: raw`).
//!
//! The default format, in brief:
//!
//! * Blank lines and lines starting with `#` are skipped; a leading UTF-8 BOM is ignored.
//! * `KEY=value`, `KEY: value` and `export KEY=value` all assign; blanks around the key, the
//!   separator and the value are dropped.
//! * Keys may contain letters and digits (any script), `_`, `.`, `-`, `[` and `]`, and may
//!   start with a digit. A space inside a key is an error; so is any other character.
//! * A key alone on its line (`KEY`) takes its value from the lookup, and is left out when
//!   the lookup has none.
//! * Unquoted values run to the end of the line; ` #` starts a comment (a tab before `#` does
//!   not); trailing whitespace is dropped; variables are interpolated.
//! * Single-quoted values are literal, except that `\'` stands for `'`. Double-quoted values
//!   expand `\n`, `\t`, `\r`, `\a`, `\b`, `\f`, `\v`, `\\`, `\"`, `\$` (a literal `$`) and
//!   octal `\0NNN`, then interpolate variables. Both may span lines.
//!
//! Quirks reproduced from Compose: after a closing quote the rest of the line is parsed as
//! further statements (`A="x" B=2` sets both; `A='x' junk` makes `junk` a bare key), and a
//! last line with neither `=`, `:` nor a newline (`FOO` at the end of the file) assigns the
//! whole line to the empty key.
//!
//! Interpolation uses the lookup first and the keys assigned so far second, so variables
//! of the environment override the file's own earlier keys.

use super::interpolate::substitute_with;
use indexmap::IndexMap;

/// A `.env` file that could not be parsed, with the line the problem was found on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    /// The 1-based line number.
    pub line: usize,
    /// What is wrong, in lower case.
    pub message: String,
}

/// Parses a .env file as Compose does; values may reference earlier keys of the same file and `lookup`.
///
/// `lookup` takes precedence over the file's earlier keys when interpolating, and supplies the
/// value of a key written alone on its line. Unset variables interpolate to the empty string;
/// use [`parse_into`] to learn which ones were unset.
pub fn parse(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<IndexMap<String, String>, DotenvError> {
    let mut out = IndexMap::new();
    parse_into(src, lookup, &mut out, &mut |_| {})?;
    Ok(out)
}

/// Parses a .env file into `out`, which may already hold values (earlier files, or a service's
/// `environment`); those count as earlier keys of the file.
///
/// This is how Compose chains several env files: it parses each into the same map, looking
/// variables up in the environment first and in that map second. `on_unset` receives every
/// variable that interpolation found unset (see [`substitute_with`]); Compose prints a
/// warning for each.
/// On error, `out` holds the keys assigned before the failing one.
pub fn parse_into(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut IndexMap<String, String>,
    on_unset: &mut dyn FnMut(&str),
) -> Result<(), DotenvError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut parser = Parser {
        line: 1,
        lookup,
        on_unset,
    };
    let mut rest = src;
    loop {
        rest = parser.statement_start(rest);
        if rest.is_empty() {
            return Ok(());
        }
        let (key, after, bare) = parser.key(rest)?;
        if key.contains(' ') {
            return Err(parser.error("key cannot contain a space"));
        }
        if bare {
            if let Some(value) = (parser.lookup)(key) {
                out.insert(key.to_owned(), value);
            }
            rest = after;
            continue;
        }
        let (value, after) = parser.value(after, out)?;
        out.insert(key.to_owned(), value);
        rest = after;
    }
}

/// `env_file` with `format: raw`: values are taken literally, no quotes or interpolation processed.
///
/// This is `docker run --env-file`'s format: one `KEY=value` per line, the value being
/// everything after the first `=` (trailing blanks and quotes included); leading whitespace
/// and `#` comment lines are skipped. A key alone on its line is left out; use
/// [`parse_raw_with_lookup`] to give it a value.
pub fn parse_raw(src: &str) -> Result<IndexMap<String, String>, DotenvError> {
    parse_raw_with_lookup(src, &|_| None)
}

/// Like [`parse_raw`], a key alone on its line taking its value from `lookup` (and being left
/// out when the lookup has none), as Compose does for `format: raw` env files.
pub fn parse_raw_with_lookup(
    src: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<IndexMap<String, String>, DotenvError> {
    // Docker reads the file line by line with a scanner whose lines are at most 64 KiB.
    const MAX_LINE: usize = 64 * 1024;
    let mut out = IndexMap::new();
    let mut rest = src;
    let mut number = 0;
    while !rest.is_empty() {
        number += 1;
        let (raw_line, after) = rest.split_once('\n').unwrap_or((rest, ""));
        rest = after;
        let error = |message: String| DotenvError {
            line: number,
            message,
        };
        if raw_line.len() >= MAX_LINE {
            return Err(error(format!("line is longer than {} bytes", MAX_LINE - 1)));
        }
        let mut line = raw_line.strip_suffix('\r').unwrap_or(raw_line);
        if number == 1 {
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        let line = line.trim_start_matches(char::is_whitespace);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (line, None),
        };
        if key.is_empty() {
            return Err(error(format!("no variable name on line '{line}'")));
        }
        if key.contains([' ', '\t']) {
            return Err(error(format!("variable '{key}' contains whitespaces")));
        }
        if let Some(value) = value.map(str::to_owned).or_else(|| lookup(key)) {
            out.insert(key.to_owned(), value);
        }
    }
    Ok(out)
}

/// The state of one parse: the line being read, and where variables come from.
struct Parser<'a> {
    line: usize,
    lookup: &'a dyn Fn(&str) -> Option<String>,
    on_unset: &'a mut dyn FnMut(&str),
}

/// The blanks that may surround keys and values: whitespace that does not end a line.
fn is_blank(c: char) -> bool {
    matches!(
        c,
        '\t' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{a0}'
    )
}

/// Whether `src` starts with `export` and then the ASCII whitespace that makes it a keyword.
fn has_export_prefix(src: &str) -> bool {
    src.strip_prefix("export")
        .and_then(|s| s.bytes().next())
        .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c'))
}

impl Parser<'_> {
    fn error(&self, message: impl Into<String>) -> DotenvError {
        DotenvError {
            line: self.line,
            message: message.into(),
        }
    }

    /// Skips whitespace and comment lines, counting lines; empty at the end of the input.
    fn statement_start<'s>(&mut self, mut src: &'s str) -> &'s str {
        loop {
            let Some(pos) = src.find(|c: char| {
                if c == '\n' {
                    self.line += 1;
                }
                !c.is_whitespace()
            }) else {
                return "";
            };
            src = src.get(pos..).unwrap_or("");
            if !src.starts_with('#') {
                return src;
            }
            match src.find('\n') {
                // Stay on the newline so that the next round counts it.
                Some(nl) => src = src.get(nl..).unwrap_or(""),
                None => return "",
            }
        }
    }

    /// Reads the key at the start of `src`: the key, the text after its separator, and
    /// whether the key stands alone on its line.
    fn key<'s>(&mut self, src: &'s str) -> Result<(&'s str, &'s str, bool), DotenvError> {
        let src = if has_export_prefix(src) {
            src.get("export".len()..)
                .unwrap_or("")
                .trim_start_matches(is_blank)
        } else {
            src
        };
        let mut key = "";
        let mut offset = 0;
        let mut bare = false;
        for (i, c) in src.char_indices() {
            match c {
                c if is_blank(c) => {}
                '=' | ':' | '\n' => {
                    key = src.get(..i).unwrap_or("");
                    offset = i + 1;
                    bare = c == '\n';
                    break;
                }
                '_' | '.' | '-' | '[' | ']' => {}
                c if c.is_alphabetic() || c.is_numeric() => {}
                c => {
                    let first_line = src.split('\n').next().unwrap_or("");
                    return Err(self.error(format!(
                        "unexpected character {} in variable name {}",
                        go_quote(c.encode_utf8(&mut [0; 4])),
                        go_quote(first_line)
                    )));
                }
            }
        }
        if src.is_empty() {
            return Err(self.error("zero length string"));
        }
        if bare && !key.contains(' ') {
            self.line += 1;
        }
        let key = key.trim_end_matches(char::is_whitespace);
        let after = src.get(offset..).unwrap_or("").trim_start_matches(is_blank);
        Ok((key, after, bare))
    }

    /// Reads the value at the start of `src`, returning it and the text after it.
    fn value<'s>(
        &mut self,
        src: &'s str,
        earlier: &IndexMap<String, String>,
    ) -> Result<(String, &'s str), DotenvError> {
        let start_line = self.line;
        let quote = match src.chars().next() {
            Some(q @ ('"' | '\'')) => q,
            _ => {
                let (value, after) = src.split_once('\n').unwrap_or((src, ""));
                self.line += 1;
                let value = value.split(" #").next().unwrap_or("");
                let value = value.trim_end_matches(char::is_whitespace);
                let value = self.interpolate(value, earlier, start_line)?;
                return Ok((value, after));
            }
        };
        let mut text = String::new();
        let mut escaped = false;
        for (i, c) in src.char_indices().skip(1) {
            if c == '\n' {
                self.line += 1;
            }
            if c != quote {
                if !escaped && c == '\\' {
                    escaped = true;
                    continue;
                }
                if escaped {
                    escaped = false;
                    text.push('\\');
                }
                text.push(c);
                continue;
            }
            if escaped {
                // `\"` inside double quotes, `\'` inside single quotes.
                escaped = false;
                text.push(c);
                continue;
            }
            let after = src.get(i + 1..).unwrap_or("");
            if quote == '"' {
                text = self.interpolate(&expand_escapes(&text), earlier, start_line)?;
            }
            return Ok((text, after));
        }
        let first_line = src.split('\n').next().unwrap_or("");
        Err(self.error(format!("unterminated quoted value {first_line}")))
    }

    /// Interpolates a value, the lookup first and the earlier keys second.
    fn interpolate(
        &mut self,
        value: &str,
        earlier: &IndexMap<String, String>,
        line: usize,
    ) -> Result<String, DotenvError> {
        let lookup = self.lookup;
        let resolve = |name: &str| lookup(name).or_else(|| earlier.get(name).cloned());
        substitute_with(value, &resolve, self.on_unset).map_err(|e| DotenvError {
            line,
            message: e.to_string(),
        })
    }
}

/// Expands the escape sequences of a double-quoted value.
///
/// `\$` becomes `$$`, which interpolation then turns into a literal `$`. `\0` followed by
/// exactly three octal digits (at most `\0377`) is the character with that code; `\0` with
/// other digits loses its `0`, as in Compose. Unknown escapes stay as written.
fn expand_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('\\') {
        out.push_str(rest.get(..pos).unwrap_or(""));
        let after = rest.get(pos + 1..).unwrap_or("");
        let mut chars = after.chars();
        let simple = match chars.next() {
            Some('a') => Some("\u{7}"),
            Some('b') => Some("\u{8}"),
            Some('f') => Some("\u{c}"),
            Some('n') => Some("\n"),
            Some('r') => Some("\r"),
            Some('t') => Some("\t"),
            Some('v') => Some("\u{b}"),
            Some('$') => Some("$$"),
            Some('"') => Some("\""),
            Some('\\') => Some("\\"),
            _ => None,
        };
        if let Some(replacement) = simple {
            out.push_str(replacement);
            rest = after.get(1..).unwrap_or("");
        } else if let Some(zeroed) = after.strip_prefix('0') {
            let digits_len = zeroed
                .bytes()
                .take(3)
                .take_while(u8::is_ascii_digit)
                .count();
            let digits = zeroed.get(..digits_len).unwrap_or("");
            match octal_byte(digits) {
                Some(c) => out.push(c),
                None => {
                    out.push('\\');
                    out.push_str(digits);
                }
            }
            rest = zeroed.get(digits_len..).unwrap_or("");
        } else {
            out.push('\\');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The character whose code is the three octal digits `digits`, when at most 0o377.
fn octal_byte(digits: &str) -> Option<char> {
    if digits.len() != 3 {
        return None;
    }
    let code = u32::from_str_radix(digits, 8).ok()?;
    u8::try_from(code).ok().map(char::from)
}

/// `s` in double quotes with Go's escaping (`strconv.Quote`), as Compose's messages show it.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_printable(c) => out.push(c),
            c if u32::from(c) < 0x80 => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

/// An approximation of Go's `unicode.IsPrint`: not a control, format, private-use or
/// non-character code point, nor whitespace other than the space.
fn is_printable(c: char) -> bool {
    let code = u32::from(c);
    let format = matches!(
        code,
        0xad | 0x600..=0x605
            | 0x61c
            | 0x6dd
            | 0x70f
            | 0x180e
            | 0x200b..=0x200f
            | 0x202a..=0x202e
            | 0x2060..=0x206f
            | 0xfeff
            | 0xfff9..=0xfffb
            | 0xe0001..=0xe007f
    );
    let private = matches!(code, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    let nonchar = matches!(code, 0xfdd0..=0xfdef) || code & 0xfffe == 0xfffe;
    let odd_space = c.is_whitespace() && c != ' ';
    !(c.is_control() || odd_space || format || private || nonchar)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of the tables: `A` set, `E` set but empty, everything else unset.
    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("aa".to_owned()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    type Expected = Result<&'static [(&'static str, &'static str)], (usize, &'static str)>;

    /// Compares a parse result with a table's expectation, order of keys included.
    fn check(src: &str, got: Result<IndexMap<String, String>, DotenvError>, expected: &Expected) {
        let got = got.map(|m| m.into_iter().collect::<Vec<_>>());
        let expected = expected
            .map(|pairs| {
                pairs
                    .iter()
                    .map(|&(k, v)| (k.to_owned(), v.to_owned()))
                    .collect::<Vec<_>>()
            })
            .map_err(|(line, message)| DotenvError {
                line,
                message: message.to_owned(),
            });
        assert_eq!(got, expected, "source {src:?}");
    }

    /// Expectations produced by `docker compose config` (v2.40.3) reading the source as a
    /// service's `env_file`, with `A=aa` and `E=` in the environment.
    #[test]
    fn parse_matches_compose() {
        let cases: &[(&str, Expected)] = &[
            ("", Ok(&[])),
            ("\n\n", Ok(&[])),
            ("# only a comment", Ok(&[])),
            ("A=1", Ok(&[("A", "1")])),
            ("A=1\nB=2\n", Ok(&[("A", "1"), ("B", "2")])),
            ("A=1\r\nB=2\r\n", Ok(&[("A", "1"), ("B", "2")])),
            ("\u{feff}K=1\n", Ok(&[("K", "1")])),
            ("  K=1\n\tL=2\n", Ok(&[("K", "1"), ("L", "2")])),
            ("K = 1 \n", Ok(&[("K", "1")])),
            ("K=\n", Ok(&[("K", "")])),
            ("K:v\n", Ok(&[("K", "v")])),
            ("K: v\n", Ok(&[("K", "v")])),
            ("K:=v\n", Ok(&[("K", "=v")])),
            ("K=a=b\n", Ok(&[("K", "a=b")])),
            ("export K=1\n", Ok(&[("K", "1")])),
            ("export  K = 1\n", Ok(&[("K", "1")])),
            ("export\tK=1\n", Ok(&[("K", "1")])),
            ("exportK=1\n", Ok(&[("exportK", "1")])),
            ("export=1\n", Ok(&[("export", "1")])),
            ("export K\n", Ok(&[])),
            ("export\nK=1\n", Ok(&[("K", "1")])),
            ("export", Ok(&[("", "export")])),
            ("K\n", Ok(&[])),
            ("A\n", Ok(&[("A", "aa")])),
            ("E\n", Ok(&[("E", "")])),
            ("K=1\nK\n", Ok(&[("K", "1")])),
            ("A=1\nA\n", Ok(&[("A", "aa")])),
            ("A  \nK=2\n", Ok(&[("A", "aa"), ("K", "2")])),
            ("K=x # comment\n", Ok(&[("K", "x")])),
            ("K=x#not\n", Ok(&[("K", "x#not")])),
            ("K=x\t# not\n", Ok(&[("K", "x\t# not")])),
            ("K=x #\n", Ok(&[("K", "x")])),
            ("K=#x\n", Ok(&[("K", "#x")])),
            ("K= #x\n", Ok(&[("K", "#x")])),
            ("# c\nK=1 # c\n#c2\nL=2", Ok(&[("K", "1"), ("L", "2")])),
            ("K='lit $A \\n \\' q'\n", Ok(&[("K", "lit $A \\n ' q")])),
            ("K='a\nb'\n", Ok(&[("K", "a\nb")])),
            ("K=''\n", Ok(&[("K", "")])),
            ("K='x'y\nL=2\n", Ok(&[("K", "x"), ("L", "2")])),
            ("K='x' # c\n", Ok(&[("K", "x")])),
            (
                "K=\"$A ${A} ${B:-d} $$ \\$A\"\n",
                Ok(&[("K", "aa aa d $ $A")]),
            ),
            ("K=\"a\\nb\\tc\\rd\"\n", Ok(&[("K", "a\nb\tc\rd")])),
            (
                "K=\"\\a\\b\\f\\v\\c\\x41\\u0041\"\n",
                Ok(&[("K", "\u{7}\u{8}\u{c}\u{b}\\c\\x41\\u0041")]),
            ),
            ("K=\"\\\\n \\\\\\\\ \\\\\"\n", Ok(&[("K", "\\n \\\\ \\")])),
            ("K=\"a\\\"b\"\n", Ok(&[("K", "a\"b")])),
            (
                "K=\"\\0101|\\0|\\01|\\012|\\0777|\\0377|\\01234|\\08\"\n",
                Ok(&[("K", "A|\\|\\1|\\12|\\777|ÿ|S4|\\8")]),
            ),
            (
                "K=\"multi\nline\"\nL=2\n",
                Ok(&[("K", "multi\nline"), ("L", "2")]),
            ),
            ("K=\"\"\n", Ok(&[("K", "")])),
            ("K=\"x\" L=2\n", Ok(&[("K", "x"), ("L", "2")])),
            ("K=\"x\"#c\nL=2\n", Ok(&[("K", "x"), ("L", "2")])),
            (
                "K=\"x\"\"y\"\n",
                Err((
                    1,
                    "unexpected character \"\\\"\" in variable name \"\\\"y\\\"\"",
                )),
            ),
            ("K=$A\n", Ok(&[("K", "aa")])),
            ("K=${A}x\n", Ok(&[("K", "aax")])),
            ("K=$B\n", Ok(&[("K", "")])),
            ("K=${B:-dflt}\n", Ok(&[("K", "dflt")])),
            ("K=$$A\n", Ok(&[("K", "$A")])),
            ("K=\\$A\n", Ok(&[("K", "\\aa")])),
            ("K=a\\\nL=2\n", Ok(&[("K", "a\\"), ("L", "2")])),
            ("K=1\nL=$K\n", Ok(&[("K", "1"), ("L", "1")])),
            ("A=1\nL=$A\n", Ok(&[("A", "1"), ("L", "aa")])),
            (
                "K=${L}\nL=2\nM=$L\n",
                Ok(&[("K", ""), ("L", "2"), ("M", "2")]),
            ),
            ("K=1\nK=2\nL=$K\n", Ok(&[("K", "2"), ("L", "2")])),
            ("1K=x\n", Ok(&[("1K", "x")])),
            ("K.B-C[0]=x\n", Ok(&[("K.B-C[0]", "x")])),
            ("é=1\nΩ2=2\n", Ok(&[("é", "1"), ("Ω2", "2")])),
            ("=x\n", Ok(&[("", "x")])),
            (":x\n", Ok(&[("", "x")])),
            ("K\tL=x\n", Ok(&[("K\tL", "x")])),
            ("K=1\nFOO", Ok(&[("K", "1"), ("", "FOO")])),
            ("K=1\nFOO BAR", Ok(&[("K", "1"), ("", "FOO BAR")])),
            ("x\n   \n\t\n", Ok(&[])),
            ("K L=x\n", Err((1, "key cannot contain a space"))),
            ("A=1\n\n\n  B C=1\n", Err((4, "key cannot contain a space"))),
            ("K L\n", Err((1, "key cannot contain a space"))),
            (
                "K$=x\n",
                Err((1, "unexpected character \"$\" in variable name \"K$=x\"")),
            ),
            (
                "K\"=x\n",
                Err((
                    1,
                    "unexpected character \"\\\"\" in variable name \"K\\\"=x\"",
                )),
            ),
            (
                "K=\"x\" y # z\n",
                Err((1, "unexpected character \"#\" in variable name \"y # z\"")),
            ),
            (
                "K=\"unterminated\nL=2\n",
                Err((3, "unterminated quoted value \"unterminated")),
            ),
            (
                "\n\n\nK=\"x\ny\n",
                Err((6, "unterminated quoted value \"x")),
            ),
            ("K='x\n", Err((2, "unterminated quoted value 'x"))),
            ("K=\"\\\"\n", Err((2, "unterminated quoted value \"\\\""))),
            ("K\u{a0}L=1\n", Ok(&[("K\u{a0}L", "1")])),
            (
                "K\u{200b}L=1\n",
                Err((
                    1,
                    "unexpected character \"\\u200b\" in variable name \"K\\u200bL=1\"",
                )),
            ),
            (
                "K\u{1}=1\n",
                Err((
                    1,
                    "unexpected character \"\\x01\" in variable name \"K\\x01=1\"",
                )),
            ),
            (
                "K\u{7f}=1\n",
                Err((
                    1,
                    "unexpected character \"\\x7f\" in variable name \"K\\x7f=1\"",
                )),
            ),
        ];
        for (src, expected) in cases {
            check(src, parse(src, &env), expected);
        }
    }

    /// Errors Compose reports without a line number; ours name the statement's line.
    #[test]
    fn parse_errors_without_compose_line_numbers() {
        let cases: &[(&str, Expected)] = &[
            // Compose: "zero length string".
            ("K=1\nexport ", Err((2, "zero length string"))),
            // Compose: "Invalid template: \"${\"".
            (
                "K=1\n\nL=${\n",
                Err((
                    3,
                    "invalid interpolation format for \"${\": you may need to escape any $ with another $",
                )),
            ),
            // Compose: "required variable B is missing a value: boom".
            (
                "K=\"a\nb${B:?boom}\"",
                Err((1, "required variable B is missing a value: boom")),
            ),
            ("K='${B:?boom}'", Ok(&[("K", "${B:?boom}")])),
        ];
        for (src, expected) in cases {
            check(src, parse(src, &env), expected);
        }
    }

    /// Expectations produced by `docker compose config` (v2.40.3) reading the source as a
    /// service's `env_file` with `format: raw`, with `A=aa` and `E=` in the environment.
    #[test]
    fn parse_raw_matches_compose() {
        let cases: &[(&str, Expected)] = &[
            ("", Ok(&[])),
            ("K=1\nL=2", Ok(&[("K", "1"), ("L", "2")])),
            (
                "K=\"quoted\" # not a comment \n",
                Ok(&[("K", "\"quoted\" # not a comment ")]),
            ),
            ("K='x'\n", Ok(&[("K", "'x'")])),
            ("K=$A ${B}\n", Ok(&[("K", "$A ${B}")])),
            ("  K=1\n\tL=2\n", Ok(&[("K", "1"), ("L", "2")])),
            ("# c\n\n  # c\nK=1\n", Ok(&[("K", "1")])),
            ("K=\n", Ok(&[("K", "")])),
            ("K=a=b\n", Ok(&[("K", "a=b")])),
            ("K=1\r\nL=2\r\n", Ok(&[("K", "1"), ("L", "2")])),
            ("K=1\r\r\n", Ok(&[("K", "1\r")])),
            ("K=1\rL=2\n", Ok(&[("K", "1\rL=2")])),
            (
                "\u{feff}K=1\n\u{feff}L=2\n",
                Ok(&[("K", "1"), ("\u{feff}L", "2")]),
            ),
            ("K=\\n\\t\n", Ok(&[("K", "\\n\\t")])),
            ("A\nB\nE\n", Ok(&[("A", "aa"), ("E", "")])),
            ("A\r\n", Ok(&[("A", "aa")])),
            (
                "export K=1\n",
                Err((1, "variable 'export K' contains whitespaces")),
            ),
            ("K:v\n", Ok(&[])),
            ("1K=x\n", Ok(&[("1K", "x")])),
            ("K.B-C[0]é=1\n", Ok(&[("K.B-C[0]é", "1")])),
            ("K= spaced \n", Ok(&[("K", " spaced ")])),
            ("\u{a0}K=1\n", Ok(&[("K", "1")])),
            ("K L=1\n", Err((1, "variable 'K L' contains whitespaces"))),
            ("K\t=1\n", Err((1, "variable 'K\t' contains whitespaces"))),
            ("=x\n", Err((1, "no variable name on line '=x'"))),
            ("  =x\n", Err((1, "no variable name on line '=x'"))),
            ("K L\n", Err((1, "variable 'K L' contains whitespaces"))),
            ("A \n", Err((1, "variable 'A ' contains whitespaces"))),
        ];
        for (src, expected) in cases {
            check(src, parse_raw_with_lookup(src, &env), expected);
        }
    }

    #[test]
    fn parse_raw_without_lookup_drops_bare_keys() {
        let cases: &[(&str, Expected)] = &[
            ("A\nK=1\nE\n", Ok(&[("K", "1")])),
            ("K L\n", Err((1, "variable 'K L' contains whitespaces"))),
        ];
        for (src, expected) in cases {
            check(src, parse_raw(src), expected);
        }
    }

    #[test]
    fn parse_raw_limits_line_length_like_docker() {
        let fits = format!("K={}\nL=1", "x".repeat(64 * 1024 - 3));
        assert_eq!(parse_raw(&fits).map(|m| m.len()), Ok(2));
        let long = format!("L=1\nK={}\n", "x".repeat(64 * 1024 - 2));
        assert_eq!(
            parse_raw(&long),
            Err(DotenvError {
                line: 2,
                message: "line is longer than 65535 bytes".to_owned()
            })
        );
    }

    #[test]
    fn parse_into_chains_files_like_compose() {
        // Compose parses a second file into the map the first one filled; the environment
        // wins over earlier keys when interpolating.
        let lookup = |name: &str| (name == "A").then(|| "env".to_owned());
        let mut out = IndexMap::new();
        let mut unset = Vec::new();
        let first = parse_into("A=1\nK=1\n", &lookup, &mut out, &mut |n| {
            unset.push(n.to_owned())
        });
        assert_eq!(first, Ok(()));
        let second = parse_into("K=2\nL=$K $A $NOPE\nM\nA\n", &lookup, &mut out, &mut |n| {
            unset.push(n.to_owned())
        });
        assert_eq!(second, Ok(()));
        let got: Vec<(&str, &str)> = out.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("A", "env"), ("K", "2"), ("L", "2 env ")]);
        assert_eq!(unset, ["NOPE"]);
    }

    #[test]
    fn error_display() {
        let e = DotenvError {
            line: 3,
            message: "key cannot contain a space".to_owned(),
        };
        assert_eq!(e.to_string(), "line 3: key cannot contain a space");
    }

    #[test]
    fn go_quoting() {
        let cases = [
            ("plain", "\"plain\""),
            ("q\"b\\", "\"q\\\"b\\\\\""),
            ("\n\t\u{7}", "\"\\n\\t\\a\""),
            ("\u{1}\u{7f}\u{85}\u{a0}", "\"\\x01\\x7f\\u0085\\u00a0\""),
            (
                "é ✓ \u{200b}\u{feff}\u{10ffff}",
                "\"é ✓ \\u200b\\ufeff\\U0010ffff\"",
            ),
        ];
        for (input, quoted) in cases {
            assert_eq!(go_quote(input), quoted, "input {input:?}");
        }
    }

    #[test]
    fn never_panics_on_odd_input() {
        let pieces = [
            "A", "=", ":", " ", "\n", "#", "\"", "'", "\\", "$", "{", "}", "export ", "é", "\r",
            "\u{a0}", "\u{feff}", "0",
        ];
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = inputs
                .iter()
                .flat_map(|s| pieces.iter().map(move |p| format!("{s}{p}")))
                .collect();
            for s in &longer {
                let _ = parse(s, &env);
                let _ = parse_raw(s);
            }
            inputs = longer;
        }
    }
}
