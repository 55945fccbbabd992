//! Dockerfiles, read as Docker reads them: parser directives (`escape`),
//! line continuations, comments, the instructions with their flags, the
//! shell and JSON (exec) forms, and the variable substitution that some
//! instructions get (`$A`, `${A}`, `${A:-x}`, `${A:+x}`, `${A:?x}` and
//! their forms without the colon, with quotes and escapes).
//!
//! Parsing is pure: a text in, stages of located instructions out, or an
//! error naming the line. What the instructions do is the builder's
//! ([`super::build`]).

use std::collections::BTreeMap;
use std::fmt;

/// A command as an instruction gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Shell form: run by the stage's shell (`SHELL`, `/bin/sh -c`).
    Shell(String),
    /// Exec (JSON) form: the words as they are.
    Exec(Vec<String>),
}

impl Command {
    /// The argument vector, given the shell.
    pub fn argv(&self, shell: &[String]) -> Vec<String> {
        match self {
            Command::Shell(s) => shell.iter().cloned().chain([s.clone()]).collect(),
            Command::Exec(v) => v.clone(),
        }
    }
}

/// `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    /// `ADD` (archives are extracted, URLs refused).
    pub add: bool,
    /// `--from`: a stage or an image.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=octal`.
    pub chmod: Option<String>,
    /// The sources, unexpanded.
    pub sources: Vec<String>,
    /// The destination, unexpanded.
    pub dest: String,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// The test (`NONE` when empty).
    pub test: Option<Command>,
    /// `--interval`, `--timeout`, `--start-period`, `--start-interval`.
    pub durations: BTreeMap<String, String>,
    /// `--retries`.
    pub retries: Option<u32>,
}

/// One instruction after `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `ARG name[=default]…`
    Arg(Vec<(String, Option<String>)>),
    /// `ENV k=v…` (values unexpanded).
    Env(Vec<(String, String)>),
    /// `LABEL k=v…` (unexpanded).
    Label(Vec<(String, String)>),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `RUN`, with its `--network` if any.
    Run {
        /// What to run.
        command: Command,
        /// `--network=default|none|host`.
        network: Option<String>,
    },
    /// `COPY` / `ADD`.
    Copy(Copy),
    /// `EXPOSE port[/proto]…` (unexpanded words).
    Expose(Vec<String>),
    /// `VOLUME`.
    Volume(Vec<String>),
    /// `CMD`.
    Cmd(Command),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `HEALTHCHECK` (`NONE`: no test).
    Healthcheck(Health),
    /// `STOPSIGNAL`.
    StopSignal(String),
    /// `SHELL ["exe", "arg"]`.
    Shell(Vec<String>),
    /// `ONBUILD instruction` (kept as text for the images built on it).
    OnBuild(String),
    /// `MAINTAINER` (deprecated; the image's author).
    Maintainer(String),
}

/// An instruction and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Its first line (1-based).
    pub line: usize,
    /// The instruction as written (continuations joined), for the progress
    /// output and the image's history.
    pub text: String,
    /// What it says.
    pub instruction: Instruction,
}

/// A stage: `FROM` and what follows it up to the next `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The line of its `FROM`.
    pub line: usize,
    /// Its base, unexpanded (an image, a stage's name, or `scratch`).
    pub base: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// `AS name`, lowercased.
    pub name: Option<String>,
    /// Its instructions.
    pub steps: Vec<Step>,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    /// `ARG`s before the first `FROM` (they may be used in `FROM` lines).
    pub global_args: Vec<(String, Option<String>)>,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

/// A Dockerfile that cannot be read, with its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn error(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
    }
}

/// A logical line: an instruction with its continuations joined.
struct Logical {
    line: usize,
    text: String,
}

