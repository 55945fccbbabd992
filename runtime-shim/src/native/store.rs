//! The native runtime's image store: an OCI image layout on disk, with the
//! layers also kept unpacked, ready to be overlayfs lower directories.
//!
//! ```text
//! <root>/images/
//!   oci-layout                 {"imageLayoutVersion": "1.0.0"}
//!   index.json                 the names: one manifest descriptor per name
//!                              (annotation org.opencontainers.image.ref.name,
//!                              the full normalized reference), or none for
//!                              an image that lost its last name
//!   blobs/sha256/<hex>         manifests, configurations and layers
//!   layers/sha256/<diff hex>/  one unpacked layer: root/ (the tree, with
//!                              whiteouts as overlayfs wants them) and size
//!   tmp/<pid>-<n>/             work in progress of one process
//!   gc.lock, index.lock        advisory locks
//! ```
//!
//! Invariants, which every writer keeps and a killed process cannot break
//! (power loss is not covered: blobs and layers are not synced before their
//! rename):
//! - a file under `blobs/` holds exactly the content its name is the digest
//!   of: blobs are written under `tmp/`, hashed while written, and renamed
//!   into place only when the digest is right;
//! - a directory under `layers/` is complete: unpacked under `tmp/`, checked
//!   against its diff id, then renamed;
//! - `index.json` names only images whose manifest, configuration and
//!   layers (blobs and unpacked trees) are all present; it is replaced
//!   whole (write, then rename) under `index.lock`;
//! - garbage collection (removing blobs and layers no name reaches) holds
//!   `gc.lock` exclusively, and everything that adds to the store holds it
//!   shared from its first blob to its index update, so nothing is collected
//!   under a load or pull in progress. What an interrupted writer left under
//!   `tmp/` is removed by the next process that opens the store, once the
//!   writer's process is gone.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::{
    is_index, is_manifest, Compression, ConfigFile, Descriptor, Digest, Hashing, Index, Manifest,
    Platform, REF_NAME,
};
use crate::reference;
use crate::{Result, RuntimeError};

/// The annotation of an index entry that says when the name was given.
const NAMED_AT: &str = "io.rcompose.image.named";

/// An error with what was being done.
pub(crate) fn failed(what: impl std::fmt::Display, cause: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Engine(format!("{what}: {cause}"))
}

/// The store on disk.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// An image as the store knows it.
#[derive(Debug, Clone)]
pub struct StoredImage {
    /// The manifest's digest.
    pub manifest: Digest,
    /// The manifest itself.
    pub manifest_doc: Manifest,
    /// The image id: the configuration's digest, as Docker's.
    pub id: Digest,
    /// Full normalized names (`docker.io/library/redis:7`), sorted.
    pub names: Vec<String>,
    /// The configuration, as stored.
    pub config: serde_json::Value,
    /// The parsed fields of the configuration the store needs.
    pub config_file: ConfigFile,
    /// The uncompressed size of the layers, in bytes.
    pub size: u64,
    /// When it was last named (loaded, pulled, tagged), seconds since the
    /// epoch; 0 when not recorded.
    pub named_at: i64,
}

/// A temporary directory of this process under `tmp/`, removed when dropped.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A held advisory lock, released when dropped.
pub struct Lock {
    _file: File,
}

