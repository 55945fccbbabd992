//! YAML text to value trees, read the way Compose reads it.
//!
//! Compose parses its files with go-yaml v3, whose plain scalars do not
//! resolve as `serde_yaml`'s do: `0755` is the octal number 493, `1_000` is
//! 1000, `08` is the float 8, and an integer too large for 64 bits is a float.
//! So the loader builds its trees itself, from the events of `saphyr-parser`
//! (a YAML 1.2 event parser), resolving each scalar as go-yaml does and
//! keeping the tree shape `serde_yaml::Value` has: custom tags (`!reset`,
//! `!override`) as `Value::Tagged`, merge keys `<<` as ordinary keys for
//! [`Value::apply_merge`].
//!
//! Building from events as they come also keeps memory low: no list of every
//! event of a document is held while its tree is made.
//!
//! Limits guard what follows: collections nest at most [`MAX_DEPTH`] deep
//! (the loader's later phases recurse), and aliases may copy at most
//! [`MAX_ALIAS_NODES`] nodes in all (the "billion laughs" document). That
//! count runs over the whole text, not document by document: a file of many
//! documents, each just under the limit, would otherwise multiply it.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde_yaml::value::{Tag as ValueTag, TaggedValue};
use serde_yaml::{Mapping, Number, Value};

/// How deep sequences and mappings may nest.
pub const MAX_DEPTH: usize = 128;

/// How many nodes aliases may copy, in all, into every document of one text
/// together.
pub const MAX_ALIAS_NODES: usize = 1_000_000;

/// Why a text is not YAML, and where (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct YamlError {
    /// What is wrong.
    pub message: String,
    /// Line and column of the problem, when known.
    pub position: Option<(usize, usize)>,
}

impl YamlError {
    fn at(message: impl Into<String>, span: &Span) -> Self {
        YamlError {
            message: message.into(),
            position: Some((span.start.line().max(1), span.start.col() + 1)),
        }
    }
}

/// Parses every document of `text`. A document with no content is `Null`.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, YamlError> {
    parse_located_documents(text).map(|docs| docs.into_iter().map(|(v, _)| v).collect())
}

/// A document's tree and the line and column (1-based) where it starts.
pub type LocatedDocument = (Value, (usize, usize));

/// Parses every document of `text`, each with where it starts, for errors
/// about a whole document.
pub fn parse_located_documents(text: &str) -> Result<Vec<LocatedDocument>, YamlError> {
    // The parser is not expected to panic; if it does, the file is refused
    // rather than the program stopped.
    catch_unwind(AssertUnwindSafe(|| Builder::default().run(text))).unwrap_or_else(|_| {
        Err(YamlError {
            message: "the YAML parser could not read this file".into(),
            position: None,
        })
    })
}

/// A collection being built.
enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        tag: Option<String>,
    },
    Map {
        map: Mapping,
        /// The key read, waiting for its value.
        key: Option<Value>,
        anchor: usize,
        tag: Option<String>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    /// Finished anchored nodes and their sizes in nodes, by anchor id.
    anchors: HashMap<usize, (Value, usize)>,
    /// Nodes copied by aliases so far, in every document read: never reset
    /// between documents, so that [`MAX_ALIAS_NODES`] bounds the whole text.
    copied: usize,
    root: Option<Value>,
    /// Where the current document starts.
    start: (usize, usize),
    documents: Vec<LocatedDocument>,
}

