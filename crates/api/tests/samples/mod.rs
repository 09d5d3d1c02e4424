//! JSON as the daemon sends it and the CLI posts it, one sample per shape.
//! Response samples follow the daemon's handlers: `json!` objects where it
//! built them by hand, and the serde shape of the library types it
//! serialized directly (machines, checkpoints, reference points, backup
//! summaries, verify reports, jobs). Not every sample is used by every
//! test file.
#![allow(dead_code)]

pub const ID1: &str = "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001";
pub const ID2: &str = "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002";

pub const STATUS: &str =
    r#"{"home":"/srv/refpoint","jobs_running":1,"pid":4242,"version":"0.1.0"}"#;

pub const SHUTTING_DOWN: &str = r#"{"shutting_down":true}"#;

pub const EXPORTS: &str = r#"[
  {"description":"live disk (read-write, tracked)","name":"vm1/disk0"},
  {"description":"recovery checkpoint 4 (read-only)","name":"vm1/disk0@checkpoint-4"},
  {"description":"backup point 1 in /backups/vm1 (read-only)","name":"vm1/disk0@backup-1"}
]"#;

pub const CHECKPOINT: &str = r#"{
  "id": 4, "kind": "recovery", "consistency": "application", "created": 1767225600,
  "disks": [
    {"name": "disk0", "frozen": "/vms/os.vhdx", "child": "/vms/os-cp4.avhdx",
     "rct_id": "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002"},
    {"name": "disk1", "frozen": "/vms/data.vhdx", "child": "/vms/data-cp4.avhdx", "rct_id": null}
  ],
  "backup": null
}"#;

pub const STANDARD_CHECKPOINT: &str = r#"{
  "id": 5, "kind": "standard", "consistency": "crash", "created": 1767225700,
  "disks": [{"name": "disk0", "frozen": "/vms/os-cp4.avhdx", "child": "/vms/os-cp5.avhdx", "rct_id": null}],
  "backup": {"dir": "/backups/vm1", "point": 2}
}"#;

pub const REFERENCE_POINT: &str = r#"{
  "id": 3, "created": 1767139200, "checkpoint": 2,
  "disks": [{"name": "disk0", "rct_id": "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001"},
            {"name": "disk1", "rct_id": null}],
  "backup": {"dir": "/backups/vm1", "point": 1}
}"#;

pub const MACHINE: &str = r#"{
  "name": "vm1",
  "disks": [
    {"name": "disk0", "base": "/vms/os.vhdx", "active": "/vms/os-cp5.avhdx"},
    {"name": "disk1", "base": "/vms/data.vhdx", "active": "/vms/data-cp4.avhdx"}
  ],
  "freeze": "/usr/local/bin/freeze-db",
  "thaw": null,
  "checkpoints": [
    {"id": 4, "kind": "recovery", "consistency": "application", "created": 1767225600,
     "disks": [{"name": "disk0", "frozen": "/vms/os.vhdx", "child": "/vms/os-cp4.avhdx",
                "rct_id": "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002"}],
     "backup": null}
  ],
  "reference_points": [
    {"id": 3, "created": 1767139200, "checkpoint": 2,
     "disks": [{"name": "disk0", "rct_id": "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001"}],
     "backup": {"dir": "/backups/vm1", "point": 1}}
  ],
  "next_id": 6
}"#;

pub const BARE_MACHINE: &str = r#"{"name":"vm2","disks":[],"freeze":null,"thaw":null,
  "checkpoints":[],"reference_points":[],"next_id":1}"#;

pub const APPLIED: &str = r#"{"applied":5}"#;
pub const DESTROYED: &str = r#"{"destroyed":3}"#;

pub const TRACKING_ON: &str = r#"{"disk":"vm1/disk0","enabled":true,
  "most_recent_id":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002","newer_changes":true,
  "retained_ids":["rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001",
                  "rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002"],
  "error":null}"#;

pub const TRACKING_MISSING: &str = r#"{"disk":"vm1/disk1","enabled":false,"most_recent_id":null,
  "newer_changes":null,"retained_ids":[],"error":null}"#;

