//! Variable interpolation in compose files, as Docker Compose v2 performs it.
//!
//! Supported forms:
//!
//! | form            | result                                                          |
//! |-----------------|-----------------------------------------------------------------|
//! | `$VAR`, `${VAR}`| the value of `VAR`; empty (and reported as unset) when unset    |
//! | `${VAR:-dflt}`  | `dflt` when `VAR` is unset or empty                             |
//! | `${VAR-dflt}`   | `dflt` when `VAR` is unset                                      |
//! | `${VAR:+alt}`   | `alt` when `VAR` is set and non-empty, otherwise empty          |
//! | `${VAR+alt}`    | `alt` when `VAR` is set, otherwise empty                        |
//! | `${VAR:?msg}`   | an [`InterpolationError::Required`] when `VAR` is unset or empty|
//! | `${VAR?msg}`    | an [`InterpolationError::Required`] when `VAR` is unset         |
//! | `$$`            | a literal `$`                                                   |
//!
//! Names are `[A-Za-z_][A-Za-z0-9_]*`; like Compose (whose matching is case-insensitive
//! in Unicode's sense) the characters `ſ` (U+017F) and `K` (U+212A) also count as letters.
//! A `$` that is followed by neither a name, `$` nor `{` is kept literally (`$1`, `a$`,
//! `$-`), while a `${` that does not open a well-formed braced expression is a
//! [`InterpolationError::Syntax`] error.
//!
//! The quirks of Compose's implementation are reproduced on purpose:
//!
//! * The text after an operator (`dflt`, `alt`, `msg`) is itself interpolated, and it is
//!   interpolated *eagerly*: even when it ends up unused, its errors are errors and its unset
//!   variables are reported (`${A:-${B:?x}}` fails although `A` is set). This is the
//!   behaviour of compose-go v2.9, which Docker Compose v2.40 uses; later compose-go
//!   releases evaluate the argument only when it is used.
//! * A braced expression with an operator extends to the last `}` of its line and is then cut
//!   at the first `}` that balances the opening brace (Compose counts braces but skips the
//!   character right after each `{`); what follows the cut is interpolated as its own
//!   template. Braced expressions cannot span lines.
//! * Only plain references (`$VAR`, `${VAR}`) report unset variables; the operator forms
//!   never do. Compose prints one warning per such reference, repeated references included;
//!   [`substitute_with`] and [`interpolate_value_with`] hand each one to a callback in the
//!   same order.

use super::path::YamlPath;
use serde_yaml::Value;

/// Why a template could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InterpolationError {
    /// `${VAR:?msg}` / `${VAR?msg}` with VAR missing (or empty for `:?`).
    ///
    /// `message` is the interpolated text after the operator; when it is empty the
    /// `: message` part is left out of the display, as Compose does.
    #[error("required variable {name} is missing a value{}", message_suffix(.message))]
    Required {
        /// The variable that has no value.
        name: String,
        /// The interpolated message given after `?` or `:?`, possibly empty.
        message: String,
    },
    /// A malformed template such as `${` or `${VAR`.
    #[error("invalid interpolation format for {template:?}: {detail}")]
    Syntax {
        /// The template Compose would name: the innermost one (a default value, or the
        /// text following a braced expression) in which the malformed `${` appears.
        template: String,
        /// What is wrong, in lower case.
        detail: String,
    },
}

/// `": message"`, or nothing for an empty message.
fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The detail of a syntax error, the hint Compose gives.
const ESCAPE_HINT: &str = "you may need to escape any $ with another $";

/// How deeply operator arguments (`${A:-${B:-${C}}}`) may nest before substitution gives up.
///
/// Compose has no limit; this one keeps hostile input from exhausting the stack or taking
/// quadratic time, and is far beyond anything a compose file needs.
pub const MAX_NESTING: usize = 64;

/// Substitutes the variables of `template`, looking their values up with `lookup`.
///
/// Unset variables substitute to the empty string; use [`substitute_with`] to learn which
/// ones were unset. When several errors occur the first one is returned.
pub fn substitute(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    substitute_with(template, lookup, &mut |_| {})
}

