//! The client against a small HTTP server on a unix socket: every method
//! sends its route (method, percent-encoded path, query, body) and decodes
//! the daemon's answer; error answers become typed errors; a daemon that is
//! not there is a transport error.

mod fake_daemon;
mod samples;

use api::{ApiError, Client, ErrorKind, TrackingErrorKind};
use fake_daemon::FakeDaemon;
use serde::Serialize;
use serde_json::Value;

/// Scripts `sample` as the answer, makes the call, and checks what went out
/// and that the decoded answer encodes back to the sample.
fn check<T: Serialize>(
    d: &FakeDaemon,
    sample: &str,
    call: impl FnOnce(&Client) -> Result<T, ApiError>,
    method: &str,
    target: &str,
    body: Option<&str>,
) -> T {
    d.will_answer(200, sample);
    let got = call(&d.client()).unwrap_or_else(|e| panic!("{method} {target}: {e}"));
    let seen = d.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let seen = &seen[0];
    assert_eq!(
        (seen.method.as_str(), seen.target.as_str()),
        (method, target)
    );
    match body {
        None => {
            assert_eq!(seen.body, "", "{target}");
            assert_eq!(seen.content_type, None, "{target}");
        }
        Some(b) => {
            let sent: Value = serde_json::from_str(&seen.body).unwrap();
            assert_eq!(sent, serde_json::from_str::<Value>(b).unwrap(), "{target}");
            assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        }
    }
    assert_eq!(
        serde_json::to_value(&got).unwrap(),
        serde_json::from_str::<Value>(sample).unwrap(),
        "{target}"
    );
    got
}

