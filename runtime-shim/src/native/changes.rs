//! What a native container changed in its filesystem, read from its
//! overlay upper directory: `diff`'s list (added, changed, deleted) and
//! `commit`'s layer (a tar whose deletions are OCI whiteouts).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::{Change, ChangeKind};

const OPAQUE: &str = "trusted.overlay.opaque";

/// Whether an entry of the upper directory is an overlayfs whiteout (a
/// character device 0/0).
fn is_whiteout(meta: &fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    let mut value = [0u8; 4];
    matches!(rustix::fs::lgetxattr(path, OPAQUE, &mut value), Ok(n) if n >= 1 && value[0] == b'y')
}

/// Every path under `upper`, parents before children, sorted.
fn walk(upper: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = fs::read_dir(upper.join(&rel)) else {
            continue;
        };
        let mut children: Vec<(PathBuf, fs::Metadata)> = entries
            .flatten()
            .filter_map(|e| {
                let rel = rel.join(e.file_name());
                let meta = fs::symlink_metadata(e.path()).ok()?;
                Some((rel, meta))
            })
            .collect();
        children.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, meta) in children {
            if meta.is_dir() {
                stack.push(rel.clone());
            }
            out.push((rel, meta));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The changes of a container whose image's layers are `lower` (topmost
/// first), as `docker diff` lists them.
pub fn list(upper: &Path, lower: &[PathBuf]) -> Vec<Change> {
    let in_lower = |rel: &Path| {
        lower
            .iter()
            .any(|l| fs::symlink_metadata(l.join(rel)).is_ok())
    };
    walk(upper)
        .into_iter()
        .map(|(rel, meta)| {
            let kind = if is_whiteout(&meta) {
                ChangeKind::Deleted
            } else if in_lower(&rel) {
                ChangeKind::Changed
            } else {
                ChangeKind::Added
            };
            Change {
                kind,
                path: format!("/{}", rel.display()),
            }
        })
        .collect()
}

/// The changes as one layer: a tar of the upper directory with its
/// whiteouts as OCI's (`.wh.NAME`, `.wh..wh..opq`).
pub fn layer(upper: &Path, out: impl Write) -> std::io::Result<()> {
    let mut tar = tar::Builder::new(out);
    tar.follow_symlinks(false);
    for (rel, meta) in walk(upper) {
        let path = upper.join(&rel);
        if is_whiteout(&meta) {
            let name = rel
                .file_name()
                .map(|n| format!(".wh.{}", n.to_string_lossy()))
                .unwrap_or_default();
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_mtime(meta.mtime().max(0) as u64);
            header.set_uid(0);
            header.set_gid(0);
            tar.append_data(&mut header, rel.with_file_name(name), std::io::empty())?;
            continue;
        }
        tar.append_path_with_name(&path, &rel)?;
        if meta.is_dir() && is_opaque(&path) {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(0);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(meta.mtime().max(0) as u64);
            tar.append_data(&mut header, rel.join(".wh..wh..opq"), std::io::empty())?;
        }
    }
    tar.finish()
}
