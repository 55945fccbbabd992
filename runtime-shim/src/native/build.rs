//! Dockerfile builds without a daemon, on the native runtime's own
//! containers.
//!
//! A stage is an image in the making: its configuration, its layers and a
//! cache key that sums up how it was made (the base image's id, then every
//! instruction with what it depends on: the build arguments in scope, the
//! digests of the files a `COPY` takes). Instructions that only describe
//! (`ENV`, `CMD`, `LABEL`…) edit the configuration. `RUN` runs in a
//! container of the image so far, with the host's network unless
//! `network` says otherwise; `COPY` and `ADD` write into such a container's
//! root filesystem without running it. Either way the container's overlay
//! upper directory becomes the step's layer, as `commit` makes one, and the
//! container goes.
//!
//! Every image a layer step starts from or ends with is kept, unnamed, by
//! a pin named after its cache key (`build-<key>` in the store's pins): a
//! later build that reaches the same key takes it instead of running the
//! step. `no_cache` skips the lookups; removing the images does not empty
//! the cache (as BuildKit's cache outlives images too).
//!
//! The output reads as BuildKit's plain progress: `#N [stage k/n] STEP`,
//! the step's output lines with their time, then `#N CACHED` or
//! `#N DONE 1.2s`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

use super::dockerfile::{self, Command, Copy, Health, Instruction, Stage};
use super::layout::{Descriptor, Digest, Platform, OCI_LAYER, REF_NAME};
use super::store::failed;
use super::{blocking, NativeRuntime};
use crate::{BuildSpec, ContainerSpec, LogOptions, NetworkMode, Result, RuntimeError};

/// The pins that keep the images builds made, by the owner's name's start:
/// a build of the same steps and labels gives the same image again, as
/// BuildKit's cache does; removing the image lets go of them.
pub(super) const FINAL_PIN: &str = "build-final-";

/// The shell of a stage that sets none.
const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The label that marks a build's containers.
const BUILD_LABEL: &str = "com.rcompose.build";

/// An image in the making.
#[derive(Debug, Clone)]
struct Image {
    /// The whole configuration document.
    config: Value,
    /// The manifest's layers.
    layers: Vec<Descriptor>,
    /// How it was made, summed up.
    key: String,
}

impl Image {
    fn scratch() -> Image {
        let host = Platform::host();
        Image {
            config: json!({
                "architecture": host.architecture,
                "os": host.os,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
            layers: Vec::new(),
            key: hash(&["scratch"]),
        }
    }

    /// The `config` object (`Env`, `Cmd`…).
    fn inner(&mut self) -> &mut Map<String, Value> {
        // The document is an object (checked where an image is taken in).
        if !self.config["config"].is_object() {
            self.config["config"] = json!({});
        }
        match &mut self.config["config"] {
            Value::Object(m) => m,
            _ => unreachable!("made an object just above"),
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.config.get("config").and_then(|c| c.get(key))
    }

    fn env(&self) -> Vec<String> {
        strings(self.get("Env"))
    }

    fn shell(&self) -> Vec<String> {
        let s = strings(self.get("Shell"));
        if s.is_empty() {
            DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
        } else {
            s
        }
    }

    fn workdir(&self) -> String {
        self.get("WorkingDir")
            .and_then(Value::as_str)
            .filter(|w| !w.is_empty())
            .unwrap_or("/")
            .to_string()
    }

    fn history(&mut self, created_by: &str, empty_layer: bool) {
        let mut entry = json!({
            "created": jiff::Timestamp::now().to_string(),
            "created_by": created_by,
            "comment": "buildkit.dockerfile.v0",
        });
        if empty_layer {
            entry["empty_layer"] = json!(true);
        }
        match self.config["history"].as_array_mut() {
            Some(h) => h.push(entry),
            None => self.config["history"] = json!([entry]),
        }
    }

    /// A describing step: the configuration changes, the key follows.
    fn describe(&mut self, text: &str) {
        self.key = hash(&[&self.key, text]);
        self.history(text, true);
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{:x}", h.finalize())
}

/// The build's output: numbered vertices, as BuildKit prints them.
struct Progress {
    tx: mpsc::Sender<Result<String>>,
    next: usize,
}

impl Progress {
    async fn say(&self, line: String) -> Result<()> {
        self.tx
            .send(Ok(line))
            .await
            .map_err(|_| RuntimeError::Engine("the build was cancelled".into()))
    }

    async fn begin(&mut self, title: &str) -> Result<(usize, Instant)> {
        self.next += 1;
        self.say(format!("#{} {title}", self.next)).await?;
        Ok((self.next, Instant::now()))
    }

    async fn done(&self, (n, t): (usize, Instant)) -> Result<()> {
        self.say(format!("#{n} DONE {:.1}s", t.elapsed().as_secs_f64()))
            .await
    }
}

/// What a stage left, for the stages after it.
#[derive(Debug, Clone)]
struct Built {
    image: Image,
    /// Its id in the store (stored when another stage copies from it).
    id: Option<String>,
}

/// One build.
struct Builder<'a> {
    rt: &'a NativeRuntime,
    spec: &'a BuildSpec,
    dockerfile_name: String,
    context: crate::context::ContextPlan,
    /// The context's paths, for lookups.
    entries: BTreeSet<String>,
    progress: Progress,
    /// Arguments before the first `FROM`, with their values.
    global: BTreeMap<String, String>,
    built: BTreeMap<usize, Built>,
    file: dockerfile::Dockerfile,
}

/// Builds the image `spec` describes, saying how it goes on `tx`.
pub(super) async fn build(
    rt: &NativeRuntime,
    spec: &BuildSpec,
    tx: mpsc::Sender<Result<String>>,
) -> Result<()> {
    let planned = spec.clone();
    let context = blocking(move || crate::context::plan_context(&planned)).await?;
    let dockerfile_name = if spec.dockerfile_inline.is_empty() {
        if spec.dockerfile.is_empty() {
            "Dockerfile".to_string()
        } else {
            spec.dockerfile.clone()
        }
    } else {
        "dockerfile_inline".to_string()
    };
    let text = match context
        .generated
        .iter()
        .find(|(name, _)| *name == context.dockerfile)
    {
        Some((_, content)) => String::from_utf8_lossy(content).into_owned(),
        None => {
            let path = context.root.join(&context.dockerfile);
            fs::read_to_string(&path)
                .map_err(|e| failed(format!("reading {}", path.display()), e))?
        }
    };
    let file = dockerfile::parse(&text)
        .map_err(|e| RuntimeError::Engine(format!("{dockerfile_name}: {e}")))?;
    let entries = context.entries.iter().cloned().collect();
    let mut builder = Builder {
        rt,
        spec,
        dockerfile_name,
        context,
        entries,
        progress: Progress { tx, next: 0 },
        global: BTreeMap::new(),
        built: BTreeMap::new(),
        file,
    };
    builder.run().await
}

impl Builder<'_> {
    fn located(&self, line: usize, message: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Engine(format!("{}: line {line}: {message}", self.dockerfile_name))
    }

    async fn run(&mut self) -> Result<()> {
        check_platform(&self.spec.platform)
            .map_err(|e| RuntimeError::Engine(format!("platform {}", e)))?;
        // Arguments of the FROM lines: predefined ones, then the file's.
        let host = Platform::host();
        let platform = format!("{}/{}", host.os, host.architecture);
        for (k, v) in [
            ("TARGETPLATFORM", platform.as_str()),
            ("TARGETOS", host.os.as_str()),
            ("TARGETARCH", host.architecture.as_str()),
            ("TARGETVARIANT", ""),
            ("BUILDPLATFORM", platform.as_str()),
            ("BUILDOS", host.os.as_str()),
            ("BUILDARCH", host.architecture.as_str()),
            ("BUILDVARIANT", ""),
        ] {
            self.global.insert(k.to_string(), v.to_string());
        }
        for (name, default) in self.file.global_args.clone() {
            let value = match self.spec.args.get(&name) {
                Some(v) => Some(v.clone()),
                None => match default {
                    Some(d) => {
                        let global = self.global.clone();
                        Some(
                            dockerfile::expand(&d, '\\', &|k| global.get(k).cloned())
                                .map_err(|e| self.located(1, e))?,
                        )
                    }
                    None => None,
                },
            };
            if let Some(v) = value {
                self.global.insert(name, v);
            }
        }
        let target = self.target()?;
        let needed = self.needed(target)?;
        for index in needed {
            let built = self.stage(index).await?;
            self.built.insert(index, built);
        }
        let Some(result) = self.built.get(&target).cloned() else {
            return Err(RuntimeError::Engine("the build made no image".into()));
        };
        self.finish(result.image).await
    }

    /// The stage to build: `target`, or the last.
    fn target(&self) -> Result<usize> {
        if self.spec.target.is_empty() {
            return Ok(self.file.stages.len() - 1);
        }
        let wanted = self.spec.target.to_ascii_lowercase();
        self.file
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(wanted.as_str()))
            .ok_or_else(|| {
                RuntimeError::Engine(format!(
                    "{}: target stage {:?} could not be found",
                    self.dockerfile_name, self.spec.target
                ))
            })
    }

    /// The stage a `FROM` or `--from` names, if it names one before `before`.
    fn stage_named(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Ok(n) = name.parse::<usize>() {
            return (n < before).then_some(n);
        }
        self.file.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
    }

    fn base_of(&self, stage: &Stage) -> Result<String> {
        let global = &self.global;
        dockerfile::expand(&stage.base, '\\', &|k| global.get(k).cloned())
            .map_err(|e| self.located(stage.line, e))
    }

    /// The stages the target needs, in order.
    fn needed(&self, target: usize) -> Result<Vec<usize>> {
        let mut wanted = BTreeSet::from([target]);
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            let stage = &self.file.stages[i];
            let mut deps = Vec::new();
            if let Some(d) = self.stage_named(&self.base_of(stage)?, i) {
                deps.push(d);
            }
            for step in &stage.steps {
                if let Instruction::Copy(Copy {
                    from: Some(from), ..
                }) = &step.instruction
                {
                    if let Some(d) = self.stage_named(from, i) {
                        deps.push(d);
                    }
                }
            }
            for d in deps {
                if wanted.insert(d) {
                    todo.push(d);
                }
            }
        }
        Ok(wanted.into_iter().collect())
    }

