//! Image names as Docker reads and shows them: `redis` is
//! `docker.io/library/redis:latest` in the store, and shown as `redis` with
//! the tag `latest`.

use oci_spec::distribution::{ParseError, Reference};

use crate::{Result, RuntimeError};

/// The full, normalized form of a name: registry, repository, and the tag
/// (`latest` when none is given) or the digest. Errors are worded as
/// Docker and Compose word them.
pub fn normalize(name: &str) -> Result<String> {
    let r = parse(name)?;
    Ok(r.whole())
}

/// Parses a name.
pub fn parse(name: &str) -> Result<Reference> {
    name.parse::<Reference>().map_err(|e| {
        let why = match e {
            ParseError::NameContainsUppercase => "repository name must be lowercase".to_string(),
            // Docker's grammar allows capitals nowhere in a repository:
            // say so when that is the only fault.
            ParseError::ReferenceInvalidFormat
                if name.to_lowercase().parse::<Reference>().is_ok() =>
            {
                "repository name must be lowercase".to_string()
            }
            ParseError::ReferenceInvalidFormat => return invalid(name, None),
            other => other.to_string(),
        };
        invalid(name, Some(why))
    })
}

fn invalid(name: &str, why: Option<String>) -> RuntimeError {
    match why {
        Some(why) => RuntimeError::Engine(format!("invalid reference format: {why} ({name:?})")),
        None => RuntimeError::Engine(format!("invalid reference format ({name:?})")),
    }
}

/// How Docker shows a full name: `docker.io/library/` left out, and the
/// repository and tag apart (`("redis", "7")`). A name by digest has the
/// tag `<none>`.
pub fn familiar(full: &str) -> (String, String) {
    let (name, tag) = match full.split_once('@') {
        Some((name, _)) => (name, "<none>".to_string()),
        None => match full.rfind(':') {
            Some(i) if !full[i..].contains('/') => (&full[..i], full[i + 1..].to_string()),
            _ => (full, "latest".to_string()),
        },
    };
    let name = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    (name.to_string(), tag)
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