pub const TRACKING_BROKEN: &str = r#"{"disk":"vm1/disk0","enabled":true,"most_recent_id":null,
  "newer_changes":null,"retained_ids":[],
  "error":{"error":"tracking_file_corrupt",
           "message":"tracking file /vms/os.vhdx.rct is corrupt at offset 0x1000: bad checksum; a full backup is needed (re-enable tracking to start over)",
           "full_backup_required":true}}"#;

pub const ENABLED: &str = r#"{"enabled":true,"granularity":65536}"#;
pub const DISABLED: &str = r#"{"enabled":false}"#;
pub const SEALED: &str = r#"{"id":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002"}"#;
pub const RELEASED: &str = r#"{"released":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001"}"#;

pub const CHANGES: &str = r#"{"since":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001",
  "until":null,"ranges":[{"offset":0,"length":65536},{"offset":10485760,"length":131072}],
  "processed_length":67108864}"#;

pub const CHANGES_UNTIL: &str = r#"{"since":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001",
  "until":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002","ranges":[],
  "processed_length":1048576}"#;

pub const JOB_RUNNING: &str = r#"{"id":7,"kind":"backup","target":"vm1","state":"running",
  "item":"disk0","done":1048576,"total":67108864,"result":null,"error":null,
  "started":1767225800,"finished":null}"#;

pub const JOB_BACKUP_DONE: &str = r#"{"id":7,"kind":"backup","target":"vm1","state":"succeeded",
  "item":"disk1","done":33554432,"total":33554432,
  "result":{"machine":"vm1","repository":"/backups/vm1","point":2,"kind":"mixed",
    "disks":[
      {"name":"disk0","kind":"incremental","full_reason":null,"changed_bytes":196608,
       "bytes_read":196608,"bytes_written":4194304},
      {"name":"disk1","kind":"full","full_reason":"tracking_file_missing: tracking file /vms/data.vhdx.rct is missing",
       "changed_bytes":33554432,"bytes_read":33554432,"bytes_written":35651584}],
    "bytes_read":33751040,"bytes_written":39845888,"seconds":1.25,
    "recovered":["removed the unfinished point 2"]},
  "error":null,"started":1767225800,"finished":1767225802}"#;

pub const JOB_RESTORE_DONE: &str = r#"{"id":8,"kind":"restore","target":"/backups/vm1","state":"succeeded",
  "item":"restore","done":67108864,"total":67108864,
  "result":{"files":["/restore/disk0.vhdx","/restore/disk1.vhdx"]},
  "error":null,"started":1767225900,"finished":1767225903}"#;

pub const JOB_VERIFY_DONE: &str = r#"{"id":9,"kind":"verify","target":"/backups/vm1","state":"succeeded",
  "item":"verify","done":100,"total":100,
  "result":{"points_checked":[1,2],"bytes_checked":134217728,"file_bytes_checked":140509184,"first_bad":null},
  "error":null,"started":1767226000,"finished":1767226004}"#;

pub const JOB_VERIFY_BAD: &str = r#"{"id":10,"kind":"verify","target":"/backups/vm1","state":"succeeded",
  "item":"verify","done":100,"total":100,
  "result":{"points_checked":[1],"bytes_checked":1048576,"file_bytes_checked":0,
    "first_bad":{"point":1,"disk":"disk0","scope":"content","offset":2097152,
      "file":"/backups/vm1/0001/disk0.vhdx","problem":"hash mismatch"}},
  "error":null,"started":1767226100,"finished":1767226101}"#;

pub const JOB_FAILED: &str = r#"{"id":11,"kind":"restore","target":"/backups/vm1","state":"failed",
  "item":"","done":0,"total":0,"result":null,
  "error":"repository /backups/vm1 has no point 9","started":1767226200,"finished":1767226200}"#;

pub const JOB_HOST_RUNNING: &str = r#"{"id":13,"kind":"host_backup","target":"/backups/host","state":"running",
  "item":"host backup","done":3145728,"total":100663296,
  "parts":[{"item":"db/disk1","done":2097152,"total":67108864},
           {"item":"web","done":1048576,"total":33554432}],
  "result":null,"error":null,"started":1767226400,"finished":null}"#;

