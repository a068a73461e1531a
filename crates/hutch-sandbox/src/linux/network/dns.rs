//! Just enough of the DNS wire format (RFC 1035) for the session resolver: the question of a
//! query, the A records of an answer, and the short replies the resolver makes itself.

use std::net::Ipv4Addr;

/// Record type A (IPv4 address).
pub(crate) const TYPE_A: u16 = 1;
/// Response code: the server refuses to answer.
pub(crate) const REFUSED: u8 = 5;
/// Response code: no error (with no answers: the name has no record of that type).
pub(crate) const NO_ERROR: u8 = 0;
/// Response code: the server failed (the upstream did not answer).
pub(crate) const SERVER_FAILURE: u8 = 2;

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Question {
    /// The name asked for, lower case, without the trailing dot.
    pub(crate) name: String,
    /// The record type asked for.
    pub(crate) qtype: u16,
    /// Where the question section ends in the message.
    end: usize,
}

/// Reads the question of a standard query with exactly one question; `None` otherwise.
pub(crate) fn question(msg: &[u8]) -> Option<Question> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 || (msg[2] >> 3) & 0x0f != 0 {
        return None; // too short, a response, or not a standard query
    }
    if u16::from_be_bytes([msg[4], msg[5]]) != 1 {
        return None;
    }
    let (name, pos) = read_name(msg, 12)?;
    let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
    msg.get(pos + 3)?;
    Some(Question {
        name,
        qtype,
        end: pos + 4,
    })
}

/// Reads a possibly compressed name at `pos`; gives it and the position after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut after = None;
    let mut jumps = 0;
    loop {
        let len = *msg.get(pos)? as usize;
        if len & 0xc0 == 0xc0 {
            let target = ((len & 0x3f) << 8) | *msg.get(pos + 1)? as usize;
            after.get_or_insert(pos + 2);
            jumps += 1;
            if jumps > 16 || target >= msg.len() {
                return None;
            }
            pos = target;
            continue;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        if len == 0 {
            let name = labels.join(".");
            return (name.len() <= 253).then(|| (name, after.unwrap_or(pos + 1)));
        }
        let label = msg.get(pos + 1..pos + 1 + len)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        pos += 1 + len;
    }
}

/// The A records of a response to `question` (addresses and TTLs in seconds); empty when it
/// has none or cannot be read.
pub(crate) fn a_records(msg: &[u8]) -> Vec<(Ipv4Addr, u32)> {
    let mut out = Vec::new();
    if msg.len() < 12 || msg[2] & 0x80 == 0 {
        return out;
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        let Some((_, p)) = read_name(msg, pos) else {
            return out;
        };
        pos = p + 4;
    }
    for _ in 0..answers {
        let Some((_, p)) = read_name(msg, pos) else {
            return out;
        };
        let Some(fixed) = msg.get(p..p + 10) else {
            return out;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        let Some(rdata) = msg.get(p + 10..p + 10 + rdlen) else {
            return out;
        };
        if rtype == TYPE_A && rdlen == 4 {
            out.push((Ipv4Addr::new(rdata[0], rdata[1], rdata[2], rdata[3]), ttl));
        }
        pos = p + 10 + rdlen;
    }
    out
}

/// A reply to `query` (whose question is `q`) with code `rcode` and no records.
pub(crate) fn empty_reply(query: &[u8], q: &Question, rcode: u8) -> Vec<u8> {
    let mut reply = query[..q.end].to_vec();
    reply[2] = 0x80 | (query[2] & 0x01); // response, standard query, RD copied
    reply[3] = 0x80 | (rcode & 0x0f); // recursion available
    for b in &mut reply[6..12] {
        *b = 0; // no answer, authority or additional records
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for `name` of type `qtype`, id 0x1234, recursion desired.
    pub(crate) fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            m.push(label.len() as u8);
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&1u16.to_be_bytes());
        m
    }

    #[test]
    fn reads_the_question_and_answers_with_compressed_names() {
        let q = query("Files.Example.com", TYPE_A);
        let question = question(&q).unwrap();
        assert_eq!(question.name, "files.example.com");
        assert_eq!(question.qtype, TYPE_A);

        let mut r = q.clone();
        r[2] |= 0x80;
        r[7] = 2; // two answers: a CNAME then an A, both with a pointer to the question
        r.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 1, 0, 0, 4, 203, 0, 113, 7]);
        assert_eq!(a_records(&r), vec![(Ipv4Addr::new(203, 0, 113, 7), 256)]);

        let refused = empty_reply(&q, &question, REFUSED);
        assert_eq!(refused[3] & 0x0f, REFUSED);
        assert_eq!(refused[2] & 0x80, 0x80);
        assert!(a_records(&refused).is_empty());
    }

    #[test]
    fn malformed_messages_are_refused_not_trusted() {
        assert!(question(&[0; 5]).is_none());
        let mut looped = query("a", TYPE_A);
        looped[12] = 0xc0;
        looped[13] = 12; // a pointer to itself
        assert!(question(&looped).is_none());
        assert!(a_records(&[0xff; 40]).is_empty());
    }
}
