//! Value types of the compose model that accept Compose's several spellings
//! (a string or a list, `1m30s`, `512m`, `KEY=VALUE` lists ...) and print the
//! one canonical spelling that `docker compose config` prints.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_yaml::Value;

/// Renders a scalar the way Compose turns a YAML scalar into a string.
pub(crate) fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(match n.as_f64() {
            Some(f) if n.is_f64() => go_float(f),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => None,
        Value::Tagged(t) => scalar_to_string(&t.value),
        _ => None,
    }
}

/// Formats a float as Go's `fmt.Sprint` does (`1`, `1.5`, `100000`, `1e+06`,
/// `1e-05`), which is how Compose turns YAML floats into strings.
pub fn go_float(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "NaN".into()
        } else if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    // Shortest round-trip digits and decimal exponent, as in `d.ddde±x`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let nd = digits.len() as i32;
    let dp = exp + 1;
    let mut eprec = 6;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    let sign = if f < 0.0 { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{esign}{:02}", exp.abs())
    } else {
        format!("{sign}{}", f.abs())
    }
}

fn expected<E: de::Error>(what: &str, got: &Value) -> E {
    let kind = match got {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    };
    E::custom(format!("expected {what}, found {kind}"))
}

/// A duration, written `1m30s`, `500ms`, `2h` ..., printed as Go prints durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Duration {
    /// The length in nanoseconds.
    pub nanos: i64,
}

impl Duration {
    /// Parses Compose's duration syntax: a sequence of decimal numbers with
    /// units `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`, `d`, `w`; a bare number is seconds.
    pub fn parse(s: &str) -> Option<Duration> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        if let Ok(n) = s.parse::<i64>() {
            return n.checked_mul(1_000_000_000).map(|nanos| Duration { nanos });
        }
        let (neg, mut rest) = match s.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        if rest == "0" {
            return Some(Duration { nanos: 0 });
        }
        let mut total: f64 = 0.0;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            if num_len == 0 {
                return None;
            }
            let number: f64 = rest[..num_len].parse().ok()?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let unit = match &rest[..unit_len] {
                "ns" => 1.0,
                "us" | "µs" | "μs" => 1e3,
                "ms" => 1e6,
                "s" => 1e9,
                "m" => 60e9,
                "h" => 3600e9,
                "d" => 86400e9,
                "w" => 7.0 * 86400e9,
                _ => return None,
            };
            rest = &rest[unit_len..];
            total += number * unit;
        }
        if total > i64::MAX as f64 {
            return None;
        }
        let nanos = total.round() as i64;
        Some(Duration {
            nanos: if neg { -nanos } else { nanos },
        })
    }
}

impl fmt::Display for Duration {
    /// Go's `time.Duration.String`: `1h2m3.5s`, `1m0s`, `500ms`, `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.nanos < 0;
        let u = self.nanos.unsigned_abs();
        let sign = if neg { "-" } else { "" };
        if u == 0 {
            return f.write_str("0s");
        }
        if u < 1_000_000_000 {
            // Below one second Go picks the largest unit that keeps an integer part.
            let (unit, scale) = if u < 1_000 {
                ("ns", 1)
            } else if u < 1_000_000 {
                ("µs", 1_000)
            } else {
                ("ms", 1_000_000)
            };
            return write!(f, "{sign}{}{unit}", fraction(u, scale));
        }
        let hours = u / 3_600_000_000_000;
        let minutes = (u / 60_000_000_000) % 60;
        let secs = u % 60_000_000_000;
        let secs = fraction(secs, 1_000_000_000);
        if hours > 0 {
            write!(f, "{sign}{hours}h{minutes}m{secs}s")
        } else if minutes > 0 {
            write!(f, "{sign}{minutes}m{secs}s")
        } else {
            write!(f, "{sign}{secs}s")
        }
    }
}

/// `value / scale` with its decimal fraction, trailing zeros removed.
fn fraction(value: u64, scale: u64) -> String {
    let int = value / scale;
    let mut frac = value % scale;
    if frac == 0 {
        return int.to_string();
    }
    let mut digits = scale.to_string().len() - 1;
    while frac.is_multiple_of(10) {
        frac /= 10;
        digits -= 1;
    }
    format!("{int}.{frac:0digits$}")
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = scalar_to_string(&v).ok_or_else(|| expected("a duration", &v))?;
        Duration::parse(&s).ok_or_else(|| de::Error::custom(format!("invalid duration {s:?}")))
    }
}