#[test]
fn every_method_sends_its_route_and_decodes_the_answer() {
    use api::*;
    let d = FakeDaemon::start();
    let s = samples::ID1;
    let enc_id1 = s.replace(':', "%3A");

    let doc = api::openapi().to_json().unwrap();
    check(&d, &doc, |c| c.openapi(), "GET", "/v1/openapi.json", None);
    check(
        &d,
        samples::STATUS,
        |c| c.status(),
        "GET",
        "/v1/status",
        None,
    );
    check(
        &d,
        samples::SHUTTING_DOWN,
        |c| c.shutdown(),
        "POST",
        "/v1/shutdown",
        None,
    );
    check(
        &d,
        samples::EXPORTS,
        |c| c.exports(),
        "GET",
        "/v1/exports",
        None,
    );
    let machines = format!("[{}]", samples::MACHINE);
    check(&d, &machines, |c| c.machines(), "GET", "/v1/machines", None);
    check(
        &d,
        samples::MACHINE,
        |c| c.machine("vm1"),
        "GET",
        "/v1/machines/vm1",
        None,
    );
    let req = CheckpointRequest {
        kind: Some(CheckpointKind::Recovery),
        consistency: Some(Consistency::Application),
    };
    check(
        &d,
        samples::CHECKPOINT,
        |c| c.create_checkpoint("vm1", &req),
        "POST",
        "/v1/machines/vm1/checkpoints",
        Some(samples::CHECKPOINT_REQUEST),
    );
    check(
        &d,
        samples::CHECKPOINT,
        |c| c.create_checkpoint("vm1", &CheckpointRequest::default()),
        "POST",
        "/v1/machines/vm1/checkpoints",
        Some("{}"),
    );
    check(
        &d,
        samples::STANDARD_CHECKPOINT,
        |c| c.delete_checkpoint("vm1", 5),
        "DELETE",
        "/v1/machines/vm1/checkpoints/5",
        None,
    );
    check(
        &d,
        samples::APPLIED,
        |c| c.apply_checkpoint("vm1", 5),
        "POST",
        "/v1/machines/vm1/checkpoints/5/apply",
        None,
    );
    check(
        &d,
        samples::REFERENCE_POINT,
        |c| c.convert_checkpoint("vm1", 4),
        "POST",
        "/v1/machines/vm1/checkpoints/4/convert",
        None,
    );
    check(
        &d,
        samples::DESTROYED,
        |c| c.destroy_reference_point("vm1", 3),
        "DELETE",
        "/v1/machines/vm1/reference-points/3",
        None,
    );
    let base = "/v1/machines/vm1/disks/disk0";
    check(
        &d,
        samples::TRACKING_ON,
        |c| c.tracking_status("vm1", "disk0"),
        "GET",
        &format!("{base}/tracking"),
        None,
    );
    let enable = EnableTrackingRequest {
        granularity: Some(1 << 20),
    };
    check(
        &d,
        samples::ENABLED,
        |c| c.enable_tracking("vm1", "disk0", &enable),
        "POST",
        &format!("{base}/tracking/enable"),
        Some(samples::ENABLE_REQUEST),
    );
    check(
        &d,
        samples::DISABLED,
        |c| c.disable_tracking("vm1", "disk0"),
        "POST",
        &format!("{base}/tracking/disable"),
        None,
    );
    check(
        &d,
        samples::SEALED,
        |c| c.seal("vm1", "disk0"),
        "POST",
        &format!("{base}/tracking/seal"),
        None,
    );
    check(
        &d,
        samples::RELEASED,
        |c| c.release("vm1", "disk0", samples::ID1),
        "POST",
        &format!("{base}/tracking/release"),
        Some(samples::RELEASE_REQUEST),
    );
    check(
        &d,
        samples::CHANGES,
        |c| c.changes("vm1", "disk0", &ChangesQuery::since(samples::ID1)),
        "GET",
        &format!("{base}/changes?since={enc_id1}&offset=0"),
        None,
    );
    let q = ChangesQuery {
        since: samples::ID1.into(),
        until: Some(samples::ID2.into()),
        offset: 4096,
        length: Some(1 << 20),
        max_ranges: Some(16),
    };
    check(
        &d,
        samples::CHANGES_UNTIL,
        |c| c.changes("vm1", "disk0", &q),
        "GET",
        &format!(
            "{base}/changes?since={enc_id1}&until={}&offset=4096&length=1048576&max_ranges=16",
            samples::ID2.replace(':', "%3A")
        ),
        None,
    );
    let backup = BackupRequest {
        to: "/backups/vm1".into(),
    };
    check(
        &d,
        samples::JOB_RUNNING,
        |c| c.start_backup("vm1", &backup),
        "POST",
        "/v1/machines/vm1/backups",
        Some(samples::BACKUP_REQUEST),
    );
    let restore: RestoreRequest = serde_json::from_str(samples::RESTORE_REQUEST).unwrap();
    check(
        &d,
        samples::JOB_RESTORE_DONE,
        |c| c.start_restore(&restore),
        "POST",
        "/v1/restores",
        Some(samples::RESTORE_REQUEST),
    );
    let verify: VerifyRequest = serde_json::from_str(samples::VERIFY_REQUEST_ALL).unwrap();
    check(
        &d,
        samples::JOB_VERIFY_DONE,
        |c| c.start_verify(&verify),
        "POST",
        "/v1/verifications",
        Some(samples::VERIFY_REQUEST_ALL),
    );
    let jobs = format!("[{},{}]", samples::JOB_RUNNING, samples::JOB_FAILED);
    check(&d, &jobs, |c| c.jobs(), "GET", "/v1/jobs", None);
    check(
        &d,
        samples::JOB_FAILED,
        |c| c.job(11),
        "GET",
        "/v1/jobs/11",
        None,
    );
}

#[test]
fn path_segments_are_percent_encoded() {
    let d = FakeDaemon::start();
    d.will_answer(200, samples::TRACKING_MISSING);
    d.client().tracking_status("my vm/1", "disk:0?#").unwrap();
    d.will_answer(200, samples::MACHINE);
    d.client().machine("..").unwrap();
    let seen = d.seen();
    assert_eq!(
        seen[0].target,
        "/v1/machines/my%20vm%2F1/disks/disk%3A0%3F%23/tracking"
    );
    assert_eq!(seen[1].target, "/v1/machines/%2E%2E");
}

