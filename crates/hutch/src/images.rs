//! `hutch image pull|import|ls|rm`: manage the server's images from the command line.
//!
//! `pull` shows a progress bar per layer on a terminal and plain lines otherwise; `ls` prints
//! a table, or with `--json` the API's own JSON.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use hutch_api::{Image, LayerState, PullEvent};
use hutch_client::HutchClient;

use crate::connection::{Connection, block_on};
use crate::progress::human_bytes;
use crate::sessions::{delete_each, print_json, print_table};

/// Options of `hutch image`.
#[derive(clap::Args, Debug)]
pub(crate) struct ImageArgs {
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand, Debug)]
enum ImageCommand {
    /// Pull an image from its registry into the server (only the layers it lacks).
    Pull(PullArgs),
    /// Import an OCI layout tarball or a `docker save` archive into the server.
    Import(ImportArgs),
    /// List the images you may use.
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Delete images (needs an admin token for shared images, unless the server lets
    /// tenants manage them).
    #[command(visible_alias = "delete")]
    Rm(RemoveArgs),
}

impl ImageCommand {
    fn connection(&self) -> &Connection {
        match self {
            ImageCommand::Pull(args) => &args.connection,
            ImageCommand::Import(args) => &args.connection,
            ImageCommand::Ls(args) => &args.connection,
            ImageCommand::Rm(args) => &args.connection,
        }
    }
}

#[derive(clap::Args, Debug)]
struct PullArgs {
    #[command(flatten)]
    connection: Connection,
    /// The image: `python:3.11`, `localhost:5000/team/tool:1.2`, `…@sha256:…`.
    reference: String,
    /// Print plain progress lines even on a terminal.
    #[arg(long)]
    plain: bool,
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    #[command(flatten)]
    connection: Connection,
    /// The archive.
    file: PathBuf,
    /// The name to store the image under (the archive must hold one image); without it, the
    /// names the archive holds.
    #[arg(long)]
    name: Option<String>,
}

#[derive(clap::Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    connection: Connection,
    /// Print the API's JSON instead of a table.
    #[arg(long, conflicts_with = "quiet")]
    json: bool,
    /// Print only names, one a line.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Args, Debug)]
struct RemoveArgs {
    #[command(flatten)]
    connection: Connection,
    /// The images.
    #[arg(required = true)]
    images: Vec<String>,
}

pub(crate) fn main(args: ImageArgs) -> ExitCode {
    let server = args.command.connection().url.clone();
    block_on(&server, run(args.command), 1)
}

async fn run(command: ImageCommand) -> anyhow::Result<u8> {
    let client = command.connection().client()?;
    match command {
        ImageCommand::Pull(args) => pull(&client, args).await,
        ImageCommand::Import(args) => {
            let result = client
                .import_image(&args.file, args.name.as_deref())
                .await
                .with_context(|| format!("importing {}", args.file.display()))?;
            for image in &result.images {
                println!("{} {}", image.name, image.digest);
            }
            Ok(0)
        }
        ImageCommand::Ls(args) => {
            let list = client.list_images().await.context("listing images")?;
            if args.json {
                print_json(&list)?;
            } else if args.quiet {
                for image in &list.images {
                    println!("{}", image.name);
                }
            } else {
                print_images(&list.images)?;
            }
            Ok(0)
        }
        ImageCommand::Rm(args) => {
            delete_each(args.images, |name| {
                let client = &client;
                async move { client.delete_image(&name).await.map(|image| image.name) }
            })
            .await
        }
    }
}

async fn pull(client: &HutchClient, args: PullArgs) -> anyhow::Result<u8> {
    let mut progress = Progress::new(!args.plain && std::io::stderr().is_terminal());
    let image = client
        .pull_image(&args.reference, |event| progress.show(event))
        .await
        .with_context(|| format!("pulling {}", args.reference))?;
    progress.finish();
    println!("{} {}", image.name, image.digest);
    Ok(0)
}

/// Shows pull progress on standard error: one bar per layer, redrawn in place on a terminal,
/// or a line per change of a layer's state otherwise.
struct Progress {
    terminal: bool,
    /// Each layer's state, done and total bytes, in the order first seen.
    layers: BTreeMap<usize, (String, LayerState, u64, u64)>,
    /// Lines drawn last time (to move back over them).
    drawn: usize,
}

impl Progress {
    fn new(terminal: bool) -> Self {
        Progress {
            terminal,
            layers: BTreeMap::new(),
            drawn: 0,
        }
    }

