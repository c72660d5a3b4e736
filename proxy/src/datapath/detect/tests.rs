use tokio::io::AsyncWriteExt;

use super::*;

/// Writes `chunks`, ends the stream, and returns what detection said and replayed.
async fn run(chunks: &[&[u8]]) -> (Detected, Vec<u8>) {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
    let writer = tokio::spawn(async move {
        for chunk in chunks {
            client.write_all(&chunk).await.unwrap();
        }
    });
    let (detected, mut stream) = detect(server, Duration::from_secs(5)).await.unwrap();
    let mut replay = Vec::new();
    stream.read_to_end(&mut replay).await.unwrap();
    writer.await.unwrap();
    (detected, replay)
}

/// Writes `bytes` and keeps the stream open: what detection says after `timeout`.
async fn held(bytes: &[u8], timeout: Duration) -> Detected {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    client.write_all(bytes).await.unwrap();
    let (detected, _) = detect(server, timeout).await.unwrap();
    drop(client);
    detected
}

#[tokio::test]
async fn http1_http2_and_tcp_with_every_byte_replayed() {
    let get = b"GET /list?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(run(&[get]).await, (Detected::Http1, get.to_vec()));
    let h2 = [H2_PREFACE, b"\0\0\0\x04\0\0\0\0\0"].concat();
    assert_eq!(run(&[&h2]).await, (Detected::Http2, h2.clone()));
    for tcp in [
        &b"\x16\x03\x01\x02\0"[..],
        b"SSH-2.0-OpenSSH\r\n",
        b"hello\n",
        b"ping",
    ] {
        assert_eq!(run(&[tcp]).await, (Detected::Tcp, tcp.to_vec()), "{tcp:?}");
    }
}

#[tokio::test]
async fn anything_that_can_begin_a_request_is_http() {
    for http in [
        &b"get /admin HTTP/1.1\r\n"[..],
        b"\r\n\r\nGET /admin HTTP/1.1\r\n",
        b"GET\t/admin HTTP/1.1\r\n",
        b"GET / FTP/1\r\n",
        b"hello world\n",
        b"M-SEARCH * HTTP/1.1\r\n",
    ] {
        assert_eq!(run(&[http]).await.0, Detected::Http1, "{http:?}");
    }
}

#[tokio::test]
async fn a_request_line_longer_than_detection_reads_is_http() {
    let long = [
        b"GET /".as_slice(),
        &[b'a'; 64 * 1024],
        b" HTTP/1.1\r\n\r\n",
    ]
    .concat();
    let (detected, replay) = run(&[&long]).await;
    assert_eq!(detected, Detected::Http1);
    assert_eq!(replay, long, "every byte is replayed to the HTTP server");
    // a first word with no end in sight is HTTP too: the server refuses it
    let word = vec![b'G'; 4 * MAX_DETECTION_BYTES];
    assert_eq!(held(&word, Duration::from_secs(5)).await, Detected::Http1);
}

#[tokio::test]
async fn a_request_line_split_over_reads() {
    let (mut client, server) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(detect(server, Duration::from_secs(5)));
    for part in [&b"PO"[..], b"ST /api/pay", b"ment HTTP/1.1\r\n"] {
        client.write_all(part).await.unwrap();
        tokio::task::yield_now().await;
    }
    let (detected, _) = task.await.unwrap().unwrap();
    assert_eq!(detected, Detected::Http1);
}

#[tokio::test(start_paused = true)]
async fn the_clock_never_makes_a_request_tcp() {
    let timeout = Duration::from_millis(500);
    // silence is its own verdict: only a port declared tcp serves it
    let (_client, server) = tokio::io::duplex(64);
    let (detected, _) = detect(server, timeout).await.unwrap();
    assert_eq!(detected, Detected::Silent);
    // a request that stalls is still a request
    assert_eq!(held(b"GE", timeout).await, Detected::Http1);
    assert_eq!(held(b"\r\n", timeout).await, Detected::Http1);
    assert_eq!(held(b"GET /adm", timeout).await, Detected::Http1);
    assert_eq!(held(b"PRI * HTTP/2.0\r\n", timeout).await, Detected::Http2);
}

#[tokio::test]
async fn the_end_of_the_stream_decides_a_cut_off_word() {
    assert_eq!(run(&[b"GET"]).await.0, Detected::Tcp);
    assert_eq!(run(&[b"GET /"]).await.0, Detected::Http1);
    assert_eq!(run(&[b"PRI * HT"]).await.0, Detected::Http2);
    assert_eq!(run(&[]).await.0, Detected::Silent);
}

#[tokio::test]
async fn what_lenient_servers_read_as_a_request_is_http() {
    // each read as a request by at least one real server
    // (integration/tests/detection.rs): Python's http.server splits on these bytes
    for http in [
        &b"  GET /admin HTTP/1.1\r\n"[..],
        b"\x0bGET /admin HTTP/1.1\r\n",
        b"\x1c\x1fGET /admin HTTP/1.1\r\n",
        b"\xa0GET /admin HTTP/1.1\r\n",
        b"GET\x0b/admin HTTP/1.1\r\n",
        b"GET\x0c/admin HTTP/1.1\r\n",
        b"GET\x85/admin HTTP/1.1\r\n",
        b"GET\r/admin HTTP/1.1\r\n",
        b"GET\r\r/admin HTTP/1.1\r\n",
    ] {
        assert_eq!(run(&[http]).await.0, Detected::Http1, "{http:?}");
    }
}

#[tokio::test]
async fn a_line_that_ends_after_its_first_word_is_tcp() {
    for tcp in [
        &b"GET\r\n"[..],
        b"GET\r\r\n",
        b"  PING\n",
        b"*1\r\n$4\r\nPING\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"\x1f\x8b\x08\x00",
        b"GET/ HTTP/1.1\r\n",
    ] {
        assert_eq!(run(&[tcp]).await.0, Detected::Tcp, "{tcp:?}");
    }
    // a carriage return alone says nothing yet
    assert_eq!(
        held(b"GET\r", Duration::from_millis(50)).await,
        Detected::Http1
    );
}
