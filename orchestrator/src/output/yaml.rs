//! A YAML writer for JSON trees in the layout `docker compose config` prints:
//! two-space indentation with sequences indented under their key, plain
//! scalars where they read back as the same string, double quotes where a
//! plain scalar would read back as another type, single quotes where YAML
//! syntax forbids a plain one, and literal blocks for multi-line strings.

use serde_json::Value;

/// Renders `value` (a mapping at the top) as a YAML document.
pub fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_mapping(&mut out, m, 0),
        other => {
            out.push_str(&scalar(other, 0));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_mapping(out: &mut String, m: &serde_json::Map<String, Value>, level: usize) {
    let mut first = true;
    for (k, v) in m {
        // The first key of a mapping inside a sequence item follows "- ".
        if !first || level == 0 || !out.ends_with("- ") {
            indent(out, level);
        }
        first = false;
        out.push_str(&string_scalar(k, level, true));
        out.push(':');
        write_value(out, v, level);
    }
}

fn write_value(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            out.push('\n');
            write_mapping(out, m, level + 2);
        }
        Value::Array(a) if !a.is_empty() => {
            out.push('\n');
            write_sequence(out, a, level + 2);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other, level + 2));
            out.push('\n');
        }
    }
}

fn write_sequence(out: &mut String, a: &[Value], level: usize) {
    for item in a {
        indent(out, level);
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_mapping(out, m, level + 2),
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(out, inner, level + 2);
            }
            other => {
                out.push_str(&scalar(other, level + 2));
                out.push('\n');
            }
        }
    }
}

fn scalar(v: &Value, level: usize) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        // Go's YAML writer formats floats as `%g` does: `1`, `-0`, `1e+06`.
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => crate::model::values::go_float(f),
            _ => n.to_string(),
        },
        Value::String(s) => string_scalar(s, level, false),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

/// Whether a plain scalar `s` would be read back as something other than a string.
fn resolves_to_non_string(s: &str) -> bool {
    const WORDS: [&str; 28] = [
        "", "~", "null", "Null", "NULL", "true", "True", "TRUE", "false", "False", "FALSE", "y",
        "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", "<<",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    let t = s.strip_prefix(['+', '-']).unwrap_or(s);
    if matches!(t, ".inf" | ".Inf" | ".INF") || matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let digits =
        |x: &str, radix: u32| !x.is_empty() && x.chars().all(|c| c.is_digit(radix) || c == '_');
    if digits(t, 10)
        || t.strip_prefix("0x").is_some_and(|x| digits(x, 16))
        || t.strip_prefix("0o").is_some_and(|x| digits(x, 8))
        || t.strip_prefix("0b").is_some_and(|x| digits(x, 2))
    {
        return true;
    }
    // Floats, including `1e3`, `.5` and the YAML 1.1 sexagesimal `1:20`.
    if t.parse::<f64>().is_ok()
        && t.chars().any(|c| c.is_ascii_digit())
        && !t.contains(['i', 'n', 'I', 'N'])
    {
        return true;
    }
    // `2001-12-14`: a timestamp to go-yaml.
    is_base60_float(t) || crate::loader::yaml::timestamp(s).is_some()
}

/// Go's YAML writer quotes what YAML 1.1 read as a sexagesimal number: digits,
/// then one or more `:` and a number below 60, then maybe a fraction (`1:20`,
/// `190:20:30.15`; not `1000:1000`).
fn is_base60_float(t: &str) -> bool {
    let whole = match t.split_once('.') {
        Some((w, f)) if f.chars().all(|c| c.is_ascii_digit() || c == '_') => w,
        Some(_) => return false,
        None => t,
    };
    let mut parts = whole.split(':');
    let first = parts.next().unwrap_or("");
    if !first.starts_with(|c: char| c.is_ascii_digit())
        || !first.chars().all(|c| c.is_ascii_digit() || c == '_')
    {
        return false;
    }
    let mut sixties = 0;
    for p in parts {
        let b = p.as_bytes();
        let ok = match b {
            [d] => d.is_ascii_digit(),
            [a, d] => (b'0'..=b'5').contains(a) && d.is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
        sixties += 1;
    }
    sixties > 0
}

/// Whether YAML syntax allows `s` as a plain scalar.
fn plain_allowed(s: &str, is_key: bool) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return false;
    }
    if "#,[]{}&*!|>'\"%@`".contains(first) {
        return false;
    }
    let second = s.chars().nth(1);
    if "-?:".contains(first) && second.is_none_or(|c| c == ' ') {
        return false;
    }
    if s.contains(": ") || s.contains(" #") || s.ends_with(':') {
        return false;
    }
    if is_key && s.contains(['[', ']', '{', '}', ',']) {
        return false;
    }
    !s.chars().any(|c| c.is_control() || c == '\u{feff}')
}

