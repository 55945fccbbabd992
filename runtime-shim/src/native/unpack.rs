//! Unpacking one layer's tar stream into a directory, the way overlayfs
//! wants a lower layer: OCI whiteouts become overlayfs whiteouts (`.wh.NAME`
//! a 0/0 character device NAME, `.wh..wh..opq` the directory's
//! `trusted.overlay.opaque` attribute); owners, modes, times and extended
//! attributes are kept.
//!
//! Creating files is what unpacking costs (the kernel's work, not
//! rcompose's), so the stream is read by one thread and small files are
//! written by a few others at once. The reading thread makes every
//! directory itself, before anything goes into it, and knows which paths
//! are real directories inside the root: no entry is written through a
//! symbolic link or outside the root. A path met twice, and hard links,
//! wait until what was handed out before them is written.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc;

use rustix::fs::{makedev, mknodat, FileType, Mode, Timestamps, XattrFlags, CWD};

/// Files up to this size are handed to the writers; bigger ones are
/// written by the reading thread (they cost their bytes, not their
/// creation).
const HAND_OUT: u64 = 256 << 10;
/// Jobs waiting for a writer, at most.
const QUEUE: usize = 16;

/// What a file's metadata should be.
#[derive(Debug, Clone)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// A file for a writer.
struct Job {
    path: PathBuf,
    data: Vec<u8>,
    meta: Meta,
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// `path` made relative (a leading `/` or `./` dropped); `None` when it
/// climbs out with `..`.
pub fn inside(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Unpacks `content` into `root`; returns the total size of the files.
pub fn unpack_tree(content: impl Read, root: &Path) -> io::Result<u64> {
    let writers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
    let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
    let (done_tx, done_rx) = mpsc::channel::<io::Result<()>>();
    let mut handles = Vec::new();
    for _ in 0..writers {
        let rx = rx.clone();
        let done = done_tx.clone();
        handles.push(std::thread::spawn(move || loop {
            let job = match rx.lock() {
                Ok(r) => r.recv(),
                Err(_) => return,
            };
            let Ok(job) = job else { return };
            let _ = done.send(write_file(&job.path, &job.data, &job.meta));
        }));
    }
    drop(done_tx);
    let mut unpacker = Unpacker {
        root: root.to_path_buf(),
        safe: HashSet::from([PathBuf::new()]),
        pending: HashSet::new(),
        handed_out: 0,
        tx: Some(tx),
        done: done_rx,
        directories: BTreeMap::new(),
        links: Vec::new(),
        size: 0,
    };
    let result = unpacker.run(content);
    let finished = unpacker.finish();
    for h in handles {
        let _ = h.join();
    }
    result.and(finished).map(|()| unpacker.size)
}

struct Unpacker {
    root: PathBuf,
    /// Relative paths known to be real directories under the root.
    safe: HashSet<PathBuf>,
    /// Paths handed to writers and maybe not written yet.
    pending: HashSet<PathBuf>,
    handed_out: usize,
    tx: Option<mpsc::SyncSender<Job>>,
    done: mpsc::Receiver<io::Result<()>>,
    /// Directories' metadata, set last (writing into a directory changes
    /// its time), deepest first.
    directories: BTreeMap<PathBuf, Meta>,
    /// Hard links, made once every file is written.
    links: Vec<(PathBuf, PathBuf)>,
    size: u64,
}

impl Unpacker {
    fn run(&mut self, content: impl Read) -> io::Result<()> {
        let mut archive = tar::Archive::new(content);
        for entry in archive.entries()? {
            let mut entry = entry?;
            let raw = entry.path()?.into_owned();
            let Some(rel) = inside(&raw) else {
                return Err(invalid(format!("entry {} leaves the layer", raw.display())));
            };
            if rel.as_os_str().is_empty() {
                // The root itself: only its metadata.
                let meta = self.meta(&mut entry)?;
                self.directories.insert(rel, meta);
                continue;
            }
            let name = rel.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            self.directory(&parent)?;
            if let Some(hidden) = name.strip_prefix(b".wh.") {
                let dir = self.root.join(&parent);
                if hidden.is_empty() || hidden == b"." || hidden == b".." {
                    return Err(invalid(format!("{} is no whiteout", rel.display())));
                }
                if hidden == b".wh..opq" {
                    rustix::fs::setxattr(
                        &dir,
                        "trusted.overlay.opaque",
                        b"y",
                        XattrFlags::empty(),
                    )?;
                } else {
                    let target = parent.join(std::ffi::OsStr::from_bytes(hidden));
                    self.clear(&target)?;
                    mknodat(
                        CWD,
                        self.root.join(&target),
                        FileType::CharacterDevice,
                        Mode::empty(),
                        makedev(0, 0),
                    )?;
                }
                continue;
            }
            let kind = entry.header().entry_type();
            let meta = self.meta(&mut entry)?;
            let full = self.root.join(&rel);
            if kind.is_dir() {
                if self.pending.contains(&rel) {
                    self.drain()?;
                }
                match fs::symlink_metadata(&full) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        self.clear(&rel)?;
                        fs::create_dir(&full)?;
                    }
                    Err(_) => fs::create_dir(&full)?,
                }
                self.safe.insert(rel.clone());
                self.directories.insert(rel, meta);
                continue;
            }
            if kind.is_hard_link() {
                let target = entry.link_name()?.and_then(|t| inside(&t)).ok_or_else(|| {
                    invalid(format!("hard link {} leaves the layer", rel.display()))
                })?;
                self.links.push((rel, target));
                continue;
            }
            self.clear(&rel)?;
            if kind.is_symlink() {
                let target = entry.link_name()?.ok_or_else(|| {
                    invalid(format!("symbolic link {} has no target", rel.display()))
                })?;
                symlink(&target, &full)?;
                set_owner_and_time(&full, &meta, false)?;
                continue;
            }
            if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
                let file_type = if kind.is_fifo() {
                    FileType::Fifo
                } else if kind.is_block_special() {
                    FileType::BlockDevice
                } else {
                    FileType::CharacterDevice
                };
                let dev = makedev(
                    entry.header().device_major()?.unwrap_or(0),
                    entry.header().device_minor()?.unwrap_or(0),
                );
                mknodat(CWD, &full, file_type, Mode::from_raw_mode(meta.mode), dev)?;
                apply(&full, &meta)?;
                continue;
            }
            if !(kind.is_file() || kind.is_contiguous()) {
                continue;
            }
            // The size the data really has (a PAX record may override the
            // header's).
            let size = entry.size();
            self.size += size;
            if size <= HAND_OUT {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data)?;
                self.hand_out(Job {
                    path: full,
                    data,
                    meta,
                })?;
                self.pending.insert(rel);
            } else {
                let mut file = File::create(&full)?;
                io::copy(&mut entry, &mut file)?;
                drop(file);
                apply(&full, &meta)?;
            }
        }
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> io::Result<Meta> {
        let mut xattrs = Vec::new();
        if let Some(extensions) = entry.pax_extensions()? {
            for e in extensions {
                let e = e?;
                if let Some(name) = e.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    // overlayfs's own attributes (redirects, metacopy) would
                    // change what the layer shows once stacked.
                    if !name.starts_with("trusted.overlay.") {
                        xattrs.push((name.to_string(), e.value_bytes().to_vec()));
                    }
                }
            }
        }
        let h = entry.header();
        let id = |n: u64, what: &str| {
            u32::try_from(n).map_err(|_| invalid(format!("{what} {n} is out of range")))
        };
        // A field left blank (NULs or spaces) is 0, as Go's archive/tar
        // and GNU tar read it; other garbage is an error.
        let blank = |field: &[u8]| field.iter().all(|b| *b == 0 || *b == b' ');
        let old = h.as_old();
        let number = |value: io::Result<u64>, field: &[u8]| match value {
            Err(_) if blank(field) => Ok(0),
            other => other,
        };
        Ok(Meta {
            mode: h.mode()? & 0o7777,
            uid: id(number(h.uid(), &old.uid)?, "user id")?,
            gid: id(number(h.gid(), &old.gid)?, "group id")?,
            mtime: number(h.mtime(), &old.mtime)? as i64,
            xattrs,
        })
    }

    fn hand_out(&mut self, job: Job) -> io::Result<()> {
        // Report what the writers finished meanwhile, failing early.
        while let Ok(r) = self.done.try_recv() {
            self.handed_out -= 1;
            r?;
        }
        let Some(tx) = &self.tx else {
            return write_file(&job.path, &job.data, &job.meta);
        };
        tx.send(job)
            .map_err(|_| invalid("the file writers stopped".to_string()))?;
        self.handed_out += 1;
        Ok(())
    }

    /// Waits until every file handed out is written.
    fn drain(&mut self) -> io::Result<()> {
        let mut first_error = None;
        while self.handed_out > 0 {
            match self.done.recv() {
                Ok(r) => {
                    self.handed_out -= 1;
                    if let (Err(e), None) = (r, &first_error) {
                        first_error = Some(e);
                    }
                }
                Err(_) => break,
            }
        }
        self.pending.clear();
        first_error.map_or(Ok(()), Err)
    }

    /// Makes sure `rel` is a real directory under the root, creating what
    /// is missing; refuses a path through a symbolic link or a file.
    fn directory(&mut self, rel: &Path) -> io::Result<()> {
        if self.safe.contains(rel) {
            return Ok(());
        }
        let mut walked = PathBuf::new();
        for c in rel.components() {
            walked.push(c);
            if self.safe.contains(&walked) {
                continue;
            }
            let full = self.root.join(&walked);
            match fs::symlink_metadata(&full) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(invalid(format!(
                        "{} goes through {}, which is not a directory",
                        rel.display(),
                        walked.display()
                    )))
                }
                Err(_) => {
                    fs::create_dir(&full)?;
                    fs::set_permissions(&full, fs::Permissions::from_mode(0o755))?;
                }
            }
            self.safe.insert(walked.clone());
        }
        Ok(())
    }

    /// Removes whatever is at `rel` (a later entry replaces it).
    fn clear(&mut self, rel: &Path) -> io::Result<()> {
        if self.pending.contains(rel) {
            self.drain()?;
        }
        let full = self.root.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(m) if m.is_dir() => {
                self.drain()?;
                fs::remove_dir_all(&full)?;
                self.safe.retain(|p| !p.starts_with(rel));
                self.directories.retain(|p, _| !p.starts_with(rel));
            }
            Ok(_) => fs::remove_file(&full)?,
            Err(_) => {}
        }
        Ok(())
    }

    /// Lets the writers finish, then makes the hard links and sets the
    /// directories' metadata.
    fn finish(&mut self) -> io::Result<()> {
        self.tx = None;
        let drained = self.drain();
        drained?;
        for (link, target) in std::mem::take(&mut self.links) {
            if let Some(parent) = link.parent() {
                self.directory(parent)?;
            }
            if let Some(parent) = target.parent() {
                // The target must be inside through real directories too.
                self.directory(parent)?;
            }
            self.clear(&link)?;
            fs::hard_link(self.root.join(&target), self.root.join(&link))?;
        }
        for (dir, meta) in std::mem::take(&mut self.directories).iter().rev() {
            apply(&self.root.join(dir), meta)?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, data: &[u8], meta: &Meta) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(data)?;
    drop(f);
    apply(path, meta)
}

