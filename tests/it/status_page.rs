//! The status page in a real browser (headless Chromium over the DevTools protocol): against a
//! gateway with traffic, an open circuit, an unhealthy target and a failed reload whose error
//! carries markup, the rendered page shows them, the markup stays text, the console stays
//! clean (no script error, no CSP violation, no failed load), the page refreshes itself, and a
//! phone-sized window has no horizontal overflow. Screenshots go to the test's temp dir;
//! with `TOLLGATE_UPDATE_SCREENSHOT=1` the desktop one also replaces `docs/status-page.png`.

use crate::status::{busy, status_when, target, BROKEN};
use crate::support::browser::Browser;
use crate::support::call;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_renders_the_live_state_and_keeps_markup_as_text() {
    let busy = busy().await;
    let gw = &busy.gw;
    gw.write_body(BROKEN);
    status_when(gw, "a failed reload and an unhealthy target", |s| {
        s["last_reload"]["ok"] == false && target(s, "checked", &busy.dead)["healthy"] == false
    })
    .await;
    let shots = tempfile::tempdir().unwrap();
    let update_screenshot = std::env::var_os("TOLLGATE_UPDATE_SCREENSHOT").is_some();
    if update_screenshot {
        // The picture in the README: about a minute of uneven traffic, so the charts have
        // several points (one per 10 s).
        let api = [("host", "api.example.com"), ("x-api-key", "k-acme")];
        for second in 0..65u64 {
            for i in 0..(4 + second % 7 * 3) {
                call(gw, &format!("/users/{i}"), &[]).await;
            }
            if second % 4 == 0 {
                call(gw, "/orders/1", &api).await;
                call(gw, "/nowhere", &[]).await;
            }
            tokio::time::sleep(Duration::from_millis(800)).await;
        }
    }

    let mut browser = Browser::launch().await;
    browser.viewport(1280, 1600, false).await;
    browser.open(&gw.admin_url("/")).await;

    assert_eq!(browser.text("#readiness").await, "ready");
    let reload = browser.text("#last-reload").await;
    assert!(
        reload.as_str().unwrap().starts_with("failed at"),
        "{reload}"
    );
    let errors = browser.text("#reload-errors").await;
    let errors = errors.as_str().expect("the reload errors are shown");
    assert!(
        errors.contains("<img src=x onerror=alert(1)><script>alert(2)</script>"),
        "the markup is shown as text: {errors}"
    );
    // As text, not as elements: no image or script came out of it.
    let injected = browser
        .eval("document.querySelectorAll('header img, header script, main script').length")
        .await;
    assert_eq!(injected, 0);
    assert_eq!(
        browser.eval("document.scripts.length").await,
        1,
        "only /status.js"
    );

    let flaky = browser
        .text(&format!("tr[data-target=\"flaky/{}\"]", busy.refused))
        .await;
    assert!(flaky.as_str().unwrap().contains("open"), "{flaky}");
    assert!(flaky.as_str().unwrap().contains("probe in"), "{flaky}");
    let dead = browser
        .text(&format!("tr[data-target=\"checked/{}\"]", busy.dead))
        .await;
    assert!(dead.as_str().unwrap().contains("unhealthy"), "{dead}");
    let orders = browser.text("tr[data-route=\"orders\"]").await;
    let orders = orders.as_str().unwrap();
    assert!(
        orders.contains("partners (api_key)") && orders.contains("100%"),
        "{orders}"
    );
    let charts = browser
        .eval("document.querySelectorAll('#traffic svg polyline').length")
        .await;
    assert_eq!(charts, 5, "requests (all, 4xx, 5xx) and latency (p50, p99)");
    let sparks = browser
        .eval("document.querySelectorAll('svg.spark').length")
        .await;
    assert_eq!(sparks, 4, "one per route");

    // The page refreshes itself: new traffic appears without a reload of the page.
    let before = browser.text("#tile-rps").await;
    browser
        .eval(
            "window.__same_document = true; document.getElementById('status').dataset.mark = 'old'",
        )
        .await;
    for _ in 0..40 {
        call(gw, "/users/1", &[]).await;
    }
    let refreshed = browser
        .wait_until(
            "document.getElementById('status').dataset.mark === undefined",
            Duration::from_secs(15),
        )
        .await;
    assert!(refreshed, "the page did not refresh within 15 s");
    assert_eq!(browser.eval("window.__same_document === true").await, true);
    let after = browser.text("#tile-rps").await;
    assert_ne!(before, after, "the refreshed tiles count the new requests");

    let desktop = shots.path().join("status.png");
    browser.screenshot(&desktop).await;
    assert!(std::fs::metadata(&desktop).unwrap().len() > 10_000);
    if update_screenshot {
        let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/status-page.png");
        std::fs::copy(&desktop, docs).unwrap();
    }

    // A phone: one column, nothing wider than the screen (wide tables scroll in their box).
    browser.viewport(390, 844, true).await;
    browser.open(&gw.admin_url("/")).await;
    let widths = browser
        .eval("[document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(
        widths[0].as_u64().unwrap() <= widths[1].as_u64().unwrap(),
        "horizontal overflow on a phone: {widths}"
    );
    browser
        .screenshot(&shots.path().join("status-phone.png"))
        .await;

    assert!(
        browser.console_problems().is_empty(),
        "the console reported problems: {:#?}",
        browser.console
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_an_admin_token_the_login_form_shows_the_status_once_given_the_token() {
    let users = crate::support::backend("users").start().await;
    let env = [("TOLLGATE_TEST_ADMIN_TOKEN", "s3cret-token")];
    let gw = crate::support::GatewayHandle::start_binary_with_env(
        &crate::status::one_route(&users.target()),
        "admin_token_env = \"TOLLGATE_TEST_ADMIN_TOKEN\"",
        &env,
    )
    .await;
    let mut browser = Browser::launch().await;
    browser.viewport(1280, 900, false).await;
    browser.open(&gw.admin_url("/")).await;
    assert_eq!(
        browser
            .eval("document.querySelectorAll('tr[data-route]').length")
            .await,
        0
    );
    let submit = |token: &str| {
        format!(
            "document.getElementById('token').value = {}; \
             document.getElementById('login').requestSubmit(); true",
            serde_json::to_string(token).unwrap()
        )
    };
    browser.eval(&submit("wrong")).await;
    let refused = browser
        .wait_until(
            "!document.getElementById('login-error').hidden",
            Duration::from_secs(4),
        )
        .await;
    assert!(refused, "a wrong token is said to be wrong");
    browser.eval(&submit("s3cret-token")).await;
    let shown = browser
        .wait_until(
            "document.querySelectorAll('tr[data-route=\"r\"]').length === 1",
            Duration::from_secs(4),
        )
        .await;
    assert!(shown, "the status appears once the token is given");
    // In memory only: not in the URL, not in storage, not left in a form field.
    assert_eq!(browser.eval("location.search + location.hash").await, "");
    assert_eq!(
        browser
            .eval("localStorage.length + sessionStorage.length")
            .await,
        0
    );
    assert_eq!(
        browser
            .eval("document.getElementById('token') === null")
            .await,
        true
    );
    // The browser's 401 for the wrong token is logged as a failed load; nothing else is.
    let others: Vec<_> = browser
        .console_problems()
        .into_iter()
        .filter(|l| !l.contains("401"))
        .collect();
    assert!(others.is_empty(), "{:#?}", browser.console);
}