impl Builder {
    fn run(mut self, text: &str) -> Result<Vec<LocatedDocument>, YamlError> {
        for next in Parser::new_from_str(text) {
            let (event, span) = next.map_err(|e| YamlError {
                message: e.info().to_string(),
                position: Some((e.marker().line().max(1), e.marker().col() + 1)),
            })?;
            match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    // Anchors are local to a document; the alias budget is not.
                    self.anchors.clear();
                    self.root = None;
                    self.start = (span.start.line().max(1), span.start.col() + 1);
                }
                Event::DocumentEnd => {
                    let root = self.root.take().unwrap_or(Value::Null);
                    self.documents.push((root, self.start));
                }
                Event::Scalar(value, style, anchor, tag) => {
                    let tag = tag.map(|t| tag_name(&t));
                    let mut v = scalar(&value, style, tag.as_deref())
                        .map_err(|m| YamlError::at(m, &span))?;
                    let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
                    if style == ScalarStyle::Plain
                        && tag.is_none()
                        && !is_key
                        && timestamp(&value).is_some()
                    {
                        v = Value::Tagged(Box::new(TaggedValue {
                            tag: ValueTag::new(TIMESTAMP),
                            value: v,
                        }));
                    }
                    self.finish(v, anchor, &span)?;
                }
                Event::SequenceStart(anchor, tag) => {
                    self.open(&span)?;
                    self.stack.push(Frame::Seq {
                        items: Vec::new(),
                        anchor,
                        tag: tag.map(|t| tag_name(&t)),
                    });
                }
                Event::MappingStart(anchor, tag) => {
                    self.open(&span)?;
                    self.stack.push(Frame::Map {
                        map: Mapping::new(),
                        key: None,
                        anchor,
                        tag: tag.map(|t| tag_name(&t)),
                    });
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (value, anchor, tag) = match self.stack.pop() {
                        Some(Frame::Seq { items, anchor, tag }) => {
                            (Value::Sequence(items), anchor, tag)
                        }
                        Some(Frame::Map {
                            map, anchor, tag, ..
                        }) => (Value::Mapping(map), anchor, tag),
                        None => return Err(YamlError::at("unbalanced collection", &span)),
                    };
                    let value = match tag {
                        Some(t) if core_suffix(&t).is_none() && t != "!" => tagged(&t, value),
                        _ => value,
                    };
                    self.finish(value, anchor, &span)?;
                }
                Event::Alias(id) => {
                    let Some((value, size)) = self.anchors.get(&id) else {
                        return Err(YamlError::at(
                            "an alias refers to the node that contains it",
                            &span,
                        ));
                    };
                    self.copied = self.copied.saturating_add(*size);
                    if self.copied > MAX_ALIAS_NODES {
                        return Err(YamlError::at(
                            format!(
                                "aliases expand this file to more than {MAX_ALIAS_NODES} nodes"
                            ),
                            &span,
                        ));
                    }
                    let value = value.clone();
                    self.finish(value, 0, &span)?;
                }
            }
        }
        Ok(self.documents)
    }

    fn open(&self, span: &Span) -> Result<(), YamlError> {
        if self.stack.len() >= MAX_DEPTH {
            return Err(YamlError::at(
                format!("collections nest deeper than {MAX_DEPTH} levels"),
                span,
            ));
        }
        Ok(())
    }

    /// Puts a finished node where it belongs: its parent, or the root.
    fn finish(&mut self, value: Value, anchor: usize, span: &Span) -> Result<(), YamlError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (value.clone(), size(&value)));
        }
        match self.stack.last_mut() {
            None => self.root = Some(value),
            Some(Frame::Seq { items, .. }) => items.push(value),
            Some(Frame::Map { map, key, .. }) => match key.take() {
                None if map.contains_key(&value) => {
                    return Err(YamlError::at(
                        format!("mapping key {} already defined", describe_key(&value)),
                        span,
                    ));
                }
                None => *key = Some(value),
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
        Ok(())
    }
}

/// How many nodes a tree has.
fn size(v: &Value) -> usize {
    match v {
        Value::Sequence(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Mapping(m) => 1 + m.iter().map(|(k, v)| size(k) + size(v)).sum::<usize>(),
        Value::Tagged(t) => 1 + size(&t.value),
        _ => 1,
    }
}

fn describe_key(k: &Value) -> String {
    match k {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        _ => "(a collection)".into(),
    }
}

/// A tag as written, its handle resolved: `!reset`, `!!str`.
fn tag_name(tag: &Tag) -> String {
    format!("{}{}", tag.handle, tag.suffix)
}

/// The name of a tag of the YAML core schema (`!!int`, or spelled out).
fn core_suffix(tag: &str) -> Option<&str> {
    tag.strip_prefix("!!")
        .or_else(|| tag.strip_prefix("tag:yaml.org,2002:"))
}

fn tagged(tag: &str, value: Value) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: ValueTag::new(tag),
        value,
    }))
}

