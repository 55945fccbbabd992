//! Temporary stand-in (being written).
#![allow(missing_docs, clippy::all)]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct DotenvError {
    pub line: usize,
    pub message: String,
}
pub fn parse(
    src: &str,
    _l: &dyn Fn(&str) -> Option<String>,
) -> Result<indexmap::IndexMap<String, String>, DotenvError> {
    parse_raw(src)
}
pub fn parse_raw(src: &str) -> Result<indexmap::IndexMap<String, String>, DotenvError> {
    Ok(src
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .collect())
}