/// Splits the text into logical lines, honouring the escape character's
/// continuations, comments, and the parser directives at the top.
fn logical_lines(text: &str) -> Result<(char, Vec<Logical>), ParseError> {
    let mut escape = '\\';
    let mut lines = text.lines().enumerate().peekable();
    // Directives: `# key=value` lines before anything else.
    let mut seen = Vec::new();
    while let Some((n, raw)) = lines.peek() {
        let Some(rest) = raw.trim_start().strip_prefix('#') else {
            break;
        };
        let Some((key, value)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() || key.contains(char::is_whitespace) {
            break;
        }
        if seen.contains(&key) {
            return Err(error(
                n + 1,
                format!("only one {key} parser directive can be used"),
            ));
        }
        if key == "escape" {
            escape = match value.trim() {
                "\\" => '\\',
                "`" => '`',
                other => {
                    return Err(error(
                        n + 1,
                        format!("invalid escape token {other:?}: it must be ` or \\"),
                    ))
                }
            };
        }
        seen.push(key);
        lines.next();
    }
    let mut out: Vec<Logical> = Vec::new();
    let mut current: Option<Logical> = None;
    for (n, raw) in lines {
        let trimmed = raw.trim_start();
        if trimmed.starts_with('#') {
            continue; // comments, also inside continuations
        }
        if trimmed.is_empty() {
            continue; // blank lines, also inside continuations
        }
        let (body, continues) = match raw.trim_end().strip_suffix(escape) {
            Some(body) => (body, true),
            None => (raw, false),
        };
        match &mut current {
            Some(l) => l.text.push_str(body),
            None => {
                current = Some(Logical {
                    line: n + 1,
                    text: body.trim_start().to_string(),
                })
            }
        }
        if !continues {
            if let Some(l) = current.take() {
                out.push(l);
            }
        }
    }
    if let Some(l) = current.take() {
        out.push(l);
    }
    Ok((escape, out))
}

/// Parses a Dockerfile.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let (escape, lines) = logical_lines(text)?;
    let mut file = Dockerfile::default();
    for l in lines {
        let (keyword, rest) = match l.text.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim()),
            None => (l.text.as_str(), ""),
        };
        let keyword = keyword.to_ascii_uppercase();
        if keyword == "FROM" {
            file.stages.push(parse_from(l.line, rest, escape)?);
            continue;
        }
        let instruction = parse_instruction(l.line, &keyword, rest, escape)?;
        match file.stages.last_mut() {
            Some(stage) => stage.steps.push(Step {
                line: l.line,
                text: format!("{keyword} {rest}").trim_end().to_string(),
                instruction,
            }),
            None => match instruction {
                Instruction::Arg(args) => file.global_args.extend(args),
                _ => {
                    return Err(error(
                        l.line,
                        format!("{keyword} before the first FROM: only ARG may come before it"),
                    ))
                }
            },
        }
    }
    if file.stages.is_empty() {
        return Err(error(
            1,
            "the Dockerfile has no FROM instruction (file with no instructions?)",
        ));
    }
    Ok(file)
}

/// Leading `--name=value` flags, and what follows them.
fn flags<'a>(
    line: usize,
    keyword: &str,
    mut rest: &'a str,
    known: &[&str],
) -> Result<(BTreeMap<String, String>, &'a str), ParseError> {
    let mut out = BTreeMap::new();
    while let Some(flag) = rest.strip_prefix("--") {
        let end = flag.find(char::is_whitespace).unwrap_or(flag.len());
        let (word, after) = flag.split_at(end);
        let (name, value) = word.split_once('=').unwrap_or((word, ""));
        if !known.contains(&name) {
            return Err(error(line, format!("unknown flag for {keyword}: --{name}")));
        }
        out.insert(name.to_string(), unquote(value));
        rest = after.trim_start();
    }
    Ok((out, rest))
}

/// A flag's value with its surrounding quotes removed.
fn unquote(s: &str) -> String {
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

fn parse_from(line: usize, rest: &str, escape: char) -> Result<Stage, ParseError> {
    let (flags, rest) = flags(line, "FROM", rest, &["platform"])?;
    let words = split_words(rest, escape);
    let (base, name) = match words.as_slice() {
        [base] => (base.clone(), None),
        [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
            let name = name.to_ascii_lowercase();
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(error(
                    line,
                    format!("invalid name for a build stage: {name:?}"),
                ));
            }
            (base.clone(), Some(name))
        }
        _ => {
            return Err(error(
                line,
                "FROM requires an image, optionally followed by AS and a stage name",
            ))
        }
    };
    Ok(Stage {
        line,
        base,
        platform: flags.get("platform").cloned(),
        name,
        steps: Vec::new(),
    })
}

/// JSON form, if the text is a JSON array of strings.
fn json_form(rest: &str) -> Option<Vec<String>> {
    if !rest.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(rest).ok()
}

fn command(rest: &str) -> Command {
    match json_form(rest) {
        Some(v) => Command::Exec(v),
        None => Command::Shell(rest.to_string()),
    }
}

