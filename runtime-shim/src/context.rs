//! Build contexts: the files of a context directory that a build sees, as
//! the Docker CLI selects them (`.dockerignore`, an inline or outside
//! Dockerfile), and the tar archive of them. The Docker runtime sends the
//! archive to the engine; the native builder reads the same selection.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{BuildSpec, Result, RuntimeError};

/// One pattern of a `.dockerignore` file.
#[derive(Debug, Clone)]
struct IgnorePattern {
    exclusion: bool,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Char(char),
    /// `*`: any run of characters but `/`.
    Star,
    /// `?`: one character but `/`.
    Any,
    /// `[...]`: a character class.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
    /// `**/` or `**` followed by more: any run of whole directories, or none.
    Dirs,
    /// `**` at the end: anything.
    Rest,
}

/// `.dockerignore` patterns, matched as Docker's `patternmatcher` does:
/// later patterns override earlier ones, `!` re-includes, a pattern that
/// matches a directory matches everything under it.
#[derive(Debug, Clone, Default)]
pub struct IgnoreMatcher {
    patterns: Vec<IgnorePattern>,
}

/// A slash-separated path cleaned lexically as Go's `path.Clean` does:
/// `.` and empty parts dropped, `..` taking a part back (never above a
/// leading `/`), `.` for nothing at all.
pub fn clean_path(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    if rooted {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".to_string()
    } else {
        joined
    }
}

impl IgnoreMatcher {
    /// Reads the patterns of a `.dockerignore` file.
    pub fn parse(content: &str) -> Result<IgnoreMatcher> {
        let mut patterns = Vec::new();
        let content = content.strip_prefix('\u{feff}').unwrap_or(content);
        for line in content.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (exclusion, pattern) = match line.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, line),
            };
            if exclusion && pattern.is_empty() {
                return Err(RuntimeError::Engine(
                    "illegal exclusion pattern \"!\" in .dockerignore".into(),
                ));
            }
            patterns.push(Self::pattern(pattern, exclusion)?);
        }
        Ok(IgnoreMatcher { patterns })
    }

    fn pattern(pattern: &str, exclusion: bool) -> Result<IgnorePattern> {
        let mut cleaned = clean_path(pattern);
        if cleaned.len() > 1 && cleaned.starts_with('/') {
            cleaned.remove(0);
        }
        Ok(IgnorePattern {
            exclusion,
            tokens: tokenize(&cleaned).ok_or_else(|| {
                RuntimeError::Engine(format!("syntax error in .dockerignore pattern {pattern:?}"))
            })?,
        })
    }

    /// Adds a pattern at the end (for the files that are always sent).
    fn push(&mut self, pattern: &str, exclusion: bool) -> Result<()> {
        self.patterns.push(Self::pattern(pattern, exclusion)?);
        Ok(())
    }

    /// These patterns, then `more`'s (which decide over these).
    pub fn then(mut self, more: IgnoreMatcher) -> IgnoreMatcher {
        self.patterns.extend(more.patterns);
        self
    }

    /// Whether no pattern was given.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context:
    /// the last pattern that matches it or one of its parents decides.
    pub fn excluded(&self, path: &str) -> bool {
        let file: Vec<char> = path.chars().collect();
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) => path[..i].split('/').collect(),
            None => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = match_tokens(&p.tokens, &file);
            if !hit {
                for i in 0..parents.len() {
                    let parent: Vec<char> = parents[..=i].join("/").chars().collect();
                    if match_tokens(&p.tokens, &parent) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }
}

/// Whether `path` (relative, `/`-separated) matches `pattern` as Go's
/// `filepath.Match` does (`*` and `?` stop at `/`); `None` for a malformed
/// pattern. The sources of a `COPY` are matched so.
pub fn glob_matches(pattern: &str, path: &str) -> Option<bool> {
    let tokens = tokenize(pattern)?;
    let chars: Vec<char> = path.chars().collect();
    Some(match_tokens(&tokens, &chars))
}

/// The tokens of a cleaned pattern, or `None` for a malformed one.
fn tokenize(pattern: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                tokens.push(if i >= chars.len() {
                    Token::Rest
                } else {
                    Token::Dirs
                });
            }
            '*' => tokens.push(Token::Star),
            '?' => tokens.push(Token::Any),
            '\\' => match chars.get(i) {
                Some(&next) => {
                    tokens.push(Token::Char(next));
                    i += 1;
                }
                None => tokens.push(Token::Char('\\')),
            },
            '[' => {
                let mut negated = false;
                if chars.get(i) == Some(&'^') {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                while i < chars.len() {
                    let mut lo = chars[i];
                    i += 1;
                    if lo == ']' && !ranges.is_empty() {
                        closed = true;
                        break;
                    }
                    if lo == '\\' {
                        lo = *chars.get(i)?;
                        i += 1;
                    }
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        hi = chars[i + 1];
                        i += 2;
                        if hi == '\\' {
                            hi = *chars.get(i)?;
                            i += 1;
                        }
                        if hi < lo {
                            return None;
                        }
                    }
                    ranges.push((lo, hi));
                }
                if !closed {
                    return None;
                }
                tokens.push(Token::Class { negated, ranges });
            }
            other => tokens.push(Token::Char(other)),
        }
    }
    Some(tokens)
}

