//! Image names as Docker reads and shows them: `redis` is
//! `docker.io/library/redis:latest` in full, and shown as `redis` with the
//! tag `latest`.
//!
//! The grammar is Docker's (distribution's `reference` package), read by
//! hand: a regular-expression engine would compile Docker's whole grammar
//! at the first name read, which cost an unchanged native rebuild half its
//! time.

use std::fmt;

use crate::{Result, RuntimeError};

/// A name, normalized: `domain/path`, with a tag and or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    /// The registry: `docker.io` when the name gives none.
    pub domain: String,
    /// The repository in the registry: `library/redis`.
    pub path: String,
    /// `7` in `redis:7`.
    pub tag: Option<String>,
    /// `sha256:…` after an `@`.
    pub digest: Option<String>,
}

impl Reference {
    /// `domain/path`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The full form: `latest` when neither a tag nor a digest is given.
    pub fn whole(&self) -> String {
        match (&self.tag, &self.digest) {
            (Some(t), Some(d)) => format!("{}:{t}@{d}", self.name()),
            (None, Some(d)) => format!("{}@{d}", self.name()),
            (Some(t), None) => format!("{}:{t}", self.name()),
            (None, None) => format!("{}:latest", self.name()),
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.whole())
    }
}

/// Why a name is refused, in Docker's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Not of the grammar.
    Format,
    /// The empty name.
    Empty,
    /// Capitals in the repository.
    Uppercase,
    /// A name over 255 characters.
    TooLong,
    /// A digest's hex in capitals.
    DigestFormat,
    /// A digest of the wrong length for its algorithm.
    DigestLength,
    /// A digest of an algorithm other than SHA-256, -384 or -512.
    DigestAlgorithm,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::Format => "invalid reference format",
            Fault::Empty => "repository name must have at least one component",
            Fault::Uppercase => "repository name must be lowercase",
            Fault::TooLong => "repository name must not be more than 255 characters",
            Fault::DigestFormat => "invalid checksum digest format",
            Fault::DigestLength => "invalid checksum digest length",
            Fault::DigestAlgorithm => "unsupported digest algorithm",
        })
    }
}

/// Reads a name as `docker pull` does: the registry `docker.io` and the
/// namespace `library/` are implied, `index.docker.io` is `docker.io`.
pub fn read(s: &str) -> std::result::Result<Reference, Fault> {
    if s.is_empty() {
        return Err(Fault::Empty);
    }
    let (rest, digest) = match s.split_once('@') {
        Some((rest, d)) => {
            check_digest(d)?;
            (rest, Some(d.to_string()))
        }
        None => (s, None),
    };
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => {
            let tag = &rest[i + 1..];
            if !is_tag(tag) {
                return Err(Fault::Format);
            }
            (&rest[..i], Some(tag.to_string()))
        }
        _ => (rest, None),
    };
    // The first component is a registry when it looks like a host:
    // a dot, a port, `localhost`, or capitals (never in a repository).
    let (domain, path) = match name.split_once('/') {
        Some((first, path))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            if !is_domain(first) {
                return Err(Fault::Format);
            }
            (first, path.to_string())
        }
        _ => ("docker.io", name.to_string()),
    };
    if !is_path(path.as_bytes()) {
        let lower = path.to_ascii_lowercase();
        return Err(if is_path(lower.as_bytes()) {
            Fault::Uppercase
        } else {
            Fault::Format
        });
    }
    let domain = if domain == "index.docker.io" {
        "docker.io"
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    // Measured as Docker measures it: the full name, `library/` and all.
    if domain.len() + 1 + path.len() > 255 {
        return Err(Fault::TooLong);
    }
    Ok(Reference {
        domain: domain.to_string(),
        path,
        tag,
        digest,
    })
}

/// `[\w][\w.-]{0,127}`.
fn is_tag(t: &str) -> bool {
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// `host[:port]`, the host a name (components of letters, digits and
/// inner hyphens, joined by dots), or an IPv6 address in brackets.
fn is_domain(d: &str) -> bool {
    let (host, port) = if let Some(inner) = d.strip_prefix('[') {
        let Some((addr, after)) = inner.split_once(']') else {
            return false;
        };
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("x", port),
                None => return false,
            },
        }
    } else {
        match d.split_once(':') {
            Some((host, port)) => (host, port),
            None => (d, "0"),
        }
    };
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
    };
    host.split('.').all(component) && !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit())
}