/// An amount of bytes, written `512m`, `1.5G`, `1024` ..., printed as a decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bytes(pub i64);

impl Bytes {
    /// Parses a byte amount with the binary units Docker accepts (`b`, `k`, `m`, `g`, `t`, `p`,
    /// optionally followed by `b` or `ib`, any case).
    pub fn parse(s: &str) -> Option<Bytes> {
        let s = s.trim();
        if let Ok(n) = s.parse::<i64>() {
            return Some(Bytes(n));
        }
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        let number: f64 = s[..split].parse().ok()?;
        let unit = s[split..].trim().to_ascii_lowercase();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
            .unwrap_or(&unit);
        let mult: f64 = match unit {
            "" | "b" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            "t" => 1024f64.powi(4),
            "p" => 1024f64.powi(5),
            _ => return None,
        };
        let total = number * mult;
        if !(0.0..=i64::MAX as f64).contains(&total) {
            return None;
        }
        Some(Bytes(total as i64))
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let s = scalar_to_string(&v).ok_or_else(|| expected("a byte amount", &v))?;
        Bytes::parse(&s).ok_or_else(|| de::Error::custom(format!("invalid byte amount {s:?}")))
    }
}

/// A command: a list of arguments, or a string split as a shell would split it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ShellCommand(pub Vec<String>);

impl<'de> Deserialize<'de> for ShellCommand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::String(s) => shell_split(s)
                .map(ShellCommand)
                .ok_or_else(|| de::Error::custom(format!("invalid command line {s:?}"))),
            // The schema wants strings here: a number must be quoted.
            Value::Sequence(items) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(expected("a string", other)),
                })
                .collect::<Result<_, _>>()
                .map(ShellCommand),
            other => Err(expected("a string or a list of strings", other)),
        }
    }
}

/// Splits a command line into words: quotes group, backslashes escape,
/// nothing is expanded. `None` on an unterminated quote.
pub fn shell_split(s: &str) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' | '\r' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') | None => {}
                    Some(n) => word.push(n),
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '\'' => break,
                        n => word.push(n),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next()? {
                        '"' => break,
                        '\\' => match chars.next()? {
                            n @ ('"' | '\\' | '$' | '`') => word.push(n),
                            '\n' => {}
                            n => {
                                word.push('\\');
                                word.push(n);
                            }
                        },
                        n => word.push(n),
                    }
                }
            }
            _ => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Some(words)
}

/// A list written either as one string or as a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct StringList(pub Vec<String>);

impl StringList {
    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for StringList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Sequence(items) => items
                .iter()
                .map(|i| scalar_to_string(i).ok_or_else(|| expected("a string", i)))
                .collect::<Result<_, _>>()
                .map(StringList),
            Value::Null => Ok(StringList::default()),
            other => scalar_to_string(other)
                .map(|s| StringList(vec![s]))
                .ok_or_else(|| expected("a string or a list of strings", other)),
        }
    }
}

/// `KEY: value` pairs, also written as a `KEY=value` list; `KEY` alone has no value (null).
/// Used for `environment` and `build.args`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct MappingWithEquals(pub BTreeMap<String, Option<String>>);

impl MappingWithEquals {
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for MappingWithEquals {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out = BTreeMap::new();
        match &v {
            Value::Mapping(m) => {
                for (k, val) in m {
                    let k = scalar_to_string(k).ok_or_else(|| expected("a string key", k))?;
                    let val = match val {
                        Value::Null => None,
                        Value::Sequence(_) | Value::Mapping(_) => {
                            return Err(expected("a string, number, boolean or null", val))
                        }
                        other => scalar_to_string(other),
                    };
                    out.insert(k, val);
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    let s = scalar_to_string(item).ok_or_else(|| expected("a string", item))?;
                    match s.split_once('=') {
                        Some((k, val)) => {
                            if k.ends_with(char::is_whitespace) {
                                return Err(de::Error::custom(format!(
                                    "environment variable {k} is declared with a trailing space"
                                )));
                            }
                            out.insert(k.to_string(), Some(val.to_string()));
                        }
                        None => {
                            out.insert(s, None);
                        }
                    }
                }
            }
            Value::Null => {}
            other => return Err(expected("a mapping or a list of KEY=VALUE", other)),
        }
        Ok(MappingWithEquals(out))
    }
}