    fn stage_label(&self, index: usize) -> String {
        match &self.file.stages[index].name {
            Some(n) => format!("{n} "),
            None if self.file.stages.len() > 1 => format!("stage-{index} "),
            None => String::new(),
        }
    }

    /// Builds one stage.
    async fn stage(&mut self, index: usize) -> Result<Built> {
        let stage = self.file.stages[index].clone();
        let total = stage.steps.len() + 1;
        let label = self.stage_label(index);
        let base = self.base_of(&stage)?;
        if let Some(p) = &stage.platform {
            let global = &self.global;
            let p = dockerfile::expand(p, '\\', &|k| global.get(k).cloned())
                .map_err(|e| self.located(stage.line, e))?;
            check_platform(&p)
                .map_err(|e| self.located(stage.line, format!("FROM --platform={e}")))?;
        }
        let v = self
            .progress
            .begin(&format!("[{label}1/{total}] FROM {base}"))
            .await?;
        let mut image = match self.stage_named(&base, index) {
            Some(i) => self.built[&i].image.clone(),
            None if base == "scratch" => Image::scratch(),
            None => self.base_image(&base, stage.line).await?,
        };
        self.progress.done(v).await?;

        // The stage's arguments, and its base's triggers first.
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let triggers = strings(image.get("OnBuild"));
        image.inner().remove("OnBuild");
        let mut steps: Vec<(String, dockerfile::Step)> = Vec::new();
        for t in triggers {
            let parsed = dockerfile::parse(&format!("FROM scratch\n{t}"))
                .map_err(|e| self.located(stage.line, format!("ONBUILD {t}: {}", e.message)))?;
            for mut s in parsed.stages.into_iter().flat_map(|s| s.steps) {
                s.line = stage.line;
                steps.push((format!("ONBUILD {}", s.text), s));
            }
        }
        for (k, s) in stage.steps.iter().enumerate() {
            steps.push((format!("[{label}{}/{total}] {}", k + 2, s.text), s.clone()));
        }
        for (title, step) in steps {
            self.step(&mut image, &mut args, &title, &step).await?;
        }
        Ok(Built { image, id: None })
    }

    /// A base image from the store, pulled when it is missing (or always,
    /// with `pull`).
    async fn base_image(&mut self, reference: &str, line: usize) -> Result<Image> {
        let store = self.rt.store.clone();
        let found = {
            let store = store.clone();
            let r = reference.to_string();
            blocking(move || store.find(&r)).await?
        };
        let image = match found {
            Some(i) if !self.spec.pull => i,
            _ => {
                let (tx, mut rx) = mpsc::channel(64);
                let pull = super::registry::pull(store.clone(), reference.to_string(), tx);
                let forward = async {
                    while let Some(l) = rx.recv().await {
                        if let Ok(l) = l {
                            let _ = self
                                .progress
                                .say(format!("#{} {l}", self.progress.next))
                                .await;
                        }
                    }
                };
                let (pulled, ()) = tokio::join!(pull, forward);
                pulled.map_err(|e| {
                    self.located(
                        line,
                        format!("FROM {reference}: the image is not in the native store and cannot be pulled: {e} (load or import it first: rcompose image load / image import)"),
                    )
                })?;
                let r = reference.to_string();
                blocking(move || store.find(&r)).await?.ok_or_else(|| {
                    self.located(line, format!("FROM {reference}: not found after pulling"))
                })?
            }
        };
        let host = Platform::host();
        let arch = image.config.get("architecture").and_then(Value::as_str);
        if arch.is_some_and(|a| !a.is_empty() && a != host.architecture) {
            return Err(self.located(
                line,
                format!(
                    "FROM {reference}: the image is for {}, this machine runs {} (the native builder does not emulate)",
                    arch.unwrap_or_default(),
                    host.architecture
                ),
            ));
        }
        if !image.config.is_object() {
            return Err(self.located(
                line,
                format!("FROM {reference}: the image's configuration is not an object"),
            ));
        }
        Ok(Image {
            config: image.config.clone(),
            layers: image.manifest_doc.layers.clone(),
            key: hash(&["image", image.id.as_str()]),
        })
    }

