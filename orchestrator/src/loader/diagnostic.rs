//! Errors and warnings of the loader, each pointing at its place.

use std::fmt;
use std::path::PathBuf;

use super::path::YamlPath;

/// One problem found while loading, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file it is in, when known.
    pub file: Option<PathBuf>,
    /// 1-based line and column, when the YAML gives one.
    pub position: Option<(usize, usize)>,
    /// The path of the offending node (`services.web.ports[0]`), when known.
    pub path: Option<YamlPath>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A diagnostic about the node at `path` in `file`.
    pub fn at(file: Option<PathBuf>, path: YamlPath, message: impl Into<String>) -> Self {
        Diagnostic {
            file,
            position: None,
            path: Some(path),
            message: message.into(),
        }
    }

    /// A diagnostic about a whole file (or none).
    pub fn file(file: Option<PathBuf>, message: impl Into<String>) -> Self {
        Diagnostic {
            file,
            position: None,
            path: None,
            message: message.into(),
        }
    }

    /// The service the problem lies in, if any.
    pub fn service(&self) -> Option<&str> {
        self.path.as_ref().and_then(YamlPath::service)
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}", file.display())?;
            if let Some((line, col)) = self.position {
                write!(f, ":{line}:{col}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(path) = self.path.as_ref().filter(|p| !p.is_root()) {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem that stopped a load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The problems, in the order found.
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl From<Diagnostic> for LoadError {
    fn from(d: Diagnostic) -> Self {
        LoadError {
            diagnostics: vec![d],
        }
    }
}
