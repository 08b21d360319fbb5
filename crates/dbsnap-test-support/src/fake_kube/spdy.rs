//! Port-forward as kubectl speaks it: SPDY/3.1 tunneled through a
//! websocket (subprotocol `SPDY/3.1+portforward.k8s.io`, every binary
//! message a piece of the SPDY byte stream).
//!
//! For each local connection kubectl opens two streams with the same
//! `requestid` header: `streamtype: error` (which it half-closes at once)
//! and `streamtype: data`, both naming the pod `port`. Every stream is
//! answered with a SYN_REPLY. Once both exist the fake connects to the
//! port (a process pod's port is a local port; a port map applies as in
//! [`super::portforward`]) and copies bytes between the data stream and
//! the connection; a port nothing listens on gets the kubelet's message on
//! the error stream. PINGs are echoed; the session ends on GOAWAY, when
//! the client goes, or when the pod is deleted.
//!
//! Header blocks are zlib streams, one per direction for the whole
//! connection; the client's uses SPDY/3's preset dictionary. The fake
//! writes its (empty) reply headers without one, which readers accept.

use super::*;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use futures::{SinkExt as _, StreamExt as _};
use std::collections::HashMap;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// The websocket subprotocol of SPDY tunneled port-forward.
pub(super) const SPDY_TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const FLAG_FIN: u8 = 0x01;
/// RST_STREAM status: the stream is not wanted.
const CANCEL: u32 = 5;
/// The largest DATA frame the fake sends.
const MAX_DATA: usize = 32 * 1024;

/// One SPDY frame, as far as the fake cares.
#[derive(Debug)]
enum Frame {
    SynStream {
        id: u32,
        headers: Vec<(String, String)>,
    },
    Data {
        id: u32,
        fin: bool,
        data: Vec<u8>,
    },
    Reset {
        id: u32,
    },
    Ping {
        id: u32,
    },
    GoAway,
    /// SETTINGS, WINDOW_UPDATE, HEADERS, SYN_REPLY: nothing to do.
    Other,
}

/// What the writer task sends.
enum Out {
    Reply { id: u32 },
    Data { id: u32, fin: bool, data: Vec<u8> },
    Reset { id: u32 },
    Ping { id: u32 },
    GoAway,
}

/// SPDY/3's header compression dictionary: the spec's words, each after
/// its length, then its common values.
fn dictionary() -> Vec<u8> {
    const WORDS: &str = "options head post put delete trace accept accept-charset \
        accept-encoding accept-language accept-ranges age allow authorization cache-control \
        connection content-base content-encoding content-language content-length \
        content-location content-md5 content-range content-type date etag expect expires from \
        host if-match if-modified-since if-none-match if-range if-unmodified-since \
        last-modified location max-forwards pragma proxy-authenticate proxy-authorization \
        range referer retry-after server te trailer transfer-encoding upgrade user-agent vary \
        via warning www-authenticate method get status 200|OK version HTTP/1.1 url public \
        set-cookie keep-alive origin";
    const TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";
    let mut out = Vec::new();
    for word in WORDS.split_whitespace() {
        // `|` stands for the space inside "200 OK".
        let word = word.replace('|', " ");
        out.extend_from_slice(&(word.len() as u32).to_be_bytes());
        out.extend_from_slice(word.as_bytes());
    }
    out.extend_from_slice(TAIL.as_bytes());
    out
}

/// Reads frames off the byte stream, inflating header blocks.
struct Reader<R> {
    inner: R,
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> Reader<R> {
    fn new(inner: R) -> Self {
        Reader {
            inner,
            inflate: Decompress::new(true),
            dictionary: dictionary(),
        }
    }

    async fn next(&mut self) -> std::io::Result<Frame> {
        let mut head = [0u8; 8];
        self.inner.read_exact(&mut head).await?;
        let first = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let flags = head[4];
        let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        let mut body = vec![0u8; length];
        self.inner.read_exact(&mut body).await?;
        if first & 0x8000_0000 == 0 {
            return Ok(Frame::Data {
                id: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: body,
            });
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version}, not 3")));
        }
        let word = |at: usize| -> u32 {
            body.get(at..at + 4)
                .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        Ok(match (first & 0xffff) as u16 {
            SYN_STREAM if length >= 10 => Frame::SynStream {
                id: word(0) & 0x7fff_ffff,
                headers: self.headers(&body[10..])?,
            },
            RST_STREAM => Frame::Reset {
                id: word(0) & 0x7fff_ffff,
            },
            PING => Frame::Ping { id: word(0) },
            GOAWAY => Frame::GoAway,
            SYN_STREAM => return Err(invalid("a SYN_STREAM too short".into())),
            _ => Frame::Other,
        })
    }

    /// Inflates one header block (the stream continues across frames).
    fn headers(&mut self, block: &[u8]) -> std::io::Result<Vec<(String, String)>> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            plain.reserve(4096);
            let before_in = self.inflate.total_in();
            let status = self
                .inflate
                .decompress_vec(input, &mut plain, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before_in) as usize;
            input = &input[used..];
            match status {
                Ok(_) if input.is_empty() => break,
                Ok(_) => continue,
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| invalid(format!("SPDY header dictionary: {e}")))?;
                }
                Err(e) => return Err(invalid(format!("SPDY header block: {e}"))),
            }
        }
        parse_header_block(&plain)
    }
}