/// Components of `[a-z0-9]+` runs joined by `.`, `_`, `__` or dashes,
/// separated by slashes.
fn is_path(p: &[u8]) -> bool {
    p.split(|&c| c == b'/').all(|component| {
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let mut i = 0;
        let mut runs = 0;
        while i < component.len() {
            let start = i;
            while i < component.len() && alnum(component[i]) {
                i += 1;
            }
            if i == start {
                return false;
            }
            runs += 1;
            if i == component.len() {
                break;
            }
            let sep = i;
            while i < component.len() && !alnum(component[i]) {
                i += 1;
            }
            let ok = match &component[sep..i] {
                b"." | b"_" | b"__" => true,
                s => s.iter().all(|&c| c == b'-'),
            };
            if !ok || i == component.len() {
                return false;
            }
        }
        runs > 0
    })
}

/// `algorithm:hex`, of a known algorithm and its length.
fn check_digest(d: &str) -> std::result::Result<(), Fault> {
    let Some((algorithm, hex)) = d.split_once(':') else {
        return Err(Fault::Format);
    };
    let algorithm_ok = !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|c| {
            c.as_bytes().first().is_some_and(u8::is_ascii_alphabetic)
                && c.bytes().all(|b| b.is_ascii_alphanumeric())
        });
    if !algorithm_ok || hex.len() < 32 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(Fault::Format);
    }
    let size = match algorithm {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(Fault::DigestAlgorithm),
    };
    if hex.len() != size {
        return Err(Fault::DigestLength);
    }
    if hex.bytes().any(|c| c.is_ascii_uppercase()) {
        return Err(Fault::DigestFormat);
    }
    Ok(())
}

/// The full, normalized form of a name: registry, repository, and the tag
/// (`latest` when none is given) or the digest. Errors are worded as
/// Docker and Compose word them.
pub fn normalize(name: &str) -> Result<String> {
    Ok(parse(name)?.whole())
}

/// Reads a name, with Docker's error on a bad one.
pub fn parse(name: &str) -> Result<Reference> {
    read(name).map_err(|fault| {
        let message = match fault {
            Fault::Format => format!("invalid reference format ({name:?})"),
            other => format!("invalid reference format: {other} ({name:?})"),
        };
        RuntimeError::Engine(message)
    })
}

/// A name as written, in its parts: the repository (with its registry, if
/// any), the tag and the digest. A colon before the last slash is a
/// registry's port, not a tag: `reg:5000/app` has none. Nothing is checked
/// or implied; [`parse`] reads a name whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts<'a> {
    /// `reg:5000/app` in `reg:5000/app:1`.
    pub repository: &'a str,
    /// `1` in `reg:5000/app:1`.
    pub tag: Option<&'a str>,
    /// `sha256:…` after an `@`.
    pub digest: Option<&'a str>,
}

impl<'a> Parts<'a> {
    /// The digest, else the tag: what the engine's pull and push take as
    /// their `tag` (a name pinned by both is pulled by its digest, as the
    /// docker client asks it).
    pub fn tag_or_digest(&self) -> Option<&'a str> {
        self.digest.or(self.tag)
    }
}

/// Splits a name into its [`Parts`].
pub fn split(name: &str) -> Parts<'_> {
    let (named, digest) = match name.split_once('@') {
        Some((named, digest)) => (named, Some(digest)),
        None => (name, None),
    };
    let (repository, tag) = match named.rfind(':') {
        Some(i) if !named[i..].contains('/') => (&named[..i], Some(&named[i + 1..])),
        _ => (named, None),
    };
    Parts {
        repository,
        tag,
        digest,
    }
}

/// How Docker shows a full name: `docker.io/library/` left out, and the
/// repository and tag apart (`("redis", "7")`). A name by digest has the
/// tag `<none>`.
pub fn familiar(full: &str) -> (String, String) {
    let parts = split(full);
    let tag = match (parts.tag, parts.digest) {
        (_, Some(_)) => "<none>",
        (Some(tag), None) => tag,
        (None, None) => "latest",
    };
    let name = parts.repository;
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    (name.to_string(), tag.to_string())
}

/// `repository@digest` as Docker shows it (`redis@sha256:…`).
pub fn familiar_digest(full: &str) -> String {
    match full.split_once('@') {
        Some((name, digest)) => {
            let (name, _) = familiar(name);
            format!("{name}@{digest}")
        }
        None => full.to_string(),
    }
}

