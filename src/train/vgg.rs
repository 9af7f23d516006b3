//! The frozen VGG-19 feature extractor of the perceptual loss (torchvision's `vgg19().features`, ImageNet weights).
//!
//! Owns the layer layout the official loss reads — the outputs of relu1_1, relu2_1, relu3_1, relu4_1 and relu5_1 —
//! and the check of a weight file against it. Receives an image `[n, 3, h, w]` in [0, 1] (normalised here with the
//! ImageNet mean and std, as the reference does); emits the five feature maps. The weights are constants for the
//! executor: nothing here is trained and no gradient is kept for them, only through them.

use std::path::Path;

use crate::model::ModelError;
use crate::model::ops::Ops;
use crate::model::weights::{EntryKind, ExpectedEntry, WeightStore};
use crate::tensor::HostTensor;

/// ImageNet normalisation used by torchvision's pretrained models.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// Per-channel (RGB) standard deviation of the same normalisation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// One step of `features` up to relu5_1: a 3×3 conv (+ReLU) at a torchvision index, or a 2×2 max pool.
#[derive(Clone, Copy, Debug)]
enum Layer {
    Conv {
        index: usize,
        cin: usize,
        cout: usize,
    },
    Pool,
    /// The end of slice k: its ReLU output is a loss feature.
    Tap,
}

use Layer::{Conv, Pool, Tap};

/// torchvision `vgg19().features[0..30]`, with the five slice boundaries of the reference's `Vgg19` module.
const LAYERS: [Layer; 18] = [
    Conv { index: 0, cin: 3, cout: 64 },
    Tap,
    Conv { index: 2, cin: 64, cout: 64 },
    Pool,
    Conv { index: 5, cin: 64, cout: 128 },
    Tap,
    Conv { index: 7, cin: 128, cout: 128 },
    Pool,
    Conv { index: 10, cin: 128, cout: 256 },
    Tap,
    Conv { index: 12, cin: 256, cout: 256 },
    Conv { index: 14, cin: 256, cout: 256 },
    Conv { index: 16, cin: 256, cout: 256 },
    Pool,
    Conv { index: 19, cin: 256, cout: 512 },
    Tap,
    Conv { index: 21, cin: 512, cout: 512 },
    Conv { index: 23, cin: 512, cout: 512 },
];

/// The rest of slice 5: conv 25, pool, conv 28 (relu5_1).
const LAYERS_TAIL: [Layer; 4] =
    [Conv { index: 25, cin: 512, cout: 512 }, Pool, Conv { index: 28, cin: 512, cout: 512 }, Tap];

/// conv5_2 … conv5_4, past the generator loss's relu5_1: the TSR loss reads conv5_4.
const LAYERS_CONV5: [Layer; 3] = [
    Conv { index: 30, cin: 512, cout: 512 },
    Conv { index: 32, cin: 512, cout: 512 },
    Conv { index: 34, cin: 512, cout: 512 },
];

/// The TSR loss's layers (BasicSR `PerceptualLoss`, official `train_sr_hdtf.yml`): the outputs of conv1_2, conv2_2,
/// conv3_4, conv4_4 and conv5_4 before their ReLU, by torchvision index, with their weights.
pub const TSR_LAYERS: [(usize, f32); 5] = [(2, 0.1), (7, 0.1), (16, 1.0), (25, 1.0), (34, 1.0)];

/// Number of feature maps the loss compares.
pub const VGG_FEATURES: usize = 5;

fn layers() -> impl Iterator<Item = Layer> {
    LAYERS.into_iter().chain(LAYERS_TAIL)
}

/// Every weight the extractor reads (`features.{i}.weight|bias`).
pub fn expected_entries() -> Vec<ExpectedEntry> {
    layers()
        .filter_map(|l| match l {
            Conv { index, cin, cout } => Some([
                ExpectedEntry {
                    key: format!("features.{index}.weight"),
                    shape: vec![cout, cin, 3, 3],
                    kind: EntryKind::Parameter,
                },
                ExpectedEntry { key: format!("features.{index}.bias"), shape: vec![cout], kind: EntryKind::Parameter },
            ]),
            _ => None,
        })
        .flatten()
        .collect()
}

/// VGG-19 weights checked against the layout. Extra entries (the classifier, conv layers past relu5_1) are allowed.
pub struct Vgg19 {
    weights: WeightStore,
}

impl Vgg19 {
    /// Checks `weights` (torchvision keys `features.<i>.weight|bias`) against the layout; every missing or
    /// misshapen entry is listed in the error.
    pub fn new(weights: WeightStore) -> Result<Self, ModelError> {
        let problems: Vec<String> = expected_entries()
            .into_iter()
            .filter_map(|e| match weights.get(&e.key) {
                None => Some(format!("missing `{}` {:?}", e.key, e.shape)),
                Some(t) if t.shape() != e.shape.as_slice() => {
                    Some(format!("`{}` has shape {:?}, expected {:?}", e.key, t.shape(), e.shape))
                }
                Some(_) => None,
            })
            .collect();
        if !problems.is_empty() {
            return Err(ModelError::WeightMismatch { problems });
        }
        Ok(Self { weights })
    }