fn parse_instruction(
    line: usize,
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<Instruction, ParseError> {
    let needs = |what: &str| -> Result<(), ParseError> {
        if rest.is_empty() {
            Err(error(line, format!("{keyword} requires {what}")))
        } else {
            Ok(())
        }
    };
    if rest.contains("<<") && matches!(keyword, "RUN" | "COPY" | "ADD") && heredoc(rest) {
        return Err(error(
            line,
            format!("{keyword} with a here-document is not supported by the native builder yet"),
        ));
    }
    Ok(match keyword {
        "ARG" => {
            needs("at least one argument")?;
            let mut args = Vec::new();
            for word in split_words(rest, escape) {
                match word.split_once('=') {
                    Some((k, v)) => args.push((k.to_string(), Some(strip_quotes(v, escape)))),
                    None => args.push((word, None)),
                }
            }
            for (k, _) in &args {
                if !valid_variable(k) {
                    return Err(error(line, format!("ARG names a variable badly: {k:?}")));
                }
            }
            Instruction::Arg(args)
        }
        "ENV" | "LABEL" => {
            needs("at least one argument")?;
            let pairs = name_values(line, keyword, rest, escape)?;
            if keyword == "ENV" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            }
        }
        "WORKDIR" => {
            needs("exactly one argument")?;
            Instruction::Workdir(rest.to_string())
        }
        "USER" => {
            needs("exactly one argument")?;
            Instruction::User(rest.to_string())
        }
        "RUN" => {
            let (flags, rest) = flags(line, keyword, rest, &["network", "mount", "security"])?;
            if flags.contains_key("mount") || flags.contains_key("security") {
                return Err(error(
                    line,
                    "RUN --mount and --security are not supported by the native builder yet",
                ));
            }
            if rest.is_empty() {
                return Err(error(line, "RUN requires a command"));
            }
            Instruction::Run {
                command: command(rest),
                network: flags.get("network").cloned(),
            }
        }
        "COPY" | "ADD" => {
            let (flags, rest) = flags(
                line,
                keyword,
                rest,
                &[
                    "from",
                    "chown",
                    "chmod",
                    "link",
                    "parents",
                    "exclude",
                    "checksum",
                    "keep-git-dir",
                ],
            )?;
            for unsupported in ["parents", "exclude", "checksum", "keep-git-dir"] {
                if flags.contains_key(unsupported) {
                    return Err(error(
                        line,
                        format!(
                            "{keyword} --{unsupported} is not supported by the native builder yet"
                        ),
                    ));
                }
            }
            if keyword == "ADD" && flags.contains_key("from") {
                return Err(error(line, "ADD has no --from flag: use COPY --from"));
            }
            let mut words = json_form(rest).unwrap_or_else(|| split_words(rest, escape));
            if words.len() < 2 {
                return Err(error(
                    line,
                    format!(
                        "{keyword} requires at least two arguments: a source and a destination"
                    ),
                ));
            }
            let dest = words.pop().unwrap_or_default();
            Instruction::Copy(Copy {
                add: keyword == "ADD",
                from: flags.get("from").cloned(),
                chown: flags.get("chown").cloned(),
                chmod: flags.get("chmod").cloned(),
                sources: words,
                dest,
            })
        }
        "EXPOSE" => {
            needs("at least one argument")?;
            Instruction::Expose(split_words(rest, escape))
        }
        "VOLUME" => {
            needs("at least one argument")?;
            Instruction::Volume(json_form(rest).unwrap_or_else(|| split_words(rest, escape)))
        }
        "CMD" => {
            needs("a command")?;
            Instruction::Cmd(command(rest))
        }
        "ENTRYPOINT" => {
            needs("a command")?;
            Instruction::Entrypoint(command(rest))
        }
        "HEALTHCHECK" => {
            let (flags, rest) = flags(
                line,
                keyword,
                rest,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
            )?;
            let (kind, cmd) = match rest.split_once(char::is_whitespace) {
                Some((k, c)) => (k.to_ascii_uppercase(), c.trim()),
                None => (rest.to_ascii_uppercase(), ""),
            };
            match kind.as_str() {
                "NONE" if cmd.is_empty() && flags.is_empty() => {
                    Instruction::Healthcheck(Health::default())
                }
                "NONE" => return Err(error(line, "HEALTHCHECK NONE takes no arguments")),
                "CMD" if !cmd.is_empty() => {
                    let retries = match flags.get("retries") {
                        Some(r) => Some(r.parse::<u32>().map_err(|_| {
                            error(
                                line,
                                format!("HEALTHCHECK --retries must be a number: {r:?}"),
                            )
                        })?),
                        None => None,
                    };
                    let durations = flags.into_iter().filter(|(k, _)| k != "retries").collect();
                    Instruction::Healthcheck(Health {
                        test: Some(command(cmd)),
                        durations,
                        retries,
                    })
                }
                _ => {
                    return Err(error(
                        line,
                        "HEALTHCHECK requires CMD and a command, or NONE",
                    ))
                }
            }
        }
        "STOPSIGNAL" => {
            needs("a signal")?;
            Instruction::StopSignal(rest.to_string())
        }
        "SHELL" => match json_form(rest) {
            Some(v) if !v.is_empty() => Instruction::Shell(v),
            _ => return Err(error(line, "SHELL requires the arguments as a JSON array")),
        },
        "ONBUILD" => {
            needs("an instruction")?;
            let first = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase();
            if matches!(first.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                return Err(error(
                    line,
                    format!("{first} is not allowed as an ONBUILD trigger"),
                ));
            }
            // Checked now, run in the images built FROM this one.
            parse_instruction(line, &first, rest[first.len()..].trim(), escape)?;
            Instruction::OnBuild(rest.to_string())
        }
        "MAINTAINER" => {
            needs("an author")?;
            Instruction::Maintainer(rest.to_string())
        }
        other => return Err(error(line, format!("unknown instruction: {other}"))),
    })
}

