//! Spatial memories as memory attention reads them, kept from one tracking step to the next
//! (beyond the reference, which converts, projects and rotates every memory again at every
//! step). Between the steps that attend to a stored memory only its temporal slot changes, and
//! the temporal encoding enters each layer's keys as a per-slot table
//! (`MemoryAttention::temporal_keys`); so a memory's f32 tokens and its per-layer keys are made
//! once, when it first enters the window of attended frames, and dropped when it leaves.

use candle_core::{Result, Tensor, TensorId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// One spatial memory prepared for memory attention.
#[derive(Debug)]
pub struct PreparedMemory {
    /// `[B, N, M]` the memory's f32 tokens (the attention values).
    pub values: Tensor,
    /// Per memory-attention layer `[B, N, C']`: the cross-attention keys of the memory with its
    /// spatial position encoding, without the temporal encoding.
    pub keys: Vec<Tensor>,
}

/// Prepared memories by the identity of their stored feature tensor (a recomputed memory is a
/// new tensor, so an entry never outlives the memory it was made from).
#[derive(Debug, Default)]
pub struct MemoryKeyCache {
    entries: Mutex<HashMap<TensorId, Arc<PreparedMemory>>>,
}

impl MemoryKeyCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The prepared form of the memory stored as `features`, made by `prepare` unless cached.
    pub fn get_or_prepare(
        &self,
        features: &Tensor,
        prepare: impl FnOnce() -> Result<PreparedMemory>,
    ) -> Result<Arc<PreparedMemory>> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = entries.get(&features.id()) {
            return Ok(entry.clone());
        }
        let entry = Arc::new(prepare()?);
        entries.insert(features.id(), entry.clone());
        Ok(entry)
    }

    /// Drops every entry except those of the memories stored as `features` (the ones the last
    /// step attended to: the next step's window shares all but one of them).
    pub fn retain(&self, features: &[&Tensor]) {
        let keep: Vec<TensorId> = features.iter().map(|f| f.id()).collect();
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|id, _| keep.contains(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn prepared(value: f32) -> Result<PreparedMemory> {
        let t = Tensor::full(value, (1, 2, 3), &Device::Cpu)?;
        Ok(PreparedMemory { values: t.clone(), keys: vec![t] })
    }

    #[test]
    fn prepares_each_memory_once_and_keeps_only_the_retained() {
        let cache = MemoryKeyCache::new();
        let a = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let b = Tensor::zeros(4, candle_core::DType::F32, &Device::Cpu).unwrap();
        let first = cache.get_or_prepare(&a, || prepared(1.0)).unwrap();
        // A clone is the same stored memory: no second preparation.
        let again = cache.get_or_prepare(&a.clone(), || panic!("prepared twice")).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        // An equal but distinct tensor (a recomputed memory) is prepared anew.
        let other = cache.get_or_prepare(&b, || prepared(2.0)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        cache.retain(&[&b]);
        let kept = cache.get_or_prepare(&b, || panic!("a retained memory was dropped")).unwrap();
        assert!(Arc::ptr_eq(&other, &kept));
        let redone = cache.get_or_prepare(&a, || prepared(3.0)).unwrap();
        assert_eq!(redone.values.flatten_all().unwrap().to_vec1::<f32>().unwrap()[0], 3.0);
    }
}