    /// Loads torchvision-keyed safetensors (e.g. converted from `vgg19-dcbb9e9d.pth`).
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::new(WeightStore::load_safetensors(path)?)
    }

    fn constant<O: Ops>(&self, ops: &mut O, key: &str) -> Result<O::T, ModelError> {
        let t = self.weights.require(key)?;
        Ok(ops.constant(t.clone()))
    }

    /// relu1_1 … relu5_1 of `x` (`[n, 3, h, w]` in [0, 1]).
    pub fn features<O: Ops>(&self, ops: &mut O, x: &O::T) -> Result<Vec<O::T>, ModelError> {
        let mean = ops.constant(channel_map(IMAGENET_MEAN)?);
        let std = ops.constant(channel_map(IMAGENET_STD)?);
        let h = ops.sub(x, &mean);
        let mut h = ops.div(&h, &std);
        let mut out = Vec::with_capacity(VGG_FEATURES);
        for layer in layers() {
            match layer {
                Conv { index, .. } => {
                    let w = self.constant(ops, &format!("features.{index}.weight"))?;
                    let b = self.constant(ops, &format!("features.{index}.bias"))?;
                    let y = ops.conv2d(&h, &w, Some(&b), 1, 1);
                    h = ops.relu(&y);
                }
                Pool => h = ops.max_pool2(&h),
                Tap => out.push(h.clone()),
            }
        }
        Ok(out)
    }
}

impl Vgg19 {
    /// Pre-ReLU outputs of the convolutions at torchvision indices `taps` (ascending), for `x` in [0, 1] normalised
    /// with the ImageNet statistics. Runs only as deep as the last tap; weights past relu5_1 must be in the file.
    pub fn conv_features<O: Ops>(&self, ops: &mut O, x: &O::T, taps: &[usize]) -> Result<Vec<O::T>, ModelError> {
        let mean = ops.constant(channel_map(IMAGENET_MEAN)?);
        let std = ops.constant(channel_map(IMAGENET_STD)?);
        let h = ops.sub(x, &mean);
        let mut h = ops.div(&h, &std);
        let mut out = Vec::with_capacity(taps.len());
        let last = taps.iter().copied().max().unwrap_or(0);
        for layer in layers().chain(LAYERS_CONV5) {
            match layer {
                Conv { index, .. } => {
                    let w = self.constant(ops, &format!("features.{index}.weight"))?;
                    let b = self.constant(ops, &format!("features.{index}.bias"))?;
                    let y = ops.conv2d(&h, &w, Some(&b), 1, 1);
                    if taps.contains(&index) {
                        out.push(y.clone());
                    }
                    if index >= last {
                        break;
                    }
                    h = ops.relu(&y);
                }
                Pool => h = ops.max_pool2(&h),
                Tap => {}
            }
        }
        if out.len() != taps.len() {
            return Err(ModelError::Config {
                origin: "vgg".into(),
                reason: format!("taps {taps:?} are not all VGG-19 convolution indices"),
            });
        }
        Ok(out)
    }
}

fn channel_map(v: [f32; 3]) -> Result<HostTensor, ModelError> {
    HostTensor::new(vec![1, 3, 1, 1], v.to_vec())
        .map_err(|e| ModelError::Tensor { name: "vgg".into(), reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::exec::shape::ShapeOps;

    #[test]
    fn layout_is_torchvision_vgg19_up_to_relu5_1() {
        let entries = expected_entries();
        assert_eq!(entries.len(), 26);
        let params: usize = entries.iter().map(|e| e.shape.iter().product::<usize>()).sum();
        // conv1_1 … conv5_1 of VGG-19.
        assert_eq!(params, 1792 + 36928 + 73856 + 147584 + 295168 + 3 * 590080 + 1180160 + 3 * 2359808 + 2359808);
        let store = crate::model::weights::random_init(&entries, 1);
        let vgg = Vgg19::new(store).unwrap();
        let mut ops = ShapeOps::new();
        let feats = vgg.features(&mut ops, &vec![1, 3, 64, 64]).unwrap();
        let shapes: Vec<Vec<usize>> = feats.into_iter().collect();
        assert_eq!(
            shapes,
            vec![
                vec![1, 64, 64, 64],
                vec![1, 128, 32, 32],
                vec![1, 256, 16, 16],
                vec![1, 512, 8, 8],
                vec![1, 512, 4, 4]
            ]
        );
        let mut bad = crate::model::weights::random_init(&entries, 1);
        bad.remove("features.28.bias");
        bad.insert("features.0.weight", HostTensor::zeros(&[64, 3, 1, 1]));
        let msg = Vgg19::new(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg.contains("features.28.bias") && msg.contains("features.0.weight"), "{msg}");
    }
}
