//! Issue 4's end-to-end outcomes: what a phone sees across the boots of an
//! update, checked on the data itself (the guest's manifest of every file,
//! `e2fsck -fn` on the unmounted device) and on witnesses rewindd does not
//! share (dmsetup, df, the raw partition in a boot without rewind). The
//! "new system" is harness/workloads/update.sh (many small files, renames,
//! deletes, hard links, symlinks, xattrs, a large file rewritten in place,
//! directories created and removed; `/data/attempt-N` marks each attempt).
//!
//! f2fs mode (`--fs f2fs`, checkpoint=fs) runs the same scenarios: no dm
//! device and no COW file exists there, so the block-mode witnesses
//! (dmsetup stack, COW files, merges, fsck of the dm top device) become
//! f2fs's own: no dm device at all, /data mounted from the raw partition
//! with `checkpoint=disable` while an attempt runs and without it once
//! idle (/proc/mounts), status `unusable_bytes`, the history, and
//! fsck.f2fs of the unmounted raw partition.
//!
//! Per-scenario rewindd settings (COW size, space policy, a commit hook)
//! go in `share/boot/rewindd.extra.toml`, which the guest init appends to
//! rewindd's config at every boot (`checks::set_rewindd_extra`).

//!
//! Split by what they prove: a commit keeps the attempt (`commit`), a
//! rollback ends at the baseline however it is interrupted (`rollback`),
//! the space policy acts before the store overflows (`space`), a stale COW
//! map is refused (`refusal`), and without a checkpoint rewind is a
//! passthrough (`passthrough`).

mod bootloop;
mod commit;
mod cowfail;
mod free_runs;
mod freemap;
mod passthrough;
mod refusal;
mod rollback;
mod space;

use super::{Needs, Scenario};