pub const JOB_HOST_DONE: &str = r#"{"id":13,"kind":"host_backup","target":"/backups/host","state":"succeeded",
  "item":"host backup","done":100663296,"total":100663296,
  "parts":[{"item":"db","done":67108864,"total":67108864},
           {"item":"web","done":33554432,"total":33554432}],
  "result":{"host_point":4,"repository":"/backups/host",
    "machines":[
      {"machine":"db","repository":"/backups/host/machines/db","point":4,"kind":"incremental",
       "disks":[{"name":"disk0","kind":"incremental","full_reason":null,"changed_bytes":65536,
                 "bytes_read":65536,"bytes_written":1048576}],
       "bytes_read":65536,"bytes_written":1048576,"seconds":0.5,"recovered":[]},
      {"machine":"web","repository":"/backups/host/machines/web","point":2,"kind":"full",
       "disks":[{"name":"disk0","kind":"full","full_reason":"no earlier backup in this repository",
                 "changed_bytes":33554432,"bytes_read":33554432,"bytes_written":33554432}],
       "bytes_read":33554432,"bytes_written":33554432,"seconds":0.75,"recovered":[]}],
    "bytes_read":33619968,"bytes_written":34603008,"seconds":0.8,
    "recovered":["rolled back host point 4 of an interrupted run"]},
  "error":null,"started":1767226400,"finished":1767226401}"#;

pub const JOB_HOST_VERIFY_BAD: &str = r#"{"id":14,"kind":"verify","target":"/backups/host","state":"succeeded",
  "item":"verify","done":100,"total":100,
  "result":{"points_checked":[1,2],"bytes_checked":1048576,"file_bytes_checked":0,
    "first_bad":{"machine":"web","point":2,"disk":"disk0","scope":"file","offset":4096,
      "file":"/backups/host/machines/web/0002/disk0.avhdx","problem":"hash mismatch"},
    "machines":[{"machine":"db","points_checked":[1,2]},{"machine":"web","points_checked":[2]}]},
  "error":null,"started":1767226500,"finished":1767226501}"#;

/// A result shape this version does not know (from a newer daemon).
pub const JOB_OTHER_RESULT: &str = r#"{"id":12,"kind":"backup","target":"vm1","state":"succeeded",
  "item":"","done":0,"total":0,"result":{"something":"new"},
  "error":null,"started":1767226300,"finished":1767226300}"#;

pub const HOST_BACKUP_REQUEST: &str =
    r#"{"to":"/backups/host","machines":["db","web"],"freeze_timeout_seconds":30}"#;
pub const HOST_BACKUP_REQUEST_MINIMAL: &str = r#"{"to":"/backups/host","machines":["db"]}"#;
pub const RESTORE_REQUEST_HOST: &str =
    r#"{"repository":"/backups/host","point":4,"machine":"db","to":"/restore/db"}"#;

pub const NOT_FOUND: &str = r#"{"error":"not_found","message":"no machine named \"nope\""}"#;
pub const UNAUTHORIZED: &str = r#"{"error":"unauthorized","message":"send the daemon's token as `Authorization: Bearer <token>`"}"#;
pub const UNAVAILABLE: &str =
    r#"{"error":"unavailable","message":"vm1/disk0 is not open; see the daemon's log"}"#;
pub const INTERNAL: &str = r#"{"error":"error","message":"backing up: disk full"}"#;

/// A tracking refusal as the daemon sent it before the `tracking` field:
/// the changes route put the whole tracking error, as JSON text, in
/// `message`; the others put plain text there.
pub const LEGACY_TRACKING_REFUSAL: &str = r#"{"error":"malformed_id","message":"{\"error\":\"malformed_id\",\"message\":\"\\\"nonsense\\\" is not an RCT ID (expected rct:<tracking-guid>:<8 hex digits>)\",\"full_backup_required\":true}"}"#;
pub const LEGACY_TRACKING_IO: &str =
    r#"{"error":"io","message":"I/O error on tracking file /vms/os.vhdx.rct while reading: EIO"}"#;