#[test]
fn wait_job_polls_until_the_job_ends() {
    let d = FakeDaemon::start();
    d.will_answer(200, samples::JOB_RUNNING);
    d.will_answer(200, samples::JOB_RUNNING);
    d.will_answer(200, samples::JOB_BACKUP_DONE);
    let mut states = Vec::new();
    let job = d
        .client()
        .wait_job(7, &mut |j| states.push((j.state, j.done)))
        .unwrap();
    assert!(matches!(job.result, Some(api::JobResult::Backup(_))));
    use api::JobState::*;
    assert_eq!(
        states,
        [
            (Running, 1 << 20),
            (Running, 1 << 20),
            (Succeeded, 32 << 20)
        ]
    );
    assert!(d.seen().iter().all(|s| s.target == "/v1/jobs/7"));

    d.will_answer(200, samples::JOB_FAILED);
    let e = d.client().wait_job(11, &mut |_| {}).unwrap_err();
    assert_eq!(e.kind(), Some(&ErrorKind::JobFailed));
    assert_eq!(e.to_string(), "repository /backups/vm1 has no point 9");
    assert!(!e.is_tracking());
}

#[test]
fn run_backup_starts_the_job_and_returns_its_summary() {
    let d = FakeDaemon::start();
    d.will_answer(200, samples::JOB_RUNNING);
    d.will_answer(200, samples::JOB_BACKUP_DONE);
    let req = api::BackupRequest {
        to: "/backups/vm1".into(),
    };
    let s = d.client().run_backup("vm1", &req, &mut |_| {}).unwrap();
    assert_eq!((s.point, s.kind), (2, api::BackupKind::Mixed));
    let targets: Vec<_> = d.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/v1/machines/vm1/backups", "/v1/jobs/7"]);

    // A job whose result is not a summary is a decode error, not a panic.
    d.will_answer(200, samples::JOB_RUNNING);
    d.will_answer(200, samples::JOB_OTHER_RESULT);
    let e = d.client().run_backup("vm1", &req, &mut |_| {}).unwrap_err();
    assert!(matches!(e, ApiError::Decode { .. }), "{e:?}");
}

#[test]
fn a_tracking_refusal_decodes_into_the_typed_field() {
    let d = FakeDaemon::start();
    let q = api::ChangesQuery::since("rct:00000000-0000-4000-8000-000000000000:00000001");
    d.will_answer(409, samples::TRACKING_REFUSAL);
    let e = d.client().changes("vm1", "disk0", &q).unwrap_err();
    assert!(e.is_tracking(), "{e:?}");
    assert_eq!(e.status(), Some(409));
    assert_eq!(
        e.kind(),
        Some(&ErrorKind::Tracking(TrackingErrorKind::UnknownId))
    );
    let t = e.tracking().expect("the tracking field");
    assert_eq!(t.error, TrackingErrorKind::UnknownId);
    assert!(t.full_backup_required);
    assert!(e.to_string().contains("is unknown to vm1/disk0"), "{e}");

    // `io` with `tracking` is a tracking refusal, not an I/O error.
    d.will_answer(409, samples::TRACKING_IO_REFUSAL);
    let e = d.client().seal("vm1", "disk0").unwrap_err();
    assert_eq!(e.kind(), Some(&ErrorKind::Tracking(TrackingErrorKind::Io)));

    // A daemon from before the field: 409 and a tracking kind in `error`.
    d.will_answer(409, samples::LEGACY_TRACKING_IO);
    let e = d.client().seal("vm1", "disk0").unwrap_err();
    assert!(e.is_tracking(), "{e:?}");
    assert_eq!(e.tracking().unwrap().error, TrackingErrorKind::Io);
    d.will_answer(409, samples::LEGACY_TRACKING_REFUSAL);
    let e = d.client().changes("vm1", "disk0", &q).unwrap_err();
    assert_eq!(e.tracking().unwrap().error, TrackingErrorKind::MalformedId);
}

