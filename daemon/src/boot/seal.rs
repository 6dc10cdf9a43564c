//! SealFreeMap: at the clean shutdown before the first attempt, once /data
//! is unmounted, the baseline's free map is read through the crypt layer
//! and sealed (`ext4map::seal`), for the arms that will find only
//! ciphertext on the raw partition (metadata encryption).
//!
//! Only then: the baseline is what is on the disk when the first attempt
//! is armed, which is what this shutdown leaves. A seal taken later (during
//! an attempt) would describe the attempt's data, not the baseline, so it
//! is refused; a seal taken earlier (while /data is mounted) is refused by
//! the backend. Every attempt of the checkpoint arms over the same seal:
//! each rollback restores every byte it fingerprints, and if anything else
//! changed them the arm protects every chunk.

use super::ctx::Ctx;
use crate::error::{Error, Result};
use crate::types::{Phase, SealOutcome};

pub fn seal_free_map(ctx: &mut Ctx<'_>) -> Result<Vec<SealOutcome>> {
    if ctx.state.phase != Phase::Armed {
        return Err(Error::WrongPhase {
            phase: ctx.state.phase.as_str().into(),
            what: "the free map is sealed only at the shutdown before the first attempt (phase armed): \
                   later the disk holds an attempt's data, not the baseline"
                .into(),
        });
    }
    let mut outcomes = Vec::new();
    let mut seals = Vec::new();
    for (i, p) in ctx.state.partitions.iter().enumerate() {
        match ctx.backend.seal_free_map(p) {
            Ok(seal) => {
                let free: u64 = seal.free_runs.iter().map(|r| r.1).sum();
                let bytes: u64 = seal.regions.iter().map(|r| u64::from(r.len)).sum();
                outcomes.push(SealOutcome {
                    partition: p.name.clone(),
                    sealed: true,
                    detail: format!(
                        "{free} of {} chunks free in {} runs; {} regions ({:.1} MiB of allocation records and \
                         journal) fingerprinted on the raw partition in {} ms",
                        seal.chunks,
                        seal.free_runs.len(),
                        seal.regions.len(),
                        bytes as f64 / (1 << 20) as f64,
                        seal.read_ms
                    ),
                });
                seals.push((i, seal));
            }
            Err(why) => {
                tracing::info!(partition = %p.name, "free map not sealed: {why}");
                outcomes.push(SealOutcome { partition: p.name.clone(), sealed: false, detail: why });
            }
        }
    }
    if seals.is_empty() {
        return Ok(outcomes);
    }
    // A failed save changes nothing: the previous seals go back in memory.
    let before: Vec<_> = ctx.state.partitions.iter().map(|p| p.free_map_seal.clone()).collect();
    for (i, seal) in seals {
        ctx.state.partitions[i].free_map_seal = Some(seal);
    }
    if let Err(e) = ctx.save() {
        for (p, old) in ctx.state.partitions.iter_mut().zip(before) {
            p.free_map_seal = old;
        }
        return Err(e);
    }
    Ok(outcomes)
}
