//! Every type decodes the JSON the daemon sends (or the CLI posts) and
//! encodes it back to the same JSON value; decoding that again gives the
//! same typed value.

mod samples;

use api::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Debug;

/// Decodes `json` as `T`, checks that it encodes to the same JSON value and
/// that the encoding decodes to the same `T`; returns the decoded value.
fn round_trip<T>(json: &str) -> T
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let sample: Value = serde_json::from_str(json).expect("samples are JSON");
    let typed: T = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("{}: {e}\n{json}", std::any::type_name::<T>()));
    let encoded = serde_json::to_value(&typed).unwrap();
    assert_eq!(encoded, sample, "{}", std::any::type_name::<T>());
    let again: T = serde_json::from_value(encoded).unwrap();
    assert_eq!(again, typed);
    typed
}

#[test]
fn daemon_status_exports_and_shutdown() {
    let s: DaemonStatus = round_trip(samples::STATUS);
    assert_eq!((s.pid, s.jobs_running), (4242, 1));
    assert!(round_trip::<ShuttingDown>(samples::SHUTTING_DOWN).shutting_down);
    let e: Vec<Export> = round_trip(samples::EXPORTS);
    assert_eq!(e[1].name, "vm1/disk0@checkpoint-4");
}

#[test]
fn machines_checkpoints_and_reference_points() {
    let m: Machine = round_trip(samples::MACHINE);
    assert_eq!(
        m.disk("disk1").unwrap().base.to_str(),
        Some("/vms/data.vhdx")
    );
    assert_eq!(m.checkpoints[0].kind, CheckpointKind::Recovery);
    assert_eq!(m.reference_points[0].backup.as_ref().unwrap().point, 1);
    round_trip::<Machine>(samples::BARE_MACHINE);
    round_trip::<Vec<Machine>>(&format!("[{},{}]", samples::MACHINE, samples::BARE_MACHINE));
    let c: Checkpoint = round_trip(samples::CHECKPOINT);
    assert_eq!(c.consistency, Consistency::Application);
    assert_eq!(c.disks[1].rct_id, None);
    let c: Checkpoint = round_trip(samples::STANDARD_CHECKPOINT);
    assert_eq!(c.backup.unwrap().dir.to_str(), Some("/backups/vm1"));
    let r: ReferencePoint = round_trip(samples::REFERENCE_POINT);
    assert_eq!(r.checkpoint, 2);
    assert_eq!(round_trip::<Applied>(samples::APPLIED).applied, 5);
    assert_eq!(round_trip::<Destroyed>(samples::DESTROYED).destroyed, 3);
}

