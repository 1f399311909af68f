//! The S3 backend against servers that misbehave, played by a tiny HTTP server
//! on loopback that gives one canned answer: statuses without an error body, a
//! server that ignores `Range`, a listing that says more follows and gives no
//! token. Each must be a clear error, never wrong bytes or a short listing.

use std::sync::Arc;
use strata_common::types::UfsFingerprint;
use strata_common::Error;
use strata_ufs::s3::{S3Options, S3Store};
use strata_ufs::{UfsPath, UnderStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `answer` (status line, headers, body) to every request, one per
/// connection; the server's endpoint.
async fn fake(status: &'static str, headers: &'static str, body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&req).to_string();
                // A HEAD answer has no body, whatever its length says.
                let body = if head.starts_with("HEAD") { "" } else { body };
                let answer = format!(
                    "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(answer.as_bytes()).await;
                let _ = conn.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

fn store(endpoint: &str) -> Arc<dyn UnderStore> {
    let opts = S3Options {
        endpoint: Some(endpoint.to_string()),
        path_style: true,
        credentials: Some(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        )),
        ..S3Options::default()
    };
    Arc::new(S3Store::open("s3://fake/pre", opts).unwrap())
}

#[tokio::test]
async fn a_server_that_ignores_range_is_refused() {
    let s = store(&fake("200 OK", "ETag: \"v\"\r\n", "0123456789abcdef").await);
    let fp = UfsFingerprint {
        length: 16,
        version: "v".into(),
    };
    let got = s
        .open_range(&UfsPath::parse("f").unwrap(), 10, 5, &fp)
        .await;
    assert!(
        matches!(got, Err(Error::UfsChanged { .. })),
        "{:?}",
        got.err()
    );
}

#[tokio::test]
async fn statuses_without_an_error_body_map_by_status() {
    let f = UfsPath::parse("f").unwrap();
    let denied = store(&fake("403 Forbidden", "", "").await).status(&f).await;
    assert!(
        matches!(denied, Err(Error::NotPermitted { .. })),
        "{denied:?}"
    );
    let busy = store(&fake("503 Service Unavailable", "", "").await)
        .status(&f)
        .await
        .unwrap_err();
    assert!(busy.is_temporary(), "{busy}");
}

#[tokio::test]
async fn a_listing_cut_short_is_an_error() {
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
        <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
        <Name>fake</Name><Prefix>pre/</Prefix><KeyCount>1</KeyCount><MaxKeys>1000</MaxKeys>\
        <EncodingType>url</EncodingType><IsTruncated>true</IsTruncated>\
        <Contents><Key>pre/a</Key><Size>1</Size><ETag>\"e\"</ETag></Contents>\
        </ListBucketResult>";
    let s = store(&fake("200 OK", "Content-Type: application/xml\r\n", body).await);
    let got = s.list(&UfsPath::root()).await;
    assert!(got.is_err(), "a listing cut short was taken whole: {got:?}");
}