/// `key: value` string pairs, also written as a `key=value` list (labels, sysctls, options).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Mapping(pub BTreeMap<String, String>);

impl Mapping {
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for Mapping {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out = BTreeMap::new();
        match &v {
            Value::Mapping(m) => {
                for (k, val) in m {
                    let k = scalar_to_string(k).ok_or_else(|| expected("a string key", k))?;
                    let val = match val {
                        Value::Sequence(_) | Value::Mapping(_) => {
                            return Err(expected("a string, number, boolean or null", val))
                        }
                        other => scalar_to_string(other).unwrap_or_default(),
                    };
                    out.insert(k, val);
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    let s = scalar_to_string(item).ok_or_else(|| expected("a string", item))?;
                    let (k, val) = s.split_once('=').unwrap_or((&s, ""));
                    out.insert(k.to_string(), val.to_string());
                }
            }
            Value::Null => {}
            other => return Err(expected("a mapping or a list of key=value", other)),
        }
        Ok(Mapping(out))
    }
}

/// `extra_hosts`: host names mapped to addresses, printed as a sorted `host=ip` list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostsList(pub BTreeMap<String, Vec<String>>);

impl HostsList {
    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The entries as `host<sep>ip` strings, sorted.
    pub fn as_list(&self, sep: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .iter()
            .flat_map(|(h, ips)| ips.iter().map(move |ip| format!("{h}{sep}{ip}")))
            .collect();
        out.sort();
        out
    }
}

impl Serialize for HostsList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.as_list("=").serialize(s)
    }
}

impl<'de> Deserialize<'de> for HostsList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        match &v {
            Value::Mapping(m) => {
                for (k, val) in m {
                    let host = scalar_to_string(k).ok_or_else(|| expected("a host name", k))?;
                    let ips = match val {
                        Value::Sequence(items) => {
                            items.iter().filter_map(scalar_to_string).collect()
                        }
                        other => vec![scalar_to_string(other).unwrap_or_default()],
                    };
                    out.entry(host).or_default().extend(ips);
                }
            }
            Value::Sequence(items) => {
                for item in items {
                    let s = scalar_to_string(item).ok_or_else(|| expected("a string", item))?;
                    let (host, ip) =
                        s.split_once('=')
                            .or_else(|| s.split_once(':'))
                            .ok_or_else(|| {
                                de::Error::custom(format!(
                                    "invalid additional host, missing IP: {s}"
                                ))
                            })?;
                    out.entry(host.to_string())
                        .or_default()
                        .extend(ip.split(',').map(str::to_string));
                }
            }
            Value::Null => {}
            other => return Err(expected("a mapping or a list of host:ip", other)),
        }
        for (host, ips) in out.iter_mut() {
            if host.is_empty() || host.contains([':', '=']) {
                return Err(de::Error::custom(format!("bad host name '{host}'")));
            }
            for ip in ips.iter_mut() {
                if ip.len() > 2 && ip.starts_with('[') && ip.ends_with(']') {
                    *ip = ip[1..ip.len() - 1].to_string();
                }
            }
        }
        Ok(HostsList(out))
    }
}

/// A file mode, written in octal (`0440`, or a YAML integer), printed as an octal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("0{:o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match &v {
            Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(FileMode)
                .ok_or_else(|| de::Error::custom(format!("invalid file mode {n}"))),
            Value::String(s) => u32::from_str_radix(s, 8)
                .map(FileMode)
                .map_err(|_| de::Error::custom(format!("invalid file mode {s:?}"))),
            other => Err(expected("a file mode", other)),
        }
    }
}

/// `ulimits` entries: one number for both limits, or `soft` and `hard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ulimit {
    /// The same soft and hard limit.
    Single(i64),
    /// Distinct soft and hard limits.
    Pair {
        /// The soft limit.
        soft: i64,
        /// The hard limit.
        hard: i64,
    },
}

