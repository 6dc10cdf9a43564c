//! The one mapping from the daemon's types to the wire: [`Error`] to a
//! `tonic::Status` (through [`ErrorKind`] only, so a new error variant never
//! touches the edge), and engine reports to `rewind.v1` messages.

use rewind_proto::v1 as pb;
use tonic::metadata::MetadataValue;

use crate::error::Error;
use crate::types::{
    error_chain, AttemptEvidence, BackendKind, ErrorKind, Event, PartitionReport, Phase, PrepareOutcome, Progress,
    SlotState, StatusReport, Supports,
};

/// Metadata key carrying the daemon's [`ErrorKind`] (kebab-case) on every
/// error status. `Unsafe` and `WrongPhase` share FAILED_PRECONDITION; the key
/// lets rewindctl tell them apart, and tells a server-side UNAVAILABLE from
/// a transport one (which carries no key).
pub const ERROR_KIND_KEY: &str = "rewind-error-kind";

/// The gRPC code of each kind.
///
/// `Unsafe` maps to FAILED_PRECONDITION, not DATA_LOSS: rewindd refused an
/// operation because a check failed (extents moved, a corrupt record, an
/// unexpected kernel table); nothing was lost, and the caller's remedy is to
/// fix the precondition. DATA_LOSS would send people looking for lost data.
pub fn code_of(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::WrongPhase => tonic::Code::FailedPrecondition,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::NoSpace => tonic::Code::ResourceExhausted,
        ErrorKind::Unsafe => tonic::Code::FailedPrecondition,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::Internal => tonic::Code::Internal,
    }
}

/// A status with `kind`'s code and `message`, tagged with the kind.
pub fn status_for(kind: ErrorKind, message: String) -> tonic::Status {
    let mut status = tonic::Status::new(code_of(kind), message);
    status.metadata_mut().insert(ERROR_KIND_KEY, MetadataValue::from_static(kind.as_str()));
    status
}

/// The edge mapping (keystore2's `map_or_log_err`): logs the chain once,
/// at a level fitting the kind, and returns the status. Refusals that are
/// the caller's doing are not errors of the daemon, so they log at info.
pub fn to_status(rpc: &str, err: &Error) -> tonic::Status {
    let kind = err.kind();
    let chain = error_chain(err);
    match kind {
        ErrorKind::Internal | ErrorKind::Unsafe => tracing::error!("{rpc}: {chain}"),
        ErrorKind::Unavailable | ErrorKind::NoSpace => tracing::warn!("{rpc}: {chain}"),
        ErrorKind::InvalidArgument | ErrorKind::WrongPhase | ErrorKind::PermissionDenied => {
            tracing::info!("{rpc}: {chain}")
        }
    }
    status_for(kind, chain)
}

pub fn phase_to_pb(phase: Phase) -> pb::Phase {
    match phase {
        Phase::Idle => pb::Phase::Idle,
        Phase::Armed => pb::Phase::Armed,
        Phase::Checkpointing => pb::Phase::Checkpointing,
        Phase::RollingBack => pb::Phase::RollingBack,
        Phase::Committing => pb::Phase::Committing,
        Phase::RolledBack => pb::Phase::RolledBack,
    }
}

fn backend_to_pb(backend: BackendKind) -> pb::Backend {
    match backend {
        BackendKind::Snapshot => pb::Backend::Snapshot,
        BackendKind::F2fs => pb::Backend::F2fs,
    }
}