    /// Runs one instruction on the image.
    async fn step(
        &mut self,
        image: &mut Image,
        args: &mut BTreeMap<String, String>,
        title: &str,
        step: &dockerfile::Step,
    ) -> Result<()> {
        let line = step.line;
        // Variables of the expansion: the stage's arguments, its
        // environment over them.
        let mut vars = args.clone();
        for kv in image.env() {
            let (k, v) = kv.split_once('=').unwrap_or((&kv, ""));
            vars.insert(k.to_string(), v.to_string());
        }
        let ex = |word: &str| -> Result<String> {
            dockerfile::expand(word, '\\', &|k| vars.get(k).cloned())
                .map_err(|e| self.located(line, e))
        };
        match &step.instruction {
            Instruction::Arg(list) => {
                for (name, default) in list {
                    let value = match (self.spec.args.get(name), default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(d)) => Some(ex(d)?),
                        (None, None) => self.global.get(name).cloned(),
                    };
                    match value {
                        Some(v) => args.insert(name.clone(), v),
                        None => args.remove(name),
                    };
                }
                let text = format!("ARG {}", serde_json::to_string(&*args).unwrap_or_default());
                image.key = hash(&[&image.key, &text]);
            }
            Instruction::Env(pairs) => {
                let mut env = image.env();
                let mut text = String::from("ENV");
                for (k, v) in pairs {
                    let v = ex(v)?;
                    env.retain(|e| e.split_once('=').map_or(e.as_str(), |(n, _)| n) != k);
                    env.push(format!("{k}={v}"));
                    text.push_str(&format!(" {k}={v}"));
                }
                image.inner().insert("Env".into(), json!(env));
                image.describe(&text);
            }
            Instruction::Label(pairs) => {
                let mut text = String::from("LABEL");
                let inner = image.inner();
                if !inner.get("Labels").is_some_and(Value::is_object) {
                    inner.insert("Labels".into(), json!({}));
                }
                for (k, v) in pairs {
                    let (k, v) = (ex(k)?, ex(v)?);
                    text.push_str(&format!(" {k}={v}"));
                    inner["Labels"][&k] = json!(v);
                }
                image.describe(&text);
            }
            Instruction::Workdir(dir) => {
                let dir = ex(dir)?;
                let joined = if dir.starts_with('/') {
                    dir
                } else {
                    format!("{}/{dir}", image.workdir())
                };
                let clean = crate::context::clean_path(&joined);
                image.inner().insert("WorkingDir".into(), json!(clean));
                image.describe(&format!("WORKDIR {clean}"));
            }
            Instruction::User(user) => {
                let user = ex(user)?;
                image.inner().insert("User".into(), json!(user));
                image.describe(&format!("USER {user}"));
            }
            Instruction::Expose(list) => {
                let mut ports = image
                    .get("ExposedPorts")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for word in list {
                    for p in expose(&ex(word)?).map_err(|e| self.located(line, e))? {
                        ports.insert(p, json!({}));
                    }
                }
                image
                    .inner()
                    .insert("ExposedPorts".into(), Value::Object(ports));
                image.describe(&format!("EXPOSE {}", list.join(" ")));
            }
            Instruction::Volume(list) => {
                let mut volumes = image
                    .get("Volumes")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                for v in list {
                    let v = ex(v)?;
                    if v.is_empty() {
                        return Err(self.located(line, "VOLUME names an empty path"));
                    }
                    volumes.insert(v, json!({}));
                }
                image
                    .inner()
                    .insert("Volumes".into(), Value::Object(volumes));
                image.describe(&format!("VOLUME {list:?}"));
            }
            Instruction::Cmd(c) => {
                let argv = c.argv(&image.shell());
                image.inner().insert("Cmd".into(), json!(argv));
                image.describe(&format!("CMD {}", json!(argv)));
            }
            Instruction::Entrypoint(c) => {
                let argv = c.argv(&image.shell());
                let inner = image.inner();
                inner.insert("Entrypoint".into(), json!(argv));
                // A new entrypoint drops the command the base gave.
                inner.remove("Cmd");
                image.describe(&format!("ENTRYPOINT {}", json!(argv)));
            }
            Instruction::Healthcheck(h) => {
                let value = health(h, &image.shell()).map_err(|e| self.located(line, e))?;
                image.inner().insert("Healthcheck".into(), value.clone());
                image.describe(&format!("HEALTHCHECK {value}"));
            }
            Instruction::StopSignal(s) => {
                let s = ex(s)?;
                image.inner().insert("StopSignal".into(), json!(s));
                image.describe(&format!("STOPSIGNAL {s}"));
            }
            Instruction::Shell(s) => {
                image.inner().insert("Shell".into(), json!(s));
                image.describe(&format!("SHELL {}", json!(s)));
            }
            Instruction::OnBuild(t) => {
                let mut list = strings(image.get("OnBuild"));
                list.push(t.clone());
                image.inner().insert("OnBuild".into(), json!(list));
                image.describe(&format!("ONBUILD {t}"));
            }
            Instruction::Maintainer(m) => {
                image.config["author"] = json!(m);
                image.describe(&format!("MAINTAINER {m}"));
            }
            Instruction::Run { command, network } => {
                let argv = command.argv(&image.shell());
                // The arguments are the command's environment, under the
                // image's own.
                let env_names: BTreeSet<String> = image
                    .env()
                    .iter()
                    .map(|kv| {
                        kv.split_once('=')
                            .map_or(kv.as_str(), |(k, _)| k)
                            .to_string()
                    })
                    .collect();
                let env: Vec<String> = args
                    .iter()
                    .filter(|(k, _)| !env_names.contains(*k))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let network = network.clone().unwrap_or_else(|| self.spec.network.clone());
                let network = network_mode(&network).map_err(|e| self.located(line, e))?;
                let created_by = match command {
                    Command::Shell(s) => format!("RUN {} {s}", image.shell().join(" ")),
                    Command::Exec(v) => format!("RUN {}", json!(v)),
                };
                let key = hash(&[
                    &image.key,
                    "RUN",
                    &json!(argv).to_string(),
                    &json!(env).to_string(),
                    &format!("{network:?}"),
                ]);
                if self.cached(image, &key, title).await? {
                    return Ok(());
                }
                let v = self.progress.begin(title).await?;
                let spec = ContainerSpec {
                    command: Some(argv.clone()),
                    entrypoint: Some(Vec::new()),
                    env,
                    network_mode: network,
                    ..ContainerSpec::default()
                };
                let shown = match command {
                    Command::Shell(s) => format!("{} {s:?}", image.shell().join(" ")),
                    Command::Exec(v) => json!(v).to_string(),
                };
                self.layer_step(image, spec, Some(v), line, &shown, None)
                    .await?;
                image.history(&created_by, false);
                self.store_as(image, &key).await?;
                self.progress.done(v).await?;
            }
            Instruction::Copy(copy) => {
                let sources = copy
                    .sources
                    .iter()
                    .map(|s| ex(s))
                    .collect::<Result<Vec<_>>>()?;
                let dest = ex(&copy.dest)?;
                let chown = copy.chown.as_deref().map(ex).transpose()?;
                let chmod = match copy.chmod.as_deref().map(ex).transpose()? {
                    Some(m) => Some(
                        u32::from_str_radix(&m, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| {
                                self.located(line, format!("--chmod={m}: not an octal mode"))
                            })?,
                    ),
                    None => None,
                };
                let from = match &copy.from {
                    Some(f) => Some(self.copy_source(f, line).await?),
                    None => None,
                };
                let plan = CopyPlan {
                    add: copy.add,
                    sources,
                    dest,
                    chown,
                    chmod,
                    workdir: image.workdir(),
                };
                let content = match &from {
                    None => {
                        let root = self.context.root.clone();
                        let entries = self.entries.clone();
                        let p = plan.clone();
                        blocking(move || context_digest(&root, &entries, &p))
                            .await
                            .map_err(|e| self.located(line, e))?
                    }
                    Some(f) => f.id.clone(),
                };
                let key = hash(&[&image.key, "COPY", &format!("{plan:?}"), &content]);
                if self.cached(image, &key, title).await? {
                    return Ok(());
                }
                let v = self.progress.begin(title).await?;
                let spec = ContainerSpec {
                    command: Some(vec!["true".into()]),
                    entrypoint: Some(Vec::new()),
                    network_mode: NetworkMode::None,
                    ..ContainerSpec::default()
                };
                let what = Copying {
                    plan,
                    from,
                    context: self.context.root.clone(),
                    entries: self.entries.clone(),
                };
                self.layer_step(image, spec, None, line, "", Some(what))
                    .await?;
                let verb = if copy.add { "ADD" } else { "COPY" };
                image.history(
                    &format!("{verb} {} {}", copy.sources.join(" "), copy.dest),
                    false,
                );
                self.store_as(image, &key).await?;
                self.progress.done(v).await?;
            }
        }
        Ok(())
    }

    /// Takes the image a cache key names, if there is one (and the cache
    /// is wanted).
    async fn cached(&mut self, image: &mut Image, key: &str, title: &str) -> Result<bool> {
        if self.spec.no_cache {
            return Ok(false);
        }
        let store = self.rt.store.clone();
        let owner = format!("build-{key}");
        let found = blocking(move || {
            Ok(store
                .pinned_by(&owner)
                .and_then(|m| store.image(&m, Vec::new()).ok()))
        })
        .await?;
        let Some(found) = found else {
            return Ok(false);
        };
        let (n, _) = self.progress.begin(title).await?;
        self.progress.say(format!("#{n} CACHED")).await?;
        if !found.config.is_object() {
            return Ok(false);
        }
        image.config = found.config.clone();
        image.layers = found.manifest_doc.layers.clone();
        image.key = key.to_string();
        Ok(true)
    }

    /// Stores the image, unnamed, and pins it under `key`.
    async fn store_as(&self, image: &mut Image, key: &str) -> Result<String> {
        image.key = key.to_string();
        let store = self.rt.store.clone();
        let img = image.clone();
        blocking(move || store_pinned(&store, &img).map(|(_, id)| id.to_string())).await
    }

    /// A step that adds a layer: a container of the image so far (run when
    /// `run` says so, copied into when `copying` says so), whose changes
    /// become the image's next layer.
    async fn layer_step(
        &self,
        image: &mut Image,
        mut spec: ContainerSpec,
        run: Option<(usize, Instant)>,
        line: usize,
        shown: &str,
        copying: Option<Copying>,
    ) -> Result<()> {
        let store = self.rt.store.clone();
        let img = image.clone();
        let id = blocking(move || store_pinned(&store, &img).map(|(_, id)| id)).await?;
        spec.name = format!("rcompose-build-{}", &super::containers::random_id()[..12]);
        spec.image = id.to_string();
        spec.userns_mode = "host".into();
        spec.labels.insert(BUILD_LABEL.into(), "true".into());
        spec.extra_hosts = self.spec.extra_hosts.clone();
        spec.shm_size = self.spec.shm_size;
        spec.hostname = "buildkitsandbox".into();
        let rt = self.rt.clone();
        let s = spec.clone();
        let container = blocking(move || rt.create(&s)).await?;
        let result = self
            .in_container(&container, run, line, shown, copying)
            .await;
        let layer = match result {
            Ok(()) => {
                let rt = self.rt.clone();
                let c = container.clone();
                blocking(move || layer_of(&rt, &c)).await
            }
            Err(e) => Err(e),
        };
        let rt = self.rt.clone();
        let c = container.clone();
        let _ = blocking(move || rt.remove(&c, true, true)).await;
        let (descriptor, diff_id) = layer?;
        image.layers.push(descriptor);
        let ids = image
            .config
            .get_mut("rootfs")
            .and_then(|r| r.get_mut("diff_ids"))
            .and_then(Value::as_array_mut);
        match ids {
            Some(ids) => ids.push(json!(diff_id.to_string())),
            None => {
                let ids: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
                image.config["rootfs"] = json!({"type": "layers", "diff_ids": ids});
            }
        }
        Ok(())
    }

    async fn in_container(
        &self,
        container: &str,
        run: Option<(usize, Instant)>,
        line: usize,
        shown: &str,
        copying: Option<Copying>,
    ) -> Result<()> {
        if let Some(what) = copying {
            let rt = self.rt.clone();
            let c = container.to_string();
            let name = self.dockerfile_name.clone();
            return blocking(move || {
                what.apply(&rt, &c)
                    .map_err(|e| RuntimeError::Engine(format!("{name}: line {line}: {e}")))
            })
            .await;
        }
        let Some((n, t)) = run else {
            return Ok(());
        };
        let rt = self.rt.clone();
        let c = container.to_string();
        blocking(move || rt.start(&c)).await?;
        let mut logs = self.rt.log_stream(
            container,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )?;
        let mut partial = String::new();
        while let Some(item) = logs.next().await {
            let Ok(l) = item else { break };
            partial.push_str(&l.text);
            while let Some(i) = partial.find('\n') {
                let text: String = partial.drain(..=i).collect();
                self.progress
                    .say(format!(
                        "#{n} {:.3} {}",
                        t.elapsed().as_secs_f64(),
                        text.trim_end_matches(['\n', '\r'])
                    ))
                    .await?;
            }
        }
        if !partial.is_empty() {
            self.progress
                .say(format!("#{n} {:.3} {partial}", t.elapsed().as_secs_f64()))
                .await?;
        }
        let code = self.rt.wait(container).await?;
        if code != 0 {
            return Err(self.located(
                line,
                format!("process {shown} did not complete successfully: exit code: {code}"),
            ));
        }
        Ok(())
    }

    /// Where a `COPY --from` takes its files: a stage built before, or an
    /// image.
    async fn copy_source(&mut self, from: &str, line: usize) -> Result<FromImage> {
        let current = self.file.stages.len();
        if let Some(i) = self.stage_named(from, current) {
            let Some(built) = self.built.get(&i).cloned() else {
                return Err(self.located(
                    line,
                    format!("COPY --from={from}: the stage is not built yet (it comes later)"),
                ));
            };
            let id = match built.id {
                Some(id) => id,
                None => {
                    let store = self.rt.store.clone();
                    let img = built.image.clone();
                    let id =
                        blocking(move || store_pinned(&store, &img).map(|(_, id)| id.to_string()))
                            .await?;
                    if let Some(b) = self.built.get_mut(&i) {
                        b.id = Some(id.clone());
                    }
                    id
                }
            };
            return Ok(FromImage { id });
        }
        let image = self.base_image(from, line).await?;
        let store = self.rt.store.clone();
        let id =
            blocking(move || store_pinned(&store, &image).map(|(_, id)| id.to_string())).await?;
        Ok(FromImage { id })
    }

    /// Names the target stage's image.
    async fn finish(&mut self, mut image: Image) -> Result<()> {
        if !self.spec.labels.is_empty() {
            let inner = image.inner();
            if !inner.get("Labels").is_some_and(Value::is_object) {
                inner.insert("Labels".into(), json!({}));
            }
            for (k, v) in &self.spec.labels {
                inner["Labels"][k] = json!(v);
            }
        }
        // The same build twice is the same image, as BuildKit's: the first
        // one, found by the pin of its key, creation time and all (and so
        // `up --build` recreates nothing when nothing changed).
        let labels = serde_json::to_string(&self.spec.labels).unwrap_or_default();
        let owner = format!("{FINAL_PIN}{}", hash(&[&image.key, &labels]));
        let reuse = !self.spec.no_cache;
        image.config["created"] = json!(jiff::Timestamp::now().to_string());
        let names = self
            .spec
            .tags
            .iter()
            .map(|t| crate::reference::normalize(t))
            .collect::<Result<Vec<_>>>()?;
        let v = self.progress.begin("exporting to image").await?;
        let store = self.rt.store.clone();
        let img = image.clone();
        let names2 = names.clone();
        let id = blocking(move || {
            let _writing = store.writing()?;
            let earlier = store
                .pinned_by(&owner)
                .filter(|_| reuse)
                .and_then(|m| store.image(&m, Vec::new()).ok());
            let (manifest, id) = match earlier {
                Some(found) => (found.manifest, found.id),
                None => {
                    let stored = store_document(&store, &img)?;
                    // Pinned once known whole: a later build must not
                    // take an image that cannot be used.
                    store.complete(&stored.0, &stored.1.to_string())?;
                    store.pin(&owner, &stored.0)?;
                    stored
                }
            };
            // The index is written again only when a name moves.
            let named: BTreeSet<&String> = BTreeSet::from_iter(&names2);
            let index = store.index()?;
            let already = index
                .manifests
                .iter()
                .filter(|d| d.digest == manifest)
                .filter_map(|d| d.annotations.get(REF_NAME))
                .filter(|n| named.contains(n))
                .count();
            if already != named.len() || names2.is_empty() {
                let descriptor = store.complete(&manifest, &id.to_string())?;
                store.name(&descriptor, &names2)?;
            }
            Ok(id)
        })
        .await?;
        self.progress
            .say(format!("#{} writing image {id} done", v.0))
            .await?;
        for n in &names {
            self.progress
                .say(format!("#{} naming to {n} done", v.0))
                .await?;
        }
        self.progress.done(v).await
    }
}