/// The tag on a plain scalar that go-yaml reads as a time (`2001-12-14`):
/// the loader decides what it becomes where it lies
/// ([`super::resolve_timestamps`]).
pub const TIMESTAMP: &str = "!!timestamp";

/// A plain scalar that go-yaml v3 decodes as a time, in the form Go's JSON
/// writes it (RFC 3339 with nanoseconds, trailing zeros dropped). go-yaml
/// tries Go's layouts `2006-1-2T15:4:5.999999999Z07:00` (also with `t`),
/// `2006-1-2 15:4:5.999999999` (UTC) and `2006-1-2` (midnight UTC): a
/// four-digit year, one or two digits for the other fields, seconds
/// required, a fraction after `.` or `,` (cut at nanoseconds), and a zone
/// of `Z` or `±hh:mm` in the first layout only.
pub fn timestamp(s: &str) -> Option<String> {
    let mut text = Cursor(s);
    let year = text.number(4, 4)?;
    text.expect(b'-')?;
    let month = text.number(1, 2)?;
    text.expect(b'-')?;
    let day = text.number(1, 2)?;
    let date = jiff::civil::Date::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
    )
    .ok()?;
    let zoned = |time: jiff::civil::Time, offset: jiff::tz::Offset| {
        date.to_datetime(time)
            .to_zoned(jiff::tz::TimeZone::fixed(offset))
            .ok()
    };
    let Some(separator) = text.next() else {
        return Some(go_rfc3339(&zoned(
            jiff::civil::Time::midnight(),
            jiff::tz::Offset::UTC,
        )?));
    };
    let with_zone = match separator {
        b'T' | b't' => true,
        b' ' => false,
        _ => return None,
    };
    let hour = text.number(1, 2)?;
    text.expect(b':')?;
    let minute = text.number(1, 2)?;
    text.expect(b':')?;
    let second = text.number(1, 2)?;
    let mut nanos = 0;
    if text.0.starts_with(['.', ',']) {
        text.next();
        let digits = text.0.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let (fraction, after) = text.0.split_at(digits);
        text.0 = after;
        let kept = &fraction[..digits.min(9)];
        nanos = format!("{kept:0<9}").parse::<i32>().ok()?;
    }
    let offset = if with_zone {
        match text.next()? {
            b'Z' => jiff::tz::Offset::UTC,
            sign @ (b'+' | b'-') => {
                let hours = text.number(2, 2)?;
                text.expect(b':')?;
                let minutes = text.number(2, 2)?;
                let seconds = i32::try_from((hours * 60 + minutes) * 60).ok()?;
                jiff::tz::Offset::from_seconds(if sign == b'-' { -seconds } else { seconds })
                    .ok()?
            }
            _ => return None,
        }
    } else {
        jiff::tz::Offset::UTC
    };
    if !text.0.is_empty() {
        return None;
    }
    let time = jiff::civil::Time::new(
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    Some(go_rfc3339(&zoned(time, offset)?))
}

/// The text of a timestamp not read yet.
struct Cursor<'a>(&'a str);

impl Cursor<'_> {
    /// A number of `min` to `max` digits.
    fn number(&mut self, min: usize, max: usize) -> Option<i64> {
        let n = self
            .0
            .bytes()
            .take(max)
            .take_while(u8::is_ascii_digit)
            .count();
        if n < min {
            return None;
        }
        let (digits, rest) = self.0.split_at(n);
        self.0 = rest;
        digits.parse().ok()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn next(&mut self) -> Option<u8> {
        let c = *self.0.as_bytes().first()?;
        // Not past the first byte of a longer character: no timestamp.
        self.0 = self.0.get(1..)?;
        Some(c)
    }
}