/// Like [`substitute`], calling `on_unset` with the name of every plain reference (`$VAR` or
/// `${VAR}`) whose variable is unset, once per reference, where Compose prints
/// `The "VAR" variable is not set. Defaulting to a blank string.`.
///
/// References inside operator arguments are reported too, even when the argument ends up
/// unused; references after the first error may or may not be reported, as with Compose.
pub fn substitute_with(
    template: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    on_unset: &mut dyn FnMut(&str),
) -> Result<String, InterpolationError> {
    let mut ctx = Context { lookup, on_unset };
    substitute_nested(template, &mut ctx, 0)
}

/// Interpolates every string scalar in the tree (mapping values and sequence items, also inside
/// `Value::Tagged`; NOT mapping keys), collecting one error per failing scalar with its path.
///
/// A failing scalar is left unchanged. Unset variables substitute to the empty string; use
/// [`interpolate_value_with`] to learn which ones were unset.
pub fn interpolate_value(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &YamlPath,
    errors: &mut Vec<(YamlPath, InterpolationError)>,
) {
    interpolate_value_with(value, lookup, path, errors, &mut |_, _| {});
}

/// Like [`interpolate_value`], calling `on_unset` with the path of the scalar and the variable
/// name for every unset plain reference (see [`substitute_with`]).
///
/// Scalars are visited in document order.
pub fn interpolate_value_with(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
    path: &YamlPath,
    errors: &mut Vec<(YamlPath, InterpolationError)>,
    on_unset: &mut dyn FnMut(&YamlPath, &str),
) {
    // An explicit stack rather than recursion: a tree built in code can be arbitrarily deep.
    let mut stack: Vec<(&mut Value, YamlPath)> = vec![(value, path.clone())];
    while let Some((node, here)) = stack.pop() {
        match node {
            Value::String(s) => {
                let result = substitute_with(s, lookup, &mut |name| on_unset(&here, name));
                match result {
                    Ok(new) => *s = new,
                    Err(e) => errors.push((here, e)),
                }
            }
            Value::Sequence(items) => {
                let children: Vec<_> = items
                    .iter_mut()
                    .enumerate()
                    .map(|(i, item)| (item, here.index(i)))
                    .collect();
                stack.extend(children.into_iter().rev());
            }
            Value::Mapping(map) => {
                let children: Vec<_> = map
                    .iter_mut()
                    .map(|(k, v)| {
                        let p = here.key(key_text(k));
                        (v, p)
                    })
                    .collect();
                stack.extend(children.into_iter().rev());
            }
            Value::Tagged(tagged) => stack.push((&mut tagged.value, here)),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

/// The text of a mapping key, for paths.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Tagged(t) => key_text(&t.value),
        Value::Sequence(_) | Value::Mapping(_) => serde_yaml::to_string(key)
            .map(|s| s.trim_end().to_owned())
            .unwrap_or_default(),
    }
}

/// The lookup and the unset-variable callback, shared by nested substitutions.
struct Context<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    on_unset: &'a mut dyn FnMut(&str),
}

impl Context<'_> {
    /// The value of a plain reference, reporting it when unset.
    fn plain(&mut self, name: &str) -> String {
        match (self.lookup)(name) {
            Some(v) => v,
            None => {
                (self.on_unset)(name);
                String::new()
            }
        }
    }
}

/// The operator of a braced expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `:-`
    DefaultIfUnsetOrEmpty,
    /// `-`
    DefaultIfUnset,
    /// `:+`
    AltIfNonEmpty,
    /// `+`
    AltIfSet,
    /// `:?`
    RequireNonEmpty,
    /// `?`
    RequireSet,
}

impl Op {
    /// The operator at the start of `s`, with its length in bytes.
    fn parse(s: &str) -> Option<(Op, usize)> {
        let b = s.as_bytes();
        let (colon, at) = match b.first() {
            Some(b':') => (true, 1),
            _ => (false, 0),
        };
        let op = match (colon, b.get(at)) {
            (true, Some(b'-')) => Op::DefaultIfUnsetOrEmpty,
            (false, Some(b'-')) => Op::DefaultIfUnset,
            (true, Some(b'+')) => Op::AltIfNonEmpty,
            (false, Some(b'+')) => Op::AltIfSet,
            (true, Some(b'?')) => Op::RequireNonEmpty,
            (false, Some(b'?')) => Op::RequireSet,
            _ => return None,
        };
        Some((op, at + 1))
    }