pub static E2E: &[Scenario] = &[
    Scenario {
        name: "power-cuts-after-commit",
        summary: "A committed system loses power six times during early boot (metadata mounted, rewindd started, prepare-userdata twice, userdata prepared, data mounted): never rolled back, every committed change kept, idle, fsck clean",
        needs: Needs::DAEMON,
        run: bootloop::power_cuts_after_commit,
    },
    Scenario {
        name: "commit-failures-bounded",
        summary: "The live commit fails three times (the snapshot device held open: EBUSY), data protected meanwhile; at commit_max_failures the next two boots do not retry it, /data mounts on the committed data; an explicit commit ends it; manifest, history, fsck checked",
        needs: Needs { fs: Some(crate::plan::FsType::Ext4), ..Needs::DAEMON },
        run: bootloop::commit_failures_are_bounded,
    },
    Scenario {
        name: "rewindd-killed-in-prepare",
        summary: "rewindd is SIGKILLed inside prepare-userdata in each attempt's boot (arming, merging, later); init starts it again and rewindctl calls again: every boot reaches ready armed, each attempt counted once; the last rollback ends exactly at the baseline, fsck clean",
        needs: Needs { fs: Some(crate::plan::FsType::Ext4), ..Needs::DAEMON },
        run: bootloop::rewindd_killed_in_prepare,
    },
    Scenario {
        name: "cow-fails-during-attempt",
        summary: "The COW device fails every write (dm-flakey error_writes) while an attempt writes: the snapshot goes Invalid; reported lost in the kernel's words (status, history), the attempt's data kept and committed, never merged; the next boot idle on exactly that data, fsck clean",
        needs: Needs { fs: Some(crate::plan::FsType::Ext4), ..Needs::DAEMON },
        run: cowfail::cow_fails_during_attempt,
    },
    Scenario {
        name: "cow-fails-during-merge",
        summary: "The COW device fails every write while the last rollback merges: Merge failed; the boot reaches ready with userdata held back, phase rolling-back, the kernel's words and the fix in status and history; the next boot resumes the merge: exactly the baseline, idle, fsck clean",
        needs: Needs { fs: Some(crate::plan::FsType::Ext4), userdata_mib: Some(1024), ..Needs::DAEMON },
        run: cowfail::cow_fails_during_merge,
    },
    Scenario {
        name: "good-boot-commits",
        summary: "The attempt migrates /data and reaches boot-completed (commit): two more boots keep every change; no snapshot/COW device, no COW file, the COW space is free again",
        needs: Needs::DAEMON,
        run: commit::good_boot_commits,
    },
    Scenario {
        name: "fail-then-succeed",
        summary: "Attempt 1 panics, attempt 2 commits: userdata is the baseline plus attempt 2's changes only, and stays so across a reboot",
        needs: Needs::DAEMON,
        run: commit::fail_then_succeed,
    },
    Scenario {
        name: "power-cut-during-rollback",
        summary: "The final rollback's merge is cut early, early again (twice in a row), in the middle and late: userdata ends at the baseline, fsck clean",
        needs: Needs::DAEMON,
        run: rollback::power_cut_during_rollback,
    },
    Scenario {
        name: "power-cut-during-commit",
        summary: "Power cut after the commit intent, before the commit ends: the next boot rolls forward (every change kept, idle, no snapshot)",
        needs: Needs::DAEMON,
        run: commit::power_cut_during_commit,
    },
    Scenario {
        name: "free-space-not-copied",
        summary: "cow.free_map: armed with linear lines over the baseline's free chunks; a 64 MiB new file adds < 1 % of its size to the COW store; the rollback still ends at the exact baseline, fsck clean",
        needs: Needs::DAEMON,
        run: freemap::free_space_not_copied,
    },
    Scenario {
        name: "free-written-many-runs",
        summary: "cow.free_map at the table's line cap: a baseline with ~2,100 one-chunk holes is armed with the most linear runs the table holds; one attempt per cow.free_counted_runs (64, 128, 256, 4096): the regions are the longest runs of the kernel's table, status says the figure covers N of M runs (a lower bound when capped), a new file landing in counted runs is counted exactly; the arm's and a status read's cost at each cap reported; the rollback ends at the exact baseline",
        needs: Needs::DAEMON,
        run: free_runs::free_written_many_runs,
    },
    Scenario {
        name: "free-map-power-cuts",
        summary: "cow.free_map under power cuts: attempt 1 cut, merged, attempt 2 armed over the free map again, 24 MiB of baseline data rewritten in place is still copied, attempt 2 cut, the final merge cut: the exact baseline, fsck clean",
        needs: Needs::DAEMON,
        run: freemap::free_map_power_cuts,
    },
    Scenario {
        name: "free-map-unclean-baseline",
        summary: "cow.free_map with a baseline whose journal needs recovery (power lost with /data mounted after start): armed without the free map, every chunk protected, status says why; a new file is copied; the rollback ends at the baseline, fsck clean",
        needs: Needs::DAEMON,
        run: freemap::unclean_baseline_protects_every_chunk,
    },
    Scenario {
        name: "last-rollback-in-background",
        summary: "cow.last_rollback_in_background (the default): attempts rewriting 16, 48 and 96 MiB of baseline data, each size rolled back with the merge waited for and in the background: /data reads as the baseline at ready, rewindd ends the rollback when the kernel is done; the exact baseline, idle stack, COW files gone, fsck clean; power-on to data-mounted and ready side by side",
        needs: Needs::DAEMON,
        run: freemap::last_rollback_in_background,
    },
    Scenario {
        name: "abort",
        summary: "AbortChanges without retry during an attempt, reboot: rolled back to the baseline, NeedsRollback, history shows the abort and the rollback",
        needs: Needs::DAEMON,
        run: rollback::abort,
    },
    Scenario {
        name: "no-checkpoint",
        summary: "Ordinary boots without a checkpoint: linear passthrough, no COW, data kept; rewindd's boot overhead vs a raw boot",
        needs: Needs::DAEMON,
        run: passthrough::no_checkpoint,
    },
    Scenario {
        name: "overflow",
        summary: "An attempt writes more than a small COW store holds (policy abort): recorded at 95 %, reboot, attempt discarded, baseline intact, fsck clean",
        needs: Needs::DAEMON,
        run: space::overflow_abort,
    },
    Scenario {
        name: "overflow-commit",
        summary: "An attempt writes more than a small COW store holds (policy commit): committed early, protection_lost reported, every write kept, fsck clean",
        needs: Needs::DAEMON,
        run: space::overflow_commit,
    },
    Scenario {
        name: "extents-tampered",
        summary: "A COW file is rewritten (its blocks move) in a boot without rewind: rewindd refuses to arm, names the file, userdata unchanged, fsck clean",
        needs: Needs::DAEMON,
        run: refusal::extents_tampered,
    },
];
