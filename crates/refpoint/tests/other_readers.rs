//! What the CLI leaves on disk reads right in libvhdi and in
//! dissect.hypervisor (DESIGN.md invariant 5): a machine's disk and its
//! checkpoint child, backup repositories' chains (a full point, then
//! differential ones) before and after consolidation, and restored images,
//! each compared whole with the model of what the test wrote through
//! `refpoint disk write`.
//!
//! Without the Python readers the test prints why and passes, except under
//! `CI`, where it fails (`testkit::tools::vhdx_readers_available`).

mod common;

use common::{s, Cli};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use testkit::tools::{self, VhdxReader};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 48 * MIB;

/// `top` and the files of its chain (its parent first), as our reader
/// resolves them; dissect resolves them on its own and is checked against
/// this list by `read_vhdx.py`.
fn chain_of(top: &Path) -> Vec<PathBuf> {
    let chain = vhdx::Chain::open(&storage::LocalFs, top, false).unwrap();
    chain
        .layers()
        .iter()
        .map(|l| l.path().unwrap().to_path_buf())
        .collect()
}

/// `top`, read through its chain, is `model` in both readers.
fn assert_readers(top: &Path, model: &[u8]) {
    let files = chain_of(top);
    let parents: Vec<&Path> = files[1..].iter().map(PathBuf::as_path).collect();
    for r in VhdxReader::ALL {
        tools::read_vhdx_with(r, top, &parents).assert_is(model);
    }
}

/// Writes `n` pieces of pattern at random sector offsets of `vm1/disk0`,
/// through `refpoint disk write`, and into `model`.
fn writes(cli: &Cli, dir: &Path, model: &mut [u8], rng: &mut SmallRng, n: usize) {
    for _ in 0..n {
        let len = rng.gen_range(1..4096u64) * 512;
        let off = rng.gen_range(0..(SIZE - len) / 512) * 512;
        let data = testkit::pattern::bytes(len as usize, rng.gen());
        let piece = dir.join("piece.bin");
        std::fs::write(&piece, &data).unwrap();
        cli.ok(&[
            "disk",
            "write",
            "vm1/disk0",
            "--offset",
            &off.to_string(),
            "--from",
            s(&piece),
        ]);
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
}

/// The top file of point `point` of the repository `repo`.
fn point_file(cli: &Cli, repo: &Path, point: u64) -> PathBuf {
    let list = cli.json(&["backup", "list", s(repo), "--json"]);
    let p = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["point"] == point)
        .unwrap_or_else(|| panic!("no point {point} in {list}"));
    repo.join(format!("{point:04}"))
        .join(p["disks"][0]["file"].as_str().unwrap())
}

#[test]
fn disks_checkpoints_backups_and_restores() {
    if !tools::vhdx_readers_available() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cli = Cli {
        home: dir.join("home"),
    };
    let disk = dir.join("d0.vhdx");
    cli.ok(&[
        "vhd",
        "create",
        s(&disk),
        "--size",
        &SIZE.to_string(),
        "--block-size",
        "4M",
    ]);
    cli.ok(&["machine", "create", "vm1", "--disk", s(&disk)]);
    let repo = dir.join("repo");
    let mut rng = SmallRng::seed_from_u64(3);
    let mut model = vec![0u8; SIZE as usize];
    let mut points: Vec<(u64, Vec<u8>)> = Vec::new();
    let backup = |points: &mut Vec<(u64, Vec<u8>)>, model: &[u8], kind: &str| {
        let sum = cli.json(&["backup", "vm1", "--to", s(&repo), "--json"]);
        assert_eq!(sum["kind"], kind, "{sum}");
        let point = sum["point"].as_u64().unwrap();
        assert_readers(&point_file(&cli, &repo, point), model);
        points.push((point, model.to_vec()));
    };

    writes(&cli, dir, &mut model, &mut rng, 20);
    assert_readers(&disk, &model);
    backup(&mut points, &model, "full");
    for _ in 0..2 {
        writes(&cli, dir, &mut model, &mut rng, 6);
        backup(&mut points, &model, "incremental");
    }

    // A checkpoint: the machine's writes go to a fresh child of the disk.
    cli.ok(&["checkpoint", "create", "vm1"]);
    let show = cli.json(&["machine", "show", "vm1", "--json"]);
    let child = PathBuf::from(show["disks"][0]["active"].as_str().unwrap());
    let id = show["checkpoints"].as_array().unwrap().last().unwrap()["id"].to_string();
    assert_ne!(child, disk);
    assert_readers(&child, &model);
    writes(&cli, dir, &mut model, &mut rng, 6);
    assert_readers(&child, &model);
    backup(&mut points, &model, "incremental");
    // Deleted, it is merged into the disk.
    cli.ok(&["checkpoint", "delete", "vm1", &id]);
    assert!(!child.exists());
    assert_readers(&disk, &model);
    writes(&cli, dir, &mut model, &mut rng, 3);
    backup(&mut points, &model, "incremental");

    // Consolidated: the oldest kept point becomes a full file.
    cli.ok(&["backup", "consolidate", s(&repo), "--keep", "3"]);
    let kept = points.split_off(points.len() - 3);
    for (point, want) in &kept {
        assert_readers(&point_file(&cli, &repo, *point), want);
    }
    // Restored as one flat image.
    let (point, want) = &kept[1];
    let restored = dir.join("restored.vhdx");
    cli.ok(&[
        "restore",
        s(&repo),
        "--point",
        &point.to_string(),
        "--disk",
        "disk0",
        "--to",
        s(&restored),
    ]);
    assert_readers(&restored, want);
}