impl Serialize for Ulimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            Ulimit::Single(0) => s.serialize_map(Some(0))?.end(),
            Ulimit::Single(n) => s.serialize_i64(n),
            Ulimit::Pair { soft, hard } => {
                let mut m = s.serialize_map(None)?;
                if soft != 0 {
                    m.serialize_entry("soft", &soft)?;
                }
                if hard != 0 {
                    m.serialize_entry("hard", &hard)?;
                }
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ulimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Pair {
            #[serde(deserialize_with = "lenient_i64")]
            soft: i64,
            #[serde(deserialize_with = "lenient_i64")]
            hard: i64,
        }
        let v = Value::deserialize(d)?;
        match &v {
            Value::Mapping(_) => {
                let p: Pair = serde_yaml::from_value(v).map_err(de::Error::custom)?;
                Ok(Ulimit::Pair {
                    soft: p.soft,
                    hard: p.hard,
                })
            }
            other => scalar_to_string(other)
                .and_then(|s| s.parse().ok())
                .map(Ulimit::Single)
                .ok_or_else(|| expected("an integer or a soft/hard mapping", other)),
        }
    }
}

/// A boolean that may also be written as a string (`"true"`, `"yes"`, `"off"` ...),
/// as happens after interpolation.
pub fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Bool(b) => Ok(*b),
        Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "on" | "1" => Ok(true),
            "false" | "no" | "n" | "off" | "0" | "" => Ok(false),
            _ => Err(de::Error::custom(format!("invalid boolean {s:?}"))),
        },
        other => Err(expected("a boolean", other)),
    }
}

/// [`lenient_bool`] for optional fields.
pub fn lenient_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    lenient_bool(d).map(Some)
}

macro_rules! lenient_int {
    ($name:ident, $opt:ident, $t:ty) => {
        /// An integer that may also be written as a numeric string, as happens after interpolation.
        pub fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
            let v = Value::deserialize(d)?;
            match &v {
                Value::Number(n) => n
                    .as_i64()
                    .and_then(|n| <$t>::try_from(n).ok())
                    .ok_or_else(|| de::Error::custom(format!("invalid integer {n}"))),
                Value::String(s) => s
                    .trim()
                    .parse::<$t>()
                    .map_err(|_| de::Error::custom(format!("invalid integer {s:?}"))),
                other => Err(expected("an integer", other)),
            }
        }

        /// The optional form of the integer above.
        pub fn $opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<$t>, D::Error> {
            $name(d).map(Some)
        }
    };
}

lenient_int!(lenient_i64, lenient_opt_i64, i64);
lenient_int!(lenient_u64, lenient_opt_u64, u64);
lenient_int!(lenient_u32, lenient_opt_u32, u32);

/// A float that may also be written as a numeric string (`cpus: "0.5"`).
pub fn lenient_opt_f32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Number(n) => n
            .as_f64()
            .map(|f| Some(f as f32))
            .ok_or_else(|| de::Error::custom("invalid number")),
        Value::String(s) => s
            .trim()
            .parse::<f32>()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("invalid number {s:?}"))),
        other => Err(expected("a number", other)),
    }
}

/// A string that may also be written as a number or boolean scalar.
pub fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Sequence(_) | Value::Mapping(_) => Err(expected("a string", &v)),
        other => Ok(scalar_to_string(other).unwrap_or_default()),
    }
}

/// The optional form of [`lenient_string`].
pub fn lenient_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Sequence(_) | Value::Mapping(_) => Err(expected("a string", &v)),
        other => Ok(scalar_to_string(other)),
    }
}

/// A list of strings whose items may be numbers (`expose: [3306]`).
pub fn lenient_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of strings")
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element::<Value>()? {
                match &v {
                    Value::Sequence(_) | Value::Mapping(_) | Value::Null => {
                        return Err(expected("a string", &v))
                    }
                    other => out.push(scalar_to_string(other).unwrap_or_default()),
                }
            }
            Ok(out)
        }
    }
    d.deserialize_any(V)
}

/// Skips an absent or zero float (Go's `omitempty`).
pub fn no_f32(v: &Option<f32>) -> bool {
    v.is_none_or(|f| f == 0.0)
}

/// Skips an absent or zero byte amount (Go's `omitempty`).
pub fn no_bytes(v: &Option<Bytes>) -> bool {
    v.is_none_or(|b| b.0 == 0)
}