fn match_tokens(tokens: &[Token], s: &[char]) -> bool {
    let Some((token, rest)) = tokens.split_first() else {
        return s.is_empty();
    };
    match token {
        Token::Char(c) => s.first() == Some(c) && match_tokens(rest, &s[1..]),
        Token::Any => s.first().is_some_and(|c| *c != '/') && match_tokens(rest, &s[1..]),
        Token::Class { negated, ranges } => {
            s.first()
                .is_some_and(|c| ranges.iter().any(|(lo, hi)| (lo..=hi).contains(&c)) != *negated)
                && match_tokens(rest, &s[1..])
        }
        Token::Star => {
            for i in 0..=s.len() {
                if match_tokens(rest, &s[i..]) {
                    return true;
                }
                if i < s.len() && s[i] == '/' {
                    return false;
                }
            }
            false
        }
        Token::Rest => (0..=s.len()).any(|i| match_tokens(rest, &s[i..])),
        Token::Dirs => {
            match_tokens(rest, s)
                || (0..s.len()).any(|i| s[i] == '/' && match_tokens(rest, &s[i + 1..]))
        }
    }
}

/// What goes into the build context archive.
#[derive(Debug)]
pub struct ContextPlan {
    /// The context directory, canonical.
    pub root: PathBuf,
    /// Paths relative to the root, `/`-separated, in walking order.
    pub entries: Vec<String>,
    /// Files made up for the build (an inline or outside Dockerfile, the
    /// `.dockerignore` that hides it): name and content.
    pub generated: Vec<(String, Vec<u8>)>,
    /// The Dockerfile's name inside the archive.
    pub dockerfile: String,
}

/// A name for a generated Dockerfile, unique enough within one context.
fn generated_dockerfile_name() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        ".dockerfile.{:08x}{:012x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// Decides the archive's content: walks the context honouring `.dockerignore`
/// and places the Dockerfile (as the Docker CLI does: a Dockerfile given
/// inline or outside the context is added under a generated name, which is
/// also added to `.dockerignore` so that `COPY . .` leaves it out).
pub fn plan_context(spec: &BuildSpec) -> Result<ContextPlan> {
    let context = if spec.context.is_empty() {
        "."
    } else {
        spec.context.as_str()
    };
    if context.contains("://") || context.starts_with("git@") {
        return Err(RuntimeError::Engine(format!(
            "remote build contexts are not supported: {context}"
        )));
    }
    let root = std::fs::canonicalize(context).map_err(|e| {
        RuntimeError::Engine(format!("unable to prepare context: path {context:?}: {e}"))
    })?;
    if !root.is_dir() {
        return Err(RuntimeError::Engine(format!(
            "unable to prepare context: {context:?} is not a directory"
        )));
    }
    let read_err = |path: &Path, e: io::Error| {
        RuntimeError::Engine(format!("cannot read {}: {e}", path.display()))
    };

    let ignore_path = root.join(".dockerignore");
    let ignore_content = match std::fs::read_to_string(&ignore_path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_err(&ignore_path, e)),
    };
    let mut matcher = IgnoreMatcher::parse(ignore_content.as_deref().unwrap_or(""))?;

    let mut generated = Vec::new();
    let dockerfile = if !spec.dockerfile_inline.is_empty() {
        let name = generated_dockerfile_name();
        generated.push((name.clone(), spec.dockerfile_inline.clone().into_bytes()));
        name
    } else {
        let given = if spec.dockerfile.is_empty() {
            "Dockerfile"
        } else {
            spec.dockerfile.as_str()
        };
        let mut path = root.join(given);
        if spec.dockerfile.is_empty() && !path.exists() && root.join("dockerfile").exists() {
            path = root.join("dockerfile");
        }
        if !path.is_file() {
            return Err(RuntimeError::Engine(format!(
                "Cannot locate specified Dockerfile: {given}"
            )));
        }
        let real = std::fs::canonicalize(&path).map_err(|e| read_err(&path, e))?;
        match real.strip_prefix(&root) {
            Ok(rel) => rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
            Err(_) => {
                let name = generated_dockerfile_name();
                let content = std::fs::read(&real).map_err(|e| read_err(&real, e))?;
                generated.push((name.clone(), content));
                name
            }
        }
    };
    let is_generated = generated.iter().any(|(n, _)| *n == dockerfile);
    if is_generated {
        let mut content = ignore_content.unwrap_or_default();
        content.push('\n');
        content.push_str(&dockerfile);
        content.push('\n');
        generated.push((".dockerignore".to_string(), content.into_bytes()));
    }
    // The Dockerfile and .dockerignore are always sent; the engine drops
    // them itself when .dockerignore names them.
    if !matcher.patterns.is_empty() {
        matcher.push(".dockerignore", true)?;
        if !is_generated {
            matcher.push(&dockerfile, true)?;
        }
    }

    let mut entries = Vec::new();
    let skip: Vec<String> = generated.iter().map(|(n, _)| n.clone()).collect();
    walk_context(&root, "", &matcher, &skip, &mut entries)?;
    Ok(ContextPlan {
        root,
        entries,
        generated,
        dockerfile,
    })
}

