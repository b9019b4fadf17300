//! How messages cross between nodes: a node's channel carries payloads of
//! one or more messages, each `<to>\n<json>`, joined by `\n` (a peer id has
//! no control character and compact JSON no raw newline, so lines split
//! them). The messages for one node that are ready at once share one
//! PUBLISH ([`Outbox`]); the receiving node splits them ([`messages`]) and
//! hands each JSON to its addressee as it is. A payload of one message is
//! what earlier versions published.

/// Largest payload gathered (a message larger than this goes alone).
pub(super) const MAX_PAYLOAD: usize = 256 * 1024;

/// The messages for other nodes gathered from one batch of operations:
/// one payload per node, in the order they were sent. Flushed before
/// anything else goes to Redis (a join or a leave), so that nothing
/// overtakes a message that was sent before it.
#[derive(Debug, Default)]
pub(super) struct Outbox {
    /// Node → its payload so far (few nodes: a list).
    open: Vec<(String, String)>,
    /// Messages gathered since the last flush.
    messages: usize,
}

impl Outbox {
    /// Adds `json` for peer `to` of `node`; a payload that would grow past
    /// [`MAX_PAYLOAD`] goes to `ready` first.
    pub(super) fn add(
        &mut self,
        node: &str,
        to: &str,
        json: &str,
        ready: &mut Vec<(String, String)>,
    ) {
        self.messages += 1;
        let i = match self.open.iter().position(|(n, _)| n == node) {
            Some(i) => i,
            None => {
                self.open.push((node.to_owned(), String::new()));
                self.open.len() - 1
            }
        };
        let payload = &mut self.open[i].1;
        let add = to.len() + 1 + json.len();
        if !payload.is_empty() && payload.len() + 1 + add > MAX_PAYLOAD {
            ready.push((node.to_owned(), std::mem::take(payload)));
        }
        if !payload.is_empty() {
            payload.push('\n');
        }
        payload.reserve(add);
        payload.push_str(to);
        payload.push('\n');
        payload.push_str(json);
    }

    /// Moves every gathered payload to `ready`, as (node, payload).
    pub(super) fn flush(&mut self, ready: &mut Vec<(String, String)>) {
        ready.extend(self.open.drain(..).filter(|(_, p)| !p.is_empty()));
        self.messages = 0;
    }

    /// Whether nothing is gathered.
    pub(super) fn is_empty(&self) -> bool {
        self.messages == 0
    }
}

/// The messages of a payload from another node, as (to, json); lines that
/// do not pair up are left out.
pub(super) fn messages(payload: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut lines = payload.split('\n');
    std::iter::from_fn(move || loop {
        let to = lines.next()?;
        let json = lines.next()?;
        if !to.is_empty() && !json.is_empty() {
            return Some((to, json));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(ready: &[(String, String)]) -> Vec<(&str, Vec<(&str, &str)>)> {
        ready
            .iter()
            .map(|(n, p)| (n.as_str(), messages(p).collect()))
            .collect()
    }

    #[test]
    fn messages_ready_at_once_for_one_node_share_one_payload_in_send_order() {
        let mut out = Outbox::default();
        let mut ready = Vec::new();
        out.add("n1", "p1", r#"{"type":"bye","from":"q1"}"#, &mut ready);
        out.add("n2", "p9", r#"{"type":"bye","from":"q1"}"#, &mut ready);
        out.add(
            "n1",
            "p2",
            r#"{"type":"offer","from":"q2","sdp":"a\nb"}"#,
            &mut ready,
        );
        out.add(
            "n1",
            "p1",
            r#"{"type":"answer","from":"q3","sdp":"v"}"#,
            &mut ready,
        );
        assert!(ready.is_empty(), "nothing leaves before the flush");
        assert!(!out.is_empty());
        out.flush(&mut ready);
        assert!(out.is_empty());
        assert_eq!(
            split(&ready),
            vec![
                (
                    "n1",
                    vec![
                        ("p1", r#"{"type":"bye","from":"q1"}"#),
                        ("p2", r#"{"type":"offer","from":"q2","sdp":"a\nb"}"#),
                        ("p1", r#"{"type":"answer","from":"q3","sdp":"v"}"#),
                    ]
                ),
                ("n2", vec![("p9", r#"{"type":"bye","from":"q1"}"#)]),
            ]
        );
        // Flushed: the next batch starts afresh.
        let mut again = Vec::new();
        out.flush(&mut again);
        assert!(again.is_empty());
    }

    #[test]
    fn a_payload_never_grows_past_its_limit_and_keeps_the_order() {
        let mut out = Outbox::default();
        let mut ready = Vec::new();
        let sdp = "x".repeat(40 * 1024);
        let json = format!(r#"{{"type":"offer","from":"q1","sdp":"{sdp}"}}"#);
        for _ in 0..20 {
            out.add("n1", "p1", &json, &mut ready);
        }
        out.flush(&mut ready);
        assert!(ready.len() >= 4, "{} payloads", ready.len());
        assert!(ready.iter().all(|(_, p)| p.len() <= MAX_PAYLOAD));
        let all: Vec<_> = ready.iter().flat_map(|(_, p)| messages(p)).collect();
        assert_eq!(all.len(), 20);
        assert!(all.iter().all(|(to, j)| *to == "p1" && *j == json));
        // One larger than the limit goes alone.
        let big = "y".repeat(MAX_PAYLOAD + 1);
        let mut ready = Vec::new();
        out.add("n1", "p1", "{}", &mut ready);
        out.add("n1", "p1", &big, &mut ready);
        out.flush(&mut ready);
        assert_eq!(ready.len(), 2);
    }

    #[test]
    fn a_payload_of_one_message_is_the_earlier_format_and_stray_lines_are_left_out() {
        let one: Vec<_> = messages("p1\n{\"type\":\"bye\",\"from\":\"q\"}").collect();
        assert_eq!(one, vec![("p1", "{\"type\":\"bye\",\"from\":\"q\"}")]);
        assert_eq!(messages("").count(), 0);
        assert_eq!(messages("p1").count(), 0);
        assert_eq!(
            messages("p1\n\n\n{}\np2\n{}").collect::<Vec<_>>(),
            vec![("p2", "{}")]
        );
    }
}