/// Whether a `<<WORD` in the text starts a here-document (not a shell's
/// `<<` inside quotes).
fn heredoc(rest: &str) -> bool {
    rest.split_whitespace().any(|w| {
        w.strip_prefix("<<")
            .map(|t| {
                t.trim_start_matches('-')
                    .trim_matches(|c| c == '"' || c == '\'')
            })
            .is_some_and(|t| t.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
    })
}

fn valid_variable(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `ENV`/`LABEL` pairs: `k=v k2="v 2"`, or the old `k value with spaces`.
fn name_values(
    line: usize,
    keyword: &str,
    rest: &str,
    escape: char,
) -> Result<Vec<(String, String)>, ParseError> {
    let words = split_words(rest, escape);
    let first_has_eq = words.first().is_some_and(|w| w.contains('='));
    if !first_has_eq {
        // `ENV name value…`: one pair, the rest of the line as its value.
        let name = words.first().cloned().unwrap_or_default();
        let value = rest[rest.find(char::is_whitespace).unwrap_or(rest.len())..].trim();
        if value.is_empty() {
            return Err(error(
                line,
                format!("{keyword} names {name} but gives no value"),
            ));
        }
        return Ok(vec![(name, value.to_string())]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(error(
                line,
                format!("{keyword}: {w:?} is not of the form name=value"),
            ));
        };
        if k.is_empty() {
            return Err(error(line, format!("{keyword}: a name is empty in {w:?}")));
        }
        out.push((strip_quotes(k, escape), v.to_string()));
    }
    Ok(out)
}

/// The text split into words at unquoted white space; quotes and escapes
/// are kept (they are the expansion's to remove).
pub fn split_words(text: &str, escape: char) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut chars = text.chars();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c == escape && quote != Some('\'') {
            word.push(c);
            if let Some(n) = chars.next() {
                word.push(n);
            }
            any = true;
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c.is_whitespace() => {
                if any {
                    words.push(std::mem::take(&mut word));
                    any = false;
                }
                continue;
            }
            None => {}
        }
        word.push(c);
        any = true;
    }
    if any {
        words.push(word);
    }
    words
}

/// Quotes and escapes removed, no variables expanded.
fn strip_quotes(word: &str, escape: char) -> String {
    expand(word, escape, &|_| None).unwrap_or_else(|_| word.to_string())
}

