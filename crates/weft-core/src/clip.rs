//! Cutting input echoed in error messages down to a readable size.
//!
//! Errors quote the offending value so the user can find it, but the value comes from etcd, a
//! file or the environment, where it can be megabytes long; quoting it whole would flood the
//! log line (or the CNI error) that carries the message.

/// Characters of an input value kept in an error message.
pub const MAX_ECHO_CHARS: usize = 64;

/// `text` itself when it has at most [`MAX_ECHO_CHARS`] characters, else its start followed by
/// `…[N bytes]`, N being the full length.
pub fn clip(text: &str) -> String {
    match text.char_indices().nth(MAX_ECHO_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…[{} bytes]", &text[..cut], text.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_on_a_char_boundary() {
        assert_eq!(clip(""), "");
        let exact = "é".repeat(MAX_ECHO_CHARS);
        assert_eq!(clip(&exact), exact);
        let long = "é".repeat(MAX_ECHO_CHARS + 1);
        assert_eq!(
            clip(&long),
            format!("{}…[{} bytes]", "é".repeat(MAX_ECHO_CHARS), long.len())
        );
    }
}
