//! Command-line interface: the clap definitions, one file per command family, and dispatch.
//!
//! Owns argument parsing, progress bars and printing; every computation lives in the library. Each command is an
//! `XArgs` struct (or a subcommand enum) with a `run()` in its own file; this module only dispatches. Receives the
//! process arguments; emits files, JSON on stdout and human-readable progress on stderr.

mod bench;
mod bench_precision;
mod common;
mod embedder;
mod identities;
mod identities_add;
mod landmarks;
mod live;
mod model;
mod personalize;
mod prepare;
mod reconstruct;
mod render;
mod train;
mod tsr;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "metaportrait", version, about = "Identity-preserving talking-head generation (MetaPortrait)")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect and run the generator network.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Drive a portrait with a video or an image sequence and write an MP4 (one frame per driving frame).
    Render(render::RenderArgs),
    /// Render the bundled portrait, driven by a swaying virtual camera on it, into out/demo.mp4.
    Demo(render::DemoArgs),
    /// Open the desktop window and puppeteer a portrait from a webcam or a video file.
    Live(live::LiveArgs),
    /// Draw the generator's conditioning (landmark-line image, 58 keypoints) from landmarks.
    Condition(landmarks::ConditionArgs),
    /// Detect faces and their dense landmarks (MediaPipe FaceMesh) in an image.
    Landmarks(landmarks::LandmarksArgs),
    /// Inspect and run the temporal super-resolution network (256² → 512²).
    #[command(subcommand)]
    Tsr(tsr::TsrCommand),
    /// Convert an official PyTorch checkpoint (.pth/.pth.tar) into a safetensors weight file, safely.
    ImportCheckpoint(model::ImportArgs),
    /// Measure speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Manage the identity library (in $METAPORTRAIT_HOME or the platform data directory).
    #[command(subcommand)]
    Identities(identities::IdentitiesCommand),
    /// Fine-tune the base model on a short clip of one person and add the result as an identity.
    Personalize(personalize::PersonalizeArgs),
    /// Build a training dataset (face crops + cached landmarks) from videos or frame folders.
    Prepare(prepare::PrepareArgs),
    /// Train the generator.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Run the official inference on the official preprocessed data (self-reconstruction, PSNR/SSIM per frame).
    Reconstruct(reconstruct::ReconstructArgs),
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Model(cmd) => cmd.run(),
        Command::Render(args) => args.run(),
        Command::Demo(args) => args.run(),
        Command::Live(args) => args.run(),
        Command::Condition(args) => args.run(),
        Command::Landmarks(args) => args.run(),
        Command::Tsr(cmd) => cmd.run(),
        Command::ImportCheckpoint(args) => args.run(),
        Command::Bench(cmd) => cmd.run(),
        Command::Identities(cmd) => cmd.run(),
        Command::Personalize(args) => args.run(),
        Command::Prepare(args) => args.run(),
        Command::Train(cmd) => cmd.run(),
        Command::Reconstruct(args) => args.run(),
    }
}
