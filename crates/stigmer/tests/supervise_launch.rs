//! `supervise::serve` with launchers of the test's own, through the
//! `Launch` trait: one that counts what it prepares around the real
//! `Launcher`, and one that refuses a payload.
//!
//! Real services run (tiny `sh` scripts, from a sealed memfd on Linux or
//! the cache elsewhere). `serve` stops every one of them before it returns
//! and waits until the process has no child left. A failed assertion is a
//! panic after `serve` installed its hook: every service group is killed,
//! and the test binary aborts, printing the assertion.
//! The tests take turns ([`SERIAL`]): `serve` reaps every child of the
//! process, so two at once would take each other's.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stigmer::supervise::{self, Exit, Failure, Outcome};
use stigmer::{Catalog, Choice, Error, Launch, Launcher, Manifest, Payload, Prepared, Result};

/// One `serve` at a time in this process.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bounds a `serve` that would hang; a test should take about a second.
const LIMIT: Duration = Duration::from_secs(60);

/// The real launcher, counting what it is asked to prepare.
#[derive(Debug)]
struct Counting {
    inner: Launcher,
    prepared: Mutex<Vec<String>>,
}

impl Launch for Counting {
    fn prepare(&self, payload: &Payload) -> Result<Prepared> {
        self.prepared.lock().unwrap().push(payload.name().to_owned());
        self.inner.prepare(payload)
    }
}

/// The real launcher, except that it refuses one payload.
#[derive(Debug)]
struct Refusing {
    inner: Launcher,
    refused: &'static str,
}

impl Launch for Refusing {
    fn prepare(&self, payload: &Payload) -> Result<Prepared> {
        if payload.name() == self.refused {
            return Err(Error::Exec {
                name: payload.name().to_owned(),
                source: io::Error::other("refused by the test's launcher"),
            });
        }
        self.inner.prepare(payload)
    }
}

/// The payloads: `waiter` marks that it ran (`$MARKER`), says so, then
/// sleeps until stopped; `quitter` exits with status 3.
fn catalog() -> Catalog {
    let waiter = b"#!/bin/sh\ntouch \"$MARKER\"\necho up\nexec sleep 30\n".as_slice();
    let quitter = b"#!/bin/sh\nexit 3\n".as_slice();
    Catalog::new(
        vec![Payload::from_bytes("waiter", waiter), Payload::from_bytes("quitter", quitter)],
        None,
    )
}

/// Two services share `waiter`; `quitter` starts once both are ready (have
/// made their mark), and its exit (its policy is `restart = "no"`) ends the
/// server.
fn manifest(markers: &Path) -> Manifest {
    let text = format!(
        r#"
        [services.one]
        payload = "waiter"
        env = {{ MARKER = "{dir}/one" }}
        ready = {{ log = "up", timeout = "20s" }}
        [services.two]
        payload = "waiter"
        env = {{ MARKER = "{dir}/two" }}
        ready = {{ log = "up", timeout = "20s" }}
        [services.quitter]
        depends_on = ["one", "two"]
        "#,
        dir = markers.display()
    );
    Manifest::parse(&text, "test", &["waiter", "quitter"]).unwrap()
}

/// Runs `serve` the way the CLI does: from `block_on` on this thread.
fn serve(manifest: Manifest, launcher: Arc<dyn Launch + Send + Sync>) -> Result<Outcome> {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let options = supervise::Options::default();
    let catalog = catalog();
    runtime.block_on(async {
        let served = supervise::serve(manifest, &catalog, launcher, options, None);
        tokio::time::timeout(LIMIT, served).await.expect("serve did not end")
    })
}

fn launcher(home: &Path) -> Launcher {
    Launcher::new(Choice::Auto, Some(home.to_owned()))
}

#[test]
fn the_supervisor_prepares_through_the_launcher_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let counting = Arc::new(Counting {
        inner: launcher(&dir.path().join("home")),
        prepared: Mutex::default(),
    });
    let outcome = serve(manifest(dir.path()), counting.clone()).unwrap();

    // Each payload once, though two services run `waiter`.
    let mut prepared = counting.prepared.lock().unwrap().clone();
    prepared.sort();
    assert_eq!(prepared, ["quitter", "waiter"]);
    // Both ran what it prepared, and the server ended as the manifest says.
    assert!(dir.path().join("one").exists() && dir.path().join("two").exists());
    let Outcome::Failed(failure) = outcome else { panic!("{outcome:?}") };
    assert!(
        matches!(&failure, Failure::NotRestarted { service, exit: Exit::Code(3) } if service == "quitter"),
        "{failure:?}"
    );
    assert_eq!(
        failure.to_string(),
        "quitter exited (exit status 3) and its restart policy is \"no\""
    );
}

#[test]
fn a_payload_the_launcher_refuses_fails_the_server_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let refusing = Refusing { inner: launcher(&dir.path().join("home")), refused: "quitter" };
    let err = serve(manifest(dir.path()), Arc::new(refusing)).unwrap_err();

    assert!(matches!(&err, Error::Exec { name, .. } if name == "quitter"), "{err:?}");
    assert_eq!(err.to_string(), "cannot start quitter: refused by the test's launcher");
    let ran: BTreeMap<&str, bool> =
        ["one", "two"].into_iter().map(|s| (s, dir.path().join(s).exists())).collect();
    assert_eq!(ran, BTreeMap::from([("one", false), ("two", false)]), "nothing started");
}