/// `check_platform`: only this machine's platform is built.
fn check_platform(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Ok(());
    }
    let host = Platform::host();
    let mut parts = p.split('/');
    let (os, arch) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if os == host.os && (arch.is_empty() || arch == host.architecture) {
        Ok(())
    } else {
        Err(format!(
            "{p}: the native builder builds for {}/{} only, this machine's platform",
            host.os, host.architecture
        ))
    }
}

/// A `RUN`'s network: the host's unless `none` (or a mode that is not
/// known) is asked for.
fn network_mode(network: &str) -> std::result::Result<NetworkMode, String> {
    match network {
        "" | "default" | "host" | "bridge" => Ok(NetworkMode::Host),
        "none" => Ok(NetworkMode::None),
        other => Err(format!(
            "network {other:?}: the native builder gives a build the host's network (default, host) or none"
        )),
    }
}

/// `EXPOSE`'s word as ports (`80`, `80/udp`, `8000-8002/tcp`).
fn expose(word: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = word.split_once('/').unwrap_or((word, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("EXPOSE {word}: unknown protocol {proto}"));
    }
    let number = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("EXPOSE {word}: invalid port {s:?}"))
    };
    let (lo, hi) = match ports.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => {
            let p = number(ports)?;
            (p, p)
        }
    };
    if hi < lo {
        return Err(format!("EXPOSE {word}: invalid range"));
    }
    Ok((lo..=hi).map(|p| format!("{p}/{proto}")).collect())
}