pub fn partition_to_pb(p: &PartitionReport) -> pb::PartitionStatus {
    pb::PartitionStatus {
        name: p.name.clone(),
        mount_point: p.mount_point.clone(),
        backend: backend_to_pb(p.backend) as i32,
        raw_device: p.raw_device.clone(),
        device_stack: p.device_stack.clone(),
        cow_bytes: p.cow_bytes,
        cow_used_bytes: p.cow_used_bytes,
        // The engine reports size and use; a used count above the size
        // (possible while a report races a resize) must not wrap.
        cow_free_bytes: p.cow_bytes.saturating_sub(p.cow_used_bytes),
        chunk_sectors: p.chunk_sectors,
        merge_done_sectors: p.merge_done_sectors,
        merge_total_sectors: p.merge_total_sectors,
        snapshot_state: p.snapshot_state.clone().unwrap_or_default(),
        unusable_bytes: p.unusable_bytes,
        free_map: p.free_map.as_ref().map(|m| pb::FreeMapStatus {
            mapped: m.mapped,
            chunks: m.chunks,
            linear_chunks: m.linear_chunks,
            segments: m.segments,
            detail: m.detail.clone(),
            free_written_bytes: m.free_written_bytes.unwrap_or(0),
            free_written_known: m.free_written_bytes.is_some(),
            free_written_unknown: m.free_written_unknown.clone().unwrap_or_default(),
            free_written_segments: m.free_written_segments,
            free_written_chunks: m.free_written_chunks,
        }),
    }
}

pub fn status_to_pb(s: &StatusReport) -> pb::Status {
    pb::Status {
        phase: phase_to_pb(s.phase) as i32,
        attempt: s.attempt,
        attempts: s.attempts,
        partitions: s.partitions.iter().map(partition_to_pb).collect(),
        unavailable_reason: s.unavailable_reason.clone().unwrap_or_default(),
        protection_lost: s.protection_lost.is_some(),
        protection_lost_reason: s.protection_lost.clone().unwrap_or_default(),
        commit_failure: s.commit_failure.as_ref().map(|c| pb::CommitFailureStatus {
            failures: c.failures,
            limit: c.limit,
            last_error: c.last_error.clone(),
            retried_at_boot: c.retried_at_boot,
            fix: c.fix.clone(),
        }),
        unlimited: s.unlimited,
        slot: slot_to_pb(s.slot) as i32,
        rollback_failure: s.rollback_failure.clone().unwrap_or_default(),
    }
}

pub fn slot_to_pb(slot: SlotState) -> pb::SlotState {
    match slot {
        SlotState::NotQueried => pb::SlotState::NotQueried,
        SlotState::Marked => pb::SlotState::Marked,
        SlotState::Unmarked => pb::SlotState::Unmarked,
        SlotState::Unknown => pb::SlotState::Unknown,
    }
}

/// Name of a slot state number from the wire ("marked").
pub fn slot_name_i32(slot: i32) -> String {
    let known = [SlotState::NotQueried, SlotState::Marked, SlotState::Unmarked, SlotState::Unknown];
    match known.into_iter().find(|s| slot_to_pb(*s) as i32 == slot) {
        Some(s) => s.as_str().to_string(),
        None if slot == 0 => "unspecified".to_string(),
        None => format!("slot-{slot}"),
    }
}

pub fn evidence_to_pb(a: &AttemptEvidence) -> pb::AttemptEvidence {
    pb::AttemptEvidence {
        attempt: a.attempt,
        dir: a.dir.clone(),
        files: a
            .files
            .iter()
            .map(|f| pb::EvidenceFile {
                name: f.name.clone(),
                source: f.source.clone(),
                bytes: f.bytes,
                truncated: f.truncated,
                copied_unix: f.copied_unix,
            })
            .collect(),
        boot_reason: a.boot_reason.clone(),
        dropped: a.dropped.clone(),
    }
}

pub fn attempt_to_pb(o: &PrepareOutcome) -> pb::AttemptResponse {
    pb::AttemptResponse {
        phase: phase_to_pb(o.phase) as i32,
        attempt: o.attempt,
        attempts: o.attempts,
        unlimited: o.unlimited,
    }
}

pub fn event_to_pb(e: &Event) -> pb::HistoryEvent {
    pb::HistoryEvent {
        time_unix: e.time_unix,
        kind: e.kind.clone(),
        attempt: e.attempt,
        attempts: e.attempts,
        partition: e.partition.clone(),
        detail: e.detail.clone(),
        boot_reason: e.boot_reason.clone(),
    }
}