static SCRATCH: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// Opens (creating when needed) the store under `dir`, and removes what
    /// writers that are gone left in `tmp/`.
    pub fn open(dir: &Path) -> Result<Store> {
        let store = Store {
            dir: dir.to_path_buf(),
        };
        for sub in ["blobs/sha256", "layers/sha256", "tmp"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(|e| failed(format!("creating {}", dir.join(sub).display()), e))?;
        }
        // Unpacked layers keep their set-user-id files and device nodes, and
        // blobs may be private: only root may look in.
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| failed(format!("securing {}", dir.display()), e))?;
        let layout = dir.join("oci-layout");
        if !layout.exists() {
            store.replace(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !dir.join("index.json").exists() {
            // Under the lock, so that two first opens cannot empty a name
            // the other just gave.
            store.edit_index(|_| Ok(()))?;
        }
        store.clean_scratch();
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn clean_scratch(&self) {
        let Ok(entries) = fs::read_dir(self.dir.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            let alive = pid.is_some_and(|p| Path::new(&format!("/proc/{p}")).exists());
            if !alive {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    /// A new scratch directory of this process.
    pub fn scratch(&self) -> Result<Scratch> {
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join("tmp")
            .join(format!("{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| failed("creating a scratch directory", e))?;
        Ok(Scratch { path })
    }

    fn lock(&self, name: &str, exclusive: bool) -> Result<Lock> {
        let path = self.dir.join(name);
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| failed(format!("opening {}", path.display()), e))?;
        let locked = if exclusive {
            file.lock()
        } else {
            file.lock_shared()
        };
        locked.map_err(|e| failed(format!("locking {}", path.display()), e))?;
        Ok(Lock { _file: file })
    }

    /// Held (shared) by everything that adds to the store, for its whole
    /// duration: garbage collection waits for it.
    pub fn writing(&self) -> Result<Lock> {
        self.lock("gc.lock", false)
    }

    /// Writes `bytes` to `path` whole: a temporary file, then a rename.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let scratch = self.scratch()?;
        let tmp = scratch.path().join("file");
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, path)
        };
        write().map_err(|e| failed(format!("writing {}", path.display()), e))
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Stores what `content` yields as a blob, checking it against
    /// `expected` when given; returns its digest and size. `what` names it in
    /// errors. Nothing is left behind when it fails.
    pub fn put_blob(
        &self,
        content: impl Read,
        expected: Option<&Digest>,
        what: &str,
    ) -> Result<(Digest, u64)> {
        let scratch = self.scratch()?;
        let tmp = scratch.path().join("blob");
        let mut hashing = Hashing::new(content);
        let written = (|| -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            io::copy(&mut hashing, &mut f)?;
            f.flush()
        })();
        written.map_err(|e| failed(format!("storing {what}"), e))?;
        let (digest, size) = hashing
            .finish()
            .map_err(|e| failed(format!("storing {what}"), e))?;
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(RuntimeError::Engine(format!(
                    "{what}: content does not match its digest {expected} (it is {digest})"
                )));
            }
        }
        let target = self.blob_path(&digest);
        if !target.exists() {
            fs::rename(&tmp, &target).map_err(|e| failed(format!("storing {what}"), e))?;
        }
        Ok((digest, size))
    }

    /// Moves a file whose digest the caller computed while writing it
    /// into place as that blob.
    pub fn install(&self, file: &Path, digest: &Digest) -> Result<()> {
        let target = self.blob_path(digest);
        if target.exists() {
            return Ok(());
        }
        fs::rename(file, &target).map_err(|e| failed(format!("storing blob {digest}"), e))
    }

    /// Stores `bytes` as a blob.
    pub fn put_bytes(&self, bytes: &[u8], what: &str) -> Result<Digest> {
        let digest = Digest::of(bytes);
        if !self.has_blob(&digest) {
            self.put_blob(bytes, Some(&digest), what)?;
        }
        Ok(digest)
    }

    /// Reads a small blob (a manifest, index or configuration) whole and
    /// checks it against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::NotFound {
                kind: "blob",
                name: digest.to_string(),
            },
            _ => failed(format!("reading blob {digest}"), e),
        })?;
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(RuntimeError::Engine(format!(
                "blob {digest} is corrupt: its content has digest {actual}"
            )));
        }
        Ok(bytes)
    }

    /// Opens a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        File::open(self.blob_path(digest)).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => RuntimeError::NotFound {
                kind: "blob",
                name: digest.to_string(),
            },
            _ => failed(format!("reading blob {digest}"), e),
        })
    }

    /// Reads and parses a JSON blob.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        digest: &Digest,
        what: &str,
    ) -> Result<T> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("{what} {digest}"), e))
    }

    /// The names (index entries) of the store.
    pub fn index(&self) -> Result<Index> {
        let path = self.dir.join("index.json");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Index {
                    schema_version: 2,
                    media_type: Some(super::layout::OCI_INDEX.to_string()),
                    manifests: vec![],
                })
            }
            Err(e) => return Err(failed(format!("reading {}", path.display()), e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| failed(format!("reading {}", path.display()), e))
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let bytes = serde_json::to_vec(index).map_err(|e| failed("writing index.json", e))?;
        self.replace(&self.dir.join("index.json"), &bytes)
    }

    /// Changes the names under `index.lock`: `change` gets the entries and
    /// edits them; the index is then replaced whole.
    pub fn edit_index<T>(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<T>,
    ) -> Result<T> {
        let _lock = self.lock("index.lock", true)?;
        let mut index = self.index()?;
        let out = change(&mut index.manifests)?;
        self.write_index(&index)?;
        Ok(out)
    }

    /// Where a layer is unpacked.
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join("layers/sha256").join(diff_id.hex())
    }

    /// The tree of an unpacked layer, an overlayfs lower directory.
    pub fn layer_root(&self, diff_id: &Digest) -> PathBuf {
        self.layer_dir(diff_id).join("root")
    }

    /// The size of an unpacked layer, when it is unpacked.
    pub fn layer_size(&self, diff_id: &Digest) -> Option<u64> {
        fs::read_to_string(self.layer_dir(diff_id).join("size"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Unpacks a layer blob once, checking its uncompressed content against
    /// `diff_id`; returns its size. `what` names the image in errors.
    pub fn unpack(&self, layer: &Descriptor, diff_id: &Digest, what: &str) -> Result<u64> {
        if let Some(size) = self.layer_size(diff_id) {
            return Ok(size);
        }
        let compression = match Compression::of_media_type(&layer.media_type) {
            Some(c) => c,
            None if layer.media_type.is_empty() => {
                let mut head = [0u8; 4];
                let n = self.open_blob(&layer.digest)?.read(&mut head).unwrap_or(0);
                Compression::sniff(&head[..n])
            }
            None => {
                return Err(RuntimeError::Engine(format!(
                    "{what}: layer {} has an unknown media type {:?}",
                    layer.digest, layer.media_type
                )))
            }
        };
        let blob = BufReader::with_capacity(1 << 20, self.open_blob(&layer.digest)?);
        self.unpack_from(blob, compression, layer, diff_id, what)
    }

    /// Unpacks a layer from `content` (its blob as stored, compressed as
    /// `compression` says), checking it against `diff_id`; returns its
    /// size. A pull feeds this as the blob arrives.
    pub fn unpack_from(
        &self,
        content: impl Read,
        compression: Compression,
        layer: &Descriptor,
        diff_id: &Digest,
        what: &str,
    ) -> Result<u64> {
        if let Some(size) = self.layer_size(diff_id) {
            return Ok(size);
        }
        let scratch = self.scratch()?;
        let work = scratch.path().join("layer");
        let root = work.join("root");
        fs::create_dir_all(&root).map_err(|e| failed("unpacking a layer", e))?;
        let plain: Box<dyn Read> = match compression {
            Compression::None => Box::new(content),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(content)),
            Compression::Zstd => {
                return Err(RuntimeError::Engine(format!(
                    "{what}: layer {} is zstd-compressed, which rcompose cannot unpack yet",
                    layer.digest
                )))
            }
        };
        let mut hashing = Hashing::new(plain);
        let size = super::unpack::unpack_tree(&mut hashing, &root)
            .map_err(|e| failed(format!("{what}: unpacking layer {}", layer.digest), e))?;
        let (actual, _) = hashing
            .finish()
            .map_err(|e| failed(format!("{what}: unpacking layer {}", layer.digest), e))?;
        if actual != *diff_id {
            return Err(RuntimeError::Engine(format!(
                "{what}: layer {} does not match its diff id {diff_id} (its content is {actual})",
                layer.digest
            )));
        }
        fs::write(work.join("size"), size.to_string())
            .map_err(|e| failed("unpacking a layer", e))?;
        let target = self.layer_dir(diff_id);
        if target.exists() && self.layer_size(diff_id).is_none() {
            // An unfinished directory (rcompose renames only whole ones):
            // out of the way first.
            self.discard(&target)?;
        }
        if let Err(e) = fs::rename(&work, &target) {
            // Another process unpacked it meanwhile: theirs is as good.
            if self.layer_size(diff_id).is_none() {
                return Err(failed(format!("{what}: storing layer {diff_id}"), e));
            }
        }
        Ok(size)
    }

    /// Reads the image a manifest describes; fails when a part is missing.
    pub fn image(&self, manifest: &Digest, names: Vec<String>) -> Result<StoredImage> {
        let manifest_doc: Manifest = self.read_json(manifest, "manifest")?;
        let bytes = self.read_blob(&manifest_doc.config.digest)?;
        let config: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("configuration {}", manifest_doc.config.digest), e))?;
        let config_file: ConfigFile = serde_json::from_value(config.clone())
            .map_err(|e| failed(format!("configuration {}", manifest_doc.config.digest), e))?;
        let size = config_file
            .rootfs
            .diff_ids
            .iter()
            .map(|d| self.layer_size(d).unwrap_or(0))
            .sum();
        Ok(StoredImage {
            manifest: manifest.clone(),
            id: manifest_doc.config.digest.clone(),
            manifest_doc,
            names,
            config,
            config_file,
            size,
            named_at: 0,
        })
    }

    /// Every image, with its names.
    pub fn images(&self) -> Result<Vec<StoredImage>> {
        let mut by_manifest: BTreeMap<Digest, (Vec<String>, i64)> = BTreeMap::new();
        for d in self.index()?.manifests {
            let (names, named_at) = by_manifest.entry(d.digest.clone()).or_default();
            if let Some(n) = d.annotations.get(REF_NAME) {
                names.push(n.clone());
            }
            let at = d
                .annotations
                .get(NAMED_AT)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                .map(|t| t.as_second())
                .unwrap_or(0);
            *named_at = (*named_at).max(at);
        }
        by_manifest
            .into_iter()
            .filter_map(|(digest, (mut names, named_at))| {
                names.sort();
                names.dedup();
                // A name whose image cannot be read does not hide the
                // others; `image rm` still removes it by name.
                let mut image = self.image(&digest, names).ok()?;
                image.named_at = named_at;
                Some(Ok(image))
            })
            .collect()
    }

    /// Finds an image by name, by id or id prefix, or by `name@digest`.
    pub fn find(&self, reference: &str) -> Result<Option<StoredImage>> {
        let images = self.images()?;
        if let Ok(name) = reference::normalize(reference) {
            if let Some(i) = images.iter().find(|i| i.names.contains(&name)) {
                return Ok(Some(i.clone()));
            }
            if let Some((_, digest)) = name.split_once('@') {
                if let Some(i) = images.iter().find(|i| i.manifest.as_str() == digest) {
                    return Ok(Some(i.clone()));
                }
            }
        }
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        if !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            let matching: Vec<&StoredImage> = images
                .iter()
                .filter(|i| i.id.hex().starts_with(hex))
                .collect();
            let ids: BTreeSet<&Digest> = matching.iter().map(|i| &i.id).collect();
            if ids.len() > 1 {
                return Err(RuntimeError::Engine(format!(
                    "{reference} matches more than one image: give more of the id"
                )));
            }
            if let Some(i) = matching.first() {
                return Ok(Some((*i).clone()));
            }
            // A whole id may name an unnamed image that a pin keeps (a
            // build's steps).
            if hex.len() == 64 {
                for manifest in self.pinned() {
                    if let Ok(image) = self.image(&manifest, Vec::new()) {
                        if image.id.hex() == hex {
                            return Ok(Some(image));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Records `manifest` (already stored, with its configuration and layers
    /// stored and unpacked) under `names` (normalized), taking each name from
    /// any image that had it. With no names, the image is kept unnamed
    /// unless it has names already.
    pub fn name(&self, manifest: &Descriptor, names: &[String]) -> Result<()> {
        self.edit_index(|entries| {
            let losing: BTreeSet<Digest> = entries
                .iter()
                .filter(|d| {
                    d.annotations
                        .get(REF_NAME)
                        .is_some_and(|n| names.contains(n))
                })
                .map(|d| d.digest.clone())
                .collect();
            entries.retain(|d| {
                let name = d.annotations.get(REF_NAME);
                let renamed = name.is_some_and(|n| names.contains(n));
                let unnamed_same = name.is_none() && d.digest == manifest.digest;
                !renamed && !unnamed_same
            });
            // An image that lost its last name to this one stays, unnamed
            // (Docker's `<none>`), until pruned.
            for digest in losing {
                if digest != manifest.digest && !entries.iter().any(|d| d.digest == digest) {
                    entries.push(Descriptor {
                        media_type: super::layout::OCI_MANIFEST.to_string(),
                        size: self
                            .blob_path(&digest)
                            .metadata()
                            .map(|m| m.len())
                            .unwrap_or(0),
                        digest,
                        annotations: BTreeMap::new(),
                        platform: None,
                    });
                }
            }
            let has_name = entries.iter().any(|d| d.digest == manifest.digest);
            let plain = Descriptor {
                annotations: BTreeMap::from([(
                    NAMED_AT.to_string(),
                    jiff::Timestamp::now().to_string(),
                )]),
                platform: None,
                ..manifest.clone()
            };
            for n in names {
                let mut d = plain.clone();
                d.annotations.insert(REF_NAME.to_string(), n.clone());
                entries.push(d);
            }
            if names.is_empty() && !has_name {
                entries.push(plain);
            }
            Ok(())
        })
    }

    /// Checks that an image's parts are all here and unpacks its layers;
    /// returns the manifest's descriptor, ready to be named.
    pub fn complete(&self, manifest: &Digest, what: &str) -> Result<Descriptor> {
        let bytes = self.read_blob(manifest)?;
        let doc: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| failed(format!("{what}: manifest"), e))?;
        let config: ConfigFile = self.read_json(&doc.config.digest, "configuration")?;
        if config.rootfs.diff_ids.len() != doc.layers.len() {
            return Err(RuntimeError::Engine(format!(
                "{what}: the manifest lists {} layers but the configuration {}",
                doc.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        for (layer, diff_id) in doc.layers.iter().zip(&config.rootfs.diff_ids) {
            if !self.has_blob(&layer.digest) {
                return Err(RuntimeError::Engine(format!(
                    "{what}: layer {} is missing",
                    layer.digest
                )));
            }
            self.unpack(layer, diff_id, what)?;
        }
        Ok(Descriptor {
            media_type: doc
                .media_type
                .clone()
                .unwrap_or_else(|| super::layout::OCI_MANIFEST.to_string()),
            digest: manifest.clone(),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        })
    }

    /// Picks, from a manifest or an index blob, the manifest for this
    /// platform (following nested indexes).
    pub fn pick_manifest(&self, top: &Descriptor, what: &str) -> Result<Digest> {
        let mut current = top.clone();
        for _ in 0..4 {
            let media = if current.media_type.is_empty() {
                let v: serde_json::Value = self.read_json(&current.digest, "manifest")?;
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| {
                        if v.get("manifests").is_some() {
                            super::layout::OCI_INDEX.to_string()
                        } else {
                            super::layout::OCI_MANIFEST.to_string()
                        }
                    })
            } else {
                current.media_type.clone()
            };
            if is_manifest(&media) {
                return Ok(current.digest);
            }
            if !is_index(&media) {
                return Err(RuntimeError::Engine(format!(
                    "{what}: unknown media type {media:?}"
                )));
            }
            let index: Index = self.read_json(&current.digest, "index")?;
            let host = Platform::host();
            let fits = |d: &&Descriptor| Platform::is_host(d);
            let present = |d: &&Descriptor| self.has_blob(&d.digest);
            let chosen = index
                .manifests
                .iter()
                .filter(present)
                .find(fits)
                .or_else(|| {
                    let present: Vec<&Descriptor> =
                        index.manifests.iter().filter(present).collect();
                    (present.len() == 1 && present[0].platform.is_none()).then(|| present[0])
                })
                .ok_or_else(|| {
                    RuntimeError::Engine(format!(
                        "{what}: no manifest for {}/{} in the index",
                        host.os, host.architecture
                    ))
                })?;
            current = chosen.clone();
        }
        Err(RuntimeError::Engine(format!(
            "{what}: indexes nested too deep"
        )))
    }

    /// Removes a name; the image goes when it loses its last name (unless
    /// `keep_unnamed`). Returns the names removed.
    pub fn untag(&self, name: &str) -> Result<bool> {
        self.edit_index(|entries| {
            let before = entries.len();
            entries.retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(name));
            Ok(entries.len() != before)
        })
    }

    /// Removes every entry of an image (all its names).
    pub fn forget(&self, manifest: &Digest) -> Result<()> {
        self.edit_index(|entries| {
            entries.retain(|d| d.digest != *manifest);
            Ok(())
        })
    }

    /// Keeps an image for `owner` (a container), named or not: garbage
    /// collection treats it as named while the pin exists. Call it as a
    /// writer ([`Store::writing`]), so that no collection runs between
    /// finding the image and pinning it.
    pub fn pin(&self, owner: &str, manifest: &Digest) -> Result<()> {
        let dir = self.dir.join("pins");
        fs::create_dir_all(&dir).map_err(|e| failed("pinning an image", e))?;
        fs::write(dir.join(owner), manifest.to_string()).map_err(|e| failed("pinning an image", e))
    }

    /// The manifest an owner pins, if any.
    pub fn pinned_by(&self, owner: &str) -> Option<Digest> {
        let text = fs::read_to_string(self.dir.join("pins").join(owner)).ok()?;
        Digest::parse(text.trim()).filter(|d| self.has_blob(d))
    }

    /// Lets go of an owner's pin.
    pub fn unpin(&self, owner: &str) {
        let _ = fs::remove_file(self.dir.join("pins").join(owner));
    }

    /// Lets go of the pins of owners named `prefix…` that keep `manifest`.
    pub fn unpin_all(&self, prefix: &str, manifest: &Digest) {
        let Ok(entries) = fs::read_dir(self.dir.join("pins")) else {
            return;
        };
        for e in entries.flatten() {
            let owner = e.file_name();
            if !owner.to_string_lossy().starts_with(prefix) {
                continue;
            }
            if self.pinned_by(&owner.to_string_lossy()).as_ref() == Some(manifest) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The manifests pinned by owners.
    pub fn pinned(&self) -> BTreeSet<Digest> {
        fs::read_dir(self.dir.join("pins"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| fs::read_to_string(e.path()).ok())
                    .filter_map(|t| Digest::parse(t.trim()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes blobs and unpacked layers that no name and no pin reaches;
    /// returns the bytes freed. Waits for writers in progress.
    pub fn collect_garbage(&self) -> Result<u64> {
        let _gc = self.lock("gc.lock", true)?;
        let mut blobs: BTreeSet<Digest> = BTreeSet::new();
        let mut layers: BTreeSet<Digest> = BTreeSet::new();
        for d in self.index()?.manifests {
            // A named document that cannot be read stops the collection:
            // what it names cannot be told from garbage.
            self.reach(&d, &mut blobs, &mut layers, 0)?;
        }
        for manifest in self.pinned() {
            let d = Descriptor {
                media_type: String::new(),
                digest: manifest,
                size: 0,
                annotations: BTreeMap::new(),
                platform: None,
            };
            if self.has_blob(&d.digest) {
                self.reach(&d, &mut blobs, &mut layers, 0)?;
            }
        }
        let mut freed = 0;
        for (sub, keep) in [("blobs/sha256", &blobs), ("layers/sha256", &layers)] {
            let Ok(entries) = fs::read_dir(self.dir.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                let name = format!("sha256:{}", e.file_name().to_string_lossy());
                if Digest::parse(&name).is_some_and(|d| keep.contains(&d)) {
                    continue;
                }
                let path = e.path();
                if sub.starts_with("layers") {
                    freed += fs::read_to_string(path.join("size"))
                        .ok()
                        .and_then(|s| s.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    self.discard(&path)?;
                } else {
                    freed += e.metadata().map(|m| m.len()).unwrap_or(0);
                    fs::remove_file(&path)
                        .map_err(|e| failed(format!("removing {}", path.display()), e))?;
                }
            }
        }
        Ok(freed)
    }

    /// Removes a directory of the store: renamed into scratch first, so
    /// that a crash midway leaves nothing half-deleted where it was.
    fn discard(&self, path: &Path) -> Result<()> {
        let scratch = self.scratch()?;
        let away = scratch.path().join("gone");
        fs::rename(path, &away).map_err(|e| failed(format!("removing {}", path.display()), e))?;
        fs::remove_dir_all(&away).map_err(|e| failed(format!("removing {}", path.display()), e))
    }

    fn reach(
        &self,
        d: &Descriptor,
        blobs: &mut BTreeSet<Digest>,
        layers: &mut BTreeSet<Digest>,
        depth: u8,
    ) -> Result<()> {
        blobs.insert(d.digest.clone());
        let value: serde_json::Value = self.read_json(&d.digest, "manifest")?;
        if value.get("manifests").is_some() {
            if depth >= 4 {
                return Ok(());
            }
            let index: Index = serde_json::from_value(value)
                .map_err(|e| failed(format!("index {}", d.digest), e))?;
            for m in &index.manifests {
                if self.has_blob(&m.digest) {
                    self.reach(m, blobs, layers, depth + 1)?;
                }
            }
            return Ok(());
        }
        let m: Manifest = serde_json::from_value(value)
            .map_err(|e| failed(format!("manifest {}", d.digest), e))?;
        blobs.insert(m.config.digest.clone());
        blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
        let c: ConfigFile = self.read_json(&m.config.digest, "configuration")?;
        layers.extend(c.rootfs.diff_ids);
        Ok(())
    }
}
