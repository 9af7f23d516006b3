//! Gradient all-reduce between data-parallel replicas.
//!
//! Owns the seam where multi-GPU training plugs in: every training step hands its gradients (by official key) to a
//! `GradientReduce` before the optimizer sees them. One process needs no exchange (`SingleReplica`); a data-parallel
//! run would implement `all_reduce` with NCCL or similar so that every replica applies the same mean gradient.
//! `LocalReplicas` averages gradients computed in turn in one process, which is what several replicas of a batch
//! would produce, and is how the tests pin the contract down.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::model::ModelError;
use crate::model::exec::burn::{BurnValue, device_copy, host_copy};
use crate::tensor::HostTensor;

/// Turns this replica's gradients into the mean over all replicas, in place.
pub trait GradientReduce: Sync {
    /// Replaces `grads` (host tensors by official key) with their mean over all replicas; every replica calls it
    /// once per step with the same keys.
    fn all_reduce(&self, grads: &mut BTreeMap<String, HostTensor>);

    /// `all_reduce` on gradients that live on the training device (`train::resident`). By default they are read
    /// back, reduced on the host and uploaded again; an exchange that works on device buffers overrides this.
    fn all_reduce_device(&self, grads: &mut BTreeMap<String, BurnValue>) -> Result<(), ModelError> {
        let mut host: BTreeMap<String, HostTensor> = grads.iter().map(|(k, g)| (k.clone(), host_copy(g))).collect();
        self.all_reduce(&mut host);
        for (key, g) in grads.iter_mut() {
            if let Some(reduced) = host.get(key) {
                let device = g.t.device();
                *g = device_copy(reduced, &device)?;
            }
        }
        Ok(())
    }

    /// Replicas taking part (1: no exchange).
    fn replicas(&self) -> usize;
}

/// One process, one device: nothing to exchange.
pub struct SingleReplica;

impl GradientReduce for SingleReplica {
    fn all_reduce(&self, _grads: &mut BTreeMap<String, HostTensor>) {}

    fn all_reduce_device(&self, _grads: &mut BTreeMap<String, BurnValue>) -> Result<(), ModelError> {
        Ok(())
    }

    fn replicas(&self) -> usize {
        1
    }
}

/// Gradients of `n` shards computed one after another in this process: the first `n − 1` calls deposit their
/// gradients and leave theirs untouched, the `n`-th receives the element-wise mean of all `n`.
pub struct LocalReplicas {
    n: usize,
    pending: Mutex<Vec<BTreeMap<String, HostTensor>>>,
}

impl LocalReplicas {
    /// Averages over `n` shards (at least 1).
    pub fn new(n: usize) -> Self {
        Self { n: n.max(1), pending: Mutex::new(Vec::new()) }
    }
}

impl GradientReduce for LocalReplicas {
    fn all_reduce(&self, grads: &mut BTreeMap<String, HostTensor>) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if pending.len() + 1 < self.n {
            pending.push(grads.clone());
            return;
        }
        let scale = 1.0 / self.n as f32;
        for (key, g) in grads.iter_mut() {
            for other in pending.iter() {
                if let Some(o) = other.get(key).filter(|o| o.shape() == g.shape()) {
                    g.data_mut().iter_mut().zip(o.data()).for_each(|(a, b)| *a += b);
                }
            }
            g.data_mut().iter_mut().for_each(|a| *a *= scale);
        }
        pending.clear();
    }

    fn replicas(&self) -> usize {
        self.n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grads(values: &[f32]) -> BTreeMap<String, HostTensor> {
        BTreeMap::from([("w".to_owned(), HostTensor::new(vec![values.len()], values.to_vec()).unwrap())])
    }

    #[test]
    fn single_replica_leaves_gradients_alone() {
        let mut g = grads(&[1.0, -2.0]);
        SingleReplica.all_reduce(&mut g);
        assert_eq!(g, grads(&[1.0, -2.0]));
    }

    #[test]
    fn device_gradients_are_reduced_like_host_ones() {
        use crate::model::exec::burn::{device_copy, host_copy};
        let device = burn::tensor::Device::flex();
        let on_device = |g: &BTreeMap<String, HostTensor>| -> BTreeMap<String, BurnValue> {
            g.iter().map(|(k, t)| (k.clone(), device_copy(t, &device).unwrap())).collect()
        };
        let reduce = LocalReplicas::new(2);
        let (mut a, mut b) = (on_device(&grads(&[1.0, 6.0])), on_device(&grads(&[3.0, 0.0])));
        reduce.all_reduce_device(&mut a).unwrap();
        reduce.all_reduce_device(&mut b).unwrap();
        assert_eq!(host_copy(&b["w"]), grads(&[2.0, 3.0])["w"]);
        let mut single = on_device(&grads(&[5.0]));
        SingleReplica.all_reduce_device(&mut single).unwrap();
        assert_eq!(host_copy(&single["w"]), grads(&[5.0])["w"]);
    }

    #[test]
    fn local_replicas_hand_the_last_caller_the_mean() {
        let reduce = LocalReplicas::new(3);
        let (mut a, mut b, mut c) = (grads(&[1.0, 6.0]), grads(&[2.0, 0.0]), grads(&[6.0, -3.0]));
        reduce.all_reduce(&mut a);
        reduce.all_reduce(&mut b);
        assert_eq!(a, grads(&[1.0, 6.0]));
        reduce.all_reduce(&mut c);
        assert_eq!(c, grads(&[3.0, 1.0]));
        // The round is over: the next call starts a new one.
        let mut d = grads(&[9.0, 9.0]);
        reduce.all_reduce(&mut d);
        assert_eq!(d, grads(&[9.0, 9.0]));
    }
}