/// A tracking refusal with the typed field.
pub const TRACKING_REFUSAL: &str = r#"{"error":"unknown_id",
  "message":"RCT ID rct:00000000-0000-4000-8000-000000000000:00000001 is unknown to vm1/disk0 (never issued, or tracking was reset since); a full backup is needed",
  "tracking":{"error":"unknown_id",
    "message":"RCT ID rct:00000000-0000-4000-8000-000000000000:00000001 is unknown to vm1/disk0 (never issued, or tracking was reset since); a full backup is needed",
    "full_backup_required":true}}"#;

/// A tracking kind that is also a general kind: `tracking` tells them apart.
pub const TRACKING_IO_REFUSAL: &str = r#"{"error":"io","message":"I/O error on tracking file",
  "tracking":{"error":"io","message":"I/O error on tracking file","full_backup_required":true}}"#;

// --- request bodies, as the CLI posts them --------------------------------

pub const CHECKPOINT_REQUEST: &str = r#"{"kind":"recovery","consistency":"application"}"#;
pub const CHECKPOINT_REQUEST_EMPTY: &str = r#"{}"#;
pub const ENABLE_REQUEST: &str = r#"{"granularity":1048576}"#;
pub const RELEASE_REQUEST: &str = r#"{"id":"rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001"}"#;
pub const BACKUP_REQUEST: &str = r#"{"to":"/backups/vm1"}"#;
pub const RESTORE_REQUEST: &str = r#"{"repository":"/backups/vm1","point":2,"disk":"disk0",
  "to":"/restore/disk0.img","format":"raw"}"#;
pub const RESTORE_REQUEST_MINIMAL: &str = r#"{"repository":"/backups/vm1","to":"/restore"}"#;
pub const VERIFY_REQUEST: &str = r#"{"repository":"/backups/vm1","point":1}"#;
pub const VERIFY_REQUEST_ALL: &str = r#"{"repository":"/backups/vm1"}"#;

/// The query the CLI sends for `rct changes` (it did not encode the colons;
/// axum decodes either way).
pub const CHANGES_QUERY_CLI: &str =
    "since=rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000001&offset=0&max_ranges=18446744073709551615&until=rct:5b1f0c2e-8d7a-4b6e-9f3c-2a1d4e6f8b90:00000002&length=1048576";

pub const INSTANT_REQUEST: &str =
    r#"{"repository":"/backups/host","point":3,"machine":"vm1","name":"vm1-restored"}"#;
pub const INSTANT_REQUEST_PLAIN: &str = r#"{"repository":"/backups/vm1","name":"vm1r"}"#;
pub const INSTANT_RESTORED: &str = r#"{"machine":{"name":"vm1r",
  "disks":[{"name":"disk0","base":"/srv/refpoint/instant/vm1r/disk0.vhdx","active":"/srv/refpoint/instant/vm1r/disk0.vhdx"}],
  "freeze":null,"thaw":null,"checkpoints":[],"reference_points":[],"next_id":1,
  "instant":{"repository":"/backups/vm1","point":2,"source_machine":"vm1","created":1767226400,"finishing":false}},
  "exports":["vm1r/disk0"],"seconds":0.08}"#;
pub const FINISH_REQUEST: &str = r#"{"throttle":104857600}"#;
pub const JOB_FINISH_DONE: &str = r#"{"id":13,"kind":"finish","target":"vm1r","state":"succeeded",
  "item":"disk0","done":67108864,"total":67108864,
  "result":{"machine":"vm1r","disks":[{"name":"disk0","file":"/srv/refpoint/instant/vm1r/disk0.vhdx",
    "bytes_copied":67108864,"rounds":2,"paused_seconds":0.05,"already_standalone":false}],
    "bytes_copied":67108864,"seconds":3.5,"resumed":true},
  "error":null,"started":1767226500,"finished":1767226504}"#;
pub const DISCARDED: &str = r#"{"discarded":"vm1r"}"#;