/// A Go duration (`30s`, `1m30s`, `500ms`) in nanoseconds.
fn duration_ns(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..end].parse().ok()?;
        rest = &rest[end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(total as i64)
}

/// `HEALTHCHECK` as the image configuration holds it.
fn health(h: &Health, shell: &[String]) -> std::result::Result<Value, String> {
    let Some(test) = &h.test else {
        return Ok(json!({"Test": ["NONE"]}));
    };
    let mut out = json!({
        "Test": match test {
            Command::Shell(s) => json!(["CMD-SHELL", s]),
            Command::Exec(v) => json!(["CMD"].into_iter().map(String::from).chain(v.iter().cloned()).collect::<Vec<_>>()),
        }
    });
    let _ = shell;
    for (flag, key) in [
        ("interval", "Interval"),
        ("timeout", "Timeout"),
        ("start-period", "StartPeriod"),
        ("start-interval", "StartInterval"),
    ] {
        if let Some(d) = h.durations.get(flag) {
            let ns = duration_ns(d)
                .ok_or_else(|| format!("HEALTHCHECK --{flag}={d}: not a duration"))?;
            out[key] = json!(ns);
        }
    }
    if let Some(r) = h.retries {
        out["Retries"] = json!(r);
    }
    Ok(out)
}

/// Stores an image's configuration and manifest; the manifest's digest
/// and the image's id.
fn store_document(store: &super::store::Store, image: &Image) -> Result<(Digest, Digest)> {
    super::archive::store_document(store, &image.config, image.layers.clone())
}

/// Stores an image unnamed, kept by the pin of its cache key.
fn store_pinned(store: &super::store::Store, image: &Image) -> Result<(Digest, Digest)> {
    let _writing = store.writing()?;
    let (manifest, id) = store_document(store, image)?;
    store.complete(&manifest, &id.to_string())?;
    store.pin(&format!("build-{}", image.key), &manifest)?;
    Ok((manifest, id))
}