pub fn progress_to_pb(p: &Progress) -> pb::PrepareUserdataProgress {
    pb::PrepareUserdataProgress {
        step: p.step.clone(),
        partition: p.partition.clone(),
        done_sectors: p.done_sectors,
        total_sectors: p.total_sectors,
        ..Default::default()
    }
}

/// The last message of a PrepareUserdata stream.
pub fn outcome_to_pb(o: &PrepareOutcome) -> pb::PrepareUserdataProgress {
    pb::PrepareUserdataProgress {
        step: format!("prepared: {}", o.phase.as_str()),
        done: true,
        phase: phase_to_pb(o.phase) as i32,
        attempt: o.attempt,
        attempts: o.attempts,
        unlimited: o.unlimited,
        ..Default::default()
    }
}

pub fn supports_to_pb(s: Supports) -> pb::SupportsCheckpointResponse {
    pb::SupportsCheckpointResponse { block: s.block, file: s.file, marks_slot: s.marks_slot }
}

/// Short lowercase name of a wire phase ("checkpointing"), for people and
/// for rewindctl's `--until-phase` and `--json`.
pub fn phase_name(phase: pb::Phase) -> &'static str {
    match phase_from_pb(phase) {
        Some(p) => p.as_str(),
        None => "unspecified",
    }
}

/// The daemon's phase of a wire phase (none for `Unspecified`).
pub fn phase_from_pb(phase: pb::Phase) -> Option<Phase> {
    Phase::ALL.into_iter().find(|p| phase_to_pb(*p) == phase)
}

/// Name of a phase number received from the wire; unknown numbers (a newer
/// daemon) are shown, not guessed at.
pub fn phase_name_i32(phase: i32) -> String {
    match pb::Phase::try_from(phase) {
        Ok(p) => phase_name(p).to_string(),
        Err(_) => format!("phase-{phase}"),
    }
}