/// Skips an absent or zero duration (Go's `omitempty` on a non-pointer).
pub fn no_duration(v: &Option<Duration>) -> bool {
    v.is_none_or(|d| d.nanos == 0)
}

/// Writes a float32 as Go does: its shortest decimal form, an integer when it
/// has no fraction.
pub fn go_f32<S: Serializer>(v: &Option<f32>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        None => s.serialize_none(),
        Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => s.serialize_i64(*f as i64),
        // The shortest decimal that reads back as this f32, widened without noise.
        Some(f) => s.serialize_f64(f.to_string().parse::<f64>().unwrap_or(f64::from(*f))),
    }
}

/// A file mode as a number: a YAML integer as it is, a string with a leading
/// zero in octal (how Go's YAML reads an unquoted `01777`).
pub fn file_mode_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("invalid mode {n}"))),
        Value::String(s) if s.len() > 1 && s.starts_with('0') => u32::from_str_radix(&s[1..], 8)
            .map(Some)
            .map_err(|_| de::Error::custom(format!("invalid mode {s:?}"))),
        other => Err(expected("an integer", other)),
    }
}

/// A device count: a number, or `all` (-1).
pub fn device_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(None),
        Value::String(s) if s == "all" => Ok(Some(-1)),
        other => scalar_to_string(other)
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| de::Error::custom("invalid device count: use a number or all")),
    }
}

/// `build.ssh`: a list of `id[=path]`, or a mapping of id to path (or null).
pub fn ssh_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Mapping(m) => Ok(m
            .iter()
            .filter_map(|(k, v)| {
                let k = scalar_to_string(k)?;
                Some(match scalar_to_string(v) {
                    Some(p) => format!("{k}={p}"),
                    None => k,
                })
            })
            .collect()),
        other => StringList::deserialize(other.clone())
            .map(|l| l.0)
            .map_err(de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        let cases = [
            (1.0, "1"),
            (1.5, "1.5"),
            (100000.0, "100000"),
            (1e6, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.25, "-2.25"),
            (123.456, "123.456"),
        ];
        for (f, want) in cases {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    #[test]
    fn durations_parse_and_print_like_go() {
        let cases = [
            ("1m30s", "1m30s"),
            ("90s", "1m30s"),
            ("1m", "1m0s"),
            ("10s", "10s"),
            ("500ms", "500ms"),
            ("1.5s", "1.5s"),
            ("2h", "2h0m0s"),
            ("1h1s", "1h0m1s"),
            ("100us", "100µs"),
            ("3ns", "3ns"),
            ("0", "0s"),
            ("5", "5s"),
            ("1d", "24h0m0s"),
        ];
        for (input, want) in cases {
            let d = Duration::parse(input);
            assert_eq!(d.map(|d| d.to_string()).as_deref(), Some(want), "{input}");
        }
        for bad in ["", "abc", "1x", "s", "1.2.3s"] {
            assert_eq!(Duration::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn byte_amounts_use_binary_units() {
        let cases = [
            ("512m", 536_870_912),
            ("1.5G", 1_610_612_736),
            ("50M", 52_428_800),
            ("1024", 1024),
            ("1gb", 1_073_741_824),
            ("64MiB", 67_108_864),
            ("10k", 10_240),
            ("-1", -1),
        ];
        for (input, want) in cases {
            assert_eq!(Bytes::parse(input), Some(Bytes(want)), "{input}");
        }
        for bad in ["", "m", "12q", "1.2.3m"] {
            assert_eq!(Bytes::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn shell_split_handles_quotes() {
        let cases: [(&str, &[&str]); 5] = [
            ("a b  c", &["a", "b", "c"]),
            (r#"sh -c "echo hi""#, &["sh", "-c", "echo hi"]),
            ("a 'b c' d", &["a", "b c", "d"]),
            (r#"a\ b"#, &["a b"]),
            (r#""" x"#, &["", "x"]),
        ];
        for (input, want) in cases {
            assert_eq!(
                shell_split(input).as_deref(),
                Some(
                    want.iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .as_slice()
                ),
                "{input}"
            );
        }
        assert_eq!(shell_split("a 'b"), None);
    }
}
