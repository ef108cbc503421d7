//! `stigmer doctor`: what it reports matches what stigmer then does, on a
//! healthy host and on the hosts that break exec from memory or the cache.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

use common::*;
use serde_json::Value;

fn json(o: &Output) -> Value {
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn payloads(report: &Value) -> &Vec<Value> {
    report["payloads"].as_array().unwrap()
}

#[test]
fn a_healthy_host_runs_every_payload_as_list_says_and_doctor_writes_nothing() {
    let env = TestEnv::new();
    let report = json(&env.stigmer().args(["doctor", "--json"]).output().unwrap());
    let list = json(&env.stigmer().args(["list", "--json"]).output().unwrap());
    // Doctor judges what runs: the payloads, not the assets list shows too.
    let listed: Vec<&Value> =
        list.as_array().unwrap().iter().filter(|l| l["kind"] != "asset").collect();

    assert_eq!(payloads(&report).len(), listed.len());
    for (p, l) in payloads(&report).iter().zip(&listed) {
        assert_eq!(p["name"], l["name"]);
        assert_eq!(p["size"], l["size"]);
        assert_eq!(p["backend"], l["backend"], "{p}");
        assert_eq!(p["ok"], true, "{p}");
    }
    if cfg!(target_os = "linux") {
        let memfd = &report["memfd"];
        assert_eq!(memfd["create"]["ok"], true, "{memfd}");
        assert_eq!(memfd["exec"]["ok"], true, "{memfd}");
        assert!(memfd["exec"]["detail"].as_str().unwrap().contains("sealed memfd"), "{memfd}");
        assert_eq!(report["cache"]["noexec"], false);
        assert!(report["seccomp"].as_str().is_some());
        // The mapped loader's one kernel question (PR_SET_MM_MAP), asked
        // in a child: this host allows it.
        assert_eq!(report["mapped"]["ok"], true, "{}", report["mapped"]);
    } else {
        assert_eq!(report["mapped"]["ok"], false);
        assert_eq!(report["mapped"]["detail"], "the mapped backend needs Linux");
    }
    assert_eq!(report["cache"]["usable"]["ok"], true);
    assert_eq!(report["cache"]["owner"], Value::Null, "no cache folder yet");
    assert_eq!(report["cache"]["root"], env.home.to_str().unwrap());
    assert!(report["cache"]["free"].as_u64().unwrap() > 0);

    // The demo's services run two payloads (workflow-runner twice): a
    // server pins each payload it runs from memory once.
    let size = |name: &str| {
        listed
            .iter()
            .find(|l| l["name"] == name)
            .filter(|l| l["backend"] == "memfd")
            .map_or(0, |l| l["size"].as_u64().unwrap())
    };
    assert_eq!(
        report["server_shmem"].as_u64().unwrap(),
        size("stigmer-server") + size("workflow-runner")
    );

    // The text says the same, and neither form created the cache.
    let o = env.stigmer().arg("doctor").output().unwrap();
    let text = ok(&o);
    assert!(text.contains("every payload can run here"), "{text}");
    for p in payloads(&report) {
        let name = p["name"].as_str().unwrap();
        let line = text.lines().find(|l| l.split_whitespace().nth(1) == Some(name)).unwrap();
        assert!(line.starts_with("ok"), "{line}");
    }
    assert!(!env.home.exists(), "doctor created {}", env.home.display());
}

#[test]
fn with_memfd_noexec_2_doctor_sends_payloads_to_the_cache() {
    require!(can_set_memfd_noexec(), "needs root, unshare and vm.memfd_noexec (Linux 6.3+) at 0");
    let env = TestEnv::new();
    let o = with_memfd_noexec(&env, 2, &["doctor", "--json"]);
    let report = json(&o);
    assert!(o.status.success(), "{report}");
    let memfd = &report["memfd"];
    assert_eq!(memfd["noexec"], 2);
    assert_eq!(memfd["create"]["ok"], false, "{memfd}");
    assert!(memfd["create"]["detail"].as_str().unwrap().contains("Permission denied"), "{memfd}");
    assert_eq!(memfd["exec"]["ok"], false, "{memfd}");
    // What `auto` maps needs no memfd; the rest goes to the cache.
    for p in payloads(&report) {
        let mapped = p["kind"] == "elf" && AUTO_ELF_BACKEND == "mapped";
        assert_eq!(p["backend"], if mapped { "mapped" } else { "cache" }, "{p}");
        assert_eq!(p["ok"], true, "{p}");
    }
    assert_eq!(report["server_shmem"], 0, "nothing runs from a memfd");
    // And `run` does what doctor said.
    let o = with_memfd_noexec(&env, 2, &["run", "probe"]);
    match AUTO_ELF_BACKEND {
        "mapped" => assert_eq!(probe_field(&o, "exe"), auto_elf_exe("probe")),
        _ => assert!(probe_field(&o, "exe").starts_with(env.home.to_str().unwrap())),
    }

    // Without the fallback, nothing can run: doctor says so and exits 1.
    let o = with_memfd_noexec(&env, 2, &["--backend", "memfd", "doctor"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    assert!(text.contains("!!  exec from memfd"), "{text}");
    assert!(text.contains("payload(s) cannot run here"), "{text}");
}

#[test]
fn an_untrusted_cache_folder_is_named_with_its_fix() {
    let env = TestEnv::new();
    fs::create_dir(&env.home).unwrap();
    fs::set_permissions(&env.home, fs::Permissions::from_mode(0o777)).unwrap();
    let o = env.stigmer().args(["--backend", "cache", "doctor"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    let cache = text.lines().find(|l| l.contains("cache  ")).unwrap();
    assert!(cache.starts_with("!!") && cache.contains("mode 777"), "{text}");
    assert!(
        cache.contains("writable by group or others") && cache.contains("chmod go-w"),
        "{text}"
    );
    assert!(text.contains("needs the cache, but"), "{text}");
    assert_eq!(
        fs::metadata(&env.home).unwrap().permissions().mode() & 0o777,
        0o777,
        "doctor changes nothing"
    );
}

#[test]
fn a_cache_on_a_noexec_mount_is_found() {
    require!(is_root() && have("unshare"), "needs root and unshare to mount a noexec tmpfs");
    let env = TestEnv::new();
    let mount = env.dir.path().join("noexec");
    fs::create_dir(&mount).unwrap();
    let script = "mount -t tmpfs -o noexec tmpfs \"$1\" && shift && exec \"$@\"";
    let o = Command::new("unshare")
        .args(["--mount", "sh", "-c", script, "sh"])
        .arg(&mount)
        .arg(stigmer_bin())
        .args(["--backend", "cache", "doctor", "--json"])
        .env("STIGMER_HOME", mount.join("home"))
        .output()
        .unwrap();
    let report = json(&o);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert_eq!(report["cache"]["noexec"], true, "{report}");
    for p in payloads(&report) {
        assert_eq!(p["ok"], false, "{p}");
        assert!(p["why"].as_str().unwrap().contains("noexec"), "{p}");
    }
}
