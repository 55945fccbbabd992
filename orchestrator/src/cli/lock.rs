//! Commands that change a project take its lock first, so that two of them
//! (two `up`s, an `up` and a `down`) do not interleave their steps.

use anyhow::{Context, Result};
use std::fs::{File, TryLockError};
use std::path::Path;

/// A project's lock, held until dropped (or the process ends: the kernel
/// releases it with the file).
#[must_use = "the lock is released when dropped"]
pub(crate) struct ProjectLock {
    _file: Option<File>,
}

/// Takes the lock of `project` on the engine `rt`, waiting (with a message)
/// while another command holds it. Engines without locks, and dry runs,
/// take none.
pub(crate) async fn lock_project(
    rt: &dyn runtime_shim::Runtime,
    project: &str,
    dry_run: bool,
) -> Result<ProjectLock> {
    match rt.lock_dir().filter(|_| !dry_run && !project.is_empty()) {
        Some(dir) => lock_in(&dir, project).await,
        None => Ok(ProjectLock { _file: None }),
    }
}

/// Takes the lock file of `project` in `dir`.
async fn lock_in(dir: &Path, project: &str) -> Result<ProjectLock> {
    {
        use std::os::unix::fs::{DirBuilderExt, MetadataExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the lock directory {}", dir.display()))?;
        // A directory someone else made (under a shared temporary
        // directory) could be used to hold our commands up.
        let owner = std::fs::metadata(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .uid();
        let me = rustix::process::geteuid().as_raw();
        if owner != me {
            anyhow::bail!(
                "the lock directory {} belongs to user {owner}, not to this user ({me})",
                dir.display()
            );
        }
    }
    let path = dir.join(format!("{project}.lock"));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening the project lock {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => return Ok(ProjectLock { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("locking {}", path.display()));
        }
    }
    eprintln!("Waiting for another rcompose command on project {project} to finish");
    let file = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .context("waiting for the project lock")?
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(ProjectLock { _file: Some(file) })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn held(dir: &Path, project: &str) -> bool {
        let f = File::open(dir.join(format!("{project}.lock"))).unwrap();
        matches!(f.try_lock(), Err(TryLockError::WouldBlock))
    }

    #[tokio::test]
    async fn a_second_command_waits_for_the_first() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_in(dir.path(), "demo").await.unwrap();
        assert!(held(dir.path(), "demo"));
        let path = dir.path().to_path_buf();
        let second = tokio::spawn(async move { lock_in(&path, "demo").await });
        // Another project is not held up.
        let other = lock_in(dir.path(), "other").await.unwrap();
        drop(other);
        drop(first);
        let second = second.await.unwrap().unwrap();
        assert!(held(dir.path(), "demo"), "the second command holds it now");
        drop(second);
        assert!(!held(dir.path(), "demo"));
    }
}