/// A stopped build container's changes, stored as a layer (and unpacked,
/// ready to be the next step's lower layer).
fn layer_of(rt: &NativeRuntime, container: &str) -> Result<(Descriptor, Digest)> {
    let o = rt.find_container(container)?;
    // The files a container's own /etc/hosts, /etc/hostname and
    // /etc/resolv.conf are mounted on, when the image had none: runc's
    // empty stubs, not the step's work (what the step wrote to them went
    // to the mounted files).
    for stub in ["etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        let path = o.paths.upper().join(stub);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = fs::remove_file(&path);
        }
    }
    let scratch = rt.store.scratch()?;
    let path = scratch.path().join("layer.tar");
    let written = (|| -> std::io::Result<fs::File> {
        let mut f = fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        super::changes::layer(&o.paths.upper(), &mut f)?;
        f.flush()?;
        f.rewind()?;
        Ok(f)
    })();
    let file = written.map_err(|e| failed("writing the step's layer", e))?;
    let _writing = rt.store.writing()?;
    let (diff_id, size) = rt.store.put_blob(file, None, "the step's layer")?;
    let descriptor = Descriptor {
        media_type: OCI_LAYER.to_string(),
        digest: diff_id.clone(),
        size,
        annotations: BTreeMap::new(),
        platform: None,
    };
    rt.store.unpack(&descriptor, &diff_id, "the step's layer")?;
    Ok((descriptor, diff_id))
}

/// A stored image a `COPY --from` reads.
#[derive(Debug, Clone)]
struct FromImage {
    id: String,
}

/// What a `COPY` or `ADD` copies, expanded.
#[derive(Debug, Clone)]
struct CopyPlan {
    add: bool,
    sources: Vec<String>,
    dest: String,
    chown: Option<String>,
    chmod: Option<u32>,
    workdir: String,
}

/// A copy to apply to a step's container.
struct Copying {
    plan: CopyPlan,
    from: Option<FromImage>,
    context: PathBuf,
    entries: BTreeSet<String>,
}

/// One file or directory to copy: where it is, and its name under the
/// destination.
#[derive(Debug)]
struct Source {
    path: PathBuf,
    name: String,
    /// Its path in the build context (none from an image).
    rel: Option<String>,
    /// A directory whose content (not itself) goes to the destination.
    contents: bool,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The context's sources of a plan (after `.dockerignore`), as
/// context-relative paths.
fn context_sources(
    entries: &BTreeSet<String>,
    root: &Path,
    plan: &CopyPlan,
) -> std::result::Result<Vec<(String, Source)>, String> {
    let mut out = Vec::new();
    for src in &plan.sources {
        if plan.add && (src.contains("://") || src.starts_with("git@")) {
            return Err(format!(
                "ADD {src}: the native builder does not download (no remote source is fetched); put the file in the build context and COPY it"
            ));
        }
        let clean = crate::context::clean_path(src.trim_start_matches('/'));
        if clean == ".." || clean.starts_with("../") {
            return Err(format!("{src}: outside the build context"));
        }
        let matched: Vec<String> = if clean == "." {
            vec![".".to_string()]
        } else if has_glob(&clean) {
            entries
                .iter()
                .filter(|e| crate::context::glob_matches(&clean, e).unwrap_or(false))
                .cloned()
                .collect()
        } else if entries.contains(&clean) {
            vec![clean.clone()]
        } else {
            Vec::new()
        };
        if matched.is_empty() {
            return Err(format!(
                "{src}: not found in the build context (or excluded by .dockerignore)"
            ));
        }
        for m in matched {
            let path = if m == "." {
                root.to_path_buf()
            } else {
                root.join(&m)
            };
            let is_dir = fs::symlink_metadata(&path).is_ok_and(|md| md.is_dir());
            let name = Path::new(&m)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((
                m.clone(),
                Source {
                    path,
                    name,
                    rel: Some(m),
                    contents: is_dir,
                },
            ));
        }
    }
    Ok(out)
}

/// A digest of what a copy from the context takes: paths, modes, link
/// targets and contents.
fn context_digest(root: &Path, entries: &BTreeSet<String>, plan: &CopyPlan) -> Result<String> {
    let sources = context_sources(entries, root, plan).map_err(RuntimeError::Engine)?;
    let mut h = Sha256::new();
    for (rel, source) in sources {
        let prefix = if rel == "." {
            String::new()
        } else {
            format!("{rel}/")
        };
        let mut paths = vec![rel.clone()];
        if source.contents {
            paths.extend(
                entries
                    .iter()
                    .filter(|e| rel == "." || e.starts_with(&prefix))
                    .cloned(),
            );
        }
        for p in paths {
            let path = if p == "." {
                root.to_path_buf()
            } else {
                root.join(&p)
            };
            let md = fs::symlink_metadata(&path)
                .map_err(|e| failed(format!("reading {}", path.display()), e))?;
            h.update(p.as_bytes());
            h.update(format!("\0{:o}\0", md.mode()).as_bytes());
            if md.file_type().is_symlink() {
                let target = fs::read_link(&path).unwrap_or_default();
                h.update(target.to_string_lossy().as_bytes());
            } else if md.is_file() {
                let mut f = fs::File::open(&path)
                    .map_err(|e| failed(format!("reading {}", path.display()), e))?;
                std::io::copy(&mut f, &mut h)
                    .map_err(|e| failed(format!("reading {}", path.display()), e))?;
            }
            h.update([0]);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

impl Copying {
    /// Writes the sources into the (stopped) container's root filesystem.
    fn apply(&self, rt: &NativeRuntime, container: &str) -> std::result::Result<(), String> {
        let o = rt.find_container(container).map_err(|e| e.to_string())?;
        match &self.from {
            None => rt
                .with_root(&o, |root| {
                    self.copy_into(root, None).map_err(RuntimeError::Engine)
                })
                .map_err(|e| e.to_string()),
            Some(from) => {
                // The source's files, through a container of its own.
                let spec = ContainerSpec {
                    name: format!("rcompose-build-{}", &super::containers::random_id()[..12]),
                    image: from.id.clone(),
                    command: Some(vec!["true".into()]),
                    entrypoint: Some(Vec::new()),
                    network_mode: NetworkMode::None,
                    userns_mode: "host".into(),
                    labels: BTreeMap::from([(BUILD_LABEL.to_string(), "true".to_string())]),
                    ..ContainerSpec::default()
                };
                let source = rt.create(&spec).map_err(|e| e.to_string())?;
                let result = rt
                    .find_container(&source)
                    .and_then(|s| {
                        rt.with_root(&s, |src_root| {
                            rt.with_root(&o, |root| {
                                self.copy_into(root, Some(src_root))
                                    .map_err(RuntimeError::Engine)
                            })
                        })
                    })
                    .map_err(|e| e.to_string());
                let _ = rt.remove(&source, true, true);
                result
            }
        }
    }

    /// The sources of an image's root filesystem `src_root`.
    fn image_sources(&self, src_root: &Path) -> std::result::Result<Vec<Source>, String> {
        let mut out = Vec::new();
        for src in &self.plan.sources {
            let clean = crate::context::clean_path(&format!("/{src}"));
            let (dir, last) = match clean.rsplit_once('/') {
                Some((d, l)) => (d.to_string(), l.to_string()),
                None => (String::new(), clean.clone()),
            };
            let candidates: Vec<String> = if has_glob(&last) {
                let d = resolve_in(src_root, &dir)?;
                let mut names: Vec<String> = fs::read_dir(&d)
                    .map_err(|e| format!("{src}: {e}"))?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| crate::context::glob_matches(&last, n).unwrap_or(false))
                    .collect();
                names.sort();
                names.into_iter().map(|n| format!("{dir}/{n}")).collect()
            } else {
                vec![clean.clone()]
            };
            if candidates.is_empty() {
                return Err(format!("{src}: not found in the --from image"));
            }
            for c in candidates {
                let path = resolve_in(src_root, &c)
                    .map_err(|_| format!("{src}: not found in the --from image"))?;
                let is_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
                let name = Path::new(&c)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push(Source {
                    path,
                    name,
                    rel: None,
                    contents: is_dir,
                });
            }
        }
        Ok(out)
    }

    fn copy_into(&self, root: &Path, src_root: Option<&Path>) -> std::result::Result<(), String> {
        let plan = &self.plan;
        let sources: Vec<Source> = match src_root {
            None => context_sources(&self.entries, &self.context, plan)?
                .into_iter()
                .map(|(_, s)| s)
                .collect(),
            Some(r) => self.image_sources(r)?,
        };
        // Owners: `--chown`'s as the image's files name them; else root's
        // for the context's files (sent as root's, as the Docker CLI does)
        // and the source's own for a `--from`'s, as BuildKit keeps them.
        let owner = match &plan.chown {
            Some(c) => {
                let (u, g, _) = super::bundle::resolve_user(root, c)
                    .map_err(|e| format!("--chown={c}: {e}"))?;
                Some((u, g))
            }
            None if src_root.is_none() => Some((0, 0)),
            None => None,
        };
        let dest = if plan.dest.starts_with('/') {
            plan.dest.clone()
        } else {
            format!("{}/{}", plan.workdir, plan.dest)
        };
        let dest_is_dir = plan.dest.ends_with('/') || plan.dest == "." || plan.dest.ends_with("/.");
        let dest = crate::context::clean_path(&dest);
        let several = sources.len() > 1;
        if several && !dest_is_dir {
            return Err(format!(
                "copying several sources to {}: the destination must be a directory and end with a /",
                plan.dest
            ));
        }
        let single_file = sources.len() == 1 && !sources[0].contents;
        // Where the archive goes, and under which name a single file.
        let existing_dir = open_dir(root, &dest).is_ok();
        let (into, rename) = if single_file && !dest_is_dir && !existing_dir {
            let (parent, name) = match dest.rsplit_once('/') {
                Some((p, n)) => (
                    if p.is_empty() {
                        "/".to_string()
                    } else {
                        p.to_string()
                    },
                    n.to_string(),
                ),
                None => ("/".to_string(), dest.clone()),
            };
            (parent, Some(name))
        } else {
            (dest.clone(), None)
        };
        let dir = make_dirs(root, &into)?;
        let through = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        for s in &sources {
            if plan.add && !s.contents && src_root.is_none() {
                if let Some(archive) = archive_reader(&s.path)? {
                    super::unpack::unpack_tree(archive, &through)
                        .map_err(|e| format!("extracting {}: {e}", s.name))?;
                    continue;
                }
            }
            let walk = Walk {
                owner,
                chmod: plan.chmod,
                keep: s.rel.as_ref().map(|_| &self.entries),
            };
            if s.contents {
                walk.tree(&mut tar, &s.path, "", s.rel.as_deref().unwrap_or(""))?;
            } else {
                let name = rename.clone().unwrap_or_else(|| s.name.clone());
                walk.one(&mut tar, &s.path, &name)?;
            }
        }
        let bytes = tar.into_inner().map_err(|e| e.to_string())?;
        super::unpack::unpack_tree(bytes.as_slice(), &through)
            .map_err(|e| format!("copying to {dest}: {e}"))?;
        Ok(())
    }
}

/// A path inside `root`, resolved without leaving it, as a path to open.
fn resolve_in(root: &Path, path: &str) -> std::result::Result<PathBuf, String> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.to_string())?;
    let rel = path.trim_start_matches('/');
    let fd = openat2(
        &root_fd,
        if rel.is_empty() { "." } else { rel },
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| format!("{path}: {e}"))?;
    // The place it resolved to, as the host names it (the roots are the
    // build's own containers', which nothing else changes meanwhile).
    let target =
        fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).map_err(|e| e.to_string())?;
    Ok(target)
}