/// Sets owner, extended attributes, mode and time, in that order (a
/// change of owner clears set-user-id bits).
fn apply(path: &Path, meta: &Meta) -> io::Result<()> {
    set_owner_and_time(path, meta, true)?;
    for (name, value) in &meta.xattrs {
        match rustix::fs::setxattr(path, name.as_str(), value, XattrFlags::empty()) {
            // A file system without that kind of attribute: as Docker, go on.
            Err(rustix::io::Errno::NOTSUP) => {}
            other => other?,
        }
    }
    fs::set_permissions(path, fs::Permissions::from_mode(meta.mode))?;
    set_time(path, meta, true)
}

fn set_owner_and_time(path: &Path, meta: &Meta, follow: bool) -> io::Result<()> {
    let flags = if follow {
        rustix::fs::AtFlags::empty()
    } else {
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::chownat(
        CWD,
        path,
        Some(rustix::fs::Uid::from_raw(meta.uid)),
        Some(rustix::fs::Gid::from_raw(meta.gid)),
        flags,
    )?;
    if !follow {
        set_time(path, meta, false)?;
    }
    Ok(())
}

fn set_time(path: &Path, meta: &Meta, follow: bool) -> io::Result<()> {
    let t = rustix::fs::Timespec {
        tv_sec: meta.mtime,
        tv_nsec: 0,
    };
    let flags = if follow {
        rustix::fs::AtFlags::empty()
    } else {
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::utimensat(
        CWD,
        path,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        flags,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap_or_default()
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        let _ = b.append_data(&mut h, path, data);
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, path: &str, target: &str) {
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(kind);
        let _ = b.append_link(&mut h, path, target);
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("rcompose-unpack-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        let _ = fs::create_dir_all(&d);
        d
    }

    #[test]
    fn files_links_and_many_small_files_land_in_place() {
        let root = scratch("files");
        let data = layer(|b| {
            for i in 0..300 {
                file(b, &format!("many/f{i}"), format!("{i}\n").as_bytes());
            }
            file(b, "big", &vec![1u8; (HAND_OUT + 1) as usize]);
            file(b, "twice", b"first\n");
            file(b, "twice", b"second\n");
            link(b, tar::EntryType::Symlink, "sym", "/many/f1");
            link(b, tar::EntryType::Link, "hard", "many/f2");
        });
        let size = unpack_tree(data.as_slice(), &root);
        assert!(size.is_ok(), "{size:?}");
        assert_eq!(
            fs::read_dir(root.join("many")).map(|d| d.count()).ok(),
            Some(300)
        );
        assert_eq!(
            fs::read_to_string(root.join("many/f299")).ok().as_deref(),
            Some("299\n")
        );
        assert_eq!(
            fs::read_to_string(root.join("twice")).ok().as_deref(),
            Some("second\n")
        );
        assert_eq!(
            fs::read_to_string(root.join("hard")).ok().as_deref(),
            Some("2\n")
        );
        assert_eq!(
            fs::read_link(root.join("sym")).ok(),
            Some(PathBuf::from("/many/f1"))
        );
        let mode = fs::metadata(root.join("many/f3")).map(|m| m.permissions().mode() & 0o7777);
        assert_eq!(mode.ok(), Some(0o640));
        let _ = fs::remove_dir_all(&root);
    }

    #[test]
    fn entries_that_leave_the_root_are_refused() {
        let outside = scratch("outside");
        for (name, build) in [
            (
                "dotdot",
                Box::new(|b: &mut tar::Builder<Vec<u8>>| {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(1);
                    h.set_entry_type(tar::EntryType::Regular);
                    // `append_data` refuses `..`: write the name raw.
                    let name = b"../escape";
                    h.as_old_mut().name[..name.len()].copy_from_slice(name);
                    h.set_cksum();
                    let _ = b.append(&h, &b"x"[..]);
                }) as Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>,
            ),
            (
                "through-symlink",
                Box::new(|b: &mut tar::Builder<Vec<u8>>| {
                    link(b, tar::EntryType::Symlink, "up", "/");
                    file(b, "up/escape", b"x");
                }),
            ),
            (
                "whiteout-through-symlink",
                Box::new(|b: &mut tar::Builder<Vec<u8>>| {
                    link(b, tar::EntryType::Symlink, "up", "/");
                    file(b, "up/.wh.escape", b"");
                }),
            ),
            (
                "bare-whiteout",
                Box::new(|b: &mut tar::Builder<Vec<u8>>| {
                    file(b, "d/x", b"x");
                    file(b, "d/.wh..", b"");
                }),
            ),
            (
                "hardlink-out",
                Box::new(|b: &mut tar::Builder<Vec<u8>>| {
                    link(b, tar::EntryType::Symlink, "up", "/etc");
                    link(b, tar::EntryType::Link, "passwd", "up/passwd");
                }),
            ),
        ] {
            let root = scratch(name);
            let data = layer(|b| build(b));
            let r = unpack_tree(data.as_slice(), &root);
            assert!(r.is_err(), "{name}: {r:?}");
            assert!(!Path::new("/escape").exists(), "{name}");
            assert!(!root.join("passwd").exists(), "{name}");
            let _ = fs::remove_dir_all(&root);
        }
        let _ = fs::remove_dir_all(&outside);
    }
}