fn walk_context(
    root: &Path,
    dir: &str,
    matcher: &IgnoreMatcher,
    skip: &[String],
    entries: &mut Vec<String>,
) -> Result<()> {
    let path = if dir.is_empty() {
        root.to_path_buf()
    } else {
        root.join(dir)
    };
    let read_err =
        |e: io::Error| RuntimeError::Engine(format!("cannot read {}: {e}", path.display()));
    let mut children: Vec<(String, std::fs::FileType)> = Vec::new();
    for entry in std::fs::read_dir(&path).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        children.push((name, entry.file_type().map_err(read_err)?));
    }
    children.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, kind) in children {
        let rel = if dir.is_empty() {
            name
        } else {
            format!("{dir}/{name}")
        };
        if skip.contains(&rel) {
            continue;
        }
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            continue; // sockets, fifos, devices
        }
        if matcher.excluded(&rel) {
            // A later `!pattern` may bring back something inside.
            if kind.is_dir() && matcher.has_exclusions() {
                walk_context(root, &rel, matcher, skip, entries)?;
            }
            continue;
        }
        entries.push(rel.clone());
        if kind.is_dir() {
            walk_context(root, &rel, matcher, skip, entries)?;
        }
    }
    Ok(())
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes the context archive: files owned by root, as the Docker CLI sends them.
pub fn write_context<W: Write>(plan: &ContextPlan, out: W) -> io::Result<W> {
    use std::os::unix::fs::MetadataExt;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for rel in &plan.entries {
        let path = plan.root.join(rel);
        let meta = std::fs::symlink_metadata(&path)?;
        let mode = meta.mode() & 0o7777;
        let mtime = u64::try_from(meta.mtime()).unwrap_or(0);
        let kind = meta.file_type();
        if kind.is_symlink() {
            let target = std::fs::read_link(&path)?;
            let mut h = tar_header(tar::EntryType::Symlink, mode, 0, mtime);
            builder.append_link(&mut h, rel, target)?;
        } else if kind.is_dir() {
            let mut h = tar_header(tar::EntryType::Directory, mode, 0, mtime);
            builder.append_data(&mut h, rel, io::empty())?;
        } else {
            let file = std::fs::File::open(&path)?;
            let size = file.metadata()?.len();
            let mut h = tar_header(tar::EntryType::Regular, mode, size, mtime);
            let mut data = file.take(size);
            let mut counted = CountingReader {
                inner: &mut data,
                count: 0,
            };
            builder.append_data(&mut h, rel, &mut counted)?;
            if counted.count != size {
                return Err(io::Error::other(format!(
                    "{} changed while the build context was being sent",
                    path.display()
                )));
            }
        }
    }
    for (name, content) in &plan.generated {
        let size = u64::try_from(content.len()).unwrap_or(u64::MAX);
        let mut h = tar_header(tar::EntryType::Regular, 0o600, size, now);
        builder.append_data(&mut h, name, content.as_slice())?;
    }
    builder.into_inner()
}