#[test]
fn machine_files_without_checkpoint_lists_still_decode() {
    // vdisk defaults the two lists; so does the mirror.
    let m: Machine =
        serde_json::from_str(r#"{"name":"vm3","disks":[],"freeze":null,"thaw":null,"next_id":1}"#)
            .unwrap();
    assert!(m.checkpoints.is_empty() && m.reference_points.is_empty());
}

#[test]
fn tracking() {
    let s: TrackingStatus = round_trip(samples::TRACKING_ON);
    assert_eq!(s.newer_changes, Some(true));
    assert_eq!(s.retained_ids.len(), 2);
    round_trip::<TrackingStatus>(samples::TRACKING_MISSING);
    let s: TrackingStatus = round_trip(samples::TRACKING_BROKEN);
    let e = s.error.unwrap();
    assert_eq!(e.error, TrackingErrorKind::FileCorrupt);
    assert!(e.full_backup_required);

    let on: TrackingSwitched = round_trip(samples::ENABLED);
    assert_eq!(on.granularity, Some(65536));
    let off: TrackingSwitched = round_trip(samples::DISABLED);
    assert_eq!((off.enabled, off.granularity), (false, None));
    assert_eq!(round_trip::<Sealed>(samples::SEALED).id, samples::ID2);
    assert_eq!(
        round_trip::<Released>(samples::RELEASED).released,
        samples::ID1
    );
}

#[test]
fn changes() {
    let c: Changes = round_trip(samples::CHANGES);
    assert_eq!(
        c.ranges[1],
        ChangedRange {
            offset: 10 << 20,
            length: 128 << 10
        }
    );
    let c: Changes = round_trip(samples::CHANGES_UNTIL);
    assert_eq!(c.until.as_deref(), Some(samples::ID2));
}

#[test]
fn jobs_and_their_results() {
    let j: Job = round_trip(samples::JOB_RUNNING);
    assert!(j.is_running() && j.result.is_none());
    let j: Job = round_trip(samples::JOB_BACKUP_DONE);
    let Some(JobResult::Backup(s)) = j.result else {
        panic!("a backup summary: {:?}", j.result)
    };
    assert_eq!(
        (s.kind, s.disks[0].kind),
        (BackupKind::Mixed, BackupKind::Incremental)
    );
    assert!(s.disks[1].full_reason.is_some());
    assert_eq!(s.seconds, 1.25);
    let j: Job = round_trip(samples::JOB_RESTORE_DONE);
    let Some(JobResult::Restore(r)) = j.result else {
        panic!("a restore result: {:?}", j.result)
    };
    assert_eq!(r.files.len(), 2);
    let j: Job = round_trip(samples::JOB_VERIFY_DONE);
    assert!(matches!(
        j.result,
        Some(JobResult::Verify(VerifyReport {
            first_bad: None,
            ..
        }))
    ));
    let j: Job = round_trip(samples::JOB_VERIFY_BAD);
    let Some(JobResult::Verify(v)) = j.result else {
        panic!("a verify report: {:?}", j.result)
    };
    assert_eq!(v.first_bad.unwrap().scope, BadBlockScope::Content);
    let j: Job = round_trip(samples::JOB_FAILED);
    assert_eq!((j.kind, j.state), (JobKind::Restore, JobState::Failed));
    let j: Job = round_trip(samples::JOB_HOST_RUNNING);
    assert_eq!(j.kind, JobKind::HostBackup);
    assert_eq!(j.parts[0].item, "db/disk1");
    let j: Job = round_trip(samples::JOB_HOST_DONE);
    let Some(JobResult::HostBackup(h)) = j.result else {
        panic!("a host backup summary: {:?}", j.result)
    };
    assert_eq!((h.host_point, h.machines.len()), (4, 2));
    assert_eq!(h.machines[1].kind, BackupKind::Full);
    let j: Job = round_trip(samples::JOB_HOST_VERIFY_BAD);
    let Some(JobResult::Verify(v)) = j.result else {
        panic!("a verify report: {:?}", j.result)
    };
    assert_eq!(v.first_bad.unwrap().machine.as_deref(), Some("web"));
    assert_eq!(v.machines[1].points_checked, [2]);
    // A plain job and report leave the host-only fields out.
    let j: Job = serde_json::from_str(samples::JOB_VERIFY_BAD).unwrap();
    let back = serde_json::to_value(&j).unwrap();
    assert!(back.get("parts").is_none());
    assert!(back["result"].get("machines").is_none());
    assert!(back["result"]["first_bad"].get("machine").is_none());
    let j: Job = round_trip(samples::JOB_OTHER_RESULT);
    assert!(matches!(j.result, Some(JobResult::Other(_))));
    round_trip::<Vec<Job>>(&format!(
        "[{},{},{}]",
        samples::JOB_RUNNING,
        samples::JOB_BACKUP_DONE,
        samples::JOB_FAILED
    ));
}

#[test]
fn request_bodies() {
    let r: CheckpointRequest = round_trip(samples::CHECKPOINT_REQUEST);
    assert_eq!(r.kind, Some(CheckpointKind::Recovery));
    assert_eq!(
        round_trip::<CheckpointRequest>(samples::CHECKPOINT_REQUEST_EMPTY),
        CheckpointRequest::default()
    );
    assert_eq!(
        round_trip::<EnableTrackingRequest>(samples::ENABLE_REQUEST).granularity,
        Some(1 << 20)
    );
    assert_eq!(
        round_trip::<ReleaseRequest>(samples::RELEASE_REQUEST).id,
        samples::ID1
    );
    round_trip::<BackupRequest>(samples::BACKUP_REQUEST);
    let r: RestoreRequest = round_trip(samples::RESTORE_REQUEST);
    assert_eq!(r.format, Some(RestoreFormat::Raw));
    let r: RestoreRequest = round_trip(samples::RESTORE_REQUEST_MINIMAL);
    assert_eq!((r.point, r.disk, r.format), (None, None, None));
    round_trip::<VerifyRequest>(samples::VERIFY_REQUEST);
    round_trip::<VerifyRequest>(samples::VERIFY_REQUEST_ALL);
    let h: HostBackupRequest = round_trip(samples::HOST_BACKUP_REQUEST);
    assert_eq!((h.machines.len(), h.freeze_timeout_seconds), (2, Some(30)));
    let h: HostBackupRequest = round_trip(samples::HOST_BACKUP_REQUEST_MINIMAL);
    assert_eq!(h.freeze_timeout_seconds, None);
    let r: RestoreRequest = round_trip(samples::RESTORE_REQUEST_HOST);
    assert_eq!((r.point, r.machine.as_deref()), (Some(4), Some("db")));
}

#[test]
fn the_changes_query_reads_what_the_cli_sent_and_writes_what_axum_reads() {
    let q: ChangesQuery = serde_urlencoded::from_str(samples::CHANGES_QUERY_CLI).unwrap();
    assert_eq!(
        q,
        ChangesQuery {
            since: samples::ID1.into(),
            until: Some(samples::ID2.into()),
            offset: 0,
            length: Some(1 << 20),
            max_ranges: Some(u64::MAX),
        }
    );
    let encoded = serde_urlencoded::to_string(&q).unwrap();
    assert!(encoded.starts_with("since=rct%3A5b1f0c2e"), "{encoded}");
    assert_eq!(
        serde_urlencoded::from_str::<ChangesQuery>(&encoded).unwrap(),
        q
    );
    let minimal = ChangesQuery::since(samples::ID1);
    let encoded = serde_urlencoded::to_string(&minimal).unwrap();
    assert_eq!(
        encoded,
        format!("since={}&offset=0", samples::ID1.replace(':', "%3A"))
    );
    assert_eq!(
        serde_urlencoded::from_str::<ChangesQuery>(&encoded).unwrap(),
        minimal
    );
    let only_since: ChangesQuery =
        serde_urlencoded::from_str(&format!("since={}", samples::ID1)).unwrap();
    assert_eq!(only_since, minimal);
    // The schema side: ChangesQuery also serializes as JSON.
    round_trip::<ChangesQuery>(&serde_json::to_string(&q).unwrap());
}

#[test]
fn error_bodies() {
    let e: ErrorBody = round_trip(samples::NOT_FOUND);
    assert_eq!((e.error.clone(), e.status()), (ErrorKind::NotFound, 404));
    assert_eq!(round_trip::<ErrorBody>(samples::UNAUTHORIZED).status(), 401);
    assert_eq!(round_trip::<ErrorBody>(samples::UNAVAILABLE).status(), 503);
    assert_eq!(
        round_trip::<ErrorBody>(samples::INTERNAL).error,
        ErrorKind::Internal
    );

    let e: ErrorBody = round_trip(samples::TRACKING_REFUSAL);
    assert_eq!(e.error, ErrorKind::Tracking(TrackingErrorKind::UnknownId));
    assert_eq!(e.status(), 409);
    assert_eq!(e.tracking.as_ref().unwrap().message, e.message);
    // `io` alone is the general kind; with `tracking` it is tracking's.
    let e: ErrorBody = round_trip(samples::TRACKING_IO_REFUSAL);
    assert_eq!(e.error, ErrorKind::Tracking(TrackingErrorKind::Io));
    assert_eq!(e.status(), 409);
    let e: ErrorBody = round_trip(samples::LEGACY_TRACKING_IO);
    assert_eq!(e.error, ErrorKind::Io);
    // Old tracking refusals still decode (their kind is read from `error`).
    let e: ErrorBody = round_trip(samples::LEGACY_TRACKING_REFUSAL);
    assert_eq!(e.error, ErrorKind::Tracking(TrackingErrorKind::MalformedId));
    assert_eq!(e.tracking, None);
}

#[test]
fn error_bodies_built_by_the_daemon_carry_tracking_exactly_for_tracking_kinds() {
    let t = TrackingError::new(TrackingErrorKind::ReleasedId, "released");
    let e = ErrorBody::from(t.clone());
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        serde_json::json!({"error": "released_id", "message": "released",
            "tracking": {"error": "released_id", "message": "released", "full_backup_required": true}})
    );
    assert_eq!(
        ErrorBody::new(
            ErrorKind::Tracking(TrackingErrorKind::ReleasedId),
            "released"
        ),
        e
    );
    let e = ErrorBody::new(ErrorKind::Busy, "machine vm1 is being backed up");
    assert_eq!(
        serde_json::to_string(&e).unwrap(),
        r#"{"error":"busy","message":"machine vm1 is being backed up"}"#
    );
    assert_eq!(e.status(), 423);
}