    /// Applies the operator to `name`, `arg` being its already interpolated argument.
    fn apply(
        self,
        name: &str,
        arg: String,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<String, InterpolationError> {
        let value = lookup(name);
        let required = || InterpolationError::Required {
            name: name.to_owned(),
            message: arg.clone(),
        };
        match self {
            Op::DefaultIfUnsetOrEmpty => Ok(value.filter(|v| !v.is_empty()).unwrap_or(arg)),
            Op::DefaultIfUnset => Ok(value.unwrap_or(arg)),
            Op::AltIfNonEmpty => Ok(match value {
                Some(v) if !v.is_empty() => arg,
                _ => String::new(),
            }),
            Op::AltIfSet => Ok(if value.is_some() { arg } else { String::new() }),
            Op::RequireNonEmpty => value.filter(|v| !v.is_empty()).ok_or_else(required),
            Op::RequireSet => value.ok_or_else(required),
        }
    }
}

/// What a `$` at some position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `$$`.
    Escaped,
    /// `$NAME`; the name spans `name_end - (start + 1)` bytes.
    Named { name_end: usize },
    /// `${NAME}`.
    Braced { name_end: usize },
    /// `${NAME<op>...}`; the argument starts at `arg_start`.
    BracedOp {
        name_end: usize,
        op: Op,
        arg_start: usize,
    },
    /// `${` opening nothing well-formed.
    Invalid,
}

/// One `$` expression found in a template: `template[start..end]`.
#[derive(Debug, Clone, Copy)]
struct Match {
    start: usize,
    end: usize,
    kind: Kind,
}

/// Whether `c` may start a variable name.
fn is_name_start(c: char) -> bool {
    // U+017F and U+212A fold to `s` and `k`, so a case-insensitive `[a-z]` accepts them.
    c == '_' || c.is_ascii_alphabetic() || c == '\u{17f}' || c == '\u{212a}'
}

/// Whether `c` may continue a variable name.
fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// The end of the name starting at `at`, if a name starts there.
fn name_end(s: &str, at: usize) -> Option<usize> {
    let rest = s.get(at..)?;
    let mut chars = rest.char_indices();
    match chars.next() {
        Some((_, c)) if is_name_start(c) => {}
        _ => return None,
    }
    let len = chars
        .find(|&(_, c)| !is_name_char(c))
        .map_or(rest.len(), |(i, _)| i);
    Some(at + len)
}

/// Scans one template for `$` expressions, remembering the last `}` of the current line.
struct Scanner<'t> {
    template: &'t str,
    /// End (exclusive) of the line the cache describes; lines are searched only forwards.
    line_end: usize,
    /// The last `}` of that line.
    line_last_close: Option<usize>,
}

impl<'t> Scanner<'t> {
    fn new(template: &'t str) -> Self {
        Scanner {
            template,
            line_end: 0,
            line_last_close: None,
        }
    }

    /// The last `}` at or after `from` on the line containing `from`.
    fn last_close_on_line(&mut self, from: usize) -> Option<usize> {
        if from >= self.line_end {
            let rest = self.template.get(from..).unwrap_or("");
            let len = rest.find('\n').unwrap_or(rest.len());
            self.line_end = from + len;
            self.line_last_close = rest.get(..len).and_then(|l| l.rfind('}')).map(|i| from + i);
        }
        self.line_last_close.filter(|&i| i >= from)
    }

    /// The first `$` expression starting at or after `from`.
    fn next_match(&mut self, from: usize) -> Option<Match> {
        let bytes = self.template.as_bytes();
        let mut pos = from;
        loop {
            let start = pos + self.template.get(pos..)?.find('$')?;
            let kind = match bytes.get(start + 1) {
                Some(b'$') => Some((Kind::Escaped, start + 2)),
                Some(b'{') => Some(self.braced(start)),
                _ => name_end(self.template, start + 1).map(|e| (Kind::Named { name_end: e }, e)),
            };
            match kind {
                Some((kind, end)) => return Some(Match { start, end, kind }),
                None => pos = start + 1,
            }
        }
    }