/// `count, (name length, name, value length, value)*`, 32-bit lengths.
fn parse_header_block(plain: &[u8]) -> std::io::Result<Vec<(String, String)>> {
    let mut at = 0usize;
    let mut take = |n: usize| -> std::io::Result<&[u8]> {
        let piece = plain
            .get(at..at + n)
            .ok_or_else(|| invalid("a header block cut short".into()))?;
        at += n;
        Ok(piece)
    };
    let count = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let pairs = count(take(4)?);
    let mut headers = Vec::with_capacity(pairs.min(64));
    for _ in 0..pairs {
        let n = count(take(4)?);
        let name = String::from_utf8_lossy(take(n)?).into_owned();
        let n = count(take(4)?);
        let value = String::from_utf8_lossy(take(n)?).into_owned();
        headers.push((name, value));
    }
    Ok(headers)
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// Writes frames, deflating the reply header blocks.
struct Writer {
    deflate: Compress,
}

impl Writer {
    fn encode(&mut self, out: Out) -> Vec<u8> {
        match out {
            Out::Reply { id } => {
                // An empty header block: zero pairs.
                let block = self.deflate_block(&0u32.to_be_bytes());
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&block);
                control(SYN_REPLY, 0, &body)
            }
            Out::Data { id, fin, data } => {
                let mut frame = (id & 0x7fff_ffff).to_be_bytes().to_vec();
                frame.extend_from_slice(&flags_and_length(
                    if fin { FLAG_FIN } else { 0 },
                    data.len(),
                ));
                frame.extend_from_slice(&data);
                frame
            }
            Out::Reset { id } => {
                let mut body = id.to_be_bytes().to_vec();
                body.extend_from_slice(&CANCEL.to_be_bytes());
                control(RST_STREAM, 0, &body)
            }
            Out::Ping { id } => control(PING, 0, &id.to_be_bytes()),
            Out::GoAway => control(GOAWAY, 0, &[0; 8]),
        }
    }

    fn deflate_block(&mut self, plain: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = plain;
        loop {
            out.reserve(256);
            let before = self.deflate.total_in();
            let _ = self
                .deflate
                .compress_vec(input, &mut out, FlushCompress::Sync);
            input = &input[(self.deflate.total_in() - before) as usize..];
            // A sync flush is complete when output room was left over.
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

fn flags_and_length(flags: u8, length: usize) -> [u8; 4] {
    let l = (length as u32).to_be_bytes();
    [flags, l[1], l[2], l[3]]
}

fn control(kind: u16, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(8 + body.len());
    frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    frame.extend_from_slice(&kind.to_be_bytes());
    frame.extend_from_slice(&flags_and_length(flags, body.len()));
    frame.extend_from_slice(body);
    frame
}

/// The two streams of one forwarded connection.
#[derive(Default)]
struct Request {
    port: u16,
    error: Option<u32>,
    data: Option<u32>,
    /// The connection to the pod's port, once both streams exist.
    upstream: Option<OwnedWriteHalf>,
}

/// Runs one tunneled SPDY port-forward session on its websocket.
pub(super) async fn spdy_session(plan: ForwardPlan, socket: Socket) {
    let ForwardPlan {
        pod,
        uid,
        map,
        mut stop,
        ..
    } = plan;
    let (mut sink, mut source) = socket.split();
    // The websocket's binary messages as one byte stream.
    let (bytes_in, mut bytes_out) = tokio::io::duplex(256 * 1024);
    let feeder = tokio::spawn(async move {
        let mut bytes_in = bytes_in;
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(data) if bytes_in.write_all(&data).await.is_err() => return,
                Message::Close(_) => return,
                _ => {}
            }
        }
    });
    let (out, mut queue) = mpsc::channel::<Out>(64);
    let writer = tokio::spawn(async move {
        let mut w = Writer {
            deflate: Compress::new(Compression::default(), true),
        };
        while let Some(frame) = queue.recv().await {
            let last = matches!(frame, Out::GoAway);
            if sink.send(Message::binary(w.encode(frame))).await.is_err() || last {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut reader = Reader::new(&mut bytes_out);
    let mut requests: HashMap<String, Request> = HashMap::new();
    let mut by_stream: HashMap<u32, String> = HashMap::new();
    loop {
        let frame = tokio::select! {
            frame = reader.next() => frame,
            _ = deleted(&mut stop) => break,
        };
        let Ok(frame) = frame else { break };
        match frame {
            Frame::SynStream { id, headers } => {
                let get = |name: &str| {
                    headers
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let request_id = get("requestid");
                let Ok(port) = get("port").parse::<u16>() else {
                    let _ = out.send(Out::Reset { id }).await;
                    continue;
                };
                let _ = out.send(Out::Reply { id }).await;
                by_stream.insert(id, request_id.clone());
                let request = requests.entry(request_id).or_default();
                request.port = port;
                match get("streamtype").as_str() {
                    "error" => request.error = Some(id),
                    "data" => request.data = Some(id),
                    _ => {
                        let _ = out.send(Out::Reset { id }).await;
                        continue;
                    }
                }
                if let (Some(error), Some(data), None) =
                    (request.error, request.data, request.upstream.as_ref())
                {
                    let local = map.get(&request.port).copied().unwrap_or(request.port);
                    match tokio::net::TcpStream::connect(("127.0.0.1", local)).await {
                        Ok(stream) => {
                            let (read, write) = stream.into_split();
                            request.upstream = Some(write);
                            tokio::spawn(copy_to_client(read, data, error, out.clone()));
                        }
                        Err(e) => {
                            let message = format!(
                                "error forwarding port {} to pod {}, uid {}: failed to connect to localhost:{} inside the pod: dial tcp4 127.0.0.1:{local}: {e}",
                                request.port, pod, uid, request.port
                            );
                            let _ = out
                                .send(Out::Data {
                                    id: error,
                                    fin: true,
                                    data: message.into_bytes(),
                                })
                                .await;
                            let _ = out
                                .send(Out::Data {
                                    id: data,
                                    fin: true,
                                    data: Vec::new(),
                                })
                                .await;
                        }
                    }
                }
            }
            Frame::Data { id, fin, data } => {
                let Some(request) = by_stream.get(&id).and_then(|r| requests.get_mut(r)) else {
                    continue;
                };
                if request.data != Some(id) {
                    continue;
                }
                if let Some(upstream) = request.upstream.as_mut() {
                    if !data.is_empty() && upstream.write_all(&data).await.is_err() {
                        request.upstream = None;
                    }
                    if fin {
                        let _ = upstream_shutdown(request).await;
                    }
                }
            }
            Frame::Reset { id } => {
                // The client is done with this connection: close it.
                if let Some(request) = by_stream.remove(&id).and_then(|r| requests.get_mut(&r)) {
                    request.upstream = None;
                }
            }
            Frame::Ping { id } => {
                let _ = out.send(Out::Ping { id }).await;
            }
            Frame::GoAway => break,
            Frame::Other => {}
        }
    }
    drop(requests);
    let _ = out.send(Out::GoAway).await;
    drop(out);
    let _ = writer.await;
    feeder.abort();
}

async fn upstream_shutdown(request: &mut Request) -> std::io::Result<()> {
    match request.upstream.as_mut() {
        Some(upstream) => upstream.shutdown().await,
        None => Ok(()),
    }
}

/// Copies what the pod's port sends into the data stream; at its end,
/// finishes both streams.
async fn copy_to_client(
    mut read: tokio::net::tcp::OwnedReadHalf,
    data: u32,
    error: u32,
    out: mpsc::Sender<Out>,
) {
    let mut buffer = vec![0u8; MAX_DATA];
    while let Ok(n @ 1..) = read.read(&mut buffer).await {
        let frame = Out::Data {
            id: data,
            fin: false,
            data: buffer[..n].to_vec(),
        };
        if out.send(frame).await.is_err() {
            return;
        }
    }
    for id in [data, error] {
        let _ = out
            .send(Out::Data {
                id,
                fin: true,
                data: Vec::new(),
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        // zlib names a preset dictionary by its Adler-32.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &d {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_round_trip_through_both_zlib_streams() {
        let dict = dictionary();
        let mut plain = Vec::new();
        plain.extend_from_slice(&2u32.to_be_bytes());
        for (n, v) in [("streamtype", "data"), ("port", "5432")] {
            plain.extend_from_slice(&(n.len() as u32).to_be_bytes());
            plain.extend_from_slice(n.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        // As a Go client writes it: zlib with the preset dictionary.
        let mut c = Compress::new(Compression::default(), true);
        c.set_dictionary(&dict).unwrap();
        let mut w = Writer { deflate: c };
        let first = w.deflate_block(&plain);
        let second = w.deflate_block(&plain);
        let mut r = Reader::new(tokio::io::empty());
        assert_eq!(
            r.headers(&first).unwrap(),
            vec![
                ("streamtype".into(), "data".into()),
                ("port".into(), "5432".into())
            ]
        );
        assert_eq!(r.headers(&second).unwrap().len(), 2);
    }
}