struct CountingReader<'a, R: Read> {
    inner: &'a mut R,
    count: u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn ignore(patterns: &str) -> IgnoreMatcher {
        IgnoreMatcher::parse(patterns).unwrap()
    }

    #[test]
    fn cleans_paths_as_go_does() {
        assert_eq!(clean_path(""), ".");
        assert_eq!(clean_path("a//b/./c/"), "a/b/c");
        assert_eq!(clean_path("a/../../b"), "../b");
        assert_eq!(clean_path("/../a"), "/a");
        assert_eq!(clean_path("./"), ".");
        assert_eq!(clean_path("/a/b/"), "/a/b");
        assert_eq!(clean_path("/a/../b"), "/b");
        assert_eq!(clean_path("/.."), "/");
    }

    #[test]
    fn dockerignore_simple_and_directory_patterns() {
        let m = ignore("# comment\n\nnode_modules\n/build/\n*.log\n");
        assert!(m.excluded("node_modules"));
        assert!(m.excluded("node_modules/x/y.js"));
        assert!(m.excluded("build"));
        assert!(m.excluded("build/out.o"));
        assert!(m.excluded("a.log"));
        assert!(!m.excluded("dir/a.log"), "* does not cross /");
        assert!(!m.excluded("src/main.rs"));
        assert!(!m.excluded("sub/node_modules"), "patterns are anchored");
    }

    #[test]
    fn dockerignore_double_star_and_question_mark() {
        let m = ignore("**/*.tmp\ndocs/**\na?c\nx/**/y\n");
        assert!(m.excluded("f.tmp"));
        assert!(m.excluded("deep/er/f.tmp"));
        assert!(m.excluded("docs/a/b"));
        assert!(!m.excluded("docs"), "docs/** needs something under docs");
        assert!(m.excluded("abc"));
        assert!(!m.excluded("a/c"));
        assert!(m.excluded("x/y"));
        assert!(m.excluded("x/1/2/y"));
        assert!(!m.excluded("x/1/2/z"));
    }

    #[test]
    fn dockerignore_negation_order_matters() {
        let m = ignore("*.md\n!README.md\n");
        assert!(m.excluded("CHANGES.md"));
        assert!(!m.excluded("README.md"));
        let m = ignore("!README.md\n*.md\n");
        assert!(m.excluded("README.md"), "a later pattern wins");
        let m = ignore("vendor\n!vendor/keep\n");
        assert!(m.excluded("vendor/drop"));
        assert!(!m.excluded("vendor/keep"));
        assert!(!m.excluded("vendor/keep/inner"));
        assert!(m.has_exclusions());
    }

    #[test]
    fn dockerignore_classes_and_escapes() {
        let m = ignore("file[0-9].txt\n[^a]x\n\\*star\n");
        assert!(m.excluded("file7.txt"));
        assert!(!m.excluded("fileA.txt"));
        assert!(m.excluded("bx"));
        assert!(!m.excluded("ax"));
        assert!(m.excluded("*star"));
        assert!(!m.excluded("xstar"));
        assert!(IgnoreMatcher::parse("[unclosed\n").is_err());
        assert!(IgnoreMatcher::parse("!\n").is_err());
    }

    #[test]
    fn plans_a_context_with_dockerignore_and_inline_dockerfile() {
        let dir = std::env::temp_dir().join(format!("rcompose-ctx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("keep/deep")).unwrap();
        std::fs::create_dir_all(dir.join("skip")).unwrap();
        std::fs::write(dir.join("keep/deep/a.txt"), "a").unwrap();
        std::fs::write(dir.join("keep/b.log"), "b").unwrap();
        std::fs::write(dir.join("skip/x"), "x").unwrap();
        std::fs::write(dir.join("skip/wanted"), "w").unwrap();
        std::fs::write(dir.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(
            dir.join(".dockerignore"),
            "**/*.log\nskip\n!skip/wanted\nDockerfile\n",
        )
        .unwrap();
        let spec = BuildSpec {
            context: dir.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let plan = plan_context(&spec).unwrap();
        assert_eq!(plan.dockerfile, "Dockerfile");
        assert_eq!(
            plan.entries,
            vec![
                ".dockerignore",
                "Dockerfile",
                "keep",
                "keep/deep",
                "keep/deep/a.txt",
                "skip/wanted"
            ]
        );
        let inline = BuildSpec {
            dockerfile_inline: "FROM scratch\nCOPY . /\n".into(),
            ..spec.clone()
        };
        let plan = plan_context(&inline).unwrap();
        assert!(plan.dockerfile.starts_with(".dockerfile."));
        let ignore = plan
            .generated
            .iter()
            .find(|(n, _)| n == ".dockerignore")
            .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
            .unwrap();
        assert!(ignore.ends_with(&format!("\n{}\n", plan.dockerfile)));
        assert!(!plan.entries.contains(&".dockerignore".to_string()));
        let tar = write_context(&plan, Vec::new()).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.contains(&plan.dockerfile));
        assert!(names.contains(&"keep/deep/a.txt".to_string()));
        assert!(!names.contains(&"keep/b.log".to_string()));
        let missing = BuildSpec {
            dockerfile: "Nope".into(),
            ..spec
        };
        assert!(plan_context(&missing).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
