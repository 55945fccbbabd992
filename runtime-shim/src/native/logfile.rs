//! A container's log, as Docker's `json-file` driver keeps it: one JSON
//! object per line of output, `{"log":"…\n","stream":"stdout","time":"…"}`,
//! in `container.log`, rotated to `container.log.1`, `.2`, … when
//! `max-size` is reached, keeping `max-file` files in all.
//!
//! The monitor writes it; `logs`, `attach` and `run` read it.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One record of the log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Entry {
    /// The bytes, as text (a line with its newline, or a piece of one).
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// When it was written, RFC 3339 with nanoseconds.
    pub time: String,
}

/// Lines longer than this are written in pieces, as Docker does.
const MAX_LINE: usize = 16 * 1024;

/// The writing side, held by the monitor.
pub struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
    /// A line not ended yet, per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
}

impl Writer {
    /// Opens (appending to) the log at `path`.
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max_size,
            max_files: max_files.max(1),
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Takes output of a stream (`stderr` or not), writing every line it
    /// completes.
    pub fn write(&mut self, stderr: bool, bytes: &[u8]) {
        let i = usize::from(stderr);
        self.partial[i].extend_from_slice(bytes);
        loop {
            let buf = &self.partial[i];
            let cut = match buf.iter().position(|b| *b == b'\n') {
                Some(n) => n + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            let line: Vec<u8> = self.partial[i].drain(..cut).collect();
            self.record(stderr, &line);
        }
    }

    /// Writes what is left of unfinished lines (at the end of a run).
    pub fn flush(&mut self) {
        for stderr in [false, true] {
            let line = std::mem::take(&mut self.partial[usize::from(stderr)]);
            if !line.is_empty() {
                self.record(stderr, &line);
            }
        }
    }

    fn record(&mut self, stderr: bool, bytes: &[u8]) {
        let entry = Entry {
            log: String::from_utf8_lossy(bytes).into_owned(),
            stream: if stderr { "stderr" } else { "stdout" }.to_string(),
            time: jiff::Timestamp::now().to_string(),
        };
        let Ok(mut line) = serde_json::to_vec(&entry) else {
            return;
        };
        line.push(b'\n');
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            self.rotate();
        }
        if self.file.write_all(&line).is_ok() {
            self.size += line.len() as u64;
        }
    }

    fn rotate(&mut self) {
        if self.max_files <= 1 {
            // One file: start it again.
            if self.file.set_len(0).is_ok() {
                self.size = 0;
            }
            return;
        }
        for n in (1..self.max_files).rev() {
            let from = if n == 1 {
                self.path.clone()
            } else {
                rotated(&self.path, n - 1)
            };
            let _ = fs::rename(&from, rotated(&self.path, n));
        }
        if let Ok(file) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
        {
            self.file = file;
            self.size = 0;
        }
    }
}

/// The path of the `n`th rotated file.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// Every file of the log, oldest first.
pub fn files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut n = 1;
    while rotated(path, n).exists() {
        out.push(rotated(path, n));
        n += 1;
    }
    out.reverse();
    out.push(path.to_path_buf());
    out
}

/// Reads the entries of every file of the log, oldest first.
pub fn read_all(path: &Path) -> Vec<Entry> {
    files(path).iter().flat_map(|f| read_all_of(f)).collect()
}

/// Reads the entries of one file.
pub fn read_all_of(file: &Path) -> Vec<Entry> {
    let Ok(file) = File::open(file) else {
        return Vec::new();
    };
    BufReader::new(file)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| serde_json::from_str::<Entry>(&l).ok())
        .collect()
}

/// A reader that follows the current file from a position, across
/// rotations.
pub struct Follower {
    path: PathBuf,
    file: Option<BufReader<File>>,
    inode: u64,
    pending: String,
}

impl Follower {
    /// Follows the file from its current end.
    pub fn at_end(path: &Path) -> Follower {
        Self::open(path, true)
    }

    /// Follows the file from its start.
    pub fn from_start(path: &Path) -> Follower {
        Self::open(path, false)
    }

    fn open(path: &Path, end: bool) -> Follower {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            pending: String::new(),
        };
        if let Ok(mut file) = File::open(path) {
            if end {
                let _ = file.seek(SeekFrom::End(0));
            }
            f.inode = inode(&file);
            f.file = Some(BufReader::new(file));
        }
        f
    }

    /// Log entries written since the last call.
    pub fn next_entries(&mut self) -> Vec<Entry> {
        self.next_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Entry>(l).ok())
            .collect()
    }

    /// Whole lines written since the last call.
    pub fn next_lines(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        self.drain(&mut out);
        // Rotated (or created) since: finish the old file, take the new one.
        let current = fs::metadata(&self.path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            m.ino()
        });
        if current.is_some_and(|i| i != self.inode) {
            if let Ok(file) = File::open(&self.path) {
                self.inode = inode(&file);
                self.file = Some(BufReader::new(file));
                self.pending.clear();
                self.drain(&mut out);
            }
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<String>) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        loop {
            match file.read_line(&mut self.pending) {
                Ok(0) | Err(_) => return,
                Ok(_) if self.pending.ends_with('\n') => {
                    out.push(std::mem::take(&mut self.pending));
                }
                // A line being written: the rest comes later.
                Ok(_) => return,
            }
        }
    }
}

fn inode(file: &File) -> u64 {
    use std::os::unix::fs::MetadataExt;
    file.metadata().map(|m| m.ino()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_recorded_per_stream_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("container.log");
        let mut w = Writer::open(&path, 300, 3).unwrap();
        let mut follow = Follower::at_end(&path);
        w.write(false, b"one\ntw");
        w.write(true, b"err\n");
        w.write(false, b"o\n");
        let got: Vec<(String, String)> = follow
            .next_entries()
            .into_iter()
            .map(|e| (e.stream, e.log))
            .collect();
        assert_eq!(
            got,
            vec![
                ("stdout".to_string(), "one\n".to_string()),
                ("stderr".to_string(), "err\n".to_string()),
                ("stdout".to_string(), "two\n".to_string()),
            ]
        );
        for n in 0..20 {
            w.write(false, format!("line {n}\n").as_bytes());
        }
        let followed = follow.next_entries();
        // Rotation keeps three files at most, and loses only the oldest.
        assert!(rotated(&path, 2).exists() && !rotated(&path, 3).exists());
        let all = read_all(&path);
        assert_eq!(all.last().map(|e| e.log.as_str()), Some("line 19\n"));
        assert!(all.len() < 23);
        assert!(followed.iter().any(|e| e.log == "line 19\n"));
    }
}