    /// What the `${` at `start` opens, with the end of the expression.
    fn braced(&mut self, start: usize) -> (Kind, usize) {
        let invalid = (Kind::Invalid, start + 2);
        let Some(name_end) = name_end(self.template, start + 2) else {
            return invalid;
        };
        let after = self.template.get(name_end..).unwrap_or("");
        if after.starts_with('}') {
            return (Kind::Braced { name_end }, name_end + 1);
        }
        let Some((op, op_len)) = Op::parse(after) else {
            return invalid;
        };
        let arg_start = name_end + op_len;
        match self.last_close_on_line(arg_start) {
            Some(close) => (
                Kind::BracedOp {
                    name_end,
                    op,
                    arg_start,
                },
                close + 1,
            ),
            None => invalid,
        }
    }
}

/// The `}` balancing the `{` of the expression `template[start..end]`, counted the way Compose
/// counts: the character right after every `{` is skipped.
fn balancing_close(template: &str, start: usize, end: usize) -> Option<usize> {
    let bytes = template.as_bytes().get(start..end)?;
    let mut open = 0usize;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'}' {
            open = open.saturating_sub(1);
            if open == 0 {
                return Some(start + i);
            }
        }
        if b == b'{' {
            open += 1;
            i += 1;
        }
        i += 1;
    }
    None
}