fn string_scalar(s: &str, level: usize, is_key: bool) -> String {
    if s.contains('\n') && !is_key && !s.contains('\r') && !s.starts_with(' ') {
        let chomp = if s.ends_with('\n') { "" } else { "-" };
        let mut out = format!("|{chomp}");
        let body = s.strip_suffix('\n').unwrap_or(s);
        for line in body.split('\n') {
            out.push('\n');
            if !line.is_empty() {
                out.extend(std::iter::repeat_n(' ', level));
                out.push_str(line);
            }
        }
        return out;
    }
    if resolves_to_non_string(s) {
        return double_quoted(s);
    }
    if plain_allowed(s, is_key) {
        return s.to_string();
    }
    if s.chars().any(|c| c.is_control()) {
        return double_quoted(s);
    }
    format!("'{}'", s.replace('\'', "''"))
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str, expected: &str) {
        let v: Value = serde_json::from_str(json).unwrap_or(Value::Null);
        assert_eq!(to_string(&v), expected);
        // What we print must read back as the same tree.
        let back: serde_yaml::Value =
            serde_yaml::from_str(expected).unwrap_or(serde_yaml::Value::Null);
        let back: Value = serde_json::to_value(back).unwrap_or(Value::Null);
        assert_eq!(back, v, "{expected}");
    }

    #[test]
    fn layout_matches_compose() {
        check(
            r#"{"name":"p","services":{"web":{"command":["a","b c"],"ports":[{"target":80,"published":"8080"}],"volume":{}}}}"#,
            "name: p\nservices:\n  web:\n    command:\n      - a\n      - b c\n    ports:\n      - target: 80\n        published: \"8080\"\n    volume: {}\n",
        );
    }

    #[test]
    fn scalars_are_quoted_only_when_needed() {
        check(
            r##"{"a":"yes","b":"1.5","c":"x: y","d":"","e":"plain text","f":"#hash","g":"null","h":"line1\nline2","i":"it's: x"}"##,
            "a: \"yes\"\nb: \"1.5\"\nc: 'x: y'\nd: \"\"\ne: plain text\nf: '#hash'\ng: \"null\"\nh: |-\n  line1\n  line2\ni: 'it''s: x'\n",
        );
    }

    #[test]
    fn sexagesimal_numbers_are_quoted_and_user_ids_are_not() {
        assert!(is_base60_float("1:20"));
        assert!(is_base60_float("190:20:30.15"));
        assert!(!is_base60_float("1000:1000"));
        assert!(!is_base60_float("1:60"));
        assert!(!is_base60_float("1:2:"));
        assert!(!is_base60_float(":20"));
        check(
            r#"{"user":"1000:1000","t":"1:20"}"#,
            "user: 1000:1000\nt: \"1:20\"\n",
        );
    }

    #[test]
    fn text_that_reads_as_a_timestamp_is_quoted() {
        check(
            r#"{"day":"2001-12-14","not":"2001-12-14 21:59:43.10 -5"}"#,
            "day: \"2001-12-14\"\nnot: 2001-12-14 21:59:43.10 -5\n",
        );
    }
}