#[test]
fn other_error_answers_keep_their_kind() {
    let d = FakeDaemon::start();
    let cases = [
        (404, samples::NOT_FOUND, ErrorKind::NotFound),
        (401, samples::UNAUTHORIZED, ErrorKind::Unauthorized),
        (503, samples::UNAVAILABLE, ErrorKind::Unavailable),
        (500, samples::INTERNAL, ErrorKind::Internal),
    ];
    for (status, body, kind) in cases {
        d.will_answer(status, body);
        let e = d.client().machine("nope").unwrap_err();
        assert_eq!(
            (e.status(), e.kind()),
            (Some(status), Some(&kind)),
            "{body}"
        );
        assert!(!e.is_tracking() && e.tracking().is_none(), "{body}");
    }
    d.will_answer(404, samples::NOT_FOUND);
    let e = d.client().machine("nope").unwrap_err();
    assert_eq!(e.to_string(), r#"no machine named "nope""#);

    // Not the daemon's error body: the status decides the kind.
    d.will_answer(404, "");
    let e = d.client().machine("nope").unwrap_err();
    assert_eq!(e.kind(), Some(&ErrorKind::NotFound), "{e:?}");
    d.will_answer(422, "Failed to deserialize the JSON body");
    let e = d.client().machine("nope").unwrap_err();
    assert_eq!(e.kind(), Some(&ErrorKind::Invalid), "{e:?}");
    assert!(e.to_string().contains("Failed to deserialize"), "{e}");
}

#[test]
fn an_answer_that_is_not_the_promised_type_is_a_decode_error() {
    let d = FakeDaemon::start();
    d.will_answer(200, r#"{"name": 7}"#);
    let e = d.client().machine("vm1").unwrap_err();
    let ApiError::Decode {
        status,
        path,
        expected,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (*status, path.as_str(), expected.as_str()),
        (200, "/v1/machines/vm1", "Machine")
    );
    assert_eq!((e.status(), e.kind()), (None, None));
}

#[test]
fn no_daemon_is_a_transport_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Client::find(dir.path()).is_none());
    let socket = dir.path().join("api.sock");
    let e = Client::unix(&socket).unwrap().status().unwrap_err();
    let ApiError::Transport { endpoint, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(endpoint, &socket.display().to_string());
    assert!(!e.is_tracking() && e.status().is_none());

    let d = FakeDaemon::start();
    let found = Client::find(d.home()).expect("the fake daemon answers");
    assert_eq!(found.endpoint(), d.socket().display().to_string());
}

#[test]
fn errors_can_travel_between_threads_and_into_anyhow_style_boxes() {
    fn boxable<E: std::error::Error + Send + Sync + 'static>() {}
    boxable::<ApiError>();
}

#[test]
fn a_host_backup_is_a_job_whose_parts_are_the_machines() {
    use api::Machines;
    let d = FakeDaemon::start();
    d.will_answer(200, samples::JOB_HOST_RUNNING);
    d.will_answer(200, samples::JOB_HOST_RUNNING);
    d.will_answer(200, samples::JOB_HOST_DONE);
    let request: api::HostBackupRequest =
        serde_json::from_str(samples::HOST_BACKUP_REQUEST).unwrap();
    let seen_progress = std::sync::Mutex::new(Vec::new());
    let s = Machines::host_backup(&d.client(), &request, &|whole, parts| {
        let items: Vec<String> = parts.iter().map(|p| p.item.clone()).collect();
        seen_progress.lock().unwrap().push((whole.done, items));
    })
    .unwrap();
    assert_eq!(s.host_point, 4);
    assert_eq!(s.machines[0].machine, "db");
    let seen = d.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("POST", "/v1/backups")
    );
    let body: serde_json::Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["machines"], serde_json::json!(["db", "web"]));
    assert!(seen[1..].iter().all(|s| s.target == "/v1/jobs/13"));
    let p = seen_progress.into_inner().unwrap();
    assert_eq!(
        p[0],
        (3 << 20, vec!["db/disk1".to_string(), "web".to_string()])
    );
    assert_eq!(p.last().unwrap().0, 96 << 20);
}