/// Go's `time.RFC3339Nano`: `Z` for UTC, else `±hh:mm`; fractional
/// seconds without trailing zeros.
fn go_rfc3339(t: &jiff::Zoned) -> String {
    let mut out = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = t.subsec_nanosecond();
    if nanos != 0 {
        let digits = format!("{nanos:09}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    let offset = t.offset().seconds();
    if offset == 0 {
        out.push('Z');
    } else {
        let sign = if offset < 0 { '-' } else { '+' };
        let m = offset.unsigned_abs() / 60;
        out.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
    }
    out
}

/// A scalar as go-yaml reads it.
fn scalar(text: &str, style: ScalarStyle, tag: Option<&str>) -> Result<Value, String> {
    let plain = style == ScalarStyle::Plain;
    let Some(tag) = tag else {
        return Ok(if plain {
            resolve_plain(text)
        } else {
            Value::String(text.to_string())
        });
    };
    match core_suffix(tag) {
        Some("str" | "binary" | "timestamp") => Ok(Value::String(text.to_string())),
        Some(kind @ ("int" | "float" | "bool" | "null")) => {
            let v = resolve_plain(text);
            match (kind, v) {
                ("int", v @ Value::Number(_)) if !is_float(&v) => Ok(v),
                ("float", Value::Number(n)) => {
                    Ok(Value::Number(Number::from(n.as_f64().unwrap_or_default())))
                }
                ("bool", v @ Value::Bool(_)) | ("null", v @ Value::Null) => Ok(v),
                _ => Err(format!("cannot read {text:?} as a !!{kind}")),
            }
        }
        Some(_) => Ok(Value::String(text.to_string())),
        // The non-specific tag `!` makes a string.
        None if tag == "!" => Ok(Value::String(text.to_string())),
        None => Ok(tagged(
            tag,
            if plain {
                resolve_plain(text)
            } else {
                Value::String(text.to_string())
            },
        )),
    }
}

fn is_float(v: &Value) -> bool {
    matches!(v, Value::Number(n) if n.is_f64())
}

/// An untagged plain scalar as go-yaml v3 resolves it: null, booleans, the
/// special floats, then, for what starts with a digit, a sign or a dot, an
/// integer (Go's base prefixes and a leading `0` for octal; underscores
/// ignored), an unsigned integer, a float; anything else is a string.
pub fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Number(Number::from(f64::INFINITY))
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Number(Number::from(f64::NEG_INFINITY)),
        ".nan" | ".NaN" | ".NAN" => return Value::Number(Number::from(f64::NAN)),
        _ => {}
    }
    let string = || Value::String(s.to_string());
    match s.as_bytes().first() {
        Some(b'.') => match go_yaml_float(s) {
            Some(f) => Value::Number(Number::from(f)),
            None => string(),
        },
        Some(b'0'..=b'9' | b'+' | b'-') => {
            let digits: String = s.chars().filter(|&c| c != '_').collect();
            if let Some(i) = go_parse_int(&digits) {
                Value::Number(Number::from(i))
            } else if let Some(u) = go_parse_uint(&digits) {
                Value::Number(Number::from(u))
            } else if let Some(f) = go_yaml_float(&digits) {
                Value::Number(Number::from(f))
            } else {
                string()
            }
        }
        _ => string(),
    }
}