pub fn backend_name_i32(backend: i32) -> String {
    match pb::Backend::try_from(backend) {
        Ok(pb::Backend::Snapshot) => BackendKind::Snapshot.as_str().to_string(),
        Ok(pb::Backend::F2fs) => BackendKind::F2fs.as_str().to_string(),
        Ok(pb::Backend::Unspecified) => "unspecified".to_string(),
        Err(_) => format!("backend-{backend}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error_of(kind: ErrorKind) -> Error {
        match kind {
            ErrorKind::InvalidArgument => Error::InvalidArgument("attempts must be >= 1".into()),
            ErrorKind::WrongPhase => Error::WrongPhase { phase: "idle".into(), what: "commit".into() },
            ErrorKind::Unavailable => Error::Unavailable("no /dev/mapper/control".into()),
            ErrorKind::NoSpace => Error::NoSpace { partition: "userdata".into(), needed: 10, available: 5 },
            ErrorKind::Unsafe => Error::Unsafe("extents of cow.0001 changed".into()),
            ErrorKind::PermissionDenied => Error::PermissionDenied("uid 12345".into()),
            ErrorKind::Internal => {
                Error::io("write /metadata/rewind/state", std::io::Error::from_raw_os_error(libc::EIO))
            }
        }
    }

    /// Every kind has its code, its name on the wire, and the error's chain
    /// as the message.
    #[test]
    fn every_error_kind_maps_to_its_code() {
        let table = [
            (ErrorKind::InvalidArgument, tonic::Code::InvalidArgument),
            (ErrorKind::WrongPhase, tonic::Code::FailedPrecondition),
            (ErrorKind::Unavailable, tonic::Code::Unavailable),
            (ErrorKind::NoSpace, tonic::Code::ResourceExhausted),
            (ErrorKind::Unsafe, tonic::Code::FailedPrecondition),
            (ErrorKind::PermissionDenied, tonic::Code::PermissionDenied),
            (ErrorKind::Internal, tonic::Code::Internal),
        ];
        assert_eq!(table.len(), ErrorKind::ALL.len());
        for (kind, code) in table {
            let err = error_of(kind);
            assert_eq!(err.kind(), kind);
            let status = to_status("Test", &err);
            assert_eq!(status.code(), code, "{kind:?}");
            assert_eq!(status.message(), error_chain(&err), "{kind:?}");
            let tag = status.metadata().get(ERROR_KIND_KEY).expect("kind metadata").to_str().unwrap();
            assert_eq!(ErrorKind::from_name(tag), Some(kind));
        }
    }

    #[test]
    fn message_carries_the_source_chain() {
        let status = to_status("Test", &error_of(ErrorKind::Internal));
        assert!(status.message().starts_with("write /metadata/rewind/state: "), "{}", status.message());
        assert!(status.message().contains("Input/output error"), "{}", status.message());
    }

    #[test]
    fn status_conversion_keeps_fields() {
        let report = StatusReport {
            phase: Phase::Checkpointing,
            attempt: 2,
            attempts: 3,
            partitions: vec![PartitionReport {
                name: "userdata".into(),
                mount_point: "/data".into(),
                backend: BackendKind::Snapshot,
                raw_device: "/dev/vdb".into(),
                device_stack: vec!["rewind-userdata: snapshot-origin".into()],
                cow_bytes: 100,
                cow_used_bytes: 140,
                chunk_sectors: 8,
                merge_done_sectors: 0,
                merge_total_sectors: 0,
                snapshot_state: Some("Overflow".into()),
                unusable_bytes: 0,
                free_map: Some(crate::types::FreeMapReport {
                    mapped: true,
                    chunks: 262144,
                    linear_chunks: 200000,
                    segments: 12,
                    detail: "taken".into(),
                    free_written_bytes: Some(64 << 20),
                    free_written_unknown: None,
                    free_written_segments: 10,
                    free_written_chunks: 190000,
                }),
            }],
            unavailable_reason: None,
            protection_lost: Some("COW overflow".into()),
            unlimited: false,
            slot: SlotState::Unmarked,
            commit_failure: Some(crate::types::CommitFailureReport {
                failures: 3,
                limit: 3,
                last_error: "dm remove rewind-userdata-snap: Device or resource busy".into(),
                retried_at_boot: false,
                fix: "stop it".into(),
            }),
            rollback_failure: Some("userdata: the rollback cannot go on".into()),
        };
        let pb = status_to_pb(&report);
        assert_eq!(pb.slot(), pb::SlotState::Unmarked);
        assert_eq!(slot_name_i32(pb.slot), "unmarked");
        assert_eq!(slot_name_i32(77), "slot-77");
        assert_eq!(pb.phase(), pb::Phase::Checkpointing);
        assert_eq!((pb.attempt, pb.attempts), (2, 3));
        assert!(pb.protection_lost);
        assert_eq!(pb.protection_lost_reason, "COW overflow");
        assert_eq!(pb.rollback_failure, "userdata: the rollback cannot go on");
        let c = pb.commit_failure.as_ref().expect("commit failure kept");
        assert_eq!((c.failures, c.limit, c.retried_at_boot), (3, 3, false));
        assert!(c.last_error.ends_with("Device or resource busy"));
        assert_eq!(pb.partitions[0].cow_free_bytes, 0);
        assert_eq!(pb.partitions[0].snapshot_state, "Overflow");
        assert_eq!(pb.partitions[0].backend(), pb::Backend::Snapshot);
        let m = pb.partitions[0].free_map.as_ref().expect("free map kept");
        assert_eq!((m.free_written_bytes, m.free_written_known), (64 << 20, true));
        assert_eq!((m.segments, m.free_written_segments, m.free_written_chunks), (12, 10, 190000));
        assert_eq!(phase_name_i32(99), "phase-99");
    }
}