    fn show(&mut self, event: &PullEvent) {
        let PullEvent::Progress {
            layer,
            status,
            done,
            total,
        } = event
        else {
            return;
        };
        let index = self
            .layers
            .iter()
            .find(|(_, (name, ..))| name == layer)
            .map(|(index, _)| *index)
            .unwrap_or(self.layers.len());
        let changed = self
            .layers
            .get(&index)
            .is_none_or(|(_, last, ..)| last != status);
        self.layers
            .insert(index, (layer.clone(), *status, *done, *total));
        let mut err = std::io::stderr().lock();
        if !self.terminal {
            if changed {
                let _ = writeln!(err, "{} {}", short(layer), state_name(*status));
            }
            return;
        }
        if self.drawn > 0 {
            let _ = write!(err, "\x1b[{}A", self.drawn);
        }
        for (layer, status, done, total) in self.layers.values() {
            let _ = writeln!(err, "\x1b[2K{}", bar_line(layer, *status, *done, *total));
        }
        self.drawn = self.layers.len();
    }

    fn finish(&mut self) {
        self.drawn = 0;
    }
}

/// One layer's progress line: its short digest, a bar of 30 cells, and the bytes.
fn bar_line(layer: &str, status: LayerState, done: u64, total: u64) -> String {
    const CELLS: u64 = 30;
    let filled = match status {
        LayerState::Cached | LayerState::Done | LayerState::Unpacking => CELLS,
        LayerState::Downloading => (done.saturating_mul(CELLS))
            .checked_div(total)
            .unwrap_or(0)
            .min(CELLS),
    };
    let filled = usize::try_from(filled).unwrap_or(0);
    let cells = usize::try_from(CELLS).unwrap_or(30);
    format!(
        "{} [{}{}] {:>10} / {:<10} {}",
        short(layer),
        "#".repeat(filled),
        " ".repeat(cells - filled),
        human_bytes(done),
        human_bytes(total),
        state_name(status)
    )
}

fn state_name(status: LayerState) -> &'static str {
    match status {
        LayerState::Cached => "cached",
        LayerState::Downloading => "downloading",
        LayerState::Unpacking => "unpacking",
        LayerState::Done => "done",
    }
}

/// `sha256:0123456789ab…` shortened to its first 12 hex digits.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.get(..12).unwrap_or(hex)
}

/// Prints images as a table.
fn print_images(images: &[Image]) -> anyhow::Result<()> {
    let mut rows = vec![[
        "NAME".to_owned(),
        "DIGEST".to_owned(),
        "SIZE".to_owned(),
        "LAYERS".to_owned(),
        "SESSIONS".to_owned(),
        "TENANT".to_owned(),
    ]];
    for image in images {
        rows.push([
            image.name.clone(),
            short(&image.digest).to_owned(),
            human_bytes(image.size_bytes),
            image.layers.to_string(),
            image.sessions.to_string(),
            image.tenant.clone().unwrap_or_default(),
        ]);
    }
    print_table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_read_well() {
        let line = bar_line(
            "sha256:0123456789abcdef",
            LayerState::Downloading,
            512,
            1024,
        );
        assert!(line.starts_with("0123456789ab ["), "{line}");
        assert!(
            line.contains(&format!("{}{}", "#".repeat(15), " ".repeat(15))),
            "{line}"
        );
        assert!(line.ends_with("downloading"), "{line}");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12), "12 B");
    }
}
