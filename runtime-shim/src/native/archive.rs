//! Images in and out of the native store as archives: `docker save`
//! archives (the legacy layout with `manifest.json`, and the OCI layout
//! Docker writes since 25), OCI image-layout archives, and root filesystem
//! tarballs for `image import`.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};

use serde::Deserialize;

use super::layout::{
    Compression, Descriptor, Digest, Index, Manifest, Platform, CONTAINERD_NAME, OCI_CONFIG,
    OCI_INDEX, OCI_LAYER, OCI_MANIFEST, REF_NAME,
};
use super::store::{failed, Store, StoredImage};
use crate::reference;
use crate::{Result, RuntimeError};

/// The largest metadata file (`manifest.json`, `index.json`) read whole.
const MAX_DOCUMENT: u64 = 16 << 20;

/// One image an archive held, as loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// Its id (the configuration's digest).
    pub id: Digest,
    /// The full names it was loaded under.
    pub names: Vec<String>,
}

/// An entry of `manifest.json` in a `docker save` archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A reader that undoes the archive's own compression, if any.
fn decompressed<'a>(input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut input = BufReader::with_capacity(1 << 20, input);
    let head = input.fill_buf()?;
    Ok(match Compression::sniff(head) {
        Compression::None => Box::new(input),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Compression::Zstd => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "zstd-compressed archives are not supported yet",
            ))
        }
    })
}

/// The path of an archive entry, without a leading `./` or `/`.
fn clean(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
}