#[test]
fn every_kind_keeps_its_name_and_status() {
    for k in ErrorKind::GENERAL {
        assert_eq!(&ErrorKind::from_name(k.as_str()), k);
        let json = serde_json::to_string(k).unwrap();
        assert_eq!(&serde_json::from_str::<ErrorKind>(&json).unwrap(), k);
        assert_ne!(k.status(), 409, "{k}: 409 is for tracking refusals only");
    }
    for t in TrackingErrorKind::KNOWN {
        assert_eq!(&TrackingErrorKind::from_name(t.as_str()), t);
        let json = serde_json::to_string(t).unwrap();
        assert_eq!(
            &serde_json::from_str::<TrackingErrorKind>(&json).unwrap(),
            t
        );
        assert_eq!(ErrorKind::Tracking(t.clone()).status(), 409);
        assert_eq!(ErrorKind::Tracking(t.clone()).as_str(), t.as_str());
    }
    let names = [
        ("not_found", 404),
        ("invalid", 400),
        ("out_of_range", 400),
        ("unauthorized", 401),
        ("frozen", 423),
        ("busy", 423),
        ("unavailable", 503),
        ("io", 500),
        ("error", 500),
        ("panic", 500),
        ("job_failed", 500),
        ("unknown_id", 409),
        ("tracking_disabled", 409),
    ];
    for (name, status) in names {
        let k = ErrorKind::from_name(name);
        assert_eq!((k.as_str(), k.status()), (name, status));
    }
    // Names from a newer daemon survive a round trip.
    let k: ErrorKind = serde_json::from_str(r#""quota_exceeded""#).unwrap();
    assert_eq!(k, ErrorKind::Unknown("quota_exceeded".into()));
    assert_eq!(serde_json::to_string(&k).unwrap(), r#""quota_exceeded""#);
    let t: TrackingErrorKind = serde_json::from_str(r#""tracking_new""#).unwrap();
    assert_eq!(t.as_str(), "tracking_new");
}

#[test]
fn plain_enums_travel_as_snake_case() {
    fn name<T: Serialize>(v: T) -> String {
        serde_json::to_value(v)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }
    assert_eq!(name(CheckpointKind::Standard), "standard");
    assert_eq!(name(CheckpointKind::Recovery), "recovery");
    assert_eq!(name(Consistency::Crash), "crash");
    assert_eq!(name(Consistency::Application), "application");
    assert_eq!(name(JobState::Running), "running");
    assert_eq!(name(JobState::Succeeded), "succeeded");
    assert_eq!(name(JobState::Failed), "failed");
    assert_eq!(name(JobKind::Backup), "backup");
    assert_eq!(name(JobKind::Restore), "restore");
    assert_eq!(name(JobKind::Verify), "verify");
    assert_eq!(name(JobKind::HostBackup), "host_backup");
    assert_eq!(name(BackupKind::Full), "full");
    assert_eq!(name(BackupKind::Incremental), "incremental");
    assert_eq!(name(BackupKind::Mixed), "mixed");
    assert_eq!(name(RestoreFormat::Vhdx), "vhdx");
    assert_eq!(name(RestoreFormat::Raw), "raw");
    assert_eq!(name(BadBlockScope::File), "file");
    assert_eq!(name(BadBlockScope::Content), "content");
}

#[test]
fn instant_restore_finish_and_discard() {
    let r: InstantRequest = round_trip(samples::INSTANT_REQUEST);
    assert_eq!((r.point, r.machine.as_deref()), (Some(3), Some("vm1")));
    let r: InstantRequest = round_trip(samples::INSTANT_REQUEST_PLAIN);
    assert_eq!((r.point, r.machine), (None, None));
    let r: InstantRestored = round_trip(samples::INSTANT_RESTORED);
    let origin = r.machine.instant.expect("an instant machine says so");
    assert_eq!((origin.point, origin.finishing), (2, false));
    assert_eq!(r.exports, ["vm1r/disk0"]);
    // A machine that is not instant leaves the field out.
    let m: Machine = round_trip(samples::BARE_MACHINE);
    assert!(m.instant.is_none());
    assert_eq!(
        round_trip::<FinishRequest>(samples::FINISH_REQUEST).throttle,
        Some(100 << 20)
    );
    let j: Job = round_trip(samples::JOB_FINISH_DONE);
    assert_eq!(j.kind, JobKind::Finish);
    let Some(JobResult::Finish(s)) = j.result else {
        panic!("a finish summary: {:?}", j.result)
    };
    assert!(s.resumed && s.disks[0].rounds == 2);
    assert_eq!(
        round_trip::<Discarded>(samples::DISCARDED).discarded,
        "vm1r"
    );
}