/// `repository:tag` as Docker shows it.
pub fn familiar_tagged(full: &str) -> String {
    let (name, tag) = familiar(full);
    format!("{name}:{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_repository_tag_and_digest() {
        let parts = |repository, tag, digest| Parts {
            repository,
            tag,
            digest,
        };
        assert_eq!(split("app"), parts("app", None, None));
        assert_eq!(split("app:1.2"), parts("app", Some("1.2"), None));
        assert_eq!(split("reg:5000/app"), parts("reg:5000/app", None, None));
        assert_eq!(
            split("reg:5000/team/app:v1"),
            parts("reg:5000/team/app", Some("v1"), None)
        );
        assert_eq!(
            split("app@sha256:abc"),
            parts("app", None, Some("sha256:abc"))
        );
        assert_eq!(
            split("reg:5000/app:1@sha256:abc"),
            parts("reg:5000/app", Some("1"), Some("sha256:abc"))
        );
        assert_eq!(split("app@sha256:abc").tag_or_digest(), Some("sha256:abc"));
        assert_eq!(
            split("reg:5000/app:1@sha256:abc").tag_or_digest(),
            Some("sha256:abc")
        );
        assert_eq!(split("reg:5000/app:1").tag_or_digest(), Some("1"));
    }

    #[test]
    fn names_are_normalized_as_docker_does() {
        let n = |s: &str| normalize(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(n("redis"), "docker.io/library/redis:latest");
        assert_eq!(n("redis:7"), "docker.io/library/redis:7");
        assert_eq!(n("me/app:1"), "docker.io/me/app:1");
        assert_eq!(n("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(
            n("rcompose-test/busybox:latest"),
            "docker.io/rcompose-test/busybox:latest"
        );
    }

    #[test]
    fn bad_names_are_refused_in_dockers_words() {
        let e = normalize("Redis")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.starts_with("invalid reference format: repository name must be lowercase"),
            "{e}"
        );
        let e = normalize("redis:bad tag")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("invalid reference format"), "{e}");
    }

    #[test]
    fn docker_grammar_cases() {
        let n = |s: &str| normalize(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(n("index.docker.io/redis"), "docker.io/library/redis:latest");
        assert_eq!(n("a/b/c:1.0-rc_2"), "docker.io/a/b/c:1.0-rc_2");
        assert_eq!(n("my.reg:5000/a__b/c-d.e"), "my.reg:5000/a__b/c-d.e:latest");
        assert_eq!(n("[::1]:5000/app:v"), "[::1]:5000/app:v");
        assert_eq!(n("localhost/app"), "localhost/app:latest");
        assert_eq!(n("localhost:5000"), "docker.io/library/localhost:5000");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            n(&format!("redis@{d}")),
            format!("docker.io/library/redis@{d}")
        );
        assert_eq!(
            n(&format!("redis:7@{d}")),
            format!("docker.io/library/redis:7@{d}")
        );
        let fault = |s: &str| read(s).err();
        for bad in [
            "", "a//b", "a/", "/a", "a..b", "a___b", "-a", "a-", "a:", ":t", "a:-t", "a b",
        ] {
            assert!(fault(bad).is_some(), "{bad:?} was read");
        }
        assert_eq!(fault("redis:"), Some(Fault::Format));
        assert_eq!(fault("Redis"), Some(Fault::Uppercase));
        assert_eq!(fault("me/App"), Some(Fault::Uppercase));
        assert_eq!(fault("bad_host.io/app"), Some(Fault::Format));
        assert_eq!(fault("redis@sha256:abc"), Some(Fault::Format));
        assert_eq!(
            fault(&format!("redis@sha256:{}", "a".repeat(63))),
            Some(Fault::DigestLength)
        );
        assert_eq!(
            fault(&format!("redis@md5:{}", "a".repeat(32))),
            Some(Fault::DigestAlgorithm)
        );
        // docker.io/library/ counts: 238 characters are one too many.
        assert_eq!(fault(&"a".repeat(238)), Some(Fault::TooLong));
        assert!(fault(&"a".repeat(237)).is_none());
        assert!(fault(&format!("localhost:5000/{}", "a".repeat(240))).is_none());
        assert_eq!(
            fault(&format!("a:{}", "t".repeat(129))),
            Some(Fault::Format)
        );
    }

    #[test]
    fn full_names_are_shown_familiar() {
        assert_eq!(
            familiar("docker.io/library/redis:7"),
            ("redis".into(), "7".into())
        );
        assert_eq!(
            familiar("docker.io/me/app:1"),
            ("me/app".into(), "1".into())
        );
        assert_eq!(
            familiar("localhost:5000/app:latest"),
            ("localhost:5000/app".into(), "latest".into())
        );
        assert_eq!(
            familiar_tagged("docker.io/library/redis:latest"),
            "redis:latest"
        );
    }
}