/// Expands variables in one word the way Docker does for the instructions
/// that get substitution: quotes and escapes are removed, `$name` and
/// `${name…}` replaced by `lookup`'s value (empty when unset).
pub fn expand(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let c = chars[i];
        if c == escape && quote != Some('\'') {
            if let Some(&n) = chars.get(i + 1) {
                // In double quotes only the specials are escaped.
                if quote == Some('"') && !matches!(n, '"' | '$') && n != escape {
                    out.push(c);
                }
                out.push(n);
                i += 2;
            } else {
                out.push(c);
                i += 1;
            }
            continue;
        }
        match (quote, c) {
            (None, '\'') | (None, '"') => {
                quote = Some(c);
                i += 1;
                continue;
            }
            (Some(q), _) if c == q => {
                quote = None;
                i += 1;
                continue;
            }
            (Some('\''), _) => {
                out.push(c);
                i += 1;
                continue;
            }
            _ => {}
        }
        if c != '$' {
            out.push(c);
            i += 1;
            continue;
        }
        // A variable.
        match chars.get(i + 1) {
            Some('{') => {
                let start = i + 2;
                let mut depth = 1;
                let mut end = start;
                while end < chars.len() {
                    match chars[end] {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    end += 1;
                }
                if end >= chars.len() {
                    return Err(format!("missing '}}' in {word:?}"));
                }
                let inner: String = chars[start..end].iter().collect();
                out.push_str(&braced(&inner, escape, lookup)?);
                i = end + 1;
            }
            Some(&n) if n.is_ascii_alphanumeric() || n == '_' => {
                let mut end = i + 1;
                while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_')
                {
                    end += 1;
                }
                let name: String = chars[i + 1..end].iter().collect();
                out.push_str(&lookup(&name).unwrap_or_default());
                i = end;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `${…}`'s inside: a name, and maybe a modifier and its word.
fn braced(
    inner: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let end = inner
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(inner.len());
    let (name, modifier) = inner.split_at(end);
    if name.is_empty() {
        return Err(format!("bad substitution: ${{{inner}}}"));
    }
    let value = lookup(name);
    let set = value.is_some();
    let nonempty = value.as_deref().is_some_and(|v| !v.is_empty());
    let word = |w: &str| expand(w, escape, lookup);
    Ok(match modifier {
        "" => value.unwrap_or_default(),
        m if m.starts_with(":-") => {
            if nonempty {
                value.unwrap_or_default()
            } else {
                word(&m[2..])?
            }
        }
        m if m.starts_with('-') => {
            if set {
                value.unwrap_or_default()
            } else {
                word(&m[1..])?
            }
        }
        m if m.starts_with(":+") => {
            if nonempty {
                word(&m[2..])?
            } else {
                String::new()
            }
        }
        m if m.starts_with('+') => {
            if set {
                word(&m[1..])?
            } else {
                String::new()
            }
        }
        m if m.starts_with(":?") || m.starts_with('?') => {
            let ok = if m.starts_with(':') { nonempty } else { set };
            if ok {
                value.unwrap_or_default()
            } else {
                let message = word(m.trim_start_matches(':').trim_start_matches('?'))?;
                return Err(format!(
                    "{name}: {}",
                    if message.is_empty() {
                        "is not set".to_string()
                    } else {
                        message
                    }
                ));
            }
        }
        _ => return Err(format!("unsupported modifier in ${{{inner}}}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("one".into()),
            "EMPTY" => Some(String::new()),
            "SPACED" => Some("a b".into()),
            _ => None,
        }
    }

    fn ex(word: &str) -> String {
        expand(word, '\\', &vars).unwrap_or_else(|e| panic!("{word}: {e}"))
    }

    #[test]
    fn substitution_follows_docker() {
        assert_eq!(ex("$A"), "one");
        assert_eq!(ex("${A}x"), "onex");
        assert_eq!(ex("${NO:-dflt}"), "dflt");
        assert_eq!(ex("${EMPTY:-dflt}"), "dflt");
        assert_eq!(ex("${EMPTY-dflt}"), "");
        assert_eq!(ex("${A:+alt}"), "alt");
        assert_eq!(ex("${NO:+alt}"), "");
        assert_eq!(ex("${NO:-${A}}"), "one");
        assert_eq!(ex("'$A'"), "$A");
        assert_eq!(ex("\"$A b\""), "one b");
        assert_eq!(ex("\\$A"), "$A");
        assert_eq!(ex("\"a\\b\""), "a\\b");
        assert_eq!(ex("$"), "$");
        assert_eq!(ex("$NO"), "");
        let missing = expand("${NO:?needed}", '\\', &vars)
            .err()
            .unwrap_or_default();
        assert!(missing.contains("NO: needed"), "{missing}");
        assert!(expand("${A", '\\', &vars).is_err());
    }

    #[test]
    fn continuations_comments_and_the_escape_directive() {
        let f = parse(
            "# escape=`\nFROM base\nRUN echo a `\n  # a comment inside\n\n  && echo b\nCOPY a\\b c\n",
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let steps = &f.stages[0].steps;
        assert_eq!(steps[0].line, 3);
        assert_eq!(
            steps[0].instruction,
            Instruction::Run {
                command: Command::Shell("echo a   && echo b".into()),
                network: None
            }
        );
        let Instruction::Copy(c) = &steps[1].instruction else {
            panic!("{:?}", steps[1])
        };
        assert_eq!(c.sources, vec!["a\\b".to_string()]);
    }

    #[test]
    fn stages_args_and_forms() {
        let f = parse(
            r#"ARG BASE=debian
FROM --platform=linux/amd64 ${BASE} AS Build
ENV A=1 B="two words"
ENV OLD spaced value
LABEL "com.x"="y"
COPY --from=build --chown=www-data:www-data --chmod=644 ["a b", "/dst/"]
CMD ["php", "-v"]
ENTRYPOINT exec run
HEALTHCHECK --interval=5s --retries=3 CMD curl -f localhost
FROM scratch
HEALTHCHECK NONE
SHELL ["/bin/bash", "-c"]
ONBUILD RUN make
"#,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(f.global_args, vec![("BASE".into(), Some("debian".into()))]);
        assert_eq!(f.stages.len(), 2);
        let s = &f.stages[0];
        assert_eq!((s.line, s.base.as_str()), (2, "${BASE}"));
        assert_eq!(s.name.as_deref(), Some("build"));
        assert_eq!(s.platform.as_deref(), Some("linux/amd64"));
        assert_eq!(
            s.steps[0].instruction,
            Instruction::Env(vec![
                ("A".into(), "1".into()),
                ("B".into(), "\"two words\"".into())
            ])
        );
        assert_eq!(
            s.steps[1].instruction,
            Instruction::Env(vec![("OLD".into(), "spaced value".into())])
        );
        assert_eq!(
            s.steps[2].instruction,
            Instruction::Label(vec![("com.x".into(), "\"y\"".into())])
        );
        assert_eq!(
            s.steps[3].instruction,
            Instruction::Copy(Copy {
                add: false,
                from: Some("build".into()),
                chown: Some("www-data:www-data".into()),
                chmod: Some("644".into()),
                sources: vec!["a b".into()],
                dest: "/dst/".into()
            })
        );
        assert_eq!(
            s.steps[4].instruction,
            Instruction::Cmd(Command::Exec(vec!["php".into(), "-v".into()]))
        );
        assert_eq!(
            s.steps[5].instruction,
            Instruction::Entrypoint(Command::Shell("exec run".into()))
        );
        let Instruction::Healthcheck(h) = &s.steps[6].instruction else {
            panic!()
        };
        assert_eq!(h.retries, Some(3));
        assert_eq!(h.durations["interval"], "5s");
        assert_eq!(
            f.stages[1].steps[0].instruction,
            Instruction::Healthcheck(Health::default())
        );
        assert_eq!(
            Command::Shell("x".into()).argv(&["/bin/sh".into(), "-c".into()]),
            vec!["/bin/sh", "-c", "x"]
        );
    }

    #[test]
    fn bad_files_name_the_line() {
        for (text, line, what) in [
            ("RUN x", 1, "before the first FROM"),
            ("FROM a\nBOGUS x", 2, "unknown instruction: BOGUS"),
            ("FROM a\n\nCOPY onlyone", 3, "at least two arguments"),
            ("FROM a b c d", 1, "FROM requires"),
            ("FROM a\nRUN --mount=type=cache x", 2, "--mount"),
            ("FROM a\nRUN <<EOF\necho\nEOF", 2, "here-document"),
            ("FROM a\nSHELL /bin/sh", 2, "JSON array"),
            ("FROM a\nHEALTHCHECK --retries=x CMD y", 2, "--retries"),
            (
                "FROM a\nCOPY --frm=x a b",
                2,
                "unknown flag for COPY: --frm",
            ),
            ("# escape=x\nFROM a", 1, "invalid escape"),
            ("", 1, "no FROM"),
            ("FROM a\nONBUILD FROM b", 2, "ONBUILD trigger"),
        ] {
            let Err(e) = parse(text) else {
                panic!("{text}: parsed")
            };
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(what), "{text}: {e}");
        }
    }

    #[test]
    fn words_keep_quotes_for_the_expansion() {
        assert_eq!(
            split_words(r#"a "b c" 'd e'  f\ g"#, '\\'),
            vec!["a", "\"b c\"", "'d e'", "f\\ g"]
        );
    }
}
