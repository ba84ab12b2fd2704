//! Many peer-entry requests in few system calls: the requests of [`Netlink::apply`] go to
//! the kernel in chunks, each chunk in one `sendto`, on a routing socket of their own.
//!
//! The kernel handles the requests of one `sendto` in order, one by one, as if each had come
//! alone. Only the last request of a chunk asks for an acknowledgement (`NLM_F_ACK`); for the
//! others the kernel answers only when it refuses one (an `NLMSG_ERROR` carrying the errno).
//! So the acknowledgement of the last request means the whole chunk is done, and every error
//! before it names its request by sequence number. A chunk is small enough that its errors
//! cannot overrun the socket's receive buffer, and `NETLINK_CAP_ACK` keeps the refused
//! request out of each error.
//!
//! [`Netlink::apply`]: crate::netlink::Netlink::apply

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};

/// How many requests go in one `sendto`. Their errors, at worst one per request, must fit
/// the receive buffer (each costs a socket buffer of about 1 KiB there).
pub const CHUNK: usize = 256;
/// The receive buffer asked for: room for a whole chunk of errors.
const RCVBUF: usize = 1 << 20;
// Each error costs the receive buffer one small socket buffer (about 1 KiB of truesize).
const _: () = assert!(CHUNK * 1024 <= RCVBUF / 2);

/// How long a chunk may wait for the kernel's answer before its requests count as failed
/// (and are retried by the caller): the kernel answers at once, so this only keeps a lost
/// answer from stopping the data plane.
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// What a request does, which decides its netlink flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Create or replace (`NLM_F_CREATE | NLM_F_REPLACE`, as `ip ... replace`).
    Replace,
    /// Delete.
    Delete,
}

/// A routing socket for batches, bound to the network namespace it was opened in.
pub struct Batch {
    socket: TokioSocket,
    seq: u32,
    buf: Vec<u8>,
}

impl Batch {
    /// Opens the socket in the current network namespace.
    pub fn open() -> io::Result<Batch> {
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        socket.socket_mut().bind_auto()?;
        socket.socket_mut().connect(&SocketAddr::new(0, 0))?;
        // Best effort: without them a chunk's errors still arrive, only bigger or in a
        // smaller buffer (CHUNK keeps them within the default one).
        let _ = socket.socket_mut().set_cap_ack(true);
        let _ = socket.socket_mut().set_rx_buf_sz(RCVBUF);
        Ok(Batch {
            socket,
            seq: 0,
            buf: Vec::new(),
        })
    }

    /// Sends `requests` in order and returns, for each, the kernel's errno when it refused
    /// it (`Some(errno)` with errno > 0) or `None` when it was done. An I/O error of the
    /// socket itself fails the rest of the batch.
    pub async fn run(
        &mut self,
        requests: Vec<(Kind, RouteNetlinkMessage)>,
    ) -> io::Result<Vec<Option<i32>>> {
        let mut out = Vec::with_capacity(requests.len());
        let mut rest = requests.into_iter();
        loop {
            let chunk: Vec<_> = rest.by_ref().take(CHUNK).collect();
            if chunk.is_empty() {
                return Ok(out);
            }
            out.extend(self.chunk(chunk).await?);
        }
    }

    async fn chunk(
        &mut self,
        requests: Vec<(Kind, RouteNetlinkMessage)>,
    ) -> io::Result<Vec<Option<i32>>> {
        let first = self.seq.wrapping_add(1);
        let count = requests.len();
        self.buf.clear();
        for (i, (kind, msg)) in requests.into_iter().enumerate() {
            let mut m = NetlinkMessage::from(msg);
            m.header.flags = NLM_F_REQUEST
                | match kind {
                    Kind::Replace => NLM_F_CREATE | NLM_F_REPLACE,
                    Kind::Delete => 0,
                };
            if i + 1 == count {
                m.header.flags |= NLM_F_ACK;
            }
            self.seq = self.seq.wrapping_add(1);
            m.header.sequence_number = self.seq;
            m.finalize();
            let at = self.buf.len();
            self.buf.resize(at + m.buffer_len(), 0);
            m.serialize(&mut self.buf[at..]);
        }
        let last = self.seq;
        let sent = self.socket.send(&self.buf).await?;
        if sent != self.buf.len() {
            return Err(io::Error::other(format!(
                "netlink sendto took {sent} of {} bytes",
                self.buf.len()
            )));
        }
        let mut results = vec![None; count];
        let mut reply = Vec::with_capacity(8192);
        loop {
            reply.clear();
            tokio::time::timeout(ANSWER_WITHIN, self.socket.recv(&mut reply))
                .await
                .map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the kernel did not answer within {ANSWER_WITHIN:?}"),
                    )
                })??;
            let mut at = 0;
            while at < reply.len() {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[at..])
                    .map_err(|e| io::Error::other(format!("undecodable netlink reply: {e}")))?;
                let len = msg.header.length as usize;
                let seq = msg.header.sequence_number;
                if let NetlinkPayload::Error(e) = &msg.payload {
                    let index = seq.wrapping_sub(first) as usize;
                    if let Some(slot) = results.get_mut(index) {
                        *slot = e.code.map(|c| -c.get());
                    }
                    if seq == last {
                        return Ok(results);
                    }
                }
                if len == 0 {
                    break;
                }
                at += (len + 3) & !3;
            }
        }
    }
}
