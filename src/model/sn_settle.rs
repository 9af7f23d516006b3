//! Spectral-norm buffers settled the way training leaves them, for random weights that behave like trained ones.
//!
//! Owns `settle_spectral_norms`: for every spectrally-normalised module of a weight store, `u` and `v` replaced by
//! converged power-iteration vectors of its `weight_orig`, so `σ = u·(W v)` is the top singular value. Random unit
//! `u`, `v` (what `random_init` draws) give a σ far below it — or negative — and effective weights many times too
//! large: the SPADE blocks then reach activations of 10⁴ and the output saturates, which says nothing about how a
//! trained network behaves (e.g. under float16). Receives a `WeightStore`; emits it with settled buffers.

use super::reparam::{SN_ORIG, SN_U, SN_V, SnDim, power_iteration};
use super::weights::WeightStore;
use crate::tensor::HostTensor;

/// Power iterations per module: σ lands within a few percent of the top singular value (random matrices have close leading
/// singular values, so the last digits converge slowly; the scale is what matters here).
pub const SETTLE_ITERATIONS: usize = 30;

/// Replaces the `weight_u`/`weight_v` of every spectral-norm module by converged power-iteration vectors; returns
/// how many modules were settled. The layout (`Dim0` or the transposed convolution's `Dim1`) follows from `u`'s length.
pub fn settle_spectral_norms(store: &mut WeightStore, iterations: usize) -> usize {
    let suffix = format!(".{SN_ORIG}");
    let prefixes: Vec<String> = store.iter().filter_map(|(k, _)| k.strip_suffix(&suffix).map(str::to_owned)).collect();
    let mut settled = 0;
    for prefix in prefixes {
        let (u_key, v_key) = (format!("{prefix}.{SN_U}"), format!("{prefix}.{SN_V}"));
        let (Some(weight), Some(u)) = (store.get(&format!("{prefix}.{SN_ORIG}")), store.get(&u_key)) else {
            continue; // EqualLR modules share the `weight_orig` name and have no buffers
        };
        let dim = if weight.shape().first() == Some(&u.len()) { SnDim::Dim0 } else { SnDim::Dim1 };
        let (u, v) = power_iteration(weight, dim, iterations);
        let (nu, nv) = (u.len(), v.len());
        if let (Ok(u), Ok(v)) = (HostTensor::new(vec![nu], u), HostTensor::new(vec![nv], v)) {
            store.insert(u_key, u);
            store.insert(v_key, v);
            settled += 1;
        }
    }
    settled
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::GeneratorConfig;
    use crate::model::generator::{DEFAULT_INIT_SEED, GeneratorModel};
    use crate::model::reparam::spectral_sigma;

    #[test]
    fn settled_sigma_is_the_top_singular_value() {
        let mut model = GeneratorModel::random(GeneratorConfig::tiny(), DEFAULT_INIT_SEED).unwrap();
        // 6 ladder convs, the seed's transposed convolution, 2 or 3 per SPADE block (3 blocks change width).
        assert_eq!(settle_spectral_norms(&mut model.weights, SETTLE_ITERATIONS), 6 + 1 + 7 * 2 + 4);
        for (prefix, dim) in [("ladder_network.layer3.0", SnDim::Dim0), ("SPDAE_G.conv1", SnDim::Dim1)] {
            let w = model.weights.get(&format!("{prefix}.weight_orig")).unwrap();
            let u = model.weights.get(&format!("{prefix}.weight_u")).unwrap();
            let v = model.weights.get(&format!("{prefix}.weight_v")).unwrap();
            let sigma = spectral_sigma(w, u.data(), v.data(), dim).unwrap();
            // Many more power steps move the estimate by less than 3%; the random buffers were far off.
            let (u2, v2) = power_iteration(w, dim, SETTLE_ITERATIONS * 10);
            let better = spectral_sigma(w, &u2, &v2, dim).unwrap();
            assert!(sigma > 0.0 && (better - sigma).abs() <= 3e-2 * better, "{prefix}: {sigma} vs {better}");
            let raw = GeneratorModel::random(GeneratorConfig::tiny(), DEFAULT_INIT_SEED).unwrap();
            let (ru, rv) = (
                raw.weights.get(&format!("{prefix}.weight_u")).unwrap(),
                raw.weights.get(&format!("{prefix}.weight_v")).unwrap(),
            );
            let random = spectral_sigma(w, ru.data(), rv.data(), dim).map_or(0.0, f64::abs);
            assert!(random < 0.5 * better, "{prefix}: random buffers gave σ {random} against {better}");
        }
    }
}