/// The radix and digits of an unsigned number in Go's base-0 syntax.
fn radix_and_digits(s: &str) -> (u32, &str) {
    let prefixed = |p: &[&str]| p.iter().find_map(|p| s.strip_prefix(p));
    if let Some(d) = prefixed(&["0x", "0X"]) {
        (16, d)
    } else if let Some(d) = prefixed(&["0o", "0O"]) {
        (8, d)
    } else if let Some(d) = prefixed(&["0b", "0B"]) {
        (2, d)
    } else if s.len() > 1 && s.starts_with('0') {
        (8, &s[1..])
    } else {
        (10, s)
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)`: no sign.
fn go_parse_uint(s: &str) -> Option<u64> {
    let (radix, digits) = radix_and_digits(s);
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: an optional sign, then as [`go_parse_uint`].
fn go_parse_int(s: &str) -> Option<i64> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = go_parse_uint(rest)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// A float in go-yaml's syntax (`[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`),
/// if it is finite (Go refuses one out of range, and go-yaml keeps the text).
fn go_yaml_float(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'+' | b'-')));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return None;
        }
    } else {
        if digits(&mut i) == 0 {
            return None;
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            digits(&mut i);
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Value {
        let mut docs = parse_documents(text).unwrap_or_else(|e| panic!("{text:?}: {e:?}"));
        docs.remove(0)
    }

    fn json(v: &Value) -> String {
        serde_json::to_string(v).unwrap_or_default()
    }

    #[test]
    fn plain_scalars_resolve_as_go_yaml_resolves_them() {
        // What docker compose config prints for each, as an x- value.
        let cases = [
            ("0755", "493"),
            ("08", "8.0"),
            ("00", "0"),
            ("'0755'", "\"0755\""),
            ("1_000", "1000"),
            ("_", "\"_\""),
            ("0x1F", "31"),
            ("0X1F", "31"),
            ("0o17", "15"),
            ("0O17", "15"),
            ("0b101", "5"),
            ("-0b101", "-5"),
            ("-0o17", "-15"),
            ("+12", "12"),
            ("-0", "0"),
            ("99999999999999999999", "1e+20"),
            ("-9223372036854775809", "-9.223372036854776e+18"),
            ("18446744073709551615", "18446744073709551615"),
            ("1e3", "1000.0"),
            (".5", "0.5"),
            ("1.", "1.0"),
            ("+.5", "0.5"),
            ("1_0.5", "10.5"),
            (".", "\".\""),
            ("1e400", "\"1e400\""),
            ("inf", "\"inf\""),
            ("yes", "\"yes\""),
            ("on", "\"on\""),
            ("~", "null"),
            ("NULL", "null"),
            ("nUll", "\"nUll\""),
            ("True", "true"),
            ("tRUE", "\"tRUE\""),
            ("12:30", "\"12:30\""),
            ("0x", "\"0x\""),
            ("1e", "\"1e\""),
            ("!!str 12", "\"12\""),
            ("!!float 3", "3.0"),
            ("!!int \"7\"", "7"),
        ];
        for (text, want) in cases {
            assert_eq!(json(&one(text)), want, "{text}");
        }
    }

    #[test]
    fn plain_dates_and_times_are_timestamps_as_go_yaml_reads_them() {
        for (text, want) in [
            ("2001-12-14", Some("2001-12-14T00:00:00Z")),
            (
                "2001-12-14t21:59:43.10-05:00",
                Some("2001-12-14T21:59:43.1-05:00"),
            ),
            ("2001-12-14T21:59:43Z", Some("2001-12-14T21:59:43Z")),
            ("2001-12-14 21:59:43.5", Some("2001-12-14T21:59:43.5Z")),
            ("2001-12-14 21:59:43.10 -5", None),
            ("2001-1-2", Some("2001-01-02T00:00:00Z")),
            ("2001-12-14 1:2:3", Some("2001-12-14T01:02:03Z")),
            (
                "2001-12-14T1:2:3.1234567891Z",
                Some("2001-12-14T01:02:03.123456789Z"),
            ),
            ("2001-12-14T10:00:00,5Z", Some("2001-12-14T10:00:00.5Z")),
            ("2001-12-14 10:00", None),
            ("2001-12-14T10:00:00z", None),
            ("2001-12-14T10:00:00+0500", None),
            ("2001-12-14 10:00:00Z", None),
            ("2001-02-30", None),
            ("2001-13-14", None),
            ("12001-12-14", None),
            ("2001-12-14x", None),
        ] {
            assert_eq!(timestamp(text).as_deref(), want, "{text}");
        }
        // Only a plain value is one: not a key, not a quoted or tagged one.
        let v = one("2001-12-14: 2001-12-14\nq: \"2001-12-14\"\ns: !!str 2001-12-14\n");
        let Some(m) = v.as_mapping() else {
            panic!("not a mapping: {v:?}")
        };
        let Some((key, value)) = m.iter().next() else {
            panic!("no entry")
        };
        assert_eq!(key.as_str(), Some("2001-12-14"));
        assert!(
            matches!(value, Value::Tagged(t) if t.tag == ValueTag::new(TIMESTAMP) && t.value.as_str() == Some("2001-12-14")),
            "{value:?}"
        );
        assert_eq!(m.get("q").and_then(Value::as_str), Some("2001-12-14"));
        assert_eq!(m.get("s").and_then(Value::as_str), Some("2001-12-14"));
    }

    #[test]
    fn trees_keep_tags_anchors_and_merge_keys() {
        let v = one("a: &x {k: 1}\nb: *x\nc: !reset []\nd: !override {z: 2}\ne:\n  <<: *x\n");
        assert_eq!(
            json(&v),
            r#"{"a":{"k":1},"b":{"k":1},"c":{"!reset":[]},"d":{"!override":{"z":2}},"e":{"<<":{"k":1}}}"#
        );
        let docs = parse_documents("a: 1\n---\nb: 2\n").unwrap_or_default();
        assert_eq!(docs.len(), 2);
        assert_eq!(parse_documents("").unwrap_or_default(), Vec::<Value>::new());
    }

    #[test]
    fn bad_documents_are_refused_with_a_place() {
        let e = parse_documents("a: 1\na: 2\n").err();
        assert_eq!(
            e.map(|e| (e.message, e.position)),
            Some(("mapping key \"a\" already defined".into(), Some((2, 1))))
        );
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert!(parse_documents(&deep).is_err());
        let mut laughs = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for (i, c) in "bcdefghij".chars().enumerate() {
            let prev = (b'a' + i as u8) as char;
            laughs.push_str(&format!("{c}: &{c} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
        }
        let e = parse_documents(&laughs).err().map(|e| e.message);
        assert!(e.is_some_and(|m| m.contains("aliases expand")));
        assert!(parse_documents("a: [1, 2\n").is_err());
    }

    /// One "billion laughs" document whose aliases copy 901,217 nodes: under
    /// [`MAX_ALIAS_NODES`] on its own, over it twice.
    fn laughs_below_the_cap() -> String {
        let mut doc = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        // Level k copies ten times the size of level k-1: 110, 1110, 11110
        // and 111110 nodes for b to e (sizes 111 to 111111).
        for (prev, c) in "abcd".chars().zip("bcde".chars()) {
            let alias = format!("*{prev}");
            let items = [alias.as_str(); 10].join(", ");
            doc.push_str(&format!("{c}: &{c} [{items}]\n"));
        }
        // Seven more copies of e: 777,777 nodes; 901,217 in all.
        doc.push_str(&format!("f: [{}]\n", ["*e"; 7].join(", ")));
        doc
    }

    #[test]
    fn the_alias_cap_holds_for_the_whole_text_not_each_document() {
        let doc = laughs_below_the_cap();
        assert!(
            parse_documents(&doc).is_ok_and(|d| d.len() == 1),
            "one document under the cap is read"
        );
        // Two such documents copy 1,802,434 nodes: refused, at an alias of
        // the second document (lines 8 to 14; the first has lines 1 to 6).
        let text = format!("{doc}---\n{doc}");
        let e = parse_documents(&text).err();
        let (message, line) = e
            .map(|e| (e.message, e.position.map_or(0, |p| p.0)))
            .unwrap_or_default();
        assert!(message.contains("aliases expand"), "{message:?}");
        assert!((8..=14).contains(&line), "line {line}");
        // Many small documents add up too: each copies 123,440 nodes (b to
        // e), nine of them 1,110,960.
        let small: String = doc.lines().take(5).map(|l| format!("{l}\n")).collect();
        assert!(parse_documents(&[small.as_str(); 8].join("---\n")).is_ok());
        let nine = [small.as_str(); 9].join("---\n");
        assert!(parse_documents(&nine)
            .err()
            .is_some_and(|e| e.message.contains("aliases expand")));
    }

    #[test]
    fn documents_are_read_apart_in_order() {
        // Compose merges the documents of a file in order, like files given
        // with -f (the loader does so); the parser keeps them apart, each
        // with its own anchors.
        let docs = parse_documents("a: &x 1\nb: *x\n---\nc: 2\n---\n").unwrap_or_default();
        assert_eq!(
            docs.iter().map(json).collect::<Vec<_>>(),
            [r#"{"a":1,"b":1}"#, r#"{"c":2}"#, "null"]
        );
        let e = parse_documents("a: &x 1\n---\nb: *x\n").err();
        assert_eq!(e.and_then(|e| e.position), Some((3, 4)));
        // Each document knows where it starts, for errors about it whole.
        let starts: Vec<(usize, usize)> = parse_located_documents("a: 1\n---\nc: 2\n---\n")
            .unwrap_or_default()
            .into_iter()
            .map(|(_, start)| start)
            .collect();
        assert_eq!(starts, [(1, 1), (2, 1), (4, 1)]);
    }
}
