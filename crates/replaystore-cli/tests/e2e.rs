//! End to end with a client nobody on the team wrote: the unmodified posthog-js SDK, in
//! Debian's Chromium driven by playwright-core (web/e2e.mjs), records a page and sends it to
//! `replaystore serve`; the session is checked through the store (person, full snapshot,
//! interactions, masked input), and the server's replay page plays it in the same browser.
//! Then the console (web/console.mjs): the list filtered, a replay seeked by a marker, a person
//! deleted with the admin token, 401 without the token; screenshots in
//! target/console-screenshots/.
//!
//! Needs /usr/bin/chromium and `npm install --prefix web`; `.ci/run` installs both. Outside CI
//! the test is skipped, loudly, when they are missing; with CI set it fails instead.

mod common;

use std::path::Path;
use std::process::Command;

use common::server::Server;

use replaystore::PayloadTransform;

#[test]
fn posthog_js_in_chromium_records_and_the_replay_page_plays_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let web = root.join("web");
    let missing: Vec<&str> = [
        (!Path::new("/usr/bin/chromium").exists()).then_some("/usr/bin/chromium"),
        (!web.join("node_modules/playwright-core").exists())
            .then_some("web/node_modules (npm install --prefix web)"),
        (Command::new("node").arg("--version").output().is_err()).then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide: {missing:?}"
        );
        eprintln!("SKIPPED posthog-js end-to-end test: missing {missing:?}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let web_dir = web.to_string_lossy().to_string();
    let server = Server::start_with_env(
        dir.path(),
        &[
            "--token",
            "phc_e2e_token=7",
            "--read-token",
            "rt-e2e-123",
            "--admin-token",
            "adm-e2e-456",
        ],
        &[("REPLAYSTORE_WEB", web_dir.as_str())],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let out = Command::new("node")
        .arg(web.join("e2e.mjs"))
        .args([&port, "rt-e2e-123", "adm-e2e-456"])
        .arg(root.join("target/console-screenshots"))
        .output()
        .unwrap();
    server.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(
        result["replayText"]
            .as_str()
            .unwrap()
            .contains("canary-heading-7f3a"),
        "the replay page did not play the page: {result}"
    );

    console_checks(&result);

    // Through the store.
    let store = replaystore::Store::open(dir.path(), common::config()).unwrap();
    let sid = result["session"]["session_id"].as_str().unwrap();
    let session = store.read_session(7, sid).unwrap().expect("session stored");
    assert_eq!(
        session.summary.person, "e2e-person-1",
        "posthog.identify's distinct id"
    );
    let mut kinds = std::collections::HashSet::new();
    for c in &session.chunks {
        for e in replaystore_posthog::posthog::payload_events(&c.payload).unwrap() {
            let v: serde_json::Value = serde_json::from_str(e.get()).unwrap();
            kinds.insert((v["type"].as_i64(), v["data"]["source"].as_i64()));
        }
    }
    assert!(
        kinds.contains(&(Some(2), None)),
        "a full snapshot: {kinds:?}"
    );
    assert!(
        kinds.contains(&(Some(3), Some(2))),
        "mouse interactions: {kinds:?}"
    );
    assert!(
        kinds.contains(&(Some(3), Some(5))),
        "input events: {kinds:?}"
    );
    assert!(replaystore_posthog::listing::activity(&session.summary).click_count >= 2);
    drop(store);
    // No typed text anywhere: not in the files, not in any block once decompressed and
    // posthog-js's in-event gzip inflated.
    for secret in ["Typed-Secret-Name", "hunter2-typed"] {
        for f in common::files_under(dir.path()) {
            assert!(
                !common::contains(&std::fs::read(&f).unwrap(), secret.as_bytes()),
                "{secret} in {}",
                f.display()
            );
        }
        for p in common::all_block_payloads(dir.path()) {
            let plain = replaystore_posthog::posthog::Normalize
                .transform(&p)
                .unwrap_or(p);
            assert!(
                !common::contains(&plain, secret.as_bytes()),
                "{secret} in a block"
            );
        }
    }
}

/// What the console half of the driver saw (web/console.mjs).
fn console_checks(result: &serde_json::Value) {
    let c = &result["console"];
    assert!(c["error"].is_null(), "console driver: {}", c["error"]);
    let first = result["session"]["session_id"].as_str().unwrap();
    let second = result["second"]["session_id"].as_str().unwrap();
    let has = |list: &serde_json::Value, id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str() == Some(id))
    };
    assert!(has(&c["listed"], first) && has(&c["listed"], second), "{c}");
    assert!(
        has(&c["filtered"], first) && !has(&c["filtered"], second),
        "min clicks 2 keeps the first session only: {c}"
    );
    assert!(!has(&c["personList"], second), "{c}");
    let at2 = c["atPage2"].as_str().unwrap();
    assert!(at2.contains("Page Two") && !at2.contains("Home"), "{at2}");
    let home = c["atHome"].as_str().unwrap();
    assert!(
        home.contains("Home") && !home.contains("Page Two"),
        "{home}"
    );
    assert!(
        c["seeks"].as_array().unwrap().len() >= 2,
        "each marker click reads from its moment: {c}"
    );
    let panel = c["panel"].as_str().unwrap();
    assert!(
        panel.contains("e2e-person-1") && panel.contains("page2.html"),
        "{panel}"
    );
    for (what, status) in c["refusals"].as_object().unwrap() {
        assert_eq!(status, 401, "{what} without a (right) token");
    }
    assert!(c["confirmText"].as_str().unwrap().contains("e2e-person-2"));
    assert!(c["receipt"]
        .as_str()
        .unwrap()
        .contains("person e2e-person-2"));
    assert!(
        !has(&c["afterDelete"], second) && has(&c["afterDelete"], first),
        "{c}"
    );
    let bytes = &c["bytes"];
    assert!(
        bytes["after"].as_u64() < bytes["before"].as_u64(),
        "the person's bytes left the files: {bytes}"
    );
    assert_eq!(
        bytes["sessionsAfter"].as_u64().unwrap() + 1,
        bytes["sessionsBefore"].as_u64().unwrap()
    );
    for page in [
        "recordings",
        "recordings-filtered",
        "replay",
        "privacy-confirm",
        "privacy",
        "storage",
    ] {
        let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/console-screenshots")
            .join(format!("{page}.png"));
        assert!(
            shot.metadata().map(|m| m.len() > 1000).unwrap_or(false),
            "{}",
            shot.display()
        );
    }
}
