//! `image load|save|import|ls|inspect|tag|rm|prune`: the runtime's images,
//! with Docker's flags and output, on whichever runtime the command drives.

use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use super::{connect, human_ago, print_table};

/// `image`.
#[derive(Args, Debug)]
pub struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Load images from a tar archive (docker save or OCI) or standard input
    Load {
        /// Read from this archive file instead of standard input
        #[arg(short, long)]
        input: Option<PathBuf>,
        /// Suppress the load output
        #[arg(short, long)]
        quiet: bool,
    },
    /// Save images to a tar archive (standard output by default)
    Save {
        /// Write to a file instead of standard output
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Images, by name or id
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Import a root filesystem tarball to create an image
    Import {
        /// The tarball, or - for standard input
        #[arg(value_name = "FILE")]
        source: String,
        /// The new image's name
        reference: Option<String>,
        /// Apply a Dockerfile instruction to the image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)
        #[arg(short, long)]
        change: Vec<String>,
        /// Commit message for the imported image
        #[arg(short, long, default_value = "")]
        message: String,
    },
    /// List images
    #[command(alias = "list")]
    Ls {
        /// Only show image ids
        #[arg(short, long)]
        quiet: bool,
        /// Show all images (accepted for Docker's sake: none are hidden)
        #[arg(short, long)]
        all: bool,
    },
    /// Download an image from a registry
    Pull {
        /// Suppress the progress output
        #[arg(short, long)]
        quiet: bool,
        /// The image
        name: String,
    },
    /// Upload an image to a registry
    Push {
        /// Suppress the progress output
        #[arg(short, long)]
        quiet: bool,
        /// The image
        name: String,
    },
    /// Display detailed information on images
    Inspect {
        /// Images, by name or id
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag {
        /// The image to name
        source: String,
        /// Its new name
        target: String,
    },
    /// Remove images
    #[command(alias = "remove")]
    Rm {
        /// Remove the image even when it has several names
        #[arg(short, long)]
        force: bool,
        /// Images, by name or id
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove unused images
    Prune {
        /// Remove all unused images, not just unnamed ones
        #[arg(short, long)]
        all: bool,
        /// Do not prompt for confirmation
        #[arg(short, long)]
        force: bool,
    },
}

/// Runs an `image` command.
pub async fn run(args: ImageArgs) -> Result<ExitCode> {
    let rt = connect().await?;
    match args.command {
        ImageCommand::Load { input, quiet } => {
            let archive: Box<dyn Read + Send> = match &input {
                Some(path) => Box::new(
                    File::open(path).with_context(|| format!("opening {}", path.display()))?,
                ),
                None => {
                    if std::io::stdin().is_terminal() {
                        bail!("requested load from stdin, but stdin is empty");
                    }
                    Box::new(std::io::stdin())
                }
            };
            let loaded = rt.load_images(archive).await?;
            if !quiet {
                for l in &loaded {
                    if l.tags.is_empty() {
                        println!("Loaded image ID: {}", l.id);
                    }
                    for t in &l.tags {
                        println!("Loaded image: {t}");
                    }
                }
            }
        }
        ImageCommand::Save { output, images } => {
            // A file is written beside its place and renamed when whole, so
            // that a failed save leaves what was there.
            let partial = output.as_ref().map(|path| {
                let mut name = path.file_name().unwrap_or_default().to_os_string();
                name.push(format!(".partial-{}", std::process::id()));
                path.with_file_name(name)
            });
            let out: Box<dyn Write + Send> = match &partial {
                Some(path) => Box::new(
                    File::create(path).with_context(|| format!("creating {}", path.display()))?,
                ),
                None => {
                    if std::io::stdout().is_terminal() {
                        bail!(
                            "cowardly refusing to save to a terminal. Use the -o flag or redirect"
                        );
                    }
                    Box::new(std::io::stdout())
                }
            };
            let saved = rt.save_images(&images, out).await;
            if let (Some(partial), Some(output)) = (&partial, &output) {
                match &saved {
                    Ok(()) => std::fs::rename(partial, output)
                        .with_context(|| format!("writing {}", output.display()))?,
                    Err(_) => {
                        let _ = std::fs::remove_file(partial);
                    }
                }
            }
            saved?;
        }
        ImageCommand::Import {
            source: file,
            reference,
            change,
            message,
        } => {
            let tarball: Box<dyn Read + Send> = if file == "-" {
                Box::new(std::io::stdin())
            } else {
                Box::new(File::open(&file).with_context(|| format!("opening {file}"))?)
            };
            let id = rt
                .import_image(tarball, reference.as_deref(), &change, &message)
                .await?;
            println!("{id}");
        }
        ImageCommand::Ls { quiet, all: _ } => list(rt.as_ref(), quiet).await?,
        ImageCommand::Inspect { images } => {
            let mut out = Vec::new();
            let mut missing = Vec::new();
            for i in &images {
                match rt.image_details(i).await {
                    Ok(v) => out.push(v),
                    Err(runtime_shim::RuntimeError::NotFound { .. }) => missing.push(i.clone()),
                    Err(e) => return Err(e.into()),
                }
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
            if !missing.is_empty() {
                for m in &missing {
                    eprintln!("Error: No such image: {m}");
                }
                return Ok(ExitCode::from(1));
            }
        }
        ImageCommand::Pull { quiet, name } => {
            let lines = rt.pull_image(&name).await?;
            show(lines, quiet).await?;
            if quiet {
                println!("{name}");
            }
        }
        ImageCommand::Push { quiet, name } => {
            let lines = rt.push_image(&name).await?;
            show(lines, quiet).await?;
        }
        ImageCommand::Tag { source, target } => rt.tag_image(&source, &target).await?,
        ImageCommand::Rm { force, images } => {
            let mut failed = false;
            for i in &images {
                match rt.remove_image(i, force).await {
                    Ok(()) => println!("Untagged: {i}"),
                    Err(runtime_shim::RuntimeError::NotFound { .. }) => {
                        eprintln!("Error response from daemon: No such image: {i}");
                        failed = true;
                    }
                    Err(e) => {
                        eprintln!("Error response from daemon: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                return Ok(ExitCode::from(1));
            }
        }
        ImageCommand::Prune { all, force } => {
            if !force {
                let what = if all {
                    "all images without at least one container associated to them"
                } else {
                    "all dangling images"
                };
                eprint!(
                    "WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] "
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if !answer.trim().eq_ignore_ascii_case("y") {
                    return Ok(ExitCode::SUCCESS);
                }
            }
            let (removed, freed) = rt.prune_images(all).await?;
            if !removed.is_empty() {
                println!("Deleted Images:");
                for id in &removed {
                    println!("deleted: {id}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(freed));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a transfer's progress lines (unless `quiet`); fails with its
/// error.
async fn show(mut lines: runtime_shim::BoxStream<String>, quiet: bool) -> Result<()> {
    use futures_util::StreamExt;
    while let Some(line) = lines.next().await {
        let line = line?;
        // Byte counts are for live displays; a log keeps the milestones.
        if !quiet && !line.contains(": Downloading ") {
            println!("{line}");
        }
    }
    Ok(())
}

/// `image ls`: every image of the runtime, newest first.
pub(crate) async fn list(rt: &dyn runtime_shim::Engine, quiet: bool) -> Result<()> {
    let mut images = rt.list_images("").await?;
    images.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
    if quiet {
        for i in &images {
            println!("{}", short_id(&i.id));
        }
        return Ok(());
    }
    let mut rows = vec![["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]
        .map(String::from)
        .to_vec()];
    for i in &images {
        let created = if i.created > 0 {
            human_ago(i.created)
        } else {
            "N/A".to_string()
        };
        let names: Vec<(String, String)> = if i.tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            i.tags
                .iter()
                .map(|t| {
                    let parts = runtime_shim::reference::split(t);
                    let tag = parts.tag.unwrap_or("<none>");
                    (parts.repository.to_string(), tag.to_string())
                })
                .collect()
        };
        for (repo, tag) in names {
            rows.push(vec![
                repo,
                tag,
                short_id(&i.id),
                created.clone(),
                human_size(i.size.max(0) as u64),
            ]);
        }
    }
    print_table(&rows);
    Ok(())
}

/// An image id as Docker shows it: 12 hexadecimal digits.
pub(crate) fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}

/// A size as Docker shows it: decimal units, three significant digits.
pub(crate) fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit + 1 < units.len() {
        size /= 1000.0;
        unit += 1;
    }
    let digits = if size >= 100.0 {
        0
    } else if size >= 10.0 {
        1
    } else {
        2
    };
    let text = format!("{size:.digits$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_as_docker_shows_them() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(5_600), "5.6kB");
        assert_eq!(human_size(72_840_000), "72.8MB");
        assert_eq!(human_size(1_048_576), "1.05MB");
        assert_eq!(human_size(123_000_000), "123MB");
        assert_eq!(human_size(1_990_000_000), "1.99GB");
    }
}