/// Loads every image of an archive (from a file or a pipe, read once). The
/// store is unchanged when it fails, apart from blobs no name reaches
/// (which `image prune` removes, and a retried load reuses).
pub fn load(store: &Store, input: impl Read) -> Result<Vec<Loaded>> {
    let _writing = store.writing()?;
    let bad = |e: io::Error| failed("loading the archive", e);
    let mut archive = tar::Archive::new(decompressed(input).map_err(bad)?);
    let mut files: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut documents: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut entries = 0usize;
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        entries += 1;
        let path = clean(&entry.path().map_err(bad)?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            // The legacy layout links a layer met twice to its first copy.
            if let Some(target) = entry.link_name().map_err(bad)? {
                let target = target.to_string_lossy().into_owned();
                let base = if kind.is_symlink() {
                    path.rsplit_once('/').map(|(d, _)| d).unwrap_or("")
                } else {
                    ""
                };
                let resolved = resolve(base, &target);
                links.insert(path, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        match path.as_str() {
            "manifest.json" | "index.json" | "repositories" | "oci-layout" => {
                let mut bytes = Vec::new();
                entry
                    .by_ref()
                    .take(MAX_DOCUMENT)
                    .read_to_end(&mut bytes)
                    .map_err(bad)?;
                documents.insert(path, bytes);
            }
            p if p.ends_with("/json") || p.ends_with("/VERSION") => {}
            p => {
                let expected = p
                    .strip_prefix("blobs/sha256/")
                    .map(|hex| {
                        Digest::parse(&format!("sha256:{hex}")).ok_or_else(|| {
                            RuntimeError::Engine(format!(
                                "the archive has a blob with a bad name: {p}"
                            ))
                        })
                    })
                    .transpose()?;
                let size = entry.size();
                if let Some(d) = expected.as_ref().filter(|d| store.has_blob(d)) {
                    files.insert(path, (d.clone(), size));
                    continue;
                }
                let stored = store.put_blob(
                    &mut entry,
                    expected.as_ref(),
                    &format!("{p} of the archive"),
                )?;
                files.insert(path, stored);
            }
        }
    }
    if entries == 0 {
        return Err(RuntimeError::Engine(
            "loading the archive: it is empty or not a tar archive".to_string(),
        ));
    }
    let find = |path: &str| -> Result<(Digest, u64)> {
        let mut p = clean(path);
        for _ in 0..8 {
            if let Some((d, s)) = files.get(&p) {
                return Ok((d.clone(), *s));
            }
            match links.get(&p) {
                Some(next) => p = next.clone(),
                None => break,
            }
        }
        Err(RuntimeError::Engine(format!(
            "loading the archive: {path} is named in its manifest but missing"
        )))
    };
    let saved: Vec<SavedImage> = match documents.get("manifest.json") {
        Some(bytes) => serde_json::from_slice(bytes)
            .map_err(|e| failed("loading the archive: manifest.json", e))?,
        None => vec![],
    };
    // Names by configuration, from manifest.json.
    let mut saved_names: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    for s in &saved {
        let (config, _) = find(&s.config)?;
        for t in s.repo_tags.iter().flatten() {
            saved_names
                .entry(config.clone())
                .or_default()
                .push(reference::normalize(t)?);
        }
    }
    let mut plan: Vec<(Digest, Vec<String>)> = Vec::new();
    if let Some(bytes) = documents.get("index.json") {
        let index: Index = serde_json::from_slice(bytes)
            .map_err(|e| failed("loading the archive: index.json", e))?;
        for d in &index.manifests {
            let what = d
                .annotations
                .get(CONTAINERD_NAME)
                .cloned()
                .unwrap_or_else(|| d.digest.to_string());
            let manifest = store.pick_manifest(d, &what)?;
            let doc: Manifest = store.read_json(&manifest, "manifest")?;
            let mut names = saved_names
                .get(&doc.config.digest)
                .cloned()
                .unwrap_or_default();
            if let Some(n) = d.annotations.get(CONTAINERD_NAME) {
                names.push(reference::normalize(n)?);
            } else if let Some(n) = d.annotations.get(REF_NAME) {
                // In an OCI layout, often a tag alone: a name only when it
                // has a repository.
                if n.contains('/') || n.contains(':') {
                    if let Ok(n) = reference::normalize(n) {
                        names.push(n);
                    }
                }
            }
            plan.push((manifest, names));
        }
    } else if !saved.is_empty() {
        for s in &saved {
            let (config, config_size) = find(&s.config)?;
            let mut layers = Vec::new();
            for l in &s.layers {
                let (digest, size) = find(l)?;
                let mut head = [0u8; 4];
                let n = store.open_blob(&digest)?.read(&mut head).unwrap_or(0);
                layers.push(Descriptor {
                    media_type: Compression::sniff(&head[..n]).media_type().to_string(),
                    digest,
                    size,
                    annotations: BTreeMap::new(),
                    platform: None,
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(OCI_MANIFEST.to_string()),
                config: Descriptor {
                    media_type: OCI_CONFIG.to_string(),
                    digest: config.clone(),
                    size: config_size,
                    annotations: BTreeMap::new(),
                    platform: None,
                },
                layers,
            };
            let bytes =
                serde_json::to_vec(&manifest).map_err(|e| failed("writing a manifest", e))?;
            let digest = store.put_bytes(&bytes, "a manifest")?;
            let names = saved_names.get(&config).cloned().unwrap_or_default();
            plan.push((digest, names));
        }
    } else {
        return Err(RuntimeError::Engine(
            "loading the archive: it has neither manifest.json nor index.json; is it an image archive?"
                .to_string(),
        ));
    }
    // Every image complete before any is named.
    let mut done = Vec::new();
    for (manifest, mut names) in plan {
        names.sort();
        names.dedup();
        let what = names
            .first()
            .map(|n| reference::familiar_tagged(n))
            .unwrap_or_else(|| manifest.to_string());
        let descriptor = store.complete(&manifest, &what)?;
        let doc: Manifest = store.read_json(&manifest, "manifest")?;
        done.push((descriptor, names, doc.config.digest));
    }
    let mut loaded = Vec::new();
    for (descriptor, names, id) in done {
        store.name(&descriptor, &names)?;
        loaded.push(Loaded { id, names });
    }
    Ok(loaded)
}

/// `target` relative to the directory `base` (both archive paths).
fn resolve(base: &str, target: &str) -> String {
    let whole = if target.starts_with('/') {
        target.to_string()
    } else {
        format!("/{base}/{target}")
    };
    crate::context::clean_path(&whole)
        .trim_start_matches('/')
        .to_string()
}

/// Writes the images to `out` as an archive both `docker load` and OCI
/// tools read: the OCI layout (`oci-layout`, `index.json`, `blobs/`) with
/// Docker's `manifest.json` beside it. Each image goes under the names it
/// was asked by, or all its names when asked by id.
pub fn save(store: &Store, images: &[(StoredImage, Vec<String>)], out: impl Write) -> Result<()> {
    let bad = |e: io::Error| failed("writing the archive", e);
    let mut tar = tar::Builder::new(out);
    let mut written = std::collections::BTreeSet::new();
    let mut index = Index {
        schema_version: 2,
        media_type: Some(OCI_INDEX.to_string()),
        manifests: vec![],
    };
    let mut saved = Vec::new();
    for (image, names) in images {
        let doc = &image.manifest_doc;
        let mut blobs = vec![image.manifest.clone(), doc.config.digest.clone()];
        blobs.extend(doc.layers.iter().map(|l| l.digest.clone()));
        for digest in blobs {
            if !written.insert(digest.clone()) {
                continue;
            }
            let file = store.open_blob(&digest)?;
            let len = file.metadata().map_err(bad)?.len();
            let mut header = tar::Header::new_gnu();
            header.set_size(len);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            // A blob is checked as it goes out: a corrupt one stops the save.
            let mut hashing = super::layout::Hashing::new(file);
            tar.append_data(
                &mut header,
                format!("blobs/sha256/{}", digest.hex()),
                &mut hashing,
            )
            .map_err(bad)?;
            let (actual, _) = hashing.finish().map_err(bad)?;
            if actual != digest {
                return Err(RuntimeError::Engine(format!(
                    "blob {digest} is corrupt: its content has digest {actual}"
                )));
            }
        }
        let descriptor = Descriptor {
            media_type: doc
                .media_type
                .clone()
                .unwrap_or_else(|| OCI_MANIFEST.to_string()),
            digest: image.manifest.clone(),
            size: store
                .open_blob(&image.manifest)?
                .metadata()
                .map_err(bad)?
                .len(),
            annotations: BTreeMap::new(),
            platform: Some(Platform {
                architecture: image.config_file.architecture.clone(),
                os: image.config_file.os.clone(),
                variant: None,
            }),
        };
        if names.is_empty() {
            index.manifests.push(descriptor.clone());
        }
        for n in names {
            let mut d = descriptor.clone();
            d.annotations.insert(CONTAINERD_NAME.to_string(), n.clone());
            let (_, tag) = reference::familiar(n);
            d.annotations.insert(REF_NAME.to_string(), tag);
            index.manifests.push(d);
        }
        saved.push(serde_json::json!({
            "Config": format!("blobs/sha256/{}", doc.config.digest.hex()),
            "RepoTags": names.iter().map(|n| reference::familiar_tagged(n)).collect::<Vec<_>>(),
            "Layers": doc.layers.iter().map(|l| format!("blobs/sha256/{}", l.digest.hex())).collect::<Vec<_>>(),
        }));
    }
    let documents = [
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        (
            "index.json",
            serde_json::to_vec(&index).map_err(|e| failed("writing index.json", e))?,
        ),
        (
            "manifest.json",
            serde_json::to_vec(&saved).map_err(|e| failed("writing manifest.json", e))?,
        ),
    ];
    for (name, bytes) in documents {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, bytes.as_slice())
            .map_err(bad)?;
    }
    tar.into_inner().map_err(bad)?.flush().map_err(bad)?;
    Ok(())
}

/// Makes a one-layer image from a root filesystem tarball (plain or
/// gzip), as `docker import` does; `changes` are Dockerfile instructions
/// (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)
/// applied to its configuration. Returns its id.
pub fn import(
    store: &Store,
    input: impl Read,
    name: Option<&str>,
    changes: &[String],
    message: &str,
) -> Result<Digest> {
    let name = name.map(reference::normalize).transpose()?;
    let mut config = serde_json::Map::new();
    for c in changes {
        apply_change(&mut config, c)?;
    }
    let _writing = store.writing()?;
    let plain = decompressed(input).map_err(|e| failed("importing the tarball", e))?;
    let (diff_id, size) = store.put_blob(plain, None, "the imported tarball")?;
    let now = jiff::Timestamp::now().to_string();
    let comment = if message.is_empty() {
        "Imported from -".to_string()
    } else {
        message.to_string()
    };
    let host = Platform::host();
    let image_config = serde_json::json!({
        "architecture": host.architecture,
        "os": host.os,
        "created": now,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": now, "comment": comment}],
    });
    let layer = Descriptor {
        media_type: OCI_LAYER.to_string(),
        digest: diff_id,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    store_image(store, &image_config, vec![layer], name)
}

/// Stores an image's configuration and manifest (its layers already in
/// the store), unpacks what is not yet, and names it. Returns its id.
fn store_image(
    store: &Store,
    image_config: &serde_json::Value,
    layers: Vec<Descriptor>,
    name: Option<String>,
) -> Result<Digest> {
    let (manifest_digest, config_digest) = store_document(store, image_config, layers)?;
    let what = name.clone().unwrap_or_else(|| config_digest.to_string());
    let descriptor = store.complete(&manifest_digest, &what)?;
    store.name(&descriptor, name.as_slice())?;
    Ok(config_digest)
}

/// Stores an image's configuration and its manifest over `layers` (already
/// in the store), neither checked nor named; returns the manifest's digest
/// and the image's id.
pub(super) fn store_document(
    store: &Store,
    image_config: &serde_json::Value,
    layers: Vec<Descriptor>,
) -> Result<(Digest, Digest)> {
    let bytes =
        serde_json::to_vec(image_config).map_err(|e| failed("writing a configuration", e))?;
    let config_digest = store.put_bytes(&bytes, "a configuration")?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(OCI_MANIFEST.to_string()),
        config: Descriptor {
            media_type: OCI_CONFIG.to_string(),
            digest: config_digest.clone(),
            size: bytes.len() as u64,
            annotations: BTreeMap::new(),
            platform: None,
        },
        layers,
    };
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| failed("writing a manifest", e))?;
    let manifest_digest = store.put_bytes(&manifest_bytes, "a manifest")?;
    Ok((manifest_digest, config_digest))
}

/// Applies one `--change` instruction to an image's `config`.
pub fn apply_change(
    config: &mut serde_json::Map<String, serde_json::Value>,
    change: &str,
) -> Result<()> {
    use serde_json::{json, Value};
    let change = change.trim();
    let (instruction, rest) = change
        .split_once(char::is_whitespace)
        .map(|(i, r)| (i, r.trim()))
        .unwrap_or((change, ""));
    let refuse = |why: &str| RuntimeError::Engine(format!("--change {change:?}: {why}"));
    if rest.is_empty() {
        return Err(refuse("the instruction needs a value"));
    }
    let words = || words(rest);
    let command = || -> Value {
        match serde_json::from_str::<Vec<String>>(rest) {
            Ok(list) => json!(list),
            Err(_) => json!(["/bin/sh", "-c", rest]),
        }
    };
    let pairs = || -> Result<Vec<(String, String)>> {
        if !rest.split_whitespace().next().unwrap_or("").contains('=') {
            let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            return Ok(vec![(k.to_string(), unquote(v.trim()))]);
        }
        words()
            .into_iter()
            .map(|w| match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(refuse("expected KEY=VALUE")),
            })
            .collect()
    };
    match instruction.to_ascii_uppercase().as_str() {
        "CMD" => {
            config.insert("Cmd".into(), command());
        }
        "ENTRYPOINT" => {
            config.insert("Entrypoint".into(), command());
        }
        "ENV" => {
            let mut env: Vec<String> = config
                .get("Env")
                .and_then(|v| serde_json::from_value(v.clone()).ok())
                .unwrap_or_default();
            for (k, v) in pairs()? {
                env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                env.push(format!("{k}={v}"));
            }
            config.insert("Env".into(), json!(env));
        }
        "LABEL" => {
            let labels = config.entry("Labels").or_insert_with(|| json!({}));
            for (k, v) in pairs()? {
                labels[k] = json!(v);
            }
        }
        "EXPOSE" => {
            let ports = config.entry("ExposedPorts").or_insert_with(|| json!({}));
            for p in words() {
                let port = if p.contains('/') { p } else { format!("{p}/tcp") };
                let (number, protocol) = port.split_once('/').unwrap_or((&port, "tcp"));
                if number.parse::<u16>().is_err() || !matches!(protocol, "tcp" | "udp" | "sctp") {
                    return Err(refuse("expected a port such as 80 or 53/udp"));
                }
                ports[port.clone()] = json!({});
            }
        }
        "VOLUME" => {
            let list = serde_json::from_str::<Vec<String>>(rest).unwrap_or_else(|_| words());
            let volumes = config.entry("Volumes").or_insert_with(|| json!({}));
            for v in list {
                volumes[v] = json!({});
            }
        }
        "WORKDIR" => {
            config.insert("WorkingDir".into(), json!(unquote(rest)));
        }
        "USER" => {
            config.insert("User".into(), json!(unquote(rest)));
        }
        "STOPSIGNAL" => {
            config.insert("StopSignal".into(), json!(unquote(rest)));
        }
        other => {
            return Err(refuse(&format!(
                "{other} cannot be changed on import (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME and WORKDIR can)"
            )))
        }
    }
    Ok(())
}

/// Splits on white space outside quotes, and drops the quotes, as a
/// Dockerfile's `ENV a=1 b="two words"` is read.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut started = false;
    for c in s.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => word.push(c),
            None if c == '"' || c == '\'' => {
                quote = Some(c);
                started = true;
            }
            None if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut word));
                    started = false;
                }
            }
            None => {
                word.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(word);
    }
    out
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// What `commit` makes of a container, besides its layer.
pub struct Commit<'a> {
    /// The image configuration's `config` part (the container's).
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Dockerfile instructions applied over it.
    pub changes: &'a [String],
    /// The new image's name, if any.
    pub name: Option<&'a str>,
    /// Its author.
    pub author: &'a str,
    /// The history's comment.
    pub comment: &'a str,
}

