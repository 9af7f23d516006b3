//! `landmarks` and `condition`: faces and landmarks of an image, and the generator's conditioning drawn from them.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use metaportrait::face::landmarks_json::{faces_json, first_face_normalized};
use metaportrait::runtime::Device;

use super::common::face_mesher_on;

#[derive(Args, Debug)]
pub struct LandmarksArgs {
    /// A PNG or JPEG image.
    pub image: PathBuf,
    /// 478 points (irises refined by the attention mesh) instead of 468.
    #[arg(long)]
    pub refine: bool,
    /// Print JSON: {"width", "height", "faces": [{"score", "box": [x, y, w, h], "landmarks": [[x, y, z], …]}]}.
    #[arg(long)]
    pub json: bool,
    /// Directory with the face models and their SHA256SUMS (default: $METAPORTRAIT_MODELS or models/).
    #[arg(long)]
    pub models: Option<PathBuf>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available, else the CPU with one log line).
    #[arg(long, default_value = "cpu")]
    pub device: Device,
}

#[derive(Args, Debug)]
pub struct ConditionArgs {
    /// Landmarks normalised to the face crop: a `.npy` (N, 2|3) array (669 points: the official topology, as in the
    /// official example data; 478: MediaPipe), or the JSON of `landmarks --refine --json` (first face).
    pub landmarks: PathBuf,
    /// The official `dense_669_connectivity.tsv` (required for 669-point landmarks).
    #[arg(long)]
    pub connectivity: Option<PathBuf>,
    /// Where to write the landmark-line image (PNG, RGB).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the 58 role keypoints (in [-1, 1]) as JSON.
    #[arg(long)]
    pub keypoints: Option<PathBuf>,
    #[arg(long, default_value_t = 256)]
    pub size: usize,
}

impl LandmarksArgs {
    /// Prints the faces and their landmarks.
    pub fn run(&self) -> Result<()> {
        let args = self;
        let image = metaportrait::face::load_image(&args.image)?;
        let mut mesher = face_mesher_on(args.models.as_ref(), args.device)?;
        let faces = mesher.detect_landmarks(&image, args.refine)?;
        if args.json {
            println!("{}", faces_json(image.width(), image.height(), &faces));
        } else if faces.is_empty() {
            println!("{}: no face", args.image.display());
        } else {
            for (i, f) in faces.iter().enumerate() {
                let [x, y, w, h] = f.bbox_xywh();
                let n = f.landmarks.points.len();
                println!("face {i}: score {:.3}, box ({x:.1}, {y:.1}, {w:.1}×{h:.1}) px, {n} landmarks", f.score);
            }
        }
        Ok(())
    }
}

impl ConditionArgs {
    /// Draws the line image and writes the keypoints.
    pub fn run(&self) -> Result<()> {
        let args = self;
        use metaportrait::face::condition::Conditioner;
        use metaportrait::face::topology::{MEDIAPIPE_POINTS, OFFICIAL_POINTS, Topology};
        let is_json = args.landmarks.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let points: Vec<[f32; 2]> = if is_json {
            let bytes =
                std::fs::read(&args.landmarks).with_context(|| format!("reading {}", args.landmarks.display()))?;
            first_face_normalized(&bytes).with_context(|| args.landmarks.display().to_string())?
        } else {
            metaportrait::face::npy::read_points(&args.landmarks)?
        };
        let topology = match points.len() {
            OFFICIAL_POINTS => {
                let tsv = args
                    .connectivity
                    .as_ref()
                    .context("669-point landmarks need --connectivity dense_669_connectivity.tsv")?;
                Topology::official(tsv)?
            }
            MEDIAPIPE_POINTS => Topology::mediapipe(),
            n => {
                bail!("{n} landmarks: expected {OFFICIAL_POINTS} (official) or {MEDIAPIPE_POINTS} (MediaPipe, refined)")
            }
        };
        let mut conditioner = Conditioner::new(topology, args.size)?;
        let keypoints = conditioner.keypoints(&points)?;
        let canvas = conditioner.draw(&points)?;
        let image =
            image::RgbImage::from_raw(canvas.width() as u32, canvas.height() as u32, canvas.as_bytes().to_vec())
                .context("canvas size")?;
        let mut png = Vec::new();
        image.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)?;
        metaportrait::atomic_file::write_atomic(&args.output, &png)
            .with_context(|| format!("writing {}", args.output.display()))?;
        if let Some(path) = &args.keypoints {
            let json = serde_json::json!({ "topology": conditioner.topology().name, "keypoints": keypoints.to_vec() });
            metaportrait::atomic_file::write_atomic(path, json.to_string().as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        eprintln!(
            "wrote {} ({} topology, {} edges)",
            args.output.display(),
            conditioner.topology().name,
            conditioner.topology().edges.len()
        );
        Ok(())
    }
}