fn open_dir(root: &Path, path: &str) -> rustix::io::Result<OwnedFd> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    openat2(
        &root_fd,
        if rel.is_empty() { "." } else { rel },
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

/// `mkdir -p` inside `root` (never leaving it); the directory, opened.
fn make_dirs(root: &Path, path: &str) -> std::result::Result<OwnedFd, String> {
    use rustix::fs::{mkdirat, openat2, Mode, OFlags, ResolveFlags};
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| e.to_string())?;
    let mut current = String::new();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        if part == ".." {
            return Err(format!("{path}: leaves the root"));
        }
        let next = if current.is_empty() {
            part.to_string()
        } else {
            format!("{current}/{part}")
        };
        match open_dir(root, &next) {
            Ok(_) => {}
            Err(rustix::io::Errno::NOENT) => {
                let parent = openat2(
                    &root_fd,
                    if current.is_empty() {
                        "."
                    } else {
                        current.as_str()
                    },
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                )
                .map_err(|e| format!("/{current}: {e}"))?;
                mkdirat(&parent, part, Mode::from_raw_mode(0o755))
                    .map_err(|e| format!("creating /{next}: {e}"))?;
            }
            Err(rustix::io::Errno::NOTDIR) => return Err(format!("/{next} is not a directory")),
            Err(e) => return Err(format!("/{next}: {e}")),
        }
        current = next;
    }
    open_dir(root, &current).map_err(|e| format!("/{current}: {e}"))
}

/// A local archive `ADD` extracts (tar, plain or gzip), if `path` is one.
fn archive_reader(path: &Path) -> std::result::Result<Option<Box<dyn Read>>, String> {
    let mut head = [0u8; 512];
    let mut f = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let n = f.read(&mut head).map_err(|e| e.to_string())?;
    f.rewind().map_err(|e| e.to_string())?;
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        let mut probe =
            flate2::read::GzDecoder::new(fs::File::open(path).map_err(|e| e.to_string())?);
        let mut inner = [0u8; 512];
        let ok = probe.read_exact(&mut inner).is_ok() && &inner[257..262] == b"ustar";
        return Ok(ok.then(|| Box::new(flate2::read::GzDecoder::new(f)) as Box<dyn Read>));
    }
    if n == 512 && &head[257..262] == b"ustar" {
        return Ok(Some(Box::new(f)));
    }
    Ok(None)
}

/// How sources go into a copy's archive.
struct Walk<'a> {
    /// Owner of every entry; `None` keeps the source's.
    owner: Option<(u32, u32)>,
    /// Mode of every entry; `None` keeps the source's.
    chmod: Option<u32>,
    /// The context's paths after `.dockerignore`: what a walk of a context
    /// directory may take (none for an image's files).
    keep: Option<&'a BTreeSet<String>>,
}