/// Makes a new image of `parent` with one more layer (`layer`, a plain tar
/// whose whiteouts are OCI's), as `docker commit` does. Returns the new
/// image's id.
pub fn commit(
    store: &Store,
    parent: &StoredImage,
    layer: impl Read,
    what: Commit<'_>,
) -> Result<Digest> {
    let Commit {
        config,
        changes,
        name,
        author,
        comment,
    } = what;
    let name = name.map(reference::normalize).transpose()?;
    let mut config = config;
    for c in changes {
        apply_change(&mut config, c)?;
    }
    let _writing = store.writing()?;
    let (diff_id, size) = store.put_blob(layer, None, "the container's changes")?;
    let now = jiff::Timestamp::now().to_string();
    let mut image_config = parent.config.clone();
    image_config["created"] = serde_json::json!(now);
    image_config["config"] = serde_json::Value::Object(config);
    if !author.is_empty() {
        image_config["author"] = serde_json::json!(author);
    }
    let mut diff_ids = parent.config_file.rootfs.diff_ids.clone();
    diff_ids.push(diff_id.clone());
    image_config["rootfs"] = serde_json::json!({"type": "layers", "diff_ids": diff_ids});
    let mut history = image_config
        .get("history")
        .and_then(|h| h.as_array())
        .cloned()
        .unwrap_or_default();
    history.push(serde_json::json!({"created": now, "author": author, "comment": comment}));
    image_config["history"] = serde_json::json!(history);
    let mut layers = parent.manifest_doc.layers.clone();
    layers.push(Descriptor {
        media_type: OCI_LAYER.to_string(),
        digest: diff_id,
        size,
        annotations: BTreeMap::new(),
        platform: None,
    });
    store_image(store, &image_config, layers, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_edit_the_configuration_as_docker_import_does() {
        let mut c = serde_json::Map::new();
        for change in [
            "CMD [\"php\", \"-S\", \"0.0.0.0:80\"]",
            "ENV A=1 B=\"two words\"",
            "ENV A 3",
            "EXPOSE 80 53/udp",
            "WORKDIR /srv",
            "LABEL org.example=yes",
            "ENTRYPOINT run.sh --fast",
        ] {
            apply_change(&mut c, change).unwrap_or_else(|e| panic!("{change}: {e}"));
        }
        let c = serde_json::Value::Object(c);
        assert_eq!(c["Cmd"], serde_json::json!(["php", "-S", "0.0.0.0:80"]));
        assert_eq!(c["Env"], serde_json::json!(["B=two words", "A=3"]));
        assert!(c["ExposedPorts"]["80/tcp"].is_object() && c["ExposedPorts"]["53/udp"].is_object());
        assert_eq!(c["WorkingDir"], "/srv");
        assert_eq!(c["Labels"]["org.example"], "yes");
        assert_eq!(
            c["Entrypoint"],
            serde_json::json!(["/bin/sh", "-c", "run.sh --fast"])
        );
    }

    #[test]
    fn bad_changes_are_refused_with_the_instruction() {
        let mut c = serde_json::Map::new();
        for bad in ["RUN apt-get update", "EXPOSE http", "CMD", "ENV =x"] {
            let e = apply_change(&mut c, bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn links_resolve_inside_the_archive() {
        assert_eq!(resolve("abc", "../def/layer.tar"), "def/layer.tar");
        assert_eq!(resolve("", "blobs/sha256/x"), "blobs/sha256/x");
        assert_eq!(resolve("a/b", "/c/../d"), "d");
        assert_eq!(resolve("a", "../../x"), "x");
    }
}
