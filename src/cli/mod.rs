//! Command-line interface: argument definitions and the headless subcommands.

pub mod bench;
mod classic;
mod info;
mod weights;
mod mesh;
mod model_args;
mod segment;
mod segment_batch;
mod segment_recist;
mod segment_video;
mod stats;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "medsam-viewer", version, about = "Promptable 3D segmentation of CT/MRI volumes with MedSAM2")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Image to open in the viewer (NIfTI, DICOM file or folder, MetaImage, .npz).
    pub path: Option<PathBuf>,
    /// A mask to open onto the image (a draft to correct), on the image's grid.
    #[arg(long, requires = "path")]
    pub mask: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print dimensions, geometry, type, range and voxel values of an image.
    Info(info::InfoArgs),
    /// Convert any readable image to NIfTI (.nii or .nii.gz), geometry preserved; optionally
    /// resampled to a new spacing or onto another image's grid.
    Convert(info::ConvertArgs),
    /// Measure performance and print the figures as JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Download or locate the MedSAM2 checkpoint.
    #[command(subcommand)]
    Weights(weights::WeightsCommand),
    /// Surface mesh of a label (or every label) or of an image at a threshold, as STL/OBJ/PLY.
    Mesh(mesh::MeshArgs),
    /// Measure every label of a mask over its image (volume, surface, HU, diameters, Dice...).
    Stats(stats::StatsArgs),
    /// MedSAM2 3D segmentation from a box on one slice, written as a NIfTI mask.
    Segment(segment::SegmentArgs),
    /// MedSAM2 segmentation of every row of a manifest CSV: one mask per image, a summary CSV,
    /// resume, and --shard K/N for job arrays.
    SegmentBatch(segment_batch::SegmentBatchArgs),
    /// MedSAM2 tracking of objects through a video clip (a folder of frames or a video file)
    /// from prompt masks, boxes or clicks, as MedSAM2's video script does: one PNG per frame.
    SegmentVideo(segment_video::SegmentVideoArgs),
    /// MedSAM2's RECIST-to-3D script: each lesion's RECIST line in a MedSAM2 .npz prompts its
    /// slice (box or points) and propagates both ways; `segs` per case and seconds per case.
    SegmentRecist(segment_recist::SegmentRecistArgs),
    /// Classical segmentation tools that write a label map (threshold, region growing, lungs).
    #[command(subcommand)]
    Classic(classic::ClassicCommand),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Info(args)) => info::info(args),
        Some(Command::Convert(args)) => info::convert(args),
        Some(Command::Bench(command)) => bench::run(command),
        Some(Command::Weights(command)) => weights::run(command),
        Some(Command::Mesh(args)) => mesh::mesh(args),
        Some(Command::Stats(args)) => stats::stats(args),
        Some(Command::Classic(command)) => classic::run(command),
        Some(Command::Segment(args)) => segment::segment(args),
        Some(Command::SegmentBatch(args)) => segment_batch::segment_batch(args),
        Some(Command::SegmentVideo(args)) => segment_video::segment_video(args),
        Some(Command::SegmentRecist(args)) => segment_recist::segment_recist(args),
        None => crate::app::run(cli.path, cli.mask),
    }
}
