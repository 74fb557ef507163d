//! File transfer over VSOA streams (tether::transfer): SHA-256 checked, resumable, confined
//! to the files root. The breaks are real: a stream dropped mid-transfer.

use std::path::Path;
use std::time::Duration;

use tether::files::FileRoot;
use tether::transfer::{get, part_paths, put, FileService};
use tether::{Client, Server, Status};
use tether_testkit::{temp_dir, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn serve(root: &Path, max: u64) -> (Server, tether::Listening, Client) {
    let server = Server::builder().build();
    FileService::new(FileRoot::new(root).unwrap())
        .max_size(max)
        .install(&server, "/files/");
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let client = Client::connect(&format!("vsoa://{}", l.local_addr()))
        .await
        .unwrap();
    (server, l, client)
}

fn quiet() -> impl FnMut(u64, u64) + Send {
    |_, _| {}
}

#[tokio::test]
async fn put_and_get_50_mb_with_progress() {
    let base = temp_dir("big");
    let (_s, _l, client) = serve(&base.join("root"), 1 << 30).await;
    let data = pattern(50 << 20, 0);
    std::fs::write(base.join("up.bin"), &data).unwrap();
    let mut last = (0, 0);
    let mut calls = 0;
    let mut progress = |done, total| {
        assert!(done >= last.0, "progress never goes back");
        last = (done, total);
        calls += 1;
    };
    let up = put(
        &client,
        "/files/shows/up.bin",
        &base.join("up.bin"),
        &mut progress,
    )
    .await
    .unwrap();
    assert_eq!((up.size, up.resumed_from), (data.len() as u64, 0));
    assert_eq!(up.sha256, sha(&data));
    assert_eq!(last, (data.len() as u64, data.len() as u64));
    assert!(calls > 10);
    assert_eq!(std::fs::read(base.join("root/shows/up.bin")).unwrap(), data);

    let down = get(
        &client,
        "/files/shows/up.bin",
        &base.join("down.bin"),
        &mut quiet(),
    )
    .await
    .unwrap();
    assert_eq!(down, up);
    assert_eq!(std::fs::read(base.join("down.bin")).unwrap(), data);
    let (part, sidecar) = part_paths(&base.join("down.bin"));
    assert!(!part.exists() && !sidecar.exists());
    let _ = std::fs::remove_dir_all(base);
}

/// Starts an upload of `data` to `url` by hand (a fresh one: offset 0) and sends its first
/// MiB; the stream is left open for the caller to drop or keep silent.
async fn upload_first_mib(client: &Client, url: &str, data: &[u8]) -> tether::DataStream {
    let resp = client
        .call(url)
        .set()
        .json(&serde_json::json!({"size": data.len(), "sha256": sha(data)}))
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(resp.payload.param_value().unwrap()["offset"], 0);
    let mut stream = client.connect_stream(resp.tunid).await.unwrap();
    stream.write_all(&data[..1 << 20]).await.unwrap();
    stream.flush().await.unwrap();
    stream
}

#[tokio::test]
async fn a_broken_upload_resumes_from_where_it_stopped() {
    let base = temp_dir("resume-up");
    let (_s, _l, client) = serve(&base.join("root"), 1 << 30).await;
    let data = pattern(3 << 20, 1);
    std::fs::write(base.join("f"), &data).unwrap();

    // First attempt by hand: announce, send 1 MiB, then the connection breaks.
    drop(upload_first_mib(&client, "/files/f", &data).await);
    // The server keeps the part; the retry waits for it to see the break.
    let resumed = put(&client, "/files/f", &base.join("f"), &mut quiet())
        .await
        .unwrap();
    assert_eq!(resumed.resumed_from, 1 << 20);
    assert_eq!(std::fs::read(base.join("root/f")).unwrap(), data);
    assert!(std::fs::read_dir(base.join("root/.tether-parts"))
        .unwrap()
        .next()
        .is_none());
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn a_broken_download_resumes_and_a_changed_file_starts_over() {
    let base = temp_dir("resume-down");
    let (_s, _l, client) = serve(&base.join("root"), 1 << 30).await;
    let v1 = pattern(2 << 20, 2);
    std::fs::write(base.join("root/f"), &v1).unwrap();
    let local = base.join("f");

    // Read 512 KiB by hand, keep it as the part, and break the stream.
    let partial = |n: usize| {
        let client = client.clone();
        let local = local.clone();
        async move {
            let resp = client.call("/files/f").get().send().await.unwrap();
            let offer = resp.payload.param_value().unwrap();
            let mut stream = client.connect_stream(resp.tunid).await.unwrap();
            let mut buf = vec![0u8; n];
            stream.read_exact(&mut buf).await.unwrap();
            drop(stream);
            let (part, sidecar) = part_paths(&local);
            std::fs::write(part, &buf).unwrap();
            std::fs::write(sidecar, offer["sha256"].as_str().unwrap()).unwrap();
        }
    };
    partial(512 << 10).await;
    let r = get(&client, "/files/f", &local, &mut quiet())
        .await
        .unwrap();
    assert_eq!(r.resumed_from, 512 << 10);
    assert_eq!(std::fs::read(&local).unwrap(), v1);

    // A part of the old content, then the file changes on the server: start over.
    partial(256 << 10).await;
    let v2 = pattern(1 << 20, 3);
    std::fs::write(base.join("root/f"), &v2).unwrap();
    let r = get(&client, "/files/f", &local, &mut quiet())
        .await
        .unwrap();
    assert_eq!(r.resumed_from, 0);
    assert_eq!(std::fs::read(&local).unwrap(), v2);
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn a_corrupted_upload_is_discarded_and_reported() {
    let base = temp_dir("corrupt");
    let (_s, _l, client) = serve(&base.join("root"), 1 << 30).await;
    let data = pattern(100_000, 4);
    // Announce one content, send another of the same size.
    let resp = client
        .call("/files/x")
        .set()
        .json(&serde_json::json!({"size": data.len(), "sha256": sha(&data)}))
        .unwrap()
        .send()
        .await
        .unwrap();
    let mut stream = client.connect_stream(resp.tunid).await.unwrap();
    stream.write_all(&pattern(100_000, 5)).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.contains("\"ok\":false"), "{answer}");
    assert!(answer.contains("discarded"), "{answer}");
    assert!(!base.join("root/x").exists());
    // Too many bytes: also refused.
    let resp = client
        .call("/files/y")
        .set()
        .json(&serde_json::json!({"size": 10, "sha256": sha(&data[..10])}))
        .unwrap()
        .send()
        .await
        .unwrap();
    let mut stream = client.connect_stream(resp.tunid).await.unwrap();
    stream.write_all(&data[..20]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.contains("more than the announced 10 bytes"),
        "{answer}"
    );
    assert!(!base.join("root/y").exists());
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn bad_requests_get_clear_refusals() {
    let base = temp_dir("refuse");
    let (_s, _l, client) = serve(&base.join("root"), 1000).await;
    std::fs::write(base.join("root/big"), pattern(2000, 0)).unwrap();
    std::fs::write(base.join("small"), b"x").unwrap();
    std::fs::write(base.join("big"), pattern(2000, 0)).unwrap();
    std::os::unix::fs::symlink("/etc", base.join("root/etc")).unwrap();
    let call = |url: &'static str, set: bool, param: serde_json::Value| {
        let client = client.clone();
        async move {
            let c = client.call(url);
            let c = if set { c.set() } else { c.get() };
            let r = c.json(&param).unwrap().send().await.unwrap();
            (
                r.status,
                r.payload.param_value().unwrap()["error"].to_string(),
            )
        }
    };
    let good_sha = sha(b"x");
    for (url, set, param, status, why) in [
        (
            "/files/missing",
            false,
            serde_json::json!({}),
            Status::INVALID_URL,
            "No such file",
        ),
        (
            "/files/../x",
            false,
            serde_json::json!({}),
            Status::NO_PERMISSIONS,
            "'..'",
        ),
        (
            "/files/etc/passwd",
            false,
            serde_json::json!({}),
            Status::NO_PERMISSIONS,
            "outside",
        ),
        (
            "/files/.tether-parts/a",
            false,
            serde_json::json!({}),
            Status::NO_PERMISSIONS,
            "reserved",
        ),
        (
            "/files/big",
            false,
            serde_json::json!({}),
            Status::ARGUMENTS,
            "over the limit",
        ),
        (
            "/files/big",
            false,
            serde_json::json!({"offset": "x"}),
            Status::ARGUMENTS,
            "param must be",
        ),
        (
            "/files/etc/x",
            true,
            serde_json::json!({"size": 1, "sha256": good_sha}),
            Status::NO_PERMISSIONS,
            "outside",
        ),
        (
            "/files/x",
            true,
            serde_json::json!({"size": 1}),
            Status::ARGUMENTS,
            "param must be",
        ),
        (
            "/files/x",
            true,
            serde_json::json!({"size": 1, "sha256": "abc"}),
            Status::ARGUMENTS,
            "64 lowercase hex",
        ),
        (
            "/files/x",
            true,
            serde_json::json!({"size": 5000, "sha256": good_sha}),
            Status::ARGUMENTS,
            "over the limit",
        ),
        (
            "/files/",
            false,
            serde_json::json!({}),
            Status::NO_PERMISSIONS,
            "empty",
        ),
    ] {
        let (got, msg) = call(url, set, param).await;
        assert_eq!(got, status, "{url}: {msg}");
        assert!(msg.contains(why), "{url}: {msg} should say {why}");
    }
    // Through the client helpers: the reason reaches the caller.
    let e = put(&client, "/files/copy", &base.join("big"), &mut quiet())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the limit"), "{e}");
    let e = get(&client, "/files/nope", &base.join("nope"), &mut quiet())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("status 3"), "{e}");
    assert!(!base.join("nope").exists());
    put(&client, "/files/small", &base.join("small"), &mut quiet())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn one_upload_per_name_at_a_time() {
    let base = temp_dir("busy");
    let (_s, _l, client) = serve(&base.join("root"), 1 << 20).await;
    let content: Vec<u8> = (0..40u8).collect();
    let args = serde_json::json!({"size": content.len(), "sha256": sha(&content)});
    let first = client
        .call("/files/n")
        .set()
        .json(&args)
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(first.status, Status::SUCCESS);
    let mut stream = client.connect_stream(first.tunid).await.unwrap();
    // Other content for the same name: refused at once.
    let other = serde_json::json!({"size": 3, "sha256": sha(b"abc")});
    let second = client
        .call("/files/n")
        .set()
        .json(&other)
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(second.status, Status::ARGUMENTS);
    let why = second.payload.param_value().unwrap()["error"].to_string();
    assert!(why.contains("in progress (of other content)"), "{why}");
    // The same content while the first is still receiving (a byte every 100 ms): it waits
    // for the first, sees it move, and is refused.
    let sender = tokio::spawn(async move {
        for b in content {
            stream.write_all(&[b]).await.unwrap();
            stream.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        stream.shutdown().await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    });
    let third = client
        .call("/files/n")
        .set()
        .json(&args)
        .unwrap()
        .send()
        .await
        .unwrap();
    assert_eq!(third.status, Status::ARGUMENTS);
    let why = third.payload.param_value().unwrap()["error"].to_string();
    assert!(why.contains("in progress and receiving"), "{why}");
    let answer = tokio::time::timeout(WAIT, sender).await.unwrap().unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");
    assert_eq!(
        std::fs::read(base.join("root/n")).unwrap(),
        (0..40u8).collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn a_retry_takes_over_an_upload_whose_client_vanished_and_resumes_it() {
    // The first client sends 1 MiB and then goes silent without closing (killed on a host
    // that sends no FIN, or stuck): the server still holds its upload. A retry of the same
    // file waits, sees nothing arrive, takes it over and resumes from the part.
    let base = temp_dir("takeover");
    let (_s, _l, client) = serve(&base.join("root"), 1 << 30).await;
    let data = pattern(3 << 20, 7);
    std::fs::write(base.join("f"), &data).unwrap();
    let mut vanished = upload_first_mib(&client, "/files/f", &data).await;
    // Let the server write what it got before the retry looks.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let retry = Client::connect(&format!("vsoa://{}", client.server_addr()))
        .await
        .unwrap();
    let resumed = put(&retry, "/files/f", &base.join("f"), &mut quiet())
        .await
        .unwrap();
    assert_eq!(resumed.resumed_from, 1 << 20);
    assert_eq!(std::fs::read(base.join("root/f")).unwrap(), data);
    // The taken-over stream is told why.
    let mut answer = String::new();
    let _ = vanished.shutdown().await;
    let _ = tokio::time::timeout(WAIT, vanished.read_to_string(&mut answer)).await;
    assert!(answer.contains("taken over"), "{answer}");
    let _ = std::fs::remove_dir_all(base);
}
