//! Cutting input echoed in error messages down to a readable size.
//!
//! Errors quote the offending value so the user can find it, but the value comes from etcd, a
//! file or the environment, where it can be megabytes long; quoting it whole would flood the
//! log line (or the CNI error) that carries the message.

/// Bytes of an input value kept in an error message, counted as the value is quoted with
/// `{:?}` (a control character such as `\u{b}` counts 6).
pub const MAX_ECHO_BYTES: usize = 64;

/// `text` itself when it quotes to at most [`MAX_ECHO_BYTES`], else its start followed by
/// `…[N bytes]`, N being the full length.
pub fn clip(text: &str) -> String {
    let mut width = 0;
    for (i, c) in text.char_indices() {
        width += c.escape_debug().count();
        if width > MAX_ECHO_BYTES {
            return format!("{}…[{} bytes]", &text[..i], text.len());
        }
    }
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept() {
        assert_eq!(clip(""), "");
        let exact = "x".repeat(MAX_ECHO_BYTES);
        assert_eq!(clip(&exact), exact);
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let long = "é".repeat(MAX_ECHO_BYTES + 1);
        assert_eq!(
            clip(&long),
            format!("{}…[{} bytes]", "é".repeat(MAX_ECHO_BYTES), long.len())
        );
    }

    #[test]
    fn escaped_characters_count_as_quoted() {
        let controls = "\u{b}".repeat(MAX_ECHO_BYTES);
        let clipped = clip(&controls);
        assert!(
            format!("{clipped:?}").len() < 2 * MAX_ECHO_BYTES,
            "{clipped:?}"
        );
        assert!(clipped.ends_with(&format!("…[{MAX_ECHO_BYTES} bytes]")));
    }
}