/// Substitutes `template`, `depth` being how deeply it is nested in operator arguments.
fn substitute_nested(
    template: &str,
    ctx: &mut Context<'_>,
    depth: usize,
) -> Result<String, InterpolationError> {
    if depth > MAX_NESTING {
        return Err(InterpolationError::Syntax {
            template: template.to_owned(),
            detail: format!("substitutions are nested more than {MAX_NESTING} levels deep"),
        });
    }
    let mut scanner = Scanner::new(template);
    let mut out = String::with_capacity(template.len());
    let mut first_error: Option<InterpolationError> = None;
    // Compose substitutes the text after a cut braced expression as a template of its own,
    // which matters for the template a syntax error names: `(start, end)` of that text.
    let mut tail: Option<(usize, usize)> = None;
    let mut pos = 0;
    while let Some(m) = scanner.next_match(pos) {
        if tail.is_some_and(|(_, end)| m.start >= end) {
            tail = None;
        }
        out.push_str(template.get(pos..m.start).unwrap_or(""));
        pos = m.end;
        let name_of = |name_end: usize| template.get(m.start + 1..name_end).unwrap_or("");
        let braced_name_of = |name_end: usize| template.get(m.start + 2..name_end).unwrap_or("");
        let result = match m.kind {
            Kind::Escaped => Ok("$".to_owned()),
            Kind::Named { name_end } => Ok(ctx.plain(name_of(name_end))),
            Kind::Braced { name_end } => Ok(ctx.plain(braced_name_of(name_end))),
            Kind::Invalid => {
                let (s, e) = tail.unwrap_or((0, template.len()));
                Err(InterpolationError::Syntax {
                    template: template.get(s..e).unwrap_or("").to_owned(),
                    detail: ESCAPE_HINT.to_owned(),
                })
            }
            Kind::BracedOp {
                name_end,
                op,
                arg_start,
            } => {
                let close = balancing_close(template, m.start, m.end);
                let arg_end = close.unwrap_or(m.end - 1);
                let arg = template.get(arg_start..arg_end).unwrap_or("");
                let result = substitute_nested(arg, ctx, depth + 1)
                    .and_then(|arg| op.apply(braced_name_of(name_end), arg, ctx.lookup));
                if let (Ok(_), Some(close)) = (&result, close) {
                    // Continue with the text after the cut, inside the expression's span.
                    pos = close + 1;
                    tail = Some((close + 1, m.end));
                }
                result
            }
        };
        match result {
            Ok(s) => out.push_str(&s),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    out.push_str(template.get(pos..).unwrap_or(""));
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment of the table: `A` set, `E` set but empty, everything else unset.
    fn env(name: &str) -> Option<String> {
        match name {
            "A" => Some("aa".to_owned()),
            "E" => Some(String::new()),
            _ => None,
        }
    }

    fn required(name: &str, message: &str) -> InterpolationError {
        InterpolationError::Required {
            name: name.to_owned(),
            message: message.to_owned(),
        }
    }

    fn syntax(template: &str) -> InterpolationError {
        InterpolationError::Syntax {
            template: template.to_owned(),
            detail: ESCAPE_HINT.to_owned(),
        }
    }

    /// Substitutes `template` and checks the result and the unset references reported.
    fn check(template: &str, expected: Result<&str, InterpolationError>, unset: &[&str]) {
        let mut seen = Vec::new();
        let got = substitute_with(template, &env, &mut |n| seen.push(n.to_owned()));
        assert_eq!(got, expected.map(str::to_owned), "template {template:?}");
        assert_eq!(seen, unset, "unset variables of {template:?}");
        let plain = substitute(template, &env);
        assert_eq!(plain, got, "substitute vs substitute_with for {template:?}");
    }

    /// Every expectation below was produced by `docker compose config` (v2.40.3) with
    /// `A=aa`, `E=` and nothing else set; the last column lists its warnings in order.
    #[test]
    fn matches_compose() {
        let cases: &[(&str, Result<&str, InterpolationError>, &[&str])] = &[
            ("plain text", Ok("plain text"), &[]),
            ("", Ok(""), &[]),
            ("$A", Ok("aa"), &[]),
            ("${A}", Ok("aa"), &[]),
            ("x${A}y", Ok("xaay"), &[]),
            ("$A$A", Ok("aaaa"), &[]),
            ("${A}B", Ok("aaB"), &[]),
            ("$AB", Ok(""), &["AB"]),
            ("$A-B", Ok("aa-B"), &[]),
            ("$E", Ok(""), &[]),
            ("${E}", Ok(""), &[]),
            ("$B", Ok(""), &["B"]),
            ("${B}", Ok(""), &["B"]),
            ("$B $B ${B}", Ok("  "), &["B", "B", "B"]),
            ("$_", Ok(""), &["_"]),
            ("$_1", Ok(""), &["_1"]),
            ("${_}", Ok(""), &["_"]),
            ("$a", Ok(""), &["a"]),
            ("${a}", Ok(""), &["a"]),
            ("$A_1x", Ok(""), &["A_1x"]),
            ("$$", Ok("$"), &[]),
            ("$$$$", Ok("$$"), &[]),
            ("$$$A", Ok("$aa"), &[]),
            ("$${A}", Ok("${A}"), &[]),
            ("a$$b", Ok("a$b"), &[]),
            ("$1", Ok("$1"), &[]),
            ("a$", Ok("a$"), &[]),
            ("$", Ok("$"), &[]),
            ("$-", Ok("$-"), &[]),
            ("$ A", Ok("$ A"), &[]),
            ("$é", Ok("$é"), &[]),
            ("$Aé", Ok("aaé"), &[]),
            ("$.", Ok("$."), &[]),
            ("${A}$", Ok("aa$"), &[]),
            ("$ſ", Ok(""), &["ſ"]),
            ("$K", Ok(""), &["K"]),
            ("${ſ:-d}", Ok("d"), &[]),
            ("${A:-d}", Ok("aa"), &[]),
            ("${E:-d}", Ok("d"), &[]),
            ("${B:-d}", Ok("d"), &[]),
            ("${A-d}", Ok("aa"), &[]),
            ("${E-d}", Ok(""), &[]),
            ("${B-d}", Ok("d"), &[]),
            ("${B:-}", Ok(""), &[]),
            ("${B-}", Ok(""), &[]),
            ("${A:-}", Ok("aa"), &[]),
            ("${B:-a b c}", Ok("a b c"), &[]),
            ("${B:-$A}", Ok("aa"), &[]),
            ("${B:-${A}}", Ok("aa"), &[]),
            ("${B:-$B-c}", Ok("-c"), &["B"]),
            ("${B:-${E:-${A}}}", Ok("aa"), &[]),
            ("${B:-${B:-${B:-deep}}}", Ok("deep"), &[]),
            ("${A-x:-y}", Ok("aa"), &[]),
            ("${B-x:-y}", Ok("x:-y"), &[]),
            ("${B:-a:-b}", Ok("a:-b"), &[]),
            ("${B:--}", Ok("-"), &[]),
            ("${B:-$$}", Ok("$"), &[]),
            ("${B:-$}", Ok("$"), &[]),
            ("${B:-{x}}", Ok("{x}"), &[]),
            ("${B:-{}}", Ok("{}"), &[]),
            ("${B:-{}}}", Ok("{}}"), &[]),
            ("${B:-{{}}}", Ok("{{}}"), &[]),
            ("${B:-{}{}}}", Ok("{}{}}"), &[]),
            ("${B:-x}y}", Ok("xy}"), &[]),
            ("${B:-}}", Ok("}"), &[]),
            ("${B:-\\}}", Ok("\\}"), &[]),
            ("${B:-a}${B:-b}}", Ok("ab}"), &[]),
            ("${B:-{}x}y}", Ok("{}x}y"), &[]),
            ("${B-${B}$A}x", Ok("aax"), &["B"]),
            ("${A}${A:-{}}}", Ok("aaaa"), &[]),
            ("${B:-x}\n${B:-y}", Ok("x\ny"), &[]),
            ("${B:-x}${A}", Ok("xaa"), &[]),
            ("${B:-x}$B", Ok("x"), &["B"]),
            ("${A:+alt}", Ok("alt"), &[]),
            ("${E:+alt}", Ok(""), &[]),
            ("${B:+alt}", Ok(""), &[]),
            ("${A+alt}", Ok("alt"), &[]),
            ("${E+alt}", Ok("alt"), &[]),
            ("${B+alt}", Ok(""), &[]),
            ("${A:+$A$A}", Ok("aaaa"), &[]),
            ("${A+-}", Ok("-"), &[]),
            ("${A:+alt $B}", Ok("alt "), &["B"]),
            ("${A:+{}}}", Ok("{}}"), &[]),
            ("${A:?msg}", Ok("aa"), &[]),
            ("${A?msg}", Ok("aa"), &[]),
            ("${E?msg}", Ok(""), &[]),
            ("${E:?msg}", Err(required("E", "msg")), &[]),
            ("${B?msg}", Err(required("B", "msg")), &[]),
            ("${B:?msg}", Err(required("B", "msg")), &[]),
            ("${B:?}", Err(required("B", "")), &[]),
            ("${B?}", Err(required("B", "")), &[]),
            ("${B:?boom $A}", Err(required("B", "boom aa")), &[]),
            ("${B:?${B:-inner}}", Err(required("B", "inner")), &[]),
            ("${A:?}x", Ok("aax"), &[]),
            ("${A?:-x}", Ok("aa"), &[]),
            ("${A-?x}", Ok("aa"), &[]),
            ("x${A:-${B:?inner}}", Err(required("B", "inner")), &[]),
            ("${A:?x} ${B:?y}", Err(required("B", "y")), &[]),
            ("${B:?x}${B}", Err(required("B", "x")), &[]),
            ("${", Err(syntax("${")), &[]),
            ("x${", Err(syntax("x${")), &[]),
            ("${A", Err(syntax("${A")), &[]),
            ("${}", Err(syntax("${}")), &[]),
            ("${1}", Err(syntax("${1}")), &[]),
            ("${A B}", Err(syntax("${A B}")), &[]),
            ("${A:}", Err(syntax("${A:}")), &[]),
            ("${A::-x}", Err(syntax("${A::-x}")), &[]),
            ("${Aé}", Err(syntax("${Aé}")), &[]),
            ("${A:-x\n}", Err(syntax("${A:-x\n}")), &[]),
            ("${A:-a\n}b}", Err(syntax("${A:-a\n}b}")), &[]),
            ("${A:-${B}", Err(syntax("${B")), &[]),
            ("${A:-${}}", Err(syntax("${}")), &[]),
            ("${A:?${}}", Err(syntax("${}")), &[]),
            ("${ ${A:?x}", Err(syntax("${ ${A:?x}")), &[]),
            ("${A:?x} ${", Err(syntax("${A:?x} ${")), &[]),
            ("${B:-x}${ }", Err(syntax("${ }")), &[]),
            ("$A ${ $B", Err(syntax("$A ${ $B")), &["B"]),
            ("${B:-x}${B:-${}}", Err(syntax("${}")), &[]),
        ];
        for (template, expected, unset) in cases {
            check(template, expected.clone(), unset);
        }
    }

    #[test]
    fn error_messages() {
        let cases = [
            (required("B", "boom"), "required variable B is missing a value: boom"),
            (required("B", ""), "required variable B is missing a value"),
            (
                syntax("${"),
                "invalid interpolation format for \"${\": you may need to escape any $ with another $",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
        }
    }

    #[test]
    fn lookup_sees_names_verbatim() {
        let seen = std::cell::RefCell::new(Vec::new());
        let lookup = |name: &str| {
            seen.borrow_mut().push(name.to_owned());
            None
        };
        let _ = substitute("$x ${Y:-d} ${ſ?m}", &lookup);
        assert_eq!(*seen.borrow(), ["x", "Y", "ſ"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let depth = 10_000;
        let template = format!("{}x{}", "${B:-".repeat(depth), "}".repeat(depth));
        assert!(matches!(
            substitute(&template, &env),
            Err(InterpolationError::Syntax { .. })
        ));
        let shallow = format!(
            "{}x{}",
            "${B:-".repeat(MAX_NESTING),
            "}".repeat(MAX_NESTING)
        );
        assert_eq!(substitute(&shallow, &env), Ok("x".to_owned()));
    }

    #[test]
    fn many_expressions_on_one_line() {
        let template = "${B:-x}".repeat(20_000);
        assert_eq!(substitute(&template, &env), Ok("x".repeat(20_000)));
        let template = "${A:-{".repeat(5_000);
        assert!(substitute(&template, &env).is_err());
    }

    #[test]
    fn never_panics_on_odd_input() {
        let pieces = [
            "$", "{", "}", ":", "-", "?", "+", "A", "B", "\n", "é", "ſ", "\u{212a}",
        ];
        // Every string of up to four pieces.
        let mut inputs = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> = inputs
                .iter()
                .flat_map(|s| pieces.iter().map(move |p| format!("{s}{p}")))
                .collect();
            for s in &longer {
                let _ = substitute(s, &env);
            }
            inputs = longer;
        }
    }

    fn yaml(src: &str) -> Value {
        match serde_yaml::from_str(src) {
            Ok(v) => v,
            Err(e) => panic!("bad test yaml: {e}"),
        }
    }

    #[test]
    fn interpolates_a_tree() {
        let mut doc = yaml(
            "services:\n  web:\n    image: ${A}:$E\n    command: [echo, $A, '$$HOME', 3]\n    \
             environment:\n      $A: ${B:-dflt}\n      N: 12\n      T: true\n      X: null\n    \
             labels: !tag {l: $A}\n",
        );
        let mut errors = Vec::new();
        interpolate_value(&mut doc, &env, &YamlPath::root(), &mut errors);
        assert_eq!(errors, []);
        let expected = yaml(
            "services:\n  web:\n    image: 'aa:'\n    command: [echo, aa, '$HOME', 3]\n    \
             environment:\n      $A: dflt\n      N: 12\n      T: true\n      X: null\n    \
             labels: !tag {l: aa}\n",
        );
        assert_eq!(doc, expected);
    }

    #[test]
    fn collects_errors_and_unset_variables_with_paths() {
        let mut doc =
            yaml("a: [ok, '${B:?need B}', {b: '${', c: $B}]\nd: $B$B\ne: !t '${X:?}'\n5: ${\n");
        let original = doc.clone();
        let mut errors = Vec::new();
        let mut unset = Vec::new();
        interpolate_value_with(
            &mut doc,
            &env,
            &YamlPath::root().key("x"),
            &mut errors,
            &mut |p, n| unset.push((p.to_string(), n.to_owned())),
        );
        let errors: Vec<(String, InterpolationError)> = errors
            .into_iter()
            .map(|(p, e)| (p.to_string(), e))
            .collect();
        assert_eq!(
            errors,
            [
                ("x.a[1]".to_owned(), required("B", "need B")),
                ("x.a[2].b".to_owned(), syntax("${")),
                ("x.e".to_owned(), required("X", "")),
                ("x.5".to_owned(), syntax("${")),
            ]
        );
        let unset: Vec<(&str, &str)> = unset
            .iter()
            .map(|(p, n)| (p.as_str(), n.as_str()))
            .collect();
        assert_eq!(unset, [("x.a[2].c", "B"), ("x.d", "B"), ("x.d", "B")]);
        // Failing scalars are left as they were.
        assert_eq!(doc["a"][1], original["a"][1]);
        assert_eq!(doc["a"][2]["c"], Value::String(String::new()));
    }
}