impl Walk<'_> {
    fn header(&self, md: &fs::Metadata) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_mode(self.chmod.unwrap_or(md.mode() & 0o7777));
        let (uid, gid) = self.owner.unwrap_or((md.uid(), md.gid()));
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(gid));
        h.set_mtime(md.mtime().max(0) as u64);
        h
    }

    /// One file, link or directory (the directory alone) under `name`.
    fn one(
        &self,
        tar: &mut tar::Builder<Vec<u8>>,
        path: &Path,
        name: &str,
    ) -> std::result::Result<(), String> {
        let fail = |e: std::io::Error| format!("{}: {e}", path.display());
        let md = fs::symlink_metadata(path).map_err(fail)?;
        let mut h = self.header(&md);
        if md.file_type().is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_mode(0o777);
            h.set_size(0);
            let target = fs::read_link(path).map_err(fail)?;
            tar.append_link(&mut h, name, target).map_err(fail)
        } else if md.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            tar.append_data(&mut h, format!("{name}/"), std::io::empty())
                .map_err(fail)
        } else if md.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.len());
            let f = fs::File::open(path).map_err(fail)?;
            tar.append_data(&mut h, name, f).map_err(fail)
        } else {
            Ok(()) // sockets, fifos, devices are not copied
        }
    }

    /// A directory's content, under `prefix`; `rel` is the directory's
    /// path in the context (for `.dockerignore`).
    fn tree(
        &self,
        tar: &mut tar::Builder<Vec<u8>>,
        dir: &Path,
        prefix: &str,
        rel: &str,
    ) -> std::result::Result<(), String> {
        let mut children: Vec<_> = fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .collect();
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let file = c.file_name().to_string_lossy().into_owned();
            let name = format!("{prefix}{file}");
            let child_rel = if rel.is_empty() || rel == "." {
                file
            } else {
                format!("{rel}/{file}")
            };
            let kept = self.keep.is_none_or(|k| k.contains(&child_rel));
            let path = c.path();
            if kept {
                self.one(tar, &path, &name)?;
            }
            // An excluded directory may hold paths a `!pattern` brings
            // back: they are in the kept set on their own.
            let inside = format!("{child_rel}/");
            let brought_back = |k: &BTreeSet<String>| {
                k.range(inside.clone()..)
                    .next()
                    .is_some_and(|e| e.starts_with(&inside))
            };
            if c.file_type().is_ok_and(|t| t.is_dir())
                && (kept || self.keep.is_some_and(brought_back))
            {
                self.tree(tar, &path, &format!("{name}/"), &child_rel)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_ports_and_ranges() {
        assert_eq!(
            expose("80").unwrap_or_else(|e| panic!("{e:?}")),
            vec!["80/tcp"]
        );
        assert_eq!(
            expose("53/UDP").unwrap_or_else(|e| panic!("{e:?}")),
            vec!["53/udp"]
        );
        assert_eq!(
            expose("8000-8002").unwrap_or_else(|e| panic!("{e:?}")),
            vec!["8000/tcp", "8001/tcp", "8002/tcp"]
        );
        assert!(expose("http").is_err());
        assert!(expose("80/xyz").is_err());
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        assert_eq!(duration_ns("30s"), Some(30_000_000_000));
        assert_eq!(duration_ns("1m30s"), Some(90_000_000_000));
        assert_eq!(duration_ns("500ms"), Some(500_000_000));
        assert_eq!(duration_ns("1.5s"), Some(1_500_000_000));
        assert_eq!(duration_ns("5"), None);
        assert_eq!(duration_ns(""), None);
    }

    #[test]
    fn healthcheck_forms() {
        let h = Health {
            test: Some(Command::Shell("curl -f x".into())),
            durations: BTreeMap::from([("interval".to_string(), "5s".to_string())]),
            retries: Some(3),
        };
        let v = health(&h, &[]).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(v["Test"], json!(["CMD-SHELL", "curl -f x"]));
        assert_eq!(v["Interval"], json!(5_000_000_000i64));
        assert_eq!(v["Retries"], json!(3));
        assert_eq!(
            health(&Health::default(), &[]).unwrap_or_else(|e| panic!("{e:?}"))["Test"],
            json!(["NONE"])
        );
    }

    #[test]
    fn platforms_and_networks() {
        let host = Platform::host();
        assert!(check_platform("").is_ok());
        assert!(check_platform(&format!("linux/{}", host.architecture)).is_ok());
        assert!(check_platform("linux/s390x").is_err());
        assert!(check_platform("windows/amd64").is_err());
        assert_eq!(
            network_mode("").unwrap_or_else(|e| panic!("{e:?}")),
            NetworkMode::Host
        );
        assert_eq!(
            network_mode("none").unwrap_or_else(|e| panic!("{e:?}")),
            NetworkMode::None
        );
        assert!(network_mode("mynet").is_err());
    }

    #[test]
    fn context_sources_follow_globs_and_the_ignore_file() {
        let dir = std::env::temp_dir().join(format!("rcompose-build-src-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("src/sub")).unwrap_or_else(|e| panic!("{e:?}"));
        for f in ["a.php", "b.php", "src/c.php", "src/sub/d.txt"] {
            fs::write(dir.join(f), f).unwrap_or_else(|e| panic!("{e:?}"));
        }
        let entries: BTreeSet<String> = [
            "a.php",
            "b.php",
            "src",
            "src/c.php",
            "src/sub",
            "src/sub/d.txt",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let plan = |sources: &[&str]| CopyPlan {
            add: false,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            dest: "/app/".into(),
            chown: None,
            chmod: None,
            workdir: "/".into(),
        };
        let names = |p: &CopyPlan| -> Vec<String> {
            context_sources(&entries, &dir, p)
                .unwrap_or_else(|e| panic!("{e:?}"))
                .into_iter()
                .map(|(rel, _)| rel)
                .collect()
        };
        assert_eq!(names(&plan(&["*.php"])), vec!["a.php", "b.php"]);
        assert_eq!(names(&plan(&["./src"])), vec!["src"]);
        assert_eq!(names(&plan(&["."])), vec!["."]);
        let missing = context_sources(&entries, &dir, &plan(&["nope.php"]))
            .err()
            .unwrap_or_default();
        assert!(missing.contains("nope.php"), "{missing}");
        let outside = context_sources(&entries, &dir, &plan(&["../x"]))
            .err()
            .unwrap_or_default();
        assert!(outside.contains("outside"), "{outside}");
        // The digest follows a file's content.
        let before =
            context_digest(&dir, &entries, &plan(&["src"])).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            before,
            context_digest(&dir, &entries, &plan(&["src"])).unwrap_or_else(|e| panic!("{e:?}"))
        );
        fs::write(dir.join("src/sub/d.txt"), "changed").unwrap_or_else(|e| panic!("{e:?}"));
        assert_ne!(
            before,
            context_digest(&dir, &entries, &plan(&["src"])).unwrap_or_else(|e| panic!("{e:?}"))
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
